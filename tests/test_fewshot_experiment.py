"""The few-shot experiment end to end: Omniglot on the real data (a short
run), miniImageNet on a synthetic dataset in the real layout."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from experiments.fewshot import config as config_lib
from experiments.fewshot import main, train
from tests.test_miniimagenet_data import _make_dataset

DATA_DIR = config_lib.DEFAULT_DATA_DIRS['omniglot']
needs_omniglot = pytest.mark.skipif(not os.path.isdir(DATA_DIR), reason='no Omniglot data')

# 5-way 1-shot, second order, meta-batch 16 instead of 32 and 500 iterations
# instead of 60,000: measured 88.2 ± 2.0 % test accuracy (chance: 20%).
SHORT = dict(num_iterations=500, meta_batch_size=16, eval_every=250, num_val_tasks=64,
             num_test_tasks=200, checkpoint_every=250)


@pytest.fixture(scope='module')
def cache_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('omniglot_cache'))


@needs_omniglot
def test_short_run_far_above_chance_and_resumes(tmp_path, cache_dir):
  config = config_lib.Config(**SHORT)
  report = train.train_and_evaluate(config, str(tmp_path), DATA_DIR, cache_dir)
  results = report['results']
  assert results['iterations'] == 500
  assert results['test']['num_tasks'] == 200
  assert results['test']['accuracy'] > 80.0, results
  assert results['best_step'] in (250, 500)
  assert results['compile_time_s'] > 0 and results['num_devices'] == 1
  for name in ('results.json', 'log.jsonl', 'learning_curve.png', 'state.ckpt', 'best.ckpt'):
    assert os.path.getsize(tmp_path / name) > 0
  with open(tmp_path / 'log.jsonl') as f:
    rows = [json.loads(line) for line in f]
  assert [r['step'] for r in rows if 'val_accuracy' in r] == [250, 500]

  # A rerun in the same workdir resumes at iteration 500: nothing to train,
  # the same best parameters, the same test tasks, the same accuracy.
  again = train.train_and_evaluate(config, str(tmp_path), DATA_DIR, cache_dir, plots=False)
  assert again['results']['test'] == pytest.approx(results['test'])
  with pytest.raises(ValueError, match='different training config'):
    train.train_and_evaluate(config_lib.Config(**dict(SHORT, inner_lr=0.1)), str(tmp_path),
                             DATA_DIR, cache_dir)


@needs_omniglot
def test_bfloat16_short_run_stays_finite(tmp_path, cache_dir):
  """The Omniglot 5-way 1-shot config, second order, in bfloat16: every logged
  loss is finite and the model learns (measured at 300 iterations, meta-batch
  16: 78.3 % in bfloat16, 78.7 % in float32)."""
  config = config_lib.Config(**dict(SHORT, num_iterations=60, meta_batch_size=8, log_every=10,
                                    eval_every=60, num_val_tasks=8, num_test_tasks=100,
                                    precision='bfloat16'))
  results = train.train_and_evaluate(config, str(tmp_path), DATA_DIR, cache_dir,
                                     plots=False)['results']
  with open(tmp_path / 'log.jsonl') as f:
    losses = [json.loads(line)['train_loss'] for line in f if 'train_loss' in line]
  assert len(losses) == 6 and np.all(np.isfinite(losses))
  assert results['test']['accuracy'] > 30.0, results  # Chance: 20 %.


def test_compilation_cache_serves_a_rerun(tmp_path):
  """--compilation_cache: the first run fills the cache; the same command
  again compiles nothing new (every program is a cache hit)."""
  root = tmp_path / 'mini'
  _make_dataset(root, per_class=6, size=(24, 24))
  cache = tmp_path / 'xla_cache'

  def run(name):
    command = [sys.executable, '-m', 'experiments.fewshot.main', '--config',
               'miniimagenet_5way1shot', '--data_dir', str(root), '--cache_dir',
               str(tmp_path / 'cache'), '--workdir', str(tmp_path / name),
               '--compilation_cache', str(cache), '--num_ways', '1', '--num_queries', '2',
               '--image_size', '16', '--num_iterations', '2', '--eval_every', '2',
               '--num_val_tasks', '4', '--num_test_tasks', '4', '--train_inner_steps', '1',
               '--eval_inner_steps', '1']
    result = subprocess.run(command, capture_output=True, text=True,
                            cwd=os.path.dirname(os.path.dirname(__file__)))
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'compiled the meta-step in' in result.stdout
    return sorted(os.listdir(cache))

  first = run('a')
  assert len(first) > 1
  assert run('b') == first


@needs_omniglot
def test_request_that_a_split_cannot_serve(tmp_path, cache_dir):
  with pytest.raises(ValueError, match='cannot serve this config.*only 20 per class'):
    train.load_splits(config_lib.Config(num_shots=15, num_queries=10), DATA_DIR, cache_dir)


@needs_omniglot
def test_lake_runs_evaluation(cache_dir):
  """Lake's runs as 20 tasks of 20 queries: one accuracy per run, in 1/20ths."""
  import jax
  import jax.numpy as jnp
  config = config_lib.CONFIGS['omniglot_20way1shot']
  model, _, eval_learner = train.make_learners(config)
  params = model.init(jax.random.key(0), jnp.zeros([1, 28, 28, 1]))['params']
  path = os.path.join(DATA_DIR, 'one-shot-classification', 'all_runs.zip')
  accuracies = train.evaluate_lake_runs(eval_learner, params, path, 28)
  assert accuracies.shape == (20,)
  assert 0.0 <= accuracies.min() and accuracies.max() <= 1.0
  np.testing.assert_allclose(accuracies * 20, np.round(accuracies * 20), atol=1e-5)


def test_command_line():
  config, args = main.parse_args(['--config', 'omniglot_20way5shot', '--num_iterations', '10'])
  assert (config.num_ways, config.num_shots, config.inner_lr, config.meta_batch_size,
          config.train_inner_steps, config.num_iterations) == (20, 5, 0.1, 16, 5, 10)
  assert args.workdir == 'runs/omniglot_20way5shot'
  assert args.data_dir == DATA_DIR
  config, args = main.parse_args(['--config', 'miniimagenet_5way5shot', '--data_dir', '/d'])
  assert (config.dataset, config.image_size, config.queries, config.meta_batch_size,
          config.rotate) == ('miniimagenet', 84, 15, 2, False)
  assert args.data_dir == '/d'
  with pytest.raises(SystemExit):
    main.parse_args(['--config', 'omniglot_7way1shot'])
  with pytest.raises(SystemExit):
    main.parse_args(['--dataset', 'cifar'])


def _synthetic_config(**overrides):
  return config_lib.Config(
      **{**dataclasses.asdict(config_lib.CONFIGS['miniimagenet_5way1shot']),
         'num_ways': 1, 'num_queries': 2, 'image_size': 16, 'num_iterations': 4,
         'eval_every': 4, 'num_val_tasks': 4, 'num_test_tasks': 4, 'train_inner_steps': 2,
         'eval_inner_steps': 2, **overrides})


def _synthetic_miniimagenet(tmp_path, **overrides):
  root = tmp_path / 'mini'
  if not root.exists():
    _make_dataset(root, per_class=6, size=(24, 24))
  return train.train_and_evaluate(_synthetic_config(**overrides), str(tmp_path / 'run'),
                                  str(root), str(tmp_path / 'cache'), plots=False)


def test_miniimagenet_pipeline_and_time_budget(tmp_path):
  """The miniImageNet path (color images, max-pool Conv4, flattened head, no
  rotations) runs end to end; time_budget_s ends training (validation
  excluded) long before num_iterations, with a final validation at the last
  iteration; test_only then trains nothing and tests the same parameters. The
  synthetic val and test splits have one class each, hence 1-way tasks: this
  checks the plumbing, not learning."""
  report = _synthetic_miniimagenet(tmp_path, num_iterations=10**6, eval_every=10**5,
                                   time_budget_s=2.0)
  results = report['results']
  assert 0 < results['iterations'] < 10**6
  assert results['test']['num_tasks'] == 4
  assert 'lake_runs' not in results
  assert 2.0 <= results['meta_train_time_s'] <= results['train_time_s']
  with open(tmp_path / 'run' / 'log.jsonl') as f:
    rows = [json.loads(line) for line in f]
  assert [r['step'] for r in rows if 'val_accuracy' in r] == [results['iterations']]
  interim = train.train_and_evaluate(
      _synthetic_config(num_iterations=10**6, eval_every=10**5, time_budget_s=2.0),
      str(tmp_path / 'run'), str(tmp_path / 'mini'), str(tmp_path / 'cache'), plots=False,
      test_only=True)
  assert interim['results']['iterations'] == results['iterations']
  assert interim['results']['test'] == pytest.approx(results['test'])


@pytest.mark.parametrize('algorithm', [
    'protonets',  # A headless model, no inner loop; the others are slow.
    *(pytest.param(a, marks=pytest.mark.slow)
      for a in ('anil', 'meta_sgd', 'maml_plus_plus', 'reptile', 'imaml'))])
def test_every_algorithm_trains_and_resumes(tmp_path, algorithm):
  """The pipeline with each algorithm of the family: its meta-parameters
  (rates, per-step BatchNorm stacks, a headless embedding) checkpoint and
  resume; a rerun trains nothing and tests the same parameters."""
  overrides = dict(algorithm=algorithm, msl_iterations=2, outer_schedule='cosine')
  report = _synthetic_miniimagenet(tmp_path, **overrides)
  assert report['results']['iterations'] == 4
  assert 0.0 <= report['results']['test']['accuracy'] <= 100.0
  again = _synthetic_miniimagenet(tmp_path, **overrides)
  assert again['results']['test'] == pytest.approx(report['results']['test'])
