"""Smoke tests of the benchmark harness: schema, finite and positive numbers,
and the properties a correct measurement must show."""

import json
import math
import os

import numpy as np
import pytest

from benchmarks import measure
from benchmarks.harness import cli
from benchmarks.harness import configs
from benchmarks.harness import kernels
from benchmarks.harness import reporting
from benchmarks.harness import sections
from benchmarks.harness import workers
from experiments.fewshot import config as fewshot_config

POSITIVE = (
  'lower_s',
  'compile_s',
  'step_s_median',
  'tasks_per_s',
  'model_flops_per_step',
  'achieved_flop_per_s',
  'xla_temp_bytes',
  'xla_peak_bytes',
  'peak_rss_bytes',
)


@pytest.mark.slow  # ~40 s; the family rows test the same measurement in the default suite.
def test_sweep_schema_and_memory(tmp_path):
  cli.main(
    [
      '--sections',
      'sweep',
      '--sweep_shapes',
      'sinusoid',
      '--sweep_steps',
      '4',
      '--repeats',
      '2',
      '--min_block_s',
      '0.01',
      '--matmul_size',
      '128',
      '--out',
      str(tmp_path),
    ]
  )
  report = json.loads((tmp_path / 'harness.json').read_text())
  assert report['environment']['backend'] == 'cpu'
  assert report['matmul']['flop_per_s'] > 0
  rows = {(r['variant'], r['inner_steps']): r for r in report['sweep']}
  assert set(rows) == {(v, 4) for v in configs.VARIANTS}
  for r in rows.values():
    for key in POSITIVE:
      assert math.isfinite(r[key]) and r[key] > 0, (key, r)
    lo, hi = r['step_s_iqr']
    assert 0 < lo <= r['step_s_median'] <= hi
    assert r['peak_rss_bytes'] >= r['rss_before_build_bytes']
  # Second order does more arithmetic than first order; remat does not change
  # the model FLOPs but cuts the scratch memory of 4 inner steps.
  assert (
    rows['second_order', 4]['model_flops_per_step'] > rows['first_order', 4]['model_flops_per_step']
  )
  for remat in ('second_order_remat', 'second_order_remat_sqrt'):
    assert rows[remat, 4]['model_flops_per_step'] == rows['second_order', 4]['model_flops_per_step']
    assert rows[remat, 4]['xla_temp_bytes'] < rows['second_order', 4]['xla_temp_bytes']
  for name in ('harness.md', 'sweep.png'):
    assert os.path.getsize(tmp_path / name) > 0


def test_bad_arguments_are_usage_errors():
  for argv in (['--repeats', '0'], ['--sweep_steps', '0', '2'], ['--budget_s', '-1']):
    with pytest.raises(SystemExit):
      cli.main(argv)


@pytest.mark.parametrize('warmup_blocks', [0, 2])
@pytest.mark.parametrize('carried', [False, True])
def test_time_blocks_counts_its_calls(carried, warmup_blocks):
  """One calibrating call, then every block; a carried step gets its last output."""
  import jax.numpy as jnp

  calls = []
  if carried:
    fn, carry = lambda x: (calls.append(x) or x + 1,), (jnp.zeros(()),)
  else:
    fn, carry = lambda: calls.append(None), None
  times = measure.time_blocks(fn, 1e-9, 3, carry=carry, warmup_blocks=warmup_blocks)
  assert len(times) == 3 and all(t > 0 for t in times)
  assert len(calls) == 1 + warmup_blocks + 3
  if carried:
    assert [float(x) for x in calls] == list(range(len(calls)))


def _step_row(shape, variant, **extra):
  return {
    'shape': shape,
    'variant': variant,
    'inner_steps': 1,
    'lower_s': 0.1,
    'compile_s': 0.2,
    'step_s_median': 1e-3,
    'step_s_iqr': [9e-4, 1.1e-3],
    'tasks_per_s': 25e3,
    'achieved_flop_per_s': 1e10,
    'xla_temp_bytes': 2**20,
    'xla_peak_bytes': 2**21,
    'peak_rss_bytes': 2**28,
    **extra,
  }


def test_markdown_follows_the_report_layout():
  """Tables in the order of ``STEP_TABLES`` then ``ACCURACY_TABLES``, whatever
  the report's order; skipped sections as a line each."""
  test = {'accuracy': 98.0, 'ci95': 1.0, 'num_tasks': 600}
  report = {
    'matmul': {'n': 8, 'flop_per_s': 1e11},
    'accuracy': [
      {'variant': 'first_order', 'meta_train_time_s': 30.2, 'iterations': 7, 'test': test}
    ],
    'devices': [_step_row('omniglot_5way1shot', 'second_order', num_devices=2)],
    'variants': [_step_row('sinusoid', 'second_order')],
    'family_accuracy': {'skipped': 'no Omniglot data at nowhere'},
  }
  text = reporting.markdown(report)
  titles = [line[3:] for line in text.splitlines() if line.startswith('## ')]
  assert titles == [
    dict(reporting.STEP_TABLES)['variants'],
    dict(reporting.STEP_TABLES)['devices'],
    dict(reporting.ACCURACY_TABLES)['accuracy'],
  ]
  assert (
    '| sinusoid | second_order | 1 | 0.1 + 0.2 | 1.00 [0.90, 1.10] | 25000 | 10.0 | 10.0%' in text
  )
  assert 'second_order, 2 devices' in text
  assert '| first_order | 30 | 7 | 98.00 ± 1.00 | 600 |' in text
  assert text.endswith('family_accuracy: no Omniglot data at nowhere\n')


def test_sections_run_in_the_table_order(tmp_path, monkeypatch):
  """The command runs the chosen sections in ``SECTIONS``' order and saves
  their rows (the reference matmul faked: no fresh process)."""
  ran = []

  def fake(name):
    def run(context):
      ran.append(name)
      context.report[name] = []  # No rows.
      context.save()

    return run

  monkeypatch.setattr(
    sections, 'SECTIONS', tuple(s._replace(run=fake(s.name)) for s in sections.SECTIONS)
  )
  monkeypatch.setattr(
    workers, 'run_worker', lambda kind, n, **_: {'n': n, 'step_s_median': 1.0, 'flop_per_s': 1e9}
  )
  report = cli.main(['--sections', 'peers', 'devices', 'variants', '--out', str(tmp_path)])
  assert ran == ['variants', 'devices', 'peers']
  saved = json.loads((tmp_path / 'harness.json').read_text())
  assert saved == json.loads(json.dumps(report))
  assert list(saved)[:6] == ['benchmark', 'time', 'command', 'environment', 'config', 'matmul']
  assert '## The meta-batch split over devices' in (tmp_path / 'harness.md').read_text()
  assert len(set(sections.NAMES)) == len(sections.NAMES)


@pytest.mark.slow
@pytest.mark.skipif(
  not os.path.isdir(fewshot_config.DEFAULT_DATA_DIRS['omniglot']), reason='no Omniglot data'
)
def test_accuracy_section(tmp_path):
  cli.main(
    [
      '--sections',
      'accuracy',
      '--budget_s',
      '5',
      '--eval_every',
      '10',
      '--num_val_tasks',
      '4',
      '--num_test_tasks',
      '20',
      '--matmul_size',
      '128',
      '--repeats',
      '2',
      '--out',
      str(tmp_path),
    ]
  )
  rows = json.loads((tmp_path / 'harness.json').read_text())['accuracy']
  assert [r['variant'] for r in rows] == ['second_order', 'first_order']
  for r in rows:
    assert r['meta_train_time_s'] >= 5 and r['iterations'] > 0, r
    assert r['test']['num_tasks'] == 20 and 0 <= r['test']['accuracy'] <= 100
    assert r['val_curve'], r
  assert os.path.getsize(tmp_path / 'accuracy_vs_time.png') > 0


@pytest.mark.slow  # ~10 s; the default suite must stay under 10 min.
@pytest.mark.parametrize('name', ['imaml'])
def test_family_meta_step_measurement(name):
  """A family row (in-process here): the algorithm's own steps, positive figures."""
  steps = configs.FAMILY[name]['train_inner_steps']
  row = kernels.measure_meta_step('sinusoid', name, steps, repeats=2, min_block_s=0.01)
  assert (row['variant'], row['inner_steps']) == (name, steps)
  for key in POSITIVE:
    assert math.isfinite(row[key]) and row[key] > 0, (key, row)


@pytest.mark.slow  # ~7 s; the default suite must stay under 10 min.
def test_precision_meta_step_measurement():
  row = kernels.measure_meta_step(
    'sinusoid', 'second_order', 1, repeats=2, min_block_s=0.01, precision='bfloat16'
  )
  assert (row['precision'], row['num_devices']) == ('bfloat16', 1)
  for key in POSITIVE:
    assert math.isfinite(row[key]) and row[key] > 0, (key, row)
  assert 'second_order bfloat16' in reporting.step_table([row], 1e9)[-1]


@pytest.mark.slow
def test_devices_row_on_two_simulated_devices():
  """A devices row: a fresh process with two simulated CPU devices."""
  row = workers.run_worker(
    'meta_step',
    name='omniglot_5way1shot',
    variant='first_order',
    inner_steps=1,
    repeats=1,
    min_block_s=0.01,
    task_map=None,
    num_devices=2,
  )
  assert row['num_devices'] == 2 and 'error' not in row, row
  for key in POSITIVE:
    assert math.isfinite(row[key]) and row[key] > 0, (key, row)


@pytest.mark.slow  # ~3 min on CPU.
def test_gpu_script_on_tiny_sizes(tmp_path):
  """benchmarks.gpu as prepared for a GPU, at tiny sizes on any backend:
  every section runs, tasks per second are positive, and the torch rows say
  why they are missing where PyTorch is not installed."""
  from benchmarks import gpu

  report = gpu.main(['--quick_cpu_check', '--out', str(tmp_path / 'gpu.json')])
  assert json.loads((tmp_path / 'gpu.json').read_text()) == json.loads(json.dumps(report))
  jax_rows = [r for r in report['rows'] if r['impl'] == 'jaxmaml']
  assert {(r['shape'], r['order'], r['precision'], r['tasks']) for r in jax_rows} == {
    (s, o, p, t)
    for s in gpu.SHAPES
    for o in ('second', 'first')
    for p in ('float32', 'bfloat16')
    for t in (2, 4)
  }
  for r in report['rows']:
    assert r.get('tasks_per_s', 0) > 0 or 'unavailable' in r, r
  assert [r['num_tasks'] for r in report['eval']] == [8, 8]
  assert all(r['call_s_median'] > 0 for r in report['eval'])


def test_memory_fit_budgets_and_tables(tmp_path):
  """``memory_fits`` on rows of known memory: the line, the most inner steps
  within each budget (checked against the line), flat variants unbounded,
  failed rows left out; the tables and the plot render."""
  gib = 2**30
  growth = {'second_order': (1.5 * gib, 3 * gib), 'first_order': (gib, 0.0)}
  rows = [
    _step_row(
      'resnet12_32', v, inner_steps=n, xla_peak_bytes=int(a + b * n), xla_temp_bytes=int(b * n)
    )
    for v, (a, b) in growth.items()
    for n in (1, 3, 5)
  ]
  rows.append({'name': 'resnet12_32', 'variant': 'imaml', 'inner_steps': 5, 'error': ['OOM']})
  del rows[0]['step_s_median']  # A compiled-only row.
  fits = {f['variant']: f for f in reporting.memory_fits(rows)}
  assert set(fits) == {'second_order', 'first_order'}
  second = fits['second_order']
  np.testing.assert_allclose(
    [second['base_bytes'], second['per_step_bytes']], growth['second_order']
  )
  for label, budget in configs.MEMORY_BUDGETS_GIB.items():
    steps = second['steps_within'][label]
    assert 1.5 + 3 * steps <= budget < 1.5 + 3 * (steps + 1)
  assert second['steps_within']['16 GiB (V100)'] == 4
  assert set(fits['first_order']['steps_within'].values()) == {None}
  text = reporting.markdown(
    {
      'matmul': {'n': 8, 'flop_per_s': 1e9},
      'resnet12_memory': rows,
      'resnet12_memory_fit': list(fits.values()),
    }
  )
  assert '| resnet12_32 | second_order | 1 | 0.1 + 0.2 | compiled only | 3072.0 / 4608.0 |' in text
  assert (
    '| resnet12_32 | first_order | 1024.0 + 0.0 (1, 3, 5) | 0.0 | any (flat) | any (flat) |' in text
  )
  assert "error: ['OOM']" in text
  reporting.plot_memory(rows, str(tmp_path / 'memory.png'))
  assert os.path.getsize(tmp_path / 'memory.png') > 0


@pytest.mark.slow  # ~20 s
def test_resnet12_meta_step_compiled_only():
  """A compile-only row of the tiny ResNet-12 shape: XLA's memory, no step time."""
  row = kernels.measure_meta_step('resnet12_tiny', 'second_order', 1, 2, 0.01, time_step=False)
  assert row['xla_peak_bytes'] > row['xla_temp_bytes'] > 0 and row['compile_s'] > 0
  assert 'step_s_median' not in row


@pytest.mark.slow  # ~2 min: six ResNet-12 compiles.
def test_resnet12_memory_grows_with_second_order_steps_only():
  """Second order keeps every inner step's activations: its memory grows with
  the steps, by more than first order's and iMAML's (implicit gradient)."""
  per_step = {}
  for variant in ('second_order', 'first_order', 'imaml'):
    rows = [
      kernels.measure_meta_step('resnet12_tiny', variant, n, 2, 0.01, time_step=n == 2)
      for n in (1, 2)
    ]
    per_step[variant] = rows[1]['xla_peak_bytes'] - rows[0]['xla_peak_bytes']
    for key in POSITIVE:
      assert math.isfinite(rows[1][key]) and rows[1][key] > 0, (key, rows[1])
  assert per_step['second_order'] > 2 * max(per_step['first_order'], per_step['imaml'], 1)
