"""Shared helpers for the tests: a relative L2 distance, tiny models and problems."""

import functools
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxmaml
from jaxmaml.data import sinusoid


def rel_l2(a, b) -> float:
  """``||a - b|| / ||b||`` over all leaves of two pytrees of the same structure."""
  flat_a = np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(a)])
  flat_b = np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(b)])
  return float(np.linalg.norm(flat_a - flat_b) / np.linalg.norm(flat_b))


def tiny_regression(
  key, *, num_tasks=4, num_support=5, num_query=7, width=8, activation=jnp.tanh, dtype=jnp.float32
):
  """A small smooth MLP regression problem: (loss_fn, params, tasks)."""
  model = jaxmaml.MLP(features=(width, width, 1), activation=activation)
  init_key, task_key = jax.random.split(key)
  params = model.init(init_key, jnp.zeros([1, 1]))['params']
  tasks = sinusoid.sample_tasks(task_key, num_tasks, num_support, num_query)
  cast = lambda tree: jax.tree_util.tree_map(lambda x: x.astype(dtype), tree)
  return jaxmaml.mse_loss(jaxmaml.apply_fn(model)), cast(params), cast(tasks)


def directional_derivatives(loss, grad, params, key, num_directions=3, eps=1e-6):
  """``(analytic, central differences)`` of ``loss`` along random unit directions.

  ``grad`` has the structure of ``params``; the directions are unit vectors
  over all leaves, so ``eps`` is the step's length (float64 expected).
  """
  leaves, treedef = jax.tree_util.tree_flatten(params)
  pairs = []
  for direction_key in jax.random.split(key, num_directions):
    keys = jax.random.split(direction_key, len(leaves))
    noise = [jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)]
    norm = jnp.sqrt(sum(jnp.sum(d**2) for d in noise))
    direction = jax.tree_util.tree_unflatten(treedef, [d / norm for d in noise])
    shifted = lambda s, d=direction: jax.tree_util.tree_map(lambda p, u: p + s * u, params, d)
    numeric = (loss(shifted(eps)) - loss(shifted(-eps))) / (2 * eps)
    analytic = sum(
      jnp.vdot(g, u)
      for g, u in zip(jax.tree_util.tree_leaves(grad), jax.tree_util.tree_leaves(direction))
    )
    pairs.append((float(analytic), float(numeric)))
  return pairs


def task(tasks, i):
  """Task ``i`` of a meta-batch."""
  return jax.tree_util.tree_map(lambda x: x[i], tasks)


def counting(loss_fn):
  """Wraps ``loss_fn`` to record each call (under jit: each trace).

  Returns:
    ``(counting_loss_fn, calls)``; ``len(calls)`` is the number of calls.
  """
  calls = []

  def counting_loss(params, batch):
    calls.append(1)
    return loss_fn(params, batch)

  return counting_loss, calls


def quadratic_task(key, dim=4):
  """Support/query losses 0.5 x^T A x - b^T x with SPD A: batch = (A, b)."""
  keys = jax.random.split(key, 4)

  def spd(k):
    m = jax.random.normal(k, (dim, dim))
    return m @ m.T / dim + jnp.eye(dim)

  return jaxmaml.Task(
    support=(spd(keys[0]), jax.random.normal(keys[1], (dim,))),
    query=(spd(keys[2]), jax.random.normal(keys[3], (dim,))),
  )


def quadratic_loss(theta, batch):
  a, b = batch
  return 0.5 * theta @ a @ theta - b @ theta


# name -> factory of the learner from a loss (from an embedding for ProtoNets):
# every algorithm of the family, as test_conformance and test_sharding run them.
LEARNERS = {
  'maml': lambda loss: jaxmaml.maml(loss, inner_lr=0.05, num_steps=2),
  'fomaml': lambda loss: jaxmaml.maml(loss, inner_lr=0.05, num_steps=2, first_order=True),
  'anil': lambda loss: jaxmaml.anil(loss, inner_lr=0.3, num_steps=2),
  'meta_sgd': lambda loss: jaxmaml.meta_sgd(loss, init_lr=0.05, num_steps=2),
  'maml_plus_plus': lambda loss: jaxmaml.maml_plus_plus(
    loss,
    inner_lr=0.05,
    num_steps=2,
    msl_iterations=20,
    learn_inner_lr=True,
    first_order_iterations=10,
  ),
  'reptile': lambda loss: jaxmaml.reptile(loss, inner_lr=0.05, num_steps=5),
  # 10 CG steps: with the default 5 the implicit gradient was too inexact on a
  # fresh machine for the toy sinusoid to train in 60 steps (loss x0.98, not x0.8).
  'imaml': lambda loss: jaxmaml.imaml(loss, inner_lr=0.05, num_steps=5, reg=4.0, cg_steps=10),
  'protonets': lambda embed: jaxmaml.protonets(embed, num_ways=2),
}


def sinusoid_problem():
  """Sinusoid regression, 8 tasks of 5 + 5 points: ``(loss_fn, params, sample)``,
  ``sample(key)`` a meta-batch."""
  model = jaxmaml.MLP(features=(16, 16, 1), activation=jnp.tanh)
  params = model.init(jax.random.key(0), jnp.zeros([1, 1]))['params']
  sample = lambda key: sinusoid.sample_tasks(key, 8, 5, 5)
  return jaxmaml.mse_loss(jaxmaml.apply_fn(model)), params, sample


def blobs_problem():
  """2-way tasks, two Gaussian blobs at random centers, labels in random order,
  8 tasks of 10 + 10 points: ``(embed_fn, params, sample)``."""
  model = jaxmaml.MLP(features=(16, 8), activation=jnp.tanh)
  params = model.init(jax.random.key(0), jnp.zeros([1, 2]))['params']

  def sample(key):
    centers_key, noise_key = jax.random.split(key)
    centers = 2.0 * jax.random.normal(centers_key, (8, 2, 2))
    labels = jnp.tile(jnp.arange(2), (8, 10))  # [8, 20]: 10 per class.
    x = centers[jnp.arange(8)[:, None], labels] + 0.7 * jax.random.normal(noise_key, (8, 20, 2))
    return jaxmaml.Task(support=(x[:, :10], labels[:, :10]), query=(x[:, 10:], labels[:, 10:]))

  return jaxmaml.apply_fn(model), params, sample


def learner_problem(name):
  """The problem ``LEARNERS[name]`` is tested on: blobs for ProtoNets (it takes
  an embedding), sinusoids for the rest."""
  return blobs_problem() if name == 'protonets' else sinusoid_problem()


def two_host_problem():
  """MAML on sampled sinusoid meta-batches of 8: ``(learner, optimizer, params,
  sample)``, for test_sharding's two-process test and its host script."""
  loss_fn, params, _ = sinusoid_problem()
  learner = jaxmaml.maml(loss_fn, inner_lr=0.01, num_steps=2)
  sample = functools.partial(sinusoid.sample_tasks, num_tasks=8, num_support=5, num_query=5)
  return learner, optax.sgd(0.01), params, sample


NUM_DEVICES = 8  # What the sharding tests split over: ``@pytest.mark.devices(NUM_DEVICES)``.


def run_on_simulated_devices(path, markers):
  """Runs the tests of the file ``path`` that ``-m markers`` selects in a
  subprocess with ``XLA_FLAGS=--xla_force_host_platform_device_count=8``; skips
  where there are that many devices already (the tests then run directly).

  The flag must be set before JAX starts, and the rest of the suite runs on one
  device.
  """
  if jax.device_count() >= NUM_DEVICES:
    pytest.skip('runs directly')
  env = {
    **os.environ,
    'XLA_FLAGS': (
      os.environ.get('XLA_FLAGS', '') + f' --xla_force_host_platform_device_count={NUM_DEVICES}'
    ),
  }
  result = subprocess.run(
    [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', '-m', markers, path],
    env=env,
    capture_output=True,
    text=True,
    cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
  )
  assert result.returncode == 0 and ' passed' in result.stdout, (
    result.stdout[-5000:] + result.stderr[-3000:]
  )


def make_miniimagenet(root, per_class=4, size=(100, 90), classes=None):
  """A tiny miniImageNet in the Ravi & Larochelle layout under ``root``.

  ``classes`` maps each split to its classes (default: train n02 and n01,
  val n03, test n03); class n0k's images are of one color (n01 red, n02
  green, n03 blue, n04 yellow, n05 magenta, n06 cyan), ``per_class`` PNG
  images of ``size`` (width, height) told apart by pixel (0, 0). Returns ``root``.
  """
  from PIL import Image  # pylint: disable=import-outside-toplevel

  colors = {
    'n01': (255, 0, 0),
    'n02': (0, 255, 0),
    'n03': (0, 0, 255),
    'n04': (255, 255, 0),
    'n05': (255, 0, 255),
    'n06': (0, 255, 255),
  }
  classes = classes or {'train': ['n02', 'n01'], 'val': ['n03'], 'test': ['n03']}
  (root / 'images').mkdir(parents=True)
  for split, wnids in classes.items():
    lines = ['filename,label']
    for wnid in wnids:
      for i in range(per_class):
        name = f'{wnid}{split}{i:04d}.png'
        pixels = np.zeros((size[1], size[0], 3), np.uint8) + np.array(colors[wnid], np.uint8)
        pixels[0, 0] = i  # Tell the images of a class apart.
        Image.fromarray(pixels).save(root / 'images' / name)
        lines.append(f'{name},{wnid}')
    (root / f'{split}.csv').write_text('\n'.join(lines) + '\n')
  return root


SYNTHETIC_MINIIMAGENET = dict(
  num_ways=1,
  num_queries=2,
  image_size=16,
  num_iterations=4,
  eval_every=4,
  num_val_tasks=4,
  num_test_tasks=4,
  train_inner_steps=2,
  eval_inner_steps=2,
)


def synthetic_config(**overrides):
  """The few-shot experiment's miniImageNet config, shrunk for ``make_miniimagenet`` data."""
  from experiments import cli  # Only the experiment tests import experiments.
  from experiments.fewshot import config as config_lib

  return cli.override(
    config_lib.CONFIGS['miniimagenet_5way1shot'], **{**SYNTHETIC_MINIIMAGENET, **overrides}
  )


def train_synthetic_miniimagenet(tmp_path, classes=None, **overrides):
  """The few-shot experiment trained and tested on a synthetic miniImageNet in ``tmp_path``."""
  from experiments.fewshot import train

  root = tmp_path / 'mini'
  if not root.exists():
    make_miniimagenet(root, per_class=6, size=(24, 24), classes=classes)
  return train.train_and_evaluate(
    synthetic_config(**overrides),
    str(tmp_path / 'run'),
    str(root),
    str(tmp_path / 'cache'),
    plots=False,
  )


# ----------------------------------------------------------------------------
# Miniatures of the few-shot benchmarks in their real layouts (a few classes,
# a few tiny images), and the shipped manifests patched to match them.


def md5_of(path) -> str:
  """The md5 hex digest of a file (the miniatures' stand-in for a published one)."""
  import hashlib  # pylint: disable=import-outside-toplevel

  with open(path, 'rb') as f:
    return hashlib.md5(f.read()).hexdigest()


def patch_manifests(monkeypatch, directory, **edits):
  """Points ``jaxmaml.data.manifest`` at copies of the shipped manifests in
  ``directory``, each edited in place by ``edits[name](manifest_dict)``."""
  import json  # pylint: disable=import-outside-toplevel
  import shutil  # pylint: disable=import-outside-toplevel

  from jaxmaml.data import manifest  # pylint: disable=import-outside-toplevel

  directory.mkdir(parents=True, exist_ok=True)
  for path in manifest.MANIFEST_DIR.glob('*.json'):
    if not (directory / path.name).exists():
      shutil.copy(path, directory / path.name)
  for name, edit in edits.items():
    data = json.loads((directory / f'{name}.json').read_text())
    edit(data)
    (directory / f'{name}.json').write_text(json.dumps(data))
  monkeypatch.setattr(manifest, 'MANIFEST_DIR', directory)


# The miniature CIFAR-100: 6 classes in 3 superclasses, 3 train-file and 1
# test-file images per class. Pixel (channel 0, 1, 2) of class index c (in
# fine-label order) and image j of the class: (40 c + 10, j, 0 in the train
# file / 255 in the test file).
MINI_CIFAR_CLASSES = {
  'aquarium_fish': 'fish',
  'bear': 'large_carnivores',
  'dolphin': 'aquatic_mammals',
  'lion': 'large_carnivores',
  'seal': 'aquatic_mammals',
  'shark': 'fish',
}
MINI_CIFAR_TRAIN, MINI_CIFAR_TEST = 3, 1
MINI_CIFAR_FS = {
  'train': [['fish', 'shark'], ['aquatic_mammals', 'dolphin']],
  'val': [['large_carnivores', 'lion'], ['large_carnivores', 'bear']],
  'test': [['aquatic_mammals', 'seal'], ['fish', 'aquarium_fish']],
}
MINI_FC100 = {'train': ['large_carnivores', 'fish'], 'val': ['aquatic_mammals'], 'test': ['fish']}


def mini_cifar_pixel(fine_index: int, j: int) -> list[int]:
  """Pixel (0, 0) of image ``j`` of class ``fine_index`` of the miniature CIFAR-100."""
  return [40 * fine_index + 10, j, 0 if j < MINI_CIFAR_TRAIN else 255]


def mini_cifar_records():
  """``(fine_names, coarse_names, {'train'|'test': [(image [32, 32, 3], fine, coarse)]})``
  of the miniature CIFAR-100, each file's images in file order (classes interleaved)."""
  fine_names = sorted(MINI_CIFAR_CLASSES)
  coarse_names = sorted(set(MINI_CIFAR_CLASSES.values()))
  files = {'train': [], 'test': []}
  for j in range(MINI_CIFAR_TRAIN + MINI_CIFAR_TEST):
    for c, name in enumerate(fine_names):
      image = np.zeros((32, 32, 3), np.uint8) + np.array(mini_cifar_pixel(c, j), np.uint8)
      image[1:, 1:, 1] = 7  # Not constant: a transposed layout would show.
      coarse = coarse_names.index(MINI_CIFAR_CLASSES[name])
      files['train' if j < MINI_CIFAR_TRAIN else 'test'].append((image, c, coarse))
  return fine_names, coarse_names, files


def make_cifar100(root, layout='folder'):
  """The miniature CIFAR-100 as the python version's pickles under ``root``:
  ``layout='folder'`` (``cifar-100-python/{train,test,meta}``) or
  ``'archive'`` (``cifar-100-python.tar.gz``). Returns ``{name: md5}`` of the
  files written, by their manifest names."""
  import pickle  # pylint: disable=import-outside-toplevel
  import tarfile  # pylint: disable=import-outside-toplevel

  fine_names, coarse_names, files = mini_cifar_records()
  folder = root / 'cifar-100-python'
  folder.mkdir(parents=True)
  for name, records in files.items():
    data = np.stack([image.transpose(2, 0, 1).reshape(-1) for image, _, _ in records])
    content = {
      'filenames': [f'{name}_{i}.png' for i in range(len(records))],
      'batch_label': f'{name} batch',
      'fine_labels': [fine for _, fine, _ in records],
      'coarse_labels': [coarse for _, _, coarse in records],
      'data': data,
    }
    (folder / name).write_bytes(pickle.dumps(content, protocol=2))
  meta = {'fine_label_names': fine_names, 'coarse_label_names': coarse_names}
  (folder / 'meta').write_bytes(pickle.dumps(meta, protocol=2))
  md5s = {f'cifar-100-python/{m}': md5_of(folder / m) for m in ('train', 'test', 'meta')}
  if layout == 'archive':
    with tarfile.open(root / 'cifar-100-python.tar.gz', 'w:gz') as tar:
      tar.add(folder, arcname='cifar-100-python')
    for m in ('train', 'test', 'meta'):
      (folder / m).unlink()
    folder.rmdir()
    md5s['cifar-100-python.tar.gz'] = md5_of(root / 'cifar-100-python.tar.gz')
  return md5s


def patch_cifar_manifests(monkeypatch, directory, md5s):
  """The CIFAR manifests for the miniature: its md5s, 4 images a class, its splits."""

  def files(data):
    data['images_per_class'] = MINI_CIFAR_TRAIN + MINI_CIFAR_TEST
    for name, md5 in md5s.items():
      data['files'][name]['md5'] = md5

  patch_manifests(
    monkeypatch,
    directory,
    cifar100=files,
    cifar_fs=lambda data: data.update(splits=MINI_CIFAR_FS),
    fc100=lambda data: data.update(splits=MINI_FC100),
  )


# The miniature CUB-200-2011: real class names, unequal counts, one colour per
# class; image k of a class (in file-name order) is that colour scaled by
# (1 - 0.15 k). images.txt lists each class's files in reverse name order.
MINI_CUB_COUNTS = {
  '001.Black_footed_Albatross': 3,
  '003.Sooty_Albatross': 5,
  '002.Laysan_Albatross': 2,
  '006.Least_Auklet': 4,
  '004.Groove_billed_Ani': 3,
  '008.Rhinoceros_Auklet': 2,
}
MINI_CUB = {
  'train': ['003.Sooty_Albatross', '001.Black_footed_Albatross'],
  'val': ['002.Laysan_Albatross', '006.Least_Auklet'],
  'test': ['004.Groove_billed_Ani', '008.Rhinoceros_Auklet'],
}
_CUB_COLORS = [
  (220, 30, 30),
  (30, 220, 30),
  (30, 30, 220),
  (220, 220, 30),
  (220, 30, 220),
  (30, 220, 220),
]


def mini_cub_color(klass: str, k: int) -> np.ndarray:
  """The colour of image ``k`` (file-name order) of ``klass`` in the miniature CUB."""
  color = np.array(_CUB_COLORS[list(MINI_CUB_COUNTS).index(klass)], np.float64)
  return np.round(color * (1 - 0.15 * k))


def make_cub(root, layout='folder', size=(30, 20)):
  """The miniature CUB-200-2011 under ``root``: ``CUB_200_2011/`` (images.txt,
  images/<class>/<file>.jpg, classes.txt) or, with ``layout='archive'``,
  ``CUB_200_2011.tgz``. JPEGs of ``size`` (width, height). Returns the
  archive's md5 (None for the folder)."""
  import tarfile  # pylint: disable=import-outside-toplevel

  from PIL import Image  # pylint: disable=import-outside-toplevel

  folder = root / 'CUB_200_2011'
  lines, image_id = [], 1
  for klass, count in MINI_CUB_COUNTS.items():
    (folder / 'images' / klass).mkdir(parents=True)
    names = [f'{klass.split(".")[1]}_{k:04d}_{100 + k}.jpg' for k in range(count)]
    for k, name in enumerate(names):
      pixels = np.zeros((size[1], size[0], 3), np.uint8) + mini_cub_color(klass, k).astype(np.uint8)
      Image.fromarray(pixels).save(folder / 'images' / klass / name, quality=95)
    for name in reversed(names):
      lines.append(f'{image_id} {klass}/{name}')
      image_id += 1
  (folder / 'images.txt').write_text('\n'.join(lines) + '\n')
  (folder / 'classes.txt').write_text(
    ''.join(f'{i} {c}\n' for i, c in enumerate(MINI_CUB_COUNTS, start=1))
  )
  if layout != 'archive':
    return None
  with tarfile.open(root / 'CUB_200_2011.tgz', 'w:gz') as tar:
    tar.add(folder, arcname='CUB_200_2011')
  import shutil  # pylint: disable=import-outside-toplevel

  shutil.rmtree(folder)
  return md5_of(root / 'CUB_200_2011.tgz')


def patch_cub_manifest(monkeypatch, directory, md5=None):
  def edit(data):
    data['splits'] = MINI_CUB
    if md5 is not None:
      data['files']['CUB_200_2011.tgz']['md5'] = md5

  patch_manifests(monkeypatch, directory, cub=edit)


# The miniature tieredImageNet: per split, classes (synset, superclass synset)
# of the real split, unequal counts, 8x8 PNGs; pixel (0, 0) of image j of
# class index k of a split is (k, j, 100 + split index), the rest of the image
# a gradient.
MINI_TIERED = {
  'train': [['n01530575', 'n01524359'], ['n01531178', 'n01524359'], ['n01675722', 'n01674216']],
  'val': [['n02099267', 'n02098550'], ['n03207941', 'n03257877']],
  'test': [['n03314780', 'n00020090'], ['n01440764', 'n01473806']],
}
MINI_TIERED_COUNTS = {'train': [4, 2, 3], 'val': [3, 2], 'test': [2, 3]}


def mini_tiered_image(split: str, k: int, j: int) -> np.ndarray:
  """Image ``j`` of class index ``k`` of ``split`` in the miniature tieredImageNet."""
  image = np.add.outer(np.arange(8), np.arange(8)).astype(np.uint8)[..., None] * np.array(
    [3, 5, 7], np.uint8
  )
  image[0, 0] = (k, j, 100 + ('train', 'val', 'test').index(split))
  return image


def make_tiered_imagenet(root, layout='folder', names='synsets', splits=('train', 'val', 'test')):
  """The miniature tieredImageNet under ``root`` in the authors' layout:
  ``tiered-imagenet/{split}_images_png.pkl`` and ``{split}_labels.pkl`` or,
  with ``layout='archive'``, ``tiered-imagenet.tar``. ``names='synsets'``
  stores synsets as ``label_specific_str``; ``'words'`` stores words and
  writes ``synsets.txt``/``class_names.txt`` beside them. The images of a
  split are stored with the classes interleaved. Returns the tar's md5 (None
  for the folder)."""
  import io  # pylint: disable=import-outside-toplevel
  import pickle  # pylint: disable=import-outside-toplevel
  import shutil  # pylint: disable=import-outside-toplevel
  import tarfile  # pylint: disable=import-outside-toplevel

  from PIL import Image  # pylint: disable=import-outside-toplevel

  folder = root / 'tiered-imagenet'
  folder.mkdir(parents=True)
  all_synsets, all_words = [], []
  for split in splits:
    pairs, counts = MINI_TIERED[split], MINI_TIERED_COUNTS[split]
    supers = sorted({s for _, s in pairs}, reverse=True)
    pngs, specific, general = [], [], []
    for j in range(max(counts)):
      for k, count in enumerate(counts):
        if j < count:
          buffer = io.BytesIO()
          Image.fromarray(mini_tiered_image(split, k, j)).save(buffer, format='PNG')
          pngs.append(np.frombuffer(buffer.getvalue(), np.uint8).reshape(-1, 1))
          specific.append(k)
          general.append(supers.index(pairs[k][1]))
    words = [f'class {synset}' for synset, _ in pairs]
    all_synsets += [synset for synset, _ in pairs]
    all_words += words
    labels = {
      'label_specific': np.array(specific, np.int32),
      'label_general': np.array(general, np.int32),
      'label_specific_str': [s for s, _ in pairs] if names == 'synsets' else words,
      'label_general_str': [f'superclass {s}' for s in supers],
    }
    (folder / f'{split}_images_png.pkl').write_bytes(pickle.dumps(pngs, protocol=2))
    (folder / f'{split}_labels.pkl').write_bytes(pickle.dumps(labels, protocol=2))
  if names == 'words':
    (folder / 'synsets.txt').write_text('\n'.join(['n99999999'] + all_synsets) + '\n')
    (folder / 'class_names.txt').write_text('\n'.join(['unused'] + all_words) + '\n')
  if layout != 'archive':
    return None
  with tarfile.open(root / 'tiered-imagenet.tar', 'w') as tar:
    tar.add(folder, arcname='tiered-imagenet')
  shutil.rmtree(folder)
  return md5_of(root / 'tiered-imagenet.tar')


def patch_tiered_manifest(monkeypatch, directory, md5=None):
  def edit(data):
    data['splits'] = MINI_TIERED
    if md5 is not None:
      data['files']['tiered-imagenet.tar']['md5'] = md5

  patch_manifests(monkeypatch, directory, tiered_imagenet=edit)


def tensorboard_scalars(logdir) -> dict:
  """``{tag: [(step, value)]}`` of the event files in ``logdir``, as TensorBoard reads them."""
  event_accumulator = pytest.importorskip('tensorboard.backend.event_processing.event_accumulator')
  events = event_accumulator.EventAccumulator(str(logdir))
  events.Reload()
  return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()['scalars']}


# ----------------------------------------------------------------------------
# Damaged cache entries and unwritable cache directories, for the loaders' tests.


def zero_npy(path) -> None:
  """Overwrites the data of the ``.npy`` file ``path`` with zeros, its header
  kept: a valid file of the right shape and the wrong content."""
  array = np.load(path, mmap_mode='r+')
  array[...] = 0
  array.flush()
  del array


def only_entry(cache_dir, suffix='.npy'):
  """The one cache entry (data file) ending in ``suffix`` in ``cache_dir``."""
  [entry] = [p for p in cache_dir.iterdir() if p.name.endswith(suffix)]
  return entry


def unwritable_dir(tmp_path):
  """A cache directory that cannot be created (its parent is a regular file):
  unwritable also for root, for whom permission bits do not count."""
  (tmp_path / 'blocker').write_text('')
  return tmp_path / 'blocker' / 'cache'


def failing(what):
  """A stand-in for a decoding function that fails the test if it is called."""

  def fail(*args, **kwargs):
    raise AssertionError(f'{what} was called')

  return fail
