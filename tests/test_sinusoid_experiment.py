"""The sinusoid experiment end to end on a tiny configuration."""

import json
import math
import os

import pytest

from experiments import cli
from experiments.sinusoid import config as config_lib
from experiments.sinusoid import main
from experiments.sinusoid import train

TINY = dict(
  shots=(10,),
  num_iterations=2000,
  num_val_tasks=50,
  num_test_tasks=200,
  num_test_query=50,
  eval_inner_steps=3,
  log_every=100,
  checkpoint_every=1000,
)


def _config(**overrides):
  return cli.override(config_lib.Config(), **overrides)


@pytest.mark.slow  # ~34 s; `make run` runs the same experiment.
def test_maml_beats_pretrained_after_one_step(tmp_path):
  config = _config(**TINY)
  report = train.train_and_evaluate(config, str(tmp_path))
  res = report['results']['K=10']
  maml, pre = res['maml'], res['pretrained']
  assert len(maml['mse_mean']) == len(pre['mse_mean']) == 4
  # After one step MAML is better than the fine-tuned pretrained network, by
  # more than both confidence intervals together.
  assert maml['mse_mean'][1] + maml['mse_ci95'][1] < pre['mse_mean'][1] - pre['mse_ci95'][1]
  # Adapting helps MAML: one step is far below zero steps.
  assert maml['mse_mean'][1] < 0.7 * maml['mse_mean'][0]
  assert pre['fine_tune_lr'] in config.pretrained_lr_grid
  for name in (
    'results.json',
    'mse_vs_steps.png',
    'predictions.png',
  ):
    assert os.path.getsize(tmp_path / name) > 0
  for name in ('maml_k10', 'pretrained_k10'):  # Orbax checkpoint directories.
    assert os.listdir(tmp_path / name) == ['2000']
  with open(tmp_path / 'results.json') as f:
    assert json.load(f)['results']['K=10']['maml']['iterations'] == 2000


@pytest.mark.slow  # ~62 s; tests/test_loop.py checks bit-identical resume.
def test_resumed_training_equals_uninterrupted(tmp_path):
  """Training 300 then resuming to 600 gives the same model as 600 at once."""
  small = dict(TINY, num_iterations=300, num_test_tasks=20, num_val_tasks=10, checkpoint_every=100)
  train.train_and_evaluate(_config(**small), str(tmp_path / 'a'), plots=False)
  resumed = train.train_and_evaluate(
    _config(**dict(small, num_iterations=600)), str(tmp_path / 'a'), plots=False
  )
  fresh = train.train_and_evaluate(
    _config(**dict(small, num_iterations=600)), str(tmp_path / 'b'), plots=False
  )
  for method in ('maml', 'pretrained'):
    a = resumed['results']['K=10'][method]['mse_mean']
    b = fresh['results']['K=10'][method]['mse_mean']
    assert a == pytest.approx(b, rel=1e-5)
  with pytest.raises(ValueError, match='different training config'):
    train.train_and_evaluate(
      _config(**dict(small, inner_lr=0.02)), str(tmp_path / 'a'), plots=False
    )


def test_command_line_flags():
  config, args = main.parse_args(
    ['--shots', '5', '--num_iterations', '12', '--first_order', '--workdir', '/tmp/x']
  )
  assert config.shots == (5,) and config.num_iterations == 12 and config.algo.first_order
  assert args.workdir == '/tmp/x'
  assert main.parse_args(['--full'])[0].num_iterations == config_lib.PAPER_ITERATIONS
  with pytest.raises(SystemExit):
    main.parse_args(['--num_iterations', '0'])
  with pytest.raises(SystemExit):
    main.parse_args(['--no_such_flag'])
  # The flags of a config, nested algorithm fields included, parse back to it.
  config = _config(shots=(3, 7), hidden=(20,), algorithm='meta_sgd', first_order=True)
  assert main.parse_args(cli.to_flags(config, config_lib.Config()))[0] == config


@pytest.mark.slow
def test_default_run_reaches_literature_maml_numbers(tmp_path):
  """The default command's configuration (10k iterations, about a minute here)
  is at or below the MAML numbers quoted by the Meta-SGD paper after one step:
  1.13 ± 0.18 (K=5) and 0.77 ± 0.11 (K=10)."""
  report = train.train_and_evaluate(config_lib.Config(), str(tmp_path), plots=False)
  assert report['results']['K=5']['maml']['mse_mean'][1] < 1.13
  assert report['results']['K=10']['maml']['mse_mean'][1] < 0.77


def test_divergence_stops_with_a_clear_error(tmp_path):
  """A diverging run stops at the first logged non-finite loss, not later with NaN results."""
  config = _config(
    **dict(TINY, num_iterations=500, outer_lr=1e30, log_every=10, checkpoint_every=100)
  )
  with pytest.raises(FloatingPointError, match='meta-training diverged'):
    train.train_and_evaluate(config, str(tmp_path), plots=False)


def test_divergence_between_log_steps_never_reaches_a_checkpoint(tmp_path):
  """Logged every 1000 iterations, checkpointed every 50: the run stops at the
  first checkpoint step with nothing written, and a rerun does not resume from
  a non-finite state (the issue's case: the last checkpoint was all NaN)."""
  config = _config(
    **dict(TINY, num_iterations=500, outer_lr=1e30, log_every=1000, checkpoint_every=50)
  )
  for _ in range(2):
    with pytest.raises(FloatingPointError, match='iteration 50;.*no checkpoint was written'):
      train.train_and_evaluate(config, str(tmp_path), plots=False)
    assert os.listdir(tmp_path / 'maml_k10') == []


SHORT = dict(TINY, num_iterations=20, num_val_tasks=10, num_test_tasks=20, checkpoint_every=10)


def test_a_scheduled_run_resumes_to_its_count_only(tmp_path):
  """The linear schedule depends on num_iterations: extending is refused; the
  same count resumes, with the same results fields."""
  config = _config(**dict(SHORT, outer_schedule='linear'))
  first = train.train_and_evaluate(config, str(tmp_path), plots=False)['results']['K=10']
  again = train.train_and_evaluate(config, str(tmp_path), plots=False)['results']['K=10']
  for method in ('maml', 'pretrained'):
    assert again[method]['final_train_loss'] == first[method]['final_train_loss'] is not None
    assert again[method]['mse_mean'] == first[method]['mse_mean']
  with pytest.raises(ValueError, match=r'outer_schedule_iterations=20 \(now 40\).*that count'):
    train.train_and_evaluate(cli.override(config, num_iterations=40), str(tmp_path), plots=False)


@pytest.mark.slow  # ~35 s; tests/test_precision.py checks bfloat16.
def test_bfloat16_short_run_stays_finite_and_learns(tmp_path):
  config = _config(**dict(TINY, num_iterations=500, precision='bfloat16'))
  report = train.train_and_evaluate(config, str(tmp_path), plots=False)
  maml = report['results']['K=10']['maml']
  assert all(map(math.isfinite, maml['mse_mean'])) and maml['num_diverged'] == [0] * 4
  # Adapting helps (measured: 2.98 -> 2.64 after one step, 500 iterations).
  assert maml['mse_mean'][1] < 0.95 * maml['mse_mean'][0]
