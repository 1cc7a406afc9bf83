"""Every rate and size of the experiments' configs is refused when bad (0,
negative, NaN, inf, a wrong type), at construction, with an error that names
the field (the flag) and the range it takes; and the command lines refuse them
before loading data or compiling anything."""

import math
import os
import re
import subprocess
import sys

import jax
import pytest

from experiments import cli
from experiments.algorithms import AlgorithmConfig
from experiments.fewshot import config as fewshot_config
from experiments.fewshot import main as fewshot_main
from experiments.fewshot import train as fewshot_train
from experiments.sinusoid import config as sinusoid_config
from experiments.sinusoid import main as sinusoid_main
from experiments.sinusoid import train as sinusoid_train

ALGO = AlgorithmConfig
FEWSHOT = fewshot_config.Config
SINUSOID = sinusoid_config.Config
# The command lines, by name: ``argv -> (config, args)``.
PARSERS = {'fewshot': fewshot_main.parse_args, 'sinusoid': sinusoid_main.parse_args}
NAN, INF = math.nan, math.inf

RATE = 'must be positive and finite'
POSITIVE_INT = 'must be a positive int'
OPTIONAL_INT = 'must be a positive int or None'
BOOL = 'must be a bool'
SEED = r'must be an int in \[0, 4294967295\]'


PREFIXES = {ALGO: 'algo', FEWSHOT: 'fewshot', SINUSOID: 'sinusoid'}


def case(target, overrides, error, match, name):
  """A row of ``TABLE``, its id ``<config or command line>-<name>``."""
  prefix = f'{target}_cli' if isinstance(target, str) else PREFIXES[target]
  return pytest.param(target, overrides, error, match, id=f'{prefix}-{name}')


# (config class or command line, overrides or argv, expected error, message regex).
TABLE = [
  # AlgorithmConfig: the inner and outer rates.
  case(ALGO, dict(inner_lr=-0.4), ValueError, f'inner_lr {RATE}, got -0.4', 'inner_lr-negative'),
  case(ALGO, dict(inner_lr=0.0), ValueError, f'inner_lr {RATE}', 'inner_lr-zero'),
  case(ALGO, dict(inner_lr=NAN), ValueError, f'inner_lr {RATE}', 'inner_lr-nan'),
  case(ALGO, dict(inner_lr=INF), ValueError, f'inner_lr {RATE}', 'inner_lr-inf'),
  case(ALGO, dict(inner_lr='0.1'), TypeError, 'inner_lr must be a positive real', 'inner_lr-str'),
  case(ALGO, dict(inner_lr=True), TypeError, 'inner_lr must be a positive real', 'inner_lr-bool'),
  case(ALGO, dict(outer_lr=-1e-3), ValueError, f'outer_lr {RATE}', 'outer_lr-negative'),
  case(ALGO, dict(outer_lr=0.0), ValueError, f'outer_lr {RATE}', 'outer_lr-zero'),
  case(ALGO, dict(outer_lr=NAN), ValueError, f'outer_lr {RATE}', 'outer_lr-nan'),
  case(ALGO, dict(outer_lr=-INF), ValueError, f'outer_lr {RATE}', 'outer_lr-minus-inf'),
  case(
    ALGO,
    dict(outer_lr=0.0, outer_schedule='cosine'),
    ValueError,
    f'outer_lr {RATE}',
    'outer_lr-zero-cosine',
  ),
  case(ALGO, dict(first_order=1), TypeError, f'first_order {BOOL}', 'first_order-int'),
  # AlgorithmConfig: checked before (they pass today).
  case(ALGO, dict(algorithm='mamal'), ValueError, 'algorithm must be one of', 'algorithm-typo'),
  case(ALGO, dict(train_inner_steps=0), ValueError, 'train_inner_steps', 'train_inner_steps-0'),
  case(ALGO, dict(eval_inner_steps=-1), ValueError, 'eval_inner_steps', 'eval_inner_steps-neg'),
  case(ALGO, dict(cg_steps=2.5), TypeError, f'cg_steps {POSITIVE_INT}', 'cg_steps-float'),
  case(ALGO, dict(msl_iterations=-1), ValueError, 'msl_iterations must be an int >= 0', 'msl-neg'),
  case(ALGO, dict(imaml_reg=0.0), ValueError, f'imaml_reg {RATE}', 'imaml_reg-zero'),
  case(ALGO, dict(imaml_reg=NAN), ValueError, f'imaml_reg {RATE}', 'imaml_reg-nan'),
  case(
    ALGO,
    dict(algorithm='imaml', cg_damping=NAN),
    ValueError,
    'cg_damping must be non-negative and finite',
    'cg_damping-nan',
  ),
  case(
    ALGO,
    dict(algorithm='reptile', inner_batch_size=0),
    ValueError,
    f'inner_batch_size {OPTIONAL_INT}',
    'inner_batch_size-0',
  ),
  case(ALGO, dict(outer_clip_norm=0.0), ValueError, f'outer_clip_norm {RATE}', 'clip-zero'),
  case(ALGO, dict(outer_clip_norm=INF), ValueError, f'outer_clip_norm {RATE}', 'clip-inf'),
  case(ALGO, dict(precision='float16'), ValueError, 'precision must be one of', 'precision'),
  # The few-shot config: sizes and counts.
  case(FEWSHOT, dict(num_ways=0), ValueError, f'num_ways {POSITIVE_INT}', 'ways-0'),
  case(FEWSHOT, dict(num_ways=2.5), TypeError, f'num_ways {POSITIVE_INT}', 'ways-float'),
  case(FEWSHOT, dict(num_shots=0), ValueError, f'num_shots {POSITIVE_INT}', 'shots-0'),
  case(FEWSHOT, dict(num_queries=0), ValueError, f'num_queries {OPTIONAL_INT}', 'queries-0'),
  case(FEWSHOT, dict(train_shots=-1), ValueError, f'train_shots {OPTIONAL_INT}', 'train_shots'),
  case(FEWSHOT, dict(meta_batch_size=0), ValueError, 'meta_batch_size', 'meta_batch-0'),
  case(FEWSHOT, dict(num_devices=0), ValueError, f'num_devices {OPTIONAL_INT}', 'devices-0'),
  case(FEWSHOT, dict(num_iterations=0), ValueError, 'num_iterations', 'iterations-0'),
  case(FEWSHOT, dict(image_size=0), ValueError, f'image_size {POSITIVE_INT}', 'image_size-0'),
  case(
    FEWSHOT,
    dict(dataset='miniimagenet', image_size=8),
    ValueError,
    "image_size must be >= 16 for dataset 'miniimagenet'",
    'image_size-pooled',
  ),
  case(FEWSHOT, dict(num_val_tasks=1), ValueError, 'num_val_tasks must be an int >= 2', 'val-1'),
  case(FEWSHOT, dict(num_test_tasks=0), ValueError, 'num_test_tasks must be an int >= 2', 'test'),
  case(FEWSHOT, dict(eval_batch_size=0), ValueError, 'eval_batch_size', 'eval_batch-0'),
  case(FEWSHOT, dict(eval_every=0), ValueError, f'eval_every {POSITIVE_INT}', 'eval_every-0'),
  case(FEWSHOT, dict(log_every=-5), ValueError, f'log_every {POSITIVE_INT}', 'log_every-neg'),
  case(FEWSHOT, dict(checkpoint_every=0), ValueError, 'checkpoint_every', 'checkpoint_every'),
  case(FEWSHOT, dict(task_batch_size=0, task_map='map'), ValueError, OPTIONAL_INT, 'task_batch'),
  case(
    FEWSHOT,
    dict(task_batch_size=4, task_map='vmap'),
    ValueError,
    "task_batch_size applies to task_map 'map' only",
    'task_batch-without-map',
  ),
  # The few-shot config: the time budget, seeds, flags and choices.
  case(FEWSHOT, dict(time_budget_s=0.0), ValueError, f'time_budget_s {RATE}', 'budget-zero'),
  case(FEWSHOT, dict(time_budget_s=-1.0), ValueError, f'time_budget_s {RATE}', 'budget-neg'),
  case(FEWSHOT, dict(time_budget_s=NAN), ValueError, f'time_budget_s {RATE}', 'budget-nan'),
  case(FEWSHOT, dict(time_budget_s=INF), ValueError, f'time_budget_s {RATE}', 'budget-inf'),
  case(FEWSHOT, dict(seed=-1), ValueError, f'seed {SEED}, got -1', 'seed-neg'),
  case(FEWSHOT, dict(seed=2**32), ValueError, f'seed {SEED}', 'seed-past-32-bits'),
  case(FEWSHOT, dict(seed=1.5), TypeError, f'seed {SEED}', 'seed-float'),
  case(FEWSHOT, dict(split_seed=-1), ValueError, f'split_seed {SEED}', 'split_seed-neg'),
  case(FEWSHOT, dict(rotate='yes'), TypeError, f'rotate {BOOL}', 'rotate-str'),
  case(FEWSHOT, dict(bn_scale=0), TypeError, f'bn_scale {BOOL}', 'bn_scale-int'),
  case(FEWSHOT, dict(async_checkpoints=None), TypeError, BOOL, 'async_checkpoints-none'),
  case(FEWSHOT, dict(conv='cudnn'), ValueError, 'conv must be one of', 'conv'),
  case(FEWSHOT, dict(pooling='avg'), ValueError, 'pooling must be one of', 'pooling'),
  case(FEWSHOT, dict(dataset='cifar'), ValueError, 'dataset must be one of', 'dataset'),
  case(FEWSHOT, dict(batch_norm='batch'), ValueError, 'batch_norm must be one of', 'batch_norm'),
  case(FEWSHOT, dict(task_map='pmap'), ValueError, 'task_map must be one of', 'task_map'),
  case(FEWSHOT, dict(log='csv'), ValueError, 'log must be a comma-separated list', 'log'),
  case(FEWSHOT, dict(inner_lr=-0.4), ValueError, f'inner_lr {RATE}', 'nested-inner_lr'),
  # The sinusoid config.
  case(SINUSOID, dict(hidden=(0,)), ValueError, rf'hidden\[0\] {POSITIVE_INT}', 'hidden-0'),
  case(SINUSOID, dict(hidden=(40, -1)), ValueError, r'hidden\[1\]', 'hidden-neg'),
  case(SINUSOID, dict(hidden=[40]), TypeError, 'hidden must be a tuple', 'hidden-list'),
  case(SINUSOID, dict(pretrained_lr_grid=(NAN,)), ValueError, rf'grid\[0\] {RATE}', 'grid-nan'),
  case(SINUSOID, dict(pretrained_lr_grid=(0.01, -0.1)), ValueError, r'grid\[1\]', 'grid-neg'),
  case(SINUSOID, dict(pretrained_lr_grid=(INF,)), ValueError, RATE, 'grid-inf'),
  case(SINUSOID, dict(pretrained_lr_grid=()), ValueError, 'grid must not be empty', 'grid-empty'),
  case(SINUSOID, dict(shots=()), ValueError, 'shots must not be empty', 'shots-empty'),
  case(SINUSOID, dict(shots=(0,)), ValueError, rf'shots\[0\] {POSITIVE_INT}', 'shots-0'),
  case(SINUSOID, dict(shots=(5.0,)), TypeError, r'shots\[0\]', 'shots-float'),
  case(SINUSOID, dict(shots=(5, 10, 5)), ValueError, 'shots must not repeat', 'shots-repeat'),
  case(SINUSOID, dict(num_query=0), ValueError, f'num_query {OPTIONAL_INT}', 'num_query-0'),
  case(SINUSOID, dict(num_iterations=0), ValueError, 'num_iterations', 'iterations-0'),
  case(SINUSOID, dict(meta_batch_size=-2), ValueError, 'meta_batch_size', 'meta_batch-neg'),
  case(SINUSOID, dict(num_val_tasks=0), ValueError, 'num_val_tasks', 'val-0'),
  case(SINUSOID, dict(num_test_tasks=1), ValueError, 'num_test_tasks must be an int >= 2', 'test'),
  case(SINUSOID, dict(num_test_query=0), ValueError, 'num_test_query', 'test_query-0'),
  case(SINUSOID, dict(log_every=0), ValueError, 'log_every', 'log_every-0'),
  case(SINUSOID, dict(checkpoint_every=0), ValueError, 'checkpoint_every', 'checkpoint_every'),
  case(SINUSOID, dict(seed=-3), ValueError, f'seed {SEED}', 'seed-neg'),
  case(SINUSOID, dict(outer_lr=NAN), ValueError, f'outer_lr {RATE}', 'nested-outer_lr'),
  case(SINUSOID, dict(algorithm='protonets'), ValueError, 'for classification', 'protonets'),
  # The command lines: a usage error (exit status 2) naming the flag.
  case('fewshot', ['--num_ways', '1'], SystemExit, 'num_ways must be an int >= 2', 'ways-1'),
  case('fewshot', ['--inner_lr', '-0.4'], SystemExit, f'inner_lr {RATE}', 'inner_lr-neg'),
  case('fewshot', ['--outer_lr', '0'], SystemExit, f'outer_lr {RATE}', 'outer_lr-0'),
  case('fewshot', ['--outer_lr', 'nan'], SystemExit, f'outer_lr {RATE}', 'outer_lr-nan'),
  case('fewshot', ['--time_budget_s', 'inf'], SystemExit, 'time_budget_s', 'budget-inf'),
  case(
    'fewshot',
    ['--config', 'cifar_fs_5way1shot', '--image_size', '8'],
    SystemExit,
    'image_size must be >= 16',
    'image_size-8',
  ),
  case('fewshot', ['--num_iterations', '1.5'], SystemExit, 'invalid int value', 'argparse-int'),
  case('sinusoid', ['--pretrained_lr_grid', 'nan'], SystemExit, r'grid\[0\]', 'grid-nan'),
  case('sinusoid', ['--hidden', '0'], SystemExit, rf'hidden\[0\] {POSITIVE_INT}', 'hidden-0'),
  case('sinusoid', ['--shots', '5', '5'], SystemExit, 'shots must not repeat', 'shots-repeat'),
  case('sinusoid', ['--inner_lr=-inf'], SystemExit, f'inner_lr {RATE}', 'inner_lr-minus-inf'),
  case('sinusoid', ['--num_iterations', '0'], SystemExit, 'num_iterations', 'iterations-0'),
]


# TABLE runs in tests/test_sweep.py (test_config), with the other bad inputs.


@pytest.mark.parametrize(
  'target, overrides',
  [
    pytest.param(ALGO, dict(inner_lr=1e-6, outer_lr=1e30), id='algo-tiny-and-huge-rates'),
    pytest.param(ALGO, dict(algorithm='imaml', cg_damping=0.0), id='algo-zero-damping'),
    pytest.param(FEWSHOT, dict(num_ways=2, num_val_tasks=2, num_test_tasks=2), id='fewshot-2'),
    pytest.param(FEWSHOT, dict(image_size=8), id='fewshot-omniglot-small-image'),
    pytest.param(FEWSHOT, dict(dataset='cub', image_size=16), id='fewshot-pooled-16'),
    pytest.param(FEWSHOT, dict(seed=0, split_seed=2**32 - 1), id='fewshot-seed-bounds'),
    pytest.param(FEWSHOT, dict(num_devices=4, time_budget_s=0.5), id='fewshot-devices-budget'),
    pytest.param(FEWSHOT, dict(task_map='map', task_batch_size=4), id='fewshot-task-batch'),
    pytest.param(FEWSHOT, dict(num_ways=1), id='fewshot-one-way-programmatic'),
    pytest.param(SINUSOID, dict(hidden=(), shots=(1,)), id='sinusoid-linear-1-shot'),
    pytest.param(SINUSOID, dict(pretrained_lr_grid=(1.0,)), id='sinusoid-one-rate'),
  ],
)
def test_edge_values_are_accepted(target, overrides):
  config = cli.override(target(), **overrides)
  assert all(cli.flatten(config)[k] == v for k, v in overrides.items())


@pytest.mark.parametrize(
  'module, name',
  [(fewshot_config, n) for n in fewshot_config.CONFIGS]
  + [(sinusoid_config, 'default'), (fewshot_config, 'default')],
)
def test_defaults_and_named_configs_stay_valid(module, name):
  config = module.Config() if name == 'default' else module.CONFIGS[name]
  assert cli.override(config) == config  # Re-checked on construction.


def test_named_configs_parse_on_the_command_line():
  for name in fewshot_config.CONFIGS:
    assert fewshot_main.parse_args(['--config', name])[0] == fewshot_config.CONFIGS[name]
  assert sinusoid_main.parse_args([])[0] == sinusoid_config.Config()


@pytest.mark.parametrize(
  'overrides, match',
  [
    (dict(num_devices=16), 'num_devices must be between 1 and the 8 available'),
    (dict(num_devices=4, meta_batch_size=6), r'meta_batch_size \(6 tasks\) .* devices \(4'),
    (dict(meta_batch_size=12), r'meta_batch_size \(12 tasks\) .* devices \(8'),  # All 8.
  ],
  ids=['too-many', 'indivisible', 'indivisible-by-all'],
)
def test_check_devices_names_the_flags(overrides, match, monkeypatch):
  """Against the devices there are (8 here, as if on a TPU host): the few-shot
  command line checks before anything is loaded."""
  monkeypatch.setattr(jax, 'device_count', lambda: 8)
  fewshot_main.check_devices(cli.override(FEWSHOT(), num_devices=8))  # Meta-batch 32.
  with pytest.raises(ValueError, match=match):
    fewshot_main.check_devices(cli.override(FEWSHOT(), **overrides))


def _refuse_training(*args, **kwargs):
  raise AssertionError('train_and_evaluate called: the flags were not checked first')


@pytest.mark.parametrize(
  'argv, match',
  [
    (['--num_ways', '1'], 'num_ways must be an int >= 2'),
    (['--inner_lr', '-0.4'], f'inner_lr {RATE}'),
    (['--outer_lr', '0', '--test_only'], f'outer_lr {RATE}'),
    # Checked against the devices there are, once JAX (maybe distributed) is up.
    (['--num_devices', str(jax.device_count() + 1)], 'num_devices must be between 1 and the'),
  ],
  ids=['num_ways-1', 'inner_lr-negative', 'outer_lr-zero', 'num_devices-too-many'],
)
def test_fewshot_main_refuses_before_loading(argv, match, tmp_path, monkeypatch, capsys):
  monkeypatch.setattr(fewshot_train, 'train_and_evaluate', _refuse_training)
  missing = str(tmp_path / 'no_such_data')
  workdir = tmp_path / 'run'
  with pytest.raises(SystemExit) as raised:
    fewshot_main.main([*argv, '--data_dir', missing, '--workdir', str(workdir)])
  code = raised.value.code
  message = code if isinstance(code, str) else capsys.readouterr().err
  assert re.search(match, message), message
  assert not workdir.exists()


@pytest.mark.parametrize(
  'argv, match',
  [
    (['--pretrained_lr_grid', '0.01', 'nan'], rf'pretrained_lr_grid\[1\] {RATE}, got nan'),
    (['--hidden', '40', '0'], rf'hidden\[1\] {POSITIVE_INT}, got 0'),
    (['--outer_lr=-1e-3'], f'outer_lr {RATE}'),
  ],
  ids=['grid-nan', 'hidden-0', 'outer_lr-negative'],
)
def test_sinusoid_main_refuses_before_training(argv, match, tmp_path, monkeypatch, capsys):
  monkeypatch.setattr(sinusoid_train, 'train_and_evaluate', _refuse_training)
  with pytest.raises(SystemExit) as raised:
    sinusoid_main.main([*argv, '--workdir', str(tmp_path / 'run')])
  assert raised.value.code == 2
  assert re.search(match, capsys.readouterr().err)
  assert not (tmp_path / 'run').exists()


@pytest.mark.parametrize(
  'module, argv, match',
  [
    (
      'experiments.fewshot.main',
      ['--outer_lr', 'nan', '--data_dir', 'NO_SUCH_DIR'],
      f'error: outer_lr {RATE}, got nan',
    ),
    (
      'experiments.sinusoid.main',
      ['--pretrained_lr_grid', 'nan'],
      rf'error: pretrained_lr_grid\[0\] {RATE}, got nan',
    ),
  ],
  ids=['fewshot', 'sinusoid'],
)
def test_command_line_process_exits_with_the_flag_error(module, argv, match, tmp_path):
  """The real command: a usage error at once, no traceback, nothing written."""
  argv = [a.replace('NO_SUCH_DIR', str(tmp_path / 'no_such_data')) for a in argv]
  result = subprocess.run(
    [sys.executable, '-m', module, *argv, '--workdir', str(tmp_path / 'run')],
    capture_output=True,
    text=True,
    cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    timeout=120,
  )
  assert result.returncode == 2, result.stderr[-2000:]
  assert re.search(match, result.stderr), result.stderr[-2000:]
  assert 'Traceback' not in result.stderr and 'compiled' not in result.stdout
  assert not (tmp_path / 'run').exists()
