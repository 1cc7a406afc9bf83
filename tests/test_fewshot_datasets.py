"""The few-shot experiment end to end on miniatures of CIFAR-FS, FC100,
CUB-200-2011 and tieredImageNet in their real layouts (2 iterations, tiny
sizes; slow), its data loading, configs and model choice for them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import cli
from experiments.fewshot import config as config_lib
from experiments.fewshot import train
import jaxmaml
from tests.utils import MINI_CUB
from tests.utils import MINI_CUB_COUNTS
from tests.utils import make_cifar100
from tests.utils import make_cub
from tests.utils import make_tiered_imagenet
from tests.utils import patch_cifar_manifests
from tests.utils import patch_cub_manifest
from tests.utils import patch_tiered_manifest

NEW = ('cifar_fs', 'fc100', 'cub', 'tiered_imagenet')
# 2-way 1-shot, 1 query, 16x16 images, 2 iterations of 1 inner step.
TINY = dict(
  num_ways=2,
  num_queries=1,
  image_size=16,
  meta_batch_size=2,
  num_iterations=2,
  eval_every=2,
  num_val_tasks=2,
  num_test_tasks=2,
  eval_batch_size=2,
  train_inner_steps=1,
  eval_inner_steps=1,
)


def _miniature(dataset, tmp_path, monkeypatch):
  """A miniature of ``dataset`` under ``tmp_path/data``, manifests patched to it."""
  root = tmp_path / 'data'
  if dataset in ('cifar_fs', 'fc100'):
    patch_cifar_manifests(monkeypatch, tmp_path / 'manifests', make_cifar100(root))
  elif dataset == 'cub':
    make_cub(root)
    patch_cub_manifest(monkeypatch, tmp_path / 'manifests')
  else:
    make_tiered_imagenet(root)
    patch_tiered_manifest(monkeypatch, tmp_path / 'manifests')
  return root


def _train(dataset, tmp_path, monkeypatch, **overrides):
  root = _miniature(dataset, tmp_path, monkeypatch)
  config = cli.override(config_lib.CONFIGS[f'{dataset}_5way1shot'], **{**TINY, **overrides})
  report = train.train_and_evaluate(
    config, str(tmp_path / 'run'), str(root), str(tmp_path / 'cache'), plots=False
  )
  results = report['results']
  assert report['config']['dataset'] == dataset
  assert results['iterations'] == 2 and results['test']['num_tasks'] == 2
  assert 0.0 <= results['test']['accuracy'] <= 100.0
  assert np.isfinite(results['best_val_accuracy'])
  return report


# Slow: compiling the meta-step alone takes 15-30 s here (even ProtoNets',
# 17 s; measured 40-64 s a run on the shared 2-core machine). Past their
# loaders and load_splits (tested below and in their own files) these runs
# share the code the synthetic miniImageNet runs of test_fewshot_experiment test.
@pytest.mark.slow
@pytest.mark.parametrize('dataset', NEW)
def test_maml_trains_and_tests_on_each_miniature(dataset, tmp_path, monkeypatch):
  _train(dataset, tmp_path, monkeypatch)


def test_load_splits_keeps_every_image_of_unequal_classes(tmp_path, monkeypatch):
  root = _miniature('cub', tmp_path, monkeypatch)
  config = cli.override(config_lib.CONFIGS['cub_5way1shot'], **TINY)
  splits = train.load_splits(config, str(root), str(tmp_path / 'cache'))
  for name, classes in MINI_CUB.items():
    counts = sorted(MINI_CUB_COUNTS[c] for c in classes)
    assert sorted(splits[name].counts.tolist()) == counts, name
    assert splits[name].images.shape == (2, max(counts), 16, 16, 3), name
  # The tasks drawn for training see the images past the smallest class's count.
  train_split = splits['train']
  tasks = train._sample(
    jax.random.key(0),
    jnp.asarray(train_split.images),
    64,
    num_ways=2,
    num_shots=1,
    num_queries=1,
    rotate=False,
    counts=jnp.asarray(train_split.counts),
  )
  big = int(np.argmax(train_split.counts))
  drawn = np.concatenate([tasks.support[0], tasks.query[0]], axis=1).reshape(-1, 16, 16, 3)
  images = np.asarray(train_split.images[big], np.float32) / 255.0
  distance = np.abs(drawn[:, None] - images[None]).max(axis=(2, 3, 4))  # [drawn, examples]
  seen = set(np.argmin(distance, axis=1)[distance.min(axis=1) < 1e-6].tolist())
  assert seen == set(range(int(train_split.counts[big])))
  with pytest.raises(ValueError, match='The val split cannot serve.*smallest class.*only 2'):
    train.load_splits(cli.override(config, num_shots=2), str(root), str(tmp_path / 'cache'))


def test_fc100_and_tiered_load_splits(tmp_path, monkeypatch):
  for dataset, shapes in (
    ('fc100', {'train': (4, 4), 'val': (2, 4), 'test': (2, 4)}),
    ('tiered_imagenet', {'train': (3, 4), 'val': (2, 3), 'test': (2, 3)}),  # Padded.
  ):
    root = _miniature(dataset, tmp_path / dataset, monkeypatch)
    config = cli.override(config_lib.CONFIGS[f'{dataset}_5way1shot'], **TINY)
    splits = train.load_splits(config, str(root), str(tmp_path / dataset / 'cache'))
    assert {n: s.images.shape[:2] for n, s in splits.items()} == shapes, dataset
    assert all(s.images.shape[2:] == (16, 16, 3) for s in splits.values())


def test_configs_data_dirs_and_paper_figures():
  assert set(NEW) <= set(config_lib.DATASETS) == set(config_lib.DEFAULT_DATA_DIRS)
  for dataset in NEW:
    for shots in (1, 5):
      config = config_lib.CONFIGS[f'{dataset}_5way{shots}shot']
      assert (config.dataset, config.num_ways, config.num_shots) == (dataset, 5, shots)
      assert config.image_size == (32 if dataset in ('cifar_fs', 'fc100') else 84)
      assert not config.rotate and config.queries == 15
  assert set(config_lib.PAPER_ACCURACY) <= set(config_lib.CONFIGS)
  assert config_lib.PAPER_ACCURACY['cifar_fs_5way1shot'] == (58.9, 1.9)
  with pytest.raises(ValueError, match='dataset'):
    config_lib.Config(dataset='cifar10')


@pytest.mark.parametrize('dataset, size', [('cifar_fs', 32), ('cub', 84)])
def test_model_is_the_miniimagenet_conv4_at_the_datasets_size(dataset, size):
  config = config_lib.CONFIGS[f'{dataset}_5way1shot']
  model, _ = train.model_and_learners(config)
  assert isinstance(model, jaxmaml.Conv4)
  assert (model.features, model.pooling, model.head) == (32, 'max', 'flatten')
  x = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
  params = jax.eval_shape(model.init, jax.random.key(0), x)['params']
  assert jax.eval_shape(model.apply, {'params': params}, x).shape == (2, 5)
