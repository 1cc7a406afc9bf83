"""The few-shot experiment end to end: Omniglot on the real data (a short
run), miniImageNet on a synthetic dataset in the real layout."""

import dataclasses
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments import algorithms
from experiments import cli
from experiments.fewshot import budget
from experiments.fewshot import config as config_lib
from experiments.fewshot import main
from experiments.fewshot import train
from jaxmaml import checkpoint
from tests.utils import SYNTHETIC_MINIIMAGENET
from tests.utils import make_miniimagenet
from tests.utils import rel_l2
from tests.utils import synthetic_config
from tests.utils import tensorboard_scalars
from tests.utils import train_synthetic_miniimagenet

DATA_DIR = config_lib.DEFAULT_DATA_DIRS['omniglot']
needs_omniglot = pytest.mark.skipif(not os.path.isdir(DATA_DIR), reason='no Omniglot data')

# 5-way 1-shot, second order, meta-batch 16 instead of 32 and 250 iterations
# instead of 60,000: measured 76.3 ± 2.9 % test accuracy (chance: 20%; 88.2 ± 2.0 %
# at 500 iterations).
SHORT = dict(
  num_iterations=250,
  meta_batch_size=16,
  eval_every=125,
  num_val_tasks=64,
  num_test_tasks=200,
  checkpoint_every=125,
)


@pytest.fixture(scope='module')
def cache_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('omniglot_cache'))


def _config(**overrides):
  return cli.override(config_lib.Config(), **overrides)


@pytest.mark.slow  # ~180 s on real Omniglot; the default suite must stay under 10 min.
@needs_omniglot
def test_short_run_far_above_chance_and_resumes(tmp_path, cache_dir):
  config = _config(**SHORT)
  report = train.train_and_evaluate(config, str(tmp_path), DATA_DIR, cache_dir)
  results = report['results']
  assert results['iterations'] == 250
  assert results['test']['num_tasks'] == 200
  assert results['test']['accuracy'] > 65.0, results
  assert results['best_step'] in (125, 250)
  assert results['compile_time_s'] > 0 and results['num_devices'] == 1
  for name in ('results.json', 'log.jsonl', 'learning_curve.png'):
    assert os.path.getsize(tmp_path / name) > 0
  # Orbax keeps the latest step: the state at the end, the parameters of the best validation.
  assert os.listdir(tmp_path / 'state') == ['250']
  assert os.listdir(tmp_path / 'best') == [str(results['best_step'])]
  with open(tmp_path / 'log.jsonl') as f:
    rows = [json.loads(line) for line in f]
  assert [r['step'] for r in rows if 'val_accuracy' in r] == [125, 250]
  # The TensorBoard events hold the same numbers, read back by TensorBoard's own loader.
  scalars = tensorboard_scalars(tmp_path / 'tensorboard')
  assert [step for step, _ in scalars['val/accuracy']] == [125, 250]
  val = [r for r in rows if 'val_accuracy' in r]
  np.testing.assert_allclose(
    [v for _, v in scalars['val/accuracy']], [r['val_accuracy'] for r in val]
  )
  np.testing.assert_allclose(
    [v for _, v in scalars['val/accuracy_ci_high']],
    [r['val_accuracy'] + r['val_ci95'] for r in val],
  )
  train_rows = [r for r in rows if 'train_loss' in r]
  assert [s for s, _ in scalars['train/loss']] == [r['step'] for r in train_rows]

  # A rerun in the same workdir resumes at iteration 250: nothing to train,
  # the same best parameters, the same test tasks, the same accuracy.
  again = train.train_and_evaluate(config, str(tmp_path), DATA_DIR, cache_dir, plots=False)
  assert again['results']['test'] == pytest.approx(results['test'])
  with pytest.raises(ValueError, match='different training config'):
    train.train_and_evaluate(
      _config(**dict(SHORT, inner_lr=0.1)), str(tmp_path), DATA_DIR, cache_dir
    )


@pytest.mark.slow  # ~55 s; bfloat16 is also checked by the sinusoid run and test_precision.
@needs_omniglot
def test_bfloat16_short_run_stays_finite(tmp_path, cache_dir):
  """The Omniglot 5-way 1-shot config, second order, in bfloat16: every logged
  loss is finite and the model learns (measured at 300 iterations, meta-batch
  16: 78.3 % in bfloat16, 78.7 % in float32)."""
  config = _config(
    **dict(
      SHORT,
      num_iterations=60,
      meta_batch_size=8,
      log_every=10,
      eval_every=60,
      num_val_tasks=8,
      num_test_tasks=100,
      precision='bfloat16',
    )
  )
  results = train.train_and_evaluate(config, str(tmp_path), DATA_DIR, cache_dir, plots=False)[
    'results'
  ]
  with open(tmp_path / 'log.jsonl') as f:
    losses = [json.loads(line)['train_loss'] for line in f if 'train_loss' in line]
  assert len(losses) == 6 and np.all(np.isfinite(losses))
  assert results['test']['accuracy'] > 30.0, results  # Chance: 20 %.


@pytest.mark.slow  # ~35 s: two subprocess runs.
def test_compilation_cache_serves_a_rerun(tmp_path):
  """--compilation_cache: the first run fills the cache; the same command
  again compiles nothing new (every program is a cache hit)."""
  root = tmp_path / 'mini'
  make_miniimagenet(root, per_class=6, size=(24, 24), classes=TWO_WAY)
  cache = tmp_path / 'xla_cache'

  def run(name):
    command = [
      sys.executable,
      '-m',
      'experiments.fewshot.main',
      '--config',
      'miniimagenet_5way1shot',
      '--data_dir',
      str(root),
      '--cache_dir',
      str(tmp_path / 'cache'),
      '--workdir',
      str(tmp_path / name),
      '--compilation_cache',
      str(cache),
      '--num_ways',
      '2',
      '--num_queries',
      '2',
      '--image_size',
      '16',
      '--num_iterations',
      '2',
      '--eval_every',
      '2',
      '--num_val_tasks',
      '4',
      '--num_test_tasks',
      '4',
      '--train_inner_steps',
      '1',
      '--eval_inner_steps',
      '1',
    ]
    result = subprocess.run(
      command, capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__))
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'compiled the meta-step in' in result.stdout
    return sorted(os.listdir(cache))

  first = run('a')
  assert len(first) > 1
  assert run('b') == first


@needs_omniglot
@pytest.mark.slow  # ~19 s: loads Omniglot; the default suite must stay under 10 min.
def test_request_that_a_split_cannot_serve(tmp_path, cache_dir):
  with pytest.raises(ValueError, match='cannot serve this config.*only 20 per class'):
    train.load_splits(_config(num_shots=15, num_queries=10), DATA_DIR, cache_dir)


@pytest.mark.slow  # ~13 s; the default suite must stay under 10 min.
@needs_omniglot
def test_lake_runs_evaluation(cache_dir):
  """Lake's runs as 20 tasks of 20 queries: one accuracy per run, in 1/20ths."""
  import jax
  import jax.numpy as jnp

  config = config_lib.CONFIGS['omniglot_20way1shot']
  model, learners = train.model_and_learners(config)
  params = model.init(jax.random.key(0), jnp.zeros([1, 28, 28, 1]))['params']
  path = os.path.join(DATA_DIR, 'one-shot-classification', 'all_runs.zip')
  accuracies = train.evaluate_lake_runs(learners.evaluation, params, path, 28)
  assert accuracies.shape == (20,)
  assert 0.0 <= accuracies.min() and accuracies.max() <= 1.0
  np.testing.assert_allclose(accuracies * 20, np.round(accuracies * 20), atol=1e-5)


def test_checkpoints_and_logs_options(tmp_path):
  """Where the experiment checkpoints (Orbax directories, the msgpack files of
  runs before Orbax read as a fallback) and what it logs (``--log``)."""
  checkpoints = train.make_checkpoints(_config(async_checkpoints=True), str(tmp_path))
  assert checkpoints.path == str(tmp_path / 'state')
  assert checkpoints.best_path == str(tmp_path / 'best')
  assert checkpoints.msgpack_path == str(tmp_path / 'state.ckpt')
  assert checkpoints.msgpack_best_path == str(tmp_path / 'best.ckpt')
  assert checkpoints.async_save
  assert 'log' not in checkpoints.config  # Logging does not change what is computed.
  config, _ = main.parse_args(['--log', 'tensorboard', '--async_checkpoints'])
  assert config.log == 'tensorboard' and config.async_checkpoints
  assert _config().log == 'jsonl,tensorboard'
  for bad in ('csv', 'jsonl,jsonl'):
    with pytest.raises(ValueError, match='log must be a comma-separated list'):
      _config(log=bad)


def test_command_line():
  config, args = main.parse_args(['--config', 'omniglot_20way5shot', '--num_iterations', '10'])
  assert (
    config.num_ways,
    config.num_shots,
    config.algo.inner_lr,
    config.meta_batch_size,
    config.algo.train_inner_steps,
    config.num_iterations,
  ) == (20, 5, 0.1, 16, 5, 10)
  assert args.workdir == 'runs/omniglot_20way5shot'
  assert args.data_dir == DATA_DIR
  config, args = main.parse_args(['--config', 'miniimagenet_5way5shot', '--data_dir', '/d'])
  assert (
    config.dataset,
    config.image_size,
    config.queries,
    config.meta_batch_size,
    config.rotate,
  ) == ('miniimagenet', 84, 15, 2, False)
  assert args.data_dir == '/d'
  with pytest.raises(SystemExit):
    main.parse_args(['--config', 'omniglot_7way1shot'])
  with pytest.raises(SystemExit):
    main.parse_args(['--dataset', 'cifar'])
  # The flags of a config, nested algorithm fields included, parse back to it.
  config = _config(
    **dict(
      SHORT,
      algorithm='reptile',
      inner_optimizer='adam',
      inner_lr=0.01,
      train_shots=3,
      rotate=False,
      outer_clip_norm=1.0,
    )
  )
  flags = cli.to_flags(config, config_lib.CONFIGS['omniglot_5way1shot'])
  assert flags[:4] == ['--train_shots', '3', '--meta_batch_size', '16'] and '--no-rotate' in flags
  assert main.parse_args(['--config', 'omniglot_5way1shot'] + flags)[0] == config
  with pytest.raises(TypeError, match="no field 'inner_steps'"):
    _config(inner_steps=2)


def test_paper_figure_follows_the_algorithm_run():
  figure = main.paper_figure
  assert figure('omniglot_5way1shot', _config()) == '98.7 ± 0.4 %'
  assert figure('omniglot_5way1shot', _config(first_order=True)) == '98.3 ± 0.5 %'
  assert figure('omniglot_5way1shot', _config(algorithm='anil')) == 'none'
  maml_plus_plus = config_lib.CONFIGS['omniglot_5way1shot_maml_plus_plus']
  assert figure('omniglot_5way1shot_maml_plus_plus', maml_plus_plus) == '99.47 %'
  reptile = config_lib.CONFIGS['omniglot_5way1shot_reptile']
  assert figure('omniglot_5way1shot_reptile', reptile) == '97.68 ± 0.04 %'
  assert figure('cub_5way1shot', config_lib.CONFIGS['cub_5way1shot']) == 'none'


FAMILY_CONFIGS = [n for n in config_lib.CONFIGS if n not in config_lib.MAML_CONFIGS]


@pytest.mark.parametrize('name', FAMILY_CONFIGS)
def test_family_configs_build_their_networks(name):
  """Each family config parses from its name and builds its network (MAML++'s
  max-pools 28x28 to 1x1, the others' stride-2 convolutions end at 2x2) and a
  learner whose meta-gradient on an Omniglot-shaped task has the shapes of its
  meta-parameters (traced only: tests/test_conformance.py trains each one)."""
  import jax.numpy as jnp

  import jaxmaml

  config, args = main.parse_args(['--config', name])
  assert config == config_lib.CONFIGS[name] and args.workdir == f'runs/{name}'
  model, (learner, _) = train.model_and_learners(config)
  n = config.num_ways
  x = jax.random.uniform(jax.random.key(0), (2 * n, 28, 28, 1))
  y = jnp.tile(jnp.arange(n), 2)
  variables = model.init(jax.random.key(1), x)
  logits, state = model.apply(variables, x, capture_intermediates=True, mutable=['intermediates'])
  ((last_block, _),) = state['intermediates']['ConvBlock_3']['__call__']
  size = 1 if config.pooling == 'max' else 2
  assert logits.shape == (2 * n, n) and last_block.shape == (2 * n, size, size, 64)
  task = jaxmaml.Task(support=(x[:n], y[:n]), query=(x[n:], y[n:]))
  meta_params = learner.init(variables['params'])
  grads, _ = jax.eval_shape(learner.task_grad, meta_params, task)
  assert jax.tree.map(jnp.shape, grads) == jax.tree.map(jnp.shape, meta_params)


# miniimagenet_5way1shot shrunk to the synthetic dataset.
@pytest.mark.slow  # ~35 s; the default suite runs this pipeline with Reptile's options.
def test_miniimagenet_pipeline_and_time_budget(tmp_path):
  """The miniImageNet path (color images, max-pool Conv4, flattened head, no
  rotations) runs end to end; time_budget_s ends training (validation
  excluded) long before num_iterations, with a final validation at the last
  iteration (the benchmarks' equal-budget run); test_only then trains nothing
  and tests the same parameters. The synthetic val and test splits have one
  class each, hence 1-way tasks: this checks the plumbing, not learning."""
  make_miniimagenet(tmp_path / 'mini', per_class=6, size=(24, 24))
  figures = budget.equal_budget_run(
    2.0,
    str(tmp_path / 'run'),
    str(tmp_path / 'mini'),
    str(tmp_path / 'cache'),
    config='miniimagenet_5way1shot',
    plots=False,
    **dict(SYNTHETIC_MINIIMAGENET, num_iterations=10**6, eval_every=10**5),
  )
  with open(tmp_path / 'run' / 'results.json') as f:
    results = json.load(f)['results']
  assert figures['iterations'] == results['iterations'] and figures['budget_s'] == 2.0
  assert figures['test'] == results['test'] and figures['best_val_accuracy'] == 100.0
  assert [acc for _, acc, _ in figures['val_curve']] == [100.0]
  assert 0 < results['iterations'] < 10**6
  assert results['test']['num_tasks'] == 4
  assert 'lake_runs' not in results
  assert 2.0 <= results['meta_train_time_s'] <= results['train_time_s']
  with open(tmp_path / 'run' / 'log.jsonl') as f:
    rows = [json.loads(line) for line in f]
  assert [r['step'] for r in rows if 'val_accuracy' in r] == [results['iterations']]
  interim = train.train_and_evaluate(
    synthetic_config(num_iterations=10**6, eval_every=10**5, time_budget_s=2.0),
    str(tmp_path / 'run'),
    str(tmp_path / 'mini'),
    str(tmp_path / 'cache'),
    plots=False,
    test_only=True,
  )
  assert interim['results']['iterations'] == results['iterations']
  assert interim['results']['test'] == pytest.approx(results['test'])


# Two-way tasks of one-color classes, unseen in training at test: a learner
# that adapts (or embeds) is far above chance after 4 iterations (measured:
# 100 % on 20 tasks with inner_lr 0.1, every algorithm); one that does not is
# at chance, 50 % (ANIL at inner_lr 0.01, its head barely moved: 50.0 %).
TWO_WAY = {'train': ['n01', 'n02', 'n03'], 'val': ['n04', 'n05'], 'test': ['n05', 'n06']}


@pytest.mark.parametrize(
  'algorithm',
  [
    # ~70 s each; tests/test_loop.py and the fast tests of the experiment cover the rest.
    pytest.param('protonets', marks=pytest.mark.slow),
    *(
      pytest.param(a, marks=pytest.mark.slow)
      for a in ('anil', 'meta_sgd', 'maml_plus_plus', 'reptile', 'imaml')
    ),
  ],
)
def test_every_algorithm_trains_and_resumes(tmp_path, algorithm):
  """The pipeline with each algorithm of the family: it learns 2-way tasks,
  its meta-parameters (rates, per-step BatchNorm stacks, a headless
  embedding) checkpoint and resume; a rerun trains nothing and tests the
  same parameters."""
  overrides = dict(
    algorithm=algorithm,
    msl_iterations=2,
    outer_schedule='cosine',
    num_ways=2,
    inner_lr=0.1,
    num_test_tasks=20,
  )
  report = train_synthetic_miniimagenet(tmp_path, TWO_WAY, **overrides)
  assert report['results']['iterations'] == 4
  # The Orbax checkpoints of the last step, the TensorBoard events beside log.jsonl.
  assert os.listdir(tmp_path / 'run' / 'state') == ['4']
  assert os.listdir(tmp_path / 'run' / 'best') == [str(report['results']['best_step'])]
  scalars = tensorboard_scalars(tmp_path / 'run' / 'tensorboard')
  assert [step for step, _ in scalars['val/accuracy']] == [4]
  assert report['results']['test']['accuracy'] > 75.0, report['results']  # Chance: 50 %.
  again = train_synthetic_miniimagenet(tmp_path, TWO_WAY, **overrides)
  assert again['results']['test'] == pytest.approx(report['results']['test'])


@pytest.mark.parametrize(
  'overrides, match',
  [
    (dict(inner_optimizer='adam'), 'apply to algorithm reptile only'),
    (dict(inner_batch_size=10), 'apply to algorithm reptile only'),
    (dict(algorithm='reptile', inner_optimizer='rmsprop'), 'inner_optimizer must be one of'),
    (dict(algorithm='reptile', inner_batch_size=0), 'inner_batch_size must be a positive'),
    (dict(cg_damping=1.0), 'apply to algorithm imaml only'),
    (dict(algorithm='imaml', reg_damping=-1.0), 'reg_damping must be non-negative'),
    (dict(train_shots=0), 'train_shots'),
    (dict(outer_clip_norm=0.0), 'outer_clip_norm must be positive'),
  ],
)
def test_algorithm_option_errors(overrides, match):
  with pytest.raises(ValueError, match=match):
    _config(**overrides)


def test_outer_clip_norm_bounds_the_update():
  """outer_clip_norm rescales a meta-gradient of norm 5 to norm 0.5 (seen
  through Reptile's plain SGD at step 1); a small one passes unchanged."""
  import jax.numpy as jnp

  from experiments import algorithms

  algo = algorithms.AlgorithmConfig(algorithm='reptile', outer_lr=1.0, outer_clip_norm=0.5)
  optimizer = algorithms.make_optimizer(algo, num_iterations=100)
  params = {'w': jnp.zeros(2)}
  state = optimizer.init(params)
  big, _ = optimizer.update({'w': jnp.array([3.0, 4.0])}, state, params)
  np.testing.assert_allclose(big['w'], [-0.3, -0.4], rtol=1e-6)
  small, _ = optimizer.update({'w': jnp.array([0.3, 0.0])}, state, params)
  np.testing.assert_allclose(small['w'], [-0.3, 0.0], rtol=1e-6)


@pytest.mark.slow  # ~55 s; the default suite stays under 10 min (docs/testing.md).
def test_reptile_paper_protocol_options(tmp_path):
  """Reptile as its paper trains: more training shots than test shots,
  shuffled supports cut into inner mini-batches, inner Adam. The training
  learner takes mini-batches with Adam, evaluation the whole support; a
  train_shots the training split cannot serve is an error naming it."""
  import jax
  import jax.numpy as jnp
  import optax

  import jaxmaml

  config = synthetic_config(
    algorithm='reptile',
    train_shots=3,
    inner_batch_size=2,
    inner_optimizer='adam',
    inner_lr=0.01,
    outer_lr=1.0,
    outer_schedule='linear',
  )
  # Two ways here (the synthetic splits below serve 1-way tasks only, whose
  # loss is constant).
  model, (learner, eval_learner) = train.model_and_learners(dataclasses.replace(config, num_ways=2))
  x = jax.random.uniform(jax.random.key(0), (3, 16, 16, 3))
  y = jnp.array([0, 1, 1])
  t = jaxmaml.Task(support=(x, y), query=(x[:1], y[:1]))
  params = model.init(jax.random.key(1), x[:1])['params']
  loss = jaxmaml.cross_entropy_loss(jaxmaml.apply_fn(model))
  expected = jaxmaml.reptile(
    loss, num_steps=2, inner_batch_size=2, has_aux=True, inner_optimizer=optax.adam(0.01, b1=0.0)
  )
  got, _ = learner.task_grad(params, t)
  want, _ = expected.task_grad(params, t)
  full, _ = eval_learner.adapt(params, t.support)
  assert rel_l2(got, want) < 1e-5
  assert rel_l2(full, expected.adapt(params, t.support)[0]) > 1e-3  # Not mini-batched.

  # The whole pipeline with these options (3 training shots, shuffled supports).
  report = train_synthetic_miniimagenet(tmp_path, **cli.flatten(config))
  assert report['results']['iterations'] == 4
  with pytest.raises(ValueError, match='The train split cannot serve.*only 6 per class'):
    train_synthetic_miniimagenet(tmp_path, **dict(cli.flatten(config), train_shots=5))


def test_test_only_refuses_non_finite_best_parameters(tmp_path):
  """A best-parameters checkpoint holding NaN (as a diverged run of jaxmaml
  before the finite checks wrote) is refused, not tested as 20 %, and kept."""
  make_miniimagenet(tmp_path / 'mini', per_class=6, size=(24, 24))
  config = synthetic_config()
  model, learners = train.model_and_learners(config)
  state = train.create_train_state(
    config,
    model,
    learners.training,
    algorithms.make_optimizer(config.algo, 1),
    jax.random.key(0),
    3,
  )
  nan_params = jax.tree.map(lambda p: p * np.nan, state.params)
  with checkpoint.checkpoint_manager(str(tmp_path / 'run' / 'best')) as manager:
    checkpoint.save_checkpoint(manager, 4, nan_params, {'step': 4, 'accuracy': 20.0})
  with pytest.raises(ValueError, match='best holds non-finite values'):
    train.train_and_evaluate(
      config,
      str(tmp_path / 'run'),
      str(tmp_path / 'mini'),
      str(tmp_path / 'cache'),
      plots=False,
      test_only=True,
    )
  assert os.listdir(tmp_path / 'run' / 'best') == ['4']
