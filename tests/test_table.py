"""The few-shot table command (``experiments.fewshot.table``): its arithmetic
and formatting on results dicts, the budget split, the reuse of finished runs,
and one end-to-end table on the synthetic miniImageNet (slow)."""

import json
import os

import jax
import pytest

from experiments import cli
from experiments.fewshot import config as config_lib
from experiments.fewshot import table
from experiments.fewshot import train
from tests.utils import make_miniimagenet


def _report(config, accuracy=97.5, ci=0.6, iterations=None, meta_train_s=100.0, **results):
  """A ``results.json`` of ``config`` as ``train.train_and_evaluate`` writes it."""
  return {
    'experiment': 'fewshot',
    'config': cli.flatten(config),
    'results': {
      'test': {'accuracy': accuracy, 'ci95': ci, 'num_tasks': config.num_test_tasks},
      'best_val_accuracy': 98.0,
      'best_step': 1000,
      'iterations': config.num_iterations if iterations is None else iterations,
      'train_time_s': meta_train_s + 5.0,
      'meta_train_time_s': meta_train_s,
      'compile_time_s': 12.0,
      'num_devices': 1,
      **results,
    },
    'environment': {'backend': 'cpu'},
  }


def _row(setting='omniglot_5way1shot', algorithm='maml', seed=0, **report_args):
  run = table.Run(setting, algorithm, seed)
  return table.table_row(run, _report(table.run_config(run), **report_args))


def test_plan_seed_by_seed_then_algorithm_then_setting():
  runs = table.plan(['s1', 's2'], ['maml', 'fomaml'], [0, 1])
  assert [r.name for r in runs[:4]] == [
    's1_maml_seed0',
    's2_maml_seed0',
    's1_fomaml_seed0',
    's2_fomaml_seed0',
  ]
  assert [r.seed for r in runs] == [0] * 4 + [1] * 4


def test_run_config_sets_seed_and_order_keeps_the_split():
  config = table.run_config(table.Run('omniglot_20way1shot', 'fomaml', 2), {'num_iterations': 7})
  base = config_lib.CONFIGS['omniglot_20way1shot']
  assert (config.seed, config.algo.first_order, config.num_iterations) == (2, True, 7)
  assert config.split_seed == base.split_seed and config.algo.inner_lr == base.algo.inner_lr
  assert not table.run_config(table.Run('omniglot_20way1shot', 'maml', 2)).algo.first_order


@pytest.mark.parametrize(
  'total, spent, left, expected',
  [
    (None, 50.0, 3, None),  # No budget: every run to num_iterations.
    (480.0, 0.0, 4, 120.0),
    (480.0, 130.0, 3, 350.0 / 3),  # What is left, over the runs left.
    (480.0, 480.0, 2, 0.0),
    (480.0, 500.0, 1, 0.0),  # Overspent: nothing left, never negative.
  ],
)
def test_run_budget(total, spent, left, expected):
  assert table.run_budget(total, spent, left) == expected


@pytest.mark.parametrize(
  'ours, paper, in_ci, overlap',
  [
    ((99.37, 0.30), (98.7, 0.4), False, True),  # 0.67 apart: within 0.70, not 0.30.
    ((98.5, 0.3), (98.7, 0.4), True, True),
    ((97.5, 0.6), (98.7, 0.4), False, False),  # 1.2 apart > 0.6 + 0.4.
    ((98.0, 0.5), (99.0, 0.5), False, True),  # Touching intervals overlap.
  ],
)
def test_agreement_rule(ours, paper, in_ci, overlap):
  assert table.agreement(*ours, *paper) == {'paper_in_ci': in_ci, 'cis_overlap': overlap}


def test_rows_carry_the_paper_figure_of_their_order():
  second = _row(accuracy=98.9, ci=0.3)
  assert (second['paper_accuracy'], second['paper_ci95']) == (98.7, 0.4)
  assert second['paper_in_ci'] and second['cis_overlap']
  first = _row(algorithm='fomaml', accuracy=98.9, ci=0.3)  # 0.6 from 98.3.
  assert (first['paper_accuracy'], first['paper_ci95']) == (98.3, 0.5)
  assert (first['algorithm_name'], first['paper_in_ci'], first['cis_overlap']) == (
    'first-order MAML',
    False,
    True,
  )
  assert (second['validation_s'], second['device_kind'], second['device_count']) == (5.0, 'cpu', 1)
  none = _row(setting='fc100_5way1shot')  # No MAML figure for FC100.
  assert none['paper_accuracy'] is None and none['cis_overlap'] is None


def test_summary_is_mean_and_sample_std_over_seeds():
  rows = [
    _row(seed=0, accuracy=98.0),
    _row(setting='omniglot_5way5shot', seed=0, accuracy=99.5),
    _row(seed=1, accuracy=99.0),
    _row(seed=2, accuracy=100.0, iterations=400),
  ]
  first, second = table.summarize(rows)
  assert (first['setting'], first['seeds']) == ('omniglot_5way1shot', [0, 1, 2])
  assert first['test_accuracy_mean'] == pytest.approx(99.0)
  assert first['test_accuracy_std'] == pytest.approx(1.0)  # ddof 1: sqrt((1 + 0 + 1) / 2).
  assert first['iterations_mean'] == pytest.approx((60_000 * 2 + 400) / 3)
  assert (second['seeds'], second['test_accuracy_std']) == ([0], None)
  assert (second['paper_accuracy'], second['paper_ci95']) == (99.9, 0.1)


def test_markdown_rows_and_what_is_left():
  rows = [
    _row(seed=0, accuracy=98.6, ci=0.3, iterations=1234),
    _row(seed=1, accuracy=99.0, ci=0.25),
    _row(
      setting='omniglot_20way1shot',
      accuracy=94.9,
      ci=0.5,
      lake_runs={'accuracy': 94.25, 'ci95': 1.5},
    ),
  ]
  content = {
    'time_budget_s': 480.0,
    'overrides': {},
    'rows': rows,
    'summary': table.summarize(rows),
    'pending': ['omniglot_5way5shot_maml_seed1'],
    'skipped': {},
    'failed': {'omniglot_20way5shot_maml_seed0': 'FloatingPointError: diverged'},
  }
  lines = table.markdown(content).splitlines()
  assert 'Meta-training budget: 480 s for the whole table' in lines[2]
  assert table.AGREEMENT in lines
  assert (
    '| omniglot_5way1shot | MAML | 0 | 1234 of 60000 | 100 | 5 | 12.0 | cpu ×1 '
    '| 98.60 ± 0.30 (600) | — | 98.7 ± 0.4 | yes | yes |'
  ) in lines
  assert (
    '| omniglot_20way1shot | MAML | 0 | 60000 | 100 | 5 | 12.0 | cpu ×1 '
    '| 94.90 ± 0.50 (600) | 94.25 ± 1.50 | 95.8 ± 0.3 | no | no |'
  ) in lines
  assert '| omniglot_5way1shot | MAML | 2 (0, 1) | 98.80 ± 0.28 | 30617 | 98.7 ± 0.4 |' in lines
  assert '| omniglot_20way1shot | MAML | 1 (0) | 94.90 (one seed) | 60000 | 95.8 ± 0.3 |' in lines
  assert 'Not run yet: omniglot_5way5shot_maml_seed1.' in lines
  assert 'Failed: omniglot_20way5shot_maml_seed0: FloatingPointError: diverged.' in lines
  empty = table.markdown({**content, 'rows': [], 'summary': [], 'time_budget_s': None})
  assert 'No run has finished yet.' in empty and 'No time budget' in empty


def test_is_complete():
  config = table.run_config(table.Run('omniglot_5way1shot', 'maml', 0), {'num_iterations': 10})
  budgeted = cli.override(config, time_budget_s=30.0)
  done = _report(config)
  assert table.is_complete(done, config, budgeted=False)
  assert table.is_complete(done, config, budgeted=True)
  assert not table.is_complete(None, config, budgeted=False)
  assert not table.is_complete(done, cli.override(config, eval_every=5), budgeted=False)
  # Logging changes nothing that is trained or tested.
  assert table.is_complete(done, cli.override(config, log='jsonl', log_every=7), budgeted=False)
  assert not table.is_complete(done, cli.override(config, seed=1), budgeted=False)
  # Stopped by its own budget: complete for a budgeted table only (the run's
  # budget is not compared: each run gets its share anew).
  stopped = _report(budgeted, iterations=6, meta_train_s=30.2)
  assert table.is_complete(stopped, config, budgeted=True)
  assert not table.is_complete(stopped, config, budgeted=False)
  interrupted = _report(config, iterations=6)  # No budget, short of num_iterations.
  assert not table.is_complete(interrupted, config, budgeted=True)


def _recording_train(calls, overshoot_s=1.0, fail=()):
  """A stand-in for ``train.train_and_evaluate`` that records its calls and
  writes a ``results.json`` as the real one does, having "meta-trained" its
  budget plus ``overshoot_s`` (or 50 s without a budget); raises for the
  workdirs named in ``fail``."""

  def fake(config, workdir, data_dir, cache_dir=None, plots=True, test_only=False):
    calls.append((os.path.basename(workdir), config.time_budget_s, data_dir))
    if os.path.basename(workdir) in fail:
      raise FloatingPointError('meta-training diverged')
    os.makedirs(workdir, exist_ok=True)
    spent = 50.0 if config.time_budget_s is None else config.time_budget_s + overshoot_s
    report = _report(config, accuracy=90.0 + config.seed, meta_train_s=spent)
    train.write_report(report, workdir, plots=False)
    return report

  return fake


def test_finished_runs_are_reused_not_retrained(tmp_path, monkeypatch):
  """Orchestration only: ``train.train_and_evaluate`` is replaced by a
  recording function (``_recording_train``), to check that a finished run is
  reused and not retrained and how the total budget is shared; the real
  training is in the slow end-to-end test below."""
  calls = []
  monkeypatch.setattr(train, 'train_and_evaluate', _recording_train(calls))
  argv = [
    '--settings',
    'omniglot_5way1shot,omniglot_5way5shot',
    '--seeds',
    '0,1',
    '--workdir',
    str(tmp_path),
    '--data_dir',
    '/data',
    '--time_budget_s',
    '100',
    '--num_iterations',
    '10',
    '--no-plots',
  ]
  first = table.main(argv)
  # Each run: what is left over the runs left (every run overshoots by 1 s).
  # 25 = 100 / 4; 74 / 3 = (100 - 26) / 3; 145 / 6 = (74 - 74 / 3 - 1) / 2; 139 / 6.
  budgets = [25.0, 74.0 / 3, 145.0 / 6, 139.0 / 6]
  assert [c[1] for c in calls] == pytest.approx(budgets)
  assert [(c[0], c[2]) for c in calls] == [
    ('omniglot_5way1shot_maml_seed0', '/data'),
    ('omniglot_5way5shot_maml_seed0', '/data'),
    ('omniglot_5way1shot_maml_seed1', '/data'),
    ('omniglot_5way5shot_maml_seed1', '/data'),
  ]
  assert [r['run'] for r in first['rows']] == [c[0] for c in calls]
  assert [s['test_accuracy_mean'] for s in first['summary']] == [90.5, 90.5]
  assert first['pending'] == [] and first['failed'] == {}
  with open(tmp_path / 'table.json') as f:
    assert json.load(f)['rows'] == first['rows']
  assert (tmp_path / 'table.md').read_text().count('| MAML |') == 4 + 2
  assert {r['device_kind'] for r in first['rows']} == {'cpu'}  # The backend: no device_kind.

  calls.clear()
  again = table.main(argv)  # Everything done: nothing trained, the same table.
  assert calls == [] and again['rows'] == first['rows']

  # One run's results gone: that run alone trains, with the budget its
  # finished peers left (their meta-training time counted).
  os.remove(tmp_path / 'omniglot_5way5shot_maml_seed0' / 'results.json')
  spent = sum(
    r['meta_train_s'] for r in first['rows'] if r['run'] != 'omniglot_5way5shot_maml_seed0'
  )
  table.main(argv)
  assert [c[0] for c in calls] == ['omniglot_5way5shot_maml_seed0']
  assert calls[0][1] == pytest.approx(100.0 - spent)

  # A different config (more iterations) is not complete: every run trains again.
  calls.clear()
  table.main([a if a != '10' else '20' for a in argv])
  assert len(calls) == 4


def test_a_failed_run_is_named_and_the_next_ones_run(tmp_path, monkeypatch):
  calls = []
  broken = 'omniglot_5way1shot_maml_seed0'
  monkeypatch.setattr(train, 'train_and_evaluate', _recording_train(calls, fail=(broken,)))
  argv = ['--seeds', '0', '--workdir', str(tmp_path), '--num_iterations', '10', '--no-plots']
  with pytest.raises(SystemExit, match='1 run\\(s\\) failed'):
    table.main(argv)
  assert [c[0] for c in calls] == [
    r.name for r in table.plan(table.DEFAULT_SETTINGS, ['maml'], [0])
  ]
  content = json.loads((tmp_path / 'table.json').read_text())
  assert content['failed'] == {broken: 'FloatingPointError: meta-training diverged'}
  assert len(content['rows']) == 3 and broken not in {r['run'] for r in content['rows']}
  assert f'Failed: {broken}: FloatingPointError' in (tmp_path / 'table.md').read_text()


def test_command_line_refuses_what_the_table_sets(capsys):
  for argv, match in (
    (['--seed', '3'], '--seed is set by the table'),
    (['--first_order'], '--first_order is set by the table'),
    (['--algorithms', 'reptile'], "unknown algorithms \\['reptile'\\]"),
    (['--settings', 'omniglot_7way1shot'], 'unknown settings'),
    (['--settings', 'omniglot_5way1shot_reptile'], 'the table runs MAML configs'),
    (['--seeds', '0,0'], 'without repeats'),
    (['--num_ways', '1'], 'num_ways must be an int >= 2'),
    (['--time_budget_s', '0'], 'time_budget_s must be a finite number > 0'),
    (['--inner_lr', '-1'], 'inner_lr must be positive'),
  ):
    with pytest.raises(SystemExit):
      table.parse_args(argv)
    assert match.replace('\\', '') in capsys.readouterr().err
  spec, _ = table.parse_args(['--settings', 'all', '--seeds', '4', '--rotate', '--no-plots'])
  assert [r.setting for r in spec.runs] == list(config_lib.MAML_CONFIGS)
  assert 'omniglot_5way1shot_reptile' in config_lib.CONFIGS
  assert 'omniglot_5way1shot_reptile' not in config_lib.MAML_CONFIGS
  assert spec.overrides == {'rotate': True} and not spec.plots
  assert spec.data_dirs[spec.runs[0]] == config_lib.DEFAULT_DATA_DIRS['omniglot']
  assert spec.data_dirs[spec.runs[-1]] == config_lib.DEFAULT_DATA_DIRS['tiered_imagenet']


# Two-way tasks of one-color classes (test_fewshot_experiment.TWO_WAY).
TWO_WAY = {'train': ['n01', 'n02', 'n03'], 'val': ['n04', 'n05'], 'test': ['n05', 'n06']}


@pytest.mark.slow  # Two real runs of the synthetic miniImageNet, then a rerun.
def test_table_end_to_end_and_a_rerun_trains_nothing(tmp_path, monkeypatch):
  """One tiny setting (miniImageNet 2-way 1-shot on the synthetic miniature,
  by passthrough overrides) x 2 seeds through the real training: table.json
  has both rows with real accuracies, table.md and table.png exist; the same
  command again trains nothing."""
  make_miniimagenet(tmp_path / 'mini', per_class=6, size=(24, 24), classes=TWO_WAY)
  argv = [
    '--settings',
    'miniimagenet_5way1shot',
    '--seeds',
    '0,1',
    '--workdir',
    str(tmp_path / 'table'),
    '--data_dir',
    str(tmp_path / 'mini'),
    '--cache_dir',
    str(tmp_path / 'cache'),
    '--time_budget_s',
    '600',
    *(
      '--num_ways 2 --num_queries 2 --image_size 16 --num_iterations 4 --eval_every 4 '
      '--num_val_tasks 4 --num_test_tasks 20 --train_inner_steps 1 --eval_inner_steps 1 '
      '--inner_lr 0.1 --log jsonl'
    ).split(),
  ]
  first = table.main(argv)
  rows = first['rows']
  assert [(r['setting'], r['seed']) for r in rows] == [
    ('miniimagenet_5way1shot', 0),
    ('miniimagenet_5way1shot', 1),
  ]
  for row in rows:
    assert row['iterations'] == 4 and row['test_tasks'] == 20
    assert 0.0 < row['test_accuracy'] <= 100.0 and row['test_ci95'] >= 0.0
    assert row['meta_train_s'] > 0 and row['compile_s'] > 0
    assert row['device_kind'] == jax.devices()[0].device_kind
    with open(tmp_path / 'table' / row['run'] / 'results.json') as f:
      assert json.load(f)['results']['test']['accuracy'] == row['test_accuracy']
    assert (row['paper_accuracy'], row['paper_ci95']) == (48.70, 1.84)
  [summary] = first['summary']
  assert summary['seeds'] == [0, 1] and summary['test_accuracy_std'] is not None
  with open(tmp_path / 'table' / 'table.json') as f:
    assert json.load(f)['rows'] == rows
  assert os.path.getsize(tmp_path / 'table' / 'table.png') > 0
  assert (
    '| miniimagenet_5way1shot | MAML | 1 | 4 |' in (tmp_path / 'table' / 'table.md').read_text()
  )

  def no_training(*args, **kwargs):
    raise AssertionError('a finished run was trained again')

  monkeypatch.setattr(train, 'train_and_evaluate', no_training)
  again = table.main(argv)
  assert again['rows'] == rows
