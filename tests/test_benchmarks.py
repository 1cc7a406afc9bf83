"""Smoke tests of the benchmark harness: schema, finite and positive numbers,
and the properties a correct measurement must show."""

import json
import math
import os

import pytest

from benchmarks import harness
from experiments.fewshot import config as fewshot_config

POSITIVE = ('lower_s', 'compile_s', 'step_s_median', 'tasks_per_s', 'model_flops_per_step',
            'achieved_flop_per_s', 'xla_temp_bytes', 'xla_peak_bytes', 'peak_rss_bytes')


@pytest.mark.slow  # ~40 s; the family rows test the same measurement in the default suite.
def test_sweep_schema_and_memory(tmp_path):
  harness.main(['--sections', 'sweep', '--sweep_shapes', 'sinusoid', '--sweep_steps', '4',
                '--repeats', '2', '--min_block_s', '0.01', '--matmul_size', '128',
                '--out', str(tmp_path)])
  report = json.loads((tmp_path / 'harness.json').read_text())
  assert report['environment']['backend'] == 'cpu'
  assert report['matmul']['flop_per_s'] > 0
  rows = {(r['variant'], r['inner_steps']): r for r in report['sweep']}
  assert set(rows) == {(v, 4) for v in harness.VARIANTS}
  for r in rows.values():
    for key in POSITIVE:
      assert math.isfinite(r[key]) and r[key] > 0, (key, r)
    lo, hi = r['step_s_iqr']
    assert 0 < lo <= r['step_s_median'] <= hi
    assert r['peak_rss_bytes'] >= r['rss_before_build_bytes']
  # Second order does more arithmetic than first order; remat does not change
  # the model FLOPs but cuts the scratch memory of 4 inner steps.
  assert rows['second_order', 4]['model_flops_per_step'] > rows['first_order', 4]['model_flops_per_step']
  for remat in ('second_order_remat', 'second_order_remat_sqrt'):
    assert rows[remat, 4]['model_flops_per_step'] == rows['second_order', 4]['model_flops_per_step']
    assert rows[remat, 4]['xla_temp_bytes'] < rows['second_order', 4]['xla_temp_bytes']
  for name in ('harness.md', 'sweep.png'):
    assert os.path.getsize(tmp_path / name) > 0


def test_bad_arguments_are_usage_errors():
  for argv in (['--repeats', '0'], ['--sweep_steps', '0', '2'], ['--budget_s', '-1']):
    with pytest.raises(SystemExit):
      harness.main(argv)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(fewshot_config.DEFAULT_DATA_DIRS['omniglot']),
                    reason='no Omniglot data')
def test_accuracy_section(tmp_path):
  harness.main(['--sections', 'accuracy', '--budget_s', '5', '--eval_every', '10',
                '--num_val_tasks', '4', '--num_test_tasks', '20', '--matmul_size', '128',
                '--repeats', '2', '--out', str(tmp_path)])
  rows = json.loads((tmp_path / 'harness.json').read_text())['accuracy']
  assert [r['variant'] for r in rows] == ['second_order', 'first_order']
  for r in rows:
    assert r['meta_train_time_s'] >= 5 and r['iterations'] > 0, r
    assert r['test']['num_tasks'] == 20 and 0 <= r['test']['accuracy'] <= 100
    assert r['val_curve'], r
  assert os.path.getsize(tmp_path / 'accuracy_vs_time.png') > 0


@pytest.mark.parametrize('name', ['imaml'])
def test_family_meta_step_measurement(name):
  """A family row (in-process here): the algorithm's own steps, positive figures."""
  steps = harness.FAMILY[name][0]['inner_steps']
  row = harness.measure_meta_step('sinusoid', name, steps, repeats=2, min_block_s=0.01)
  assert (row['variant'], row['inner_steps']) == (name, steps)
  for key in POSITIVE:
    assert math.isfinite(row[key]) and row[key] > 0, (key, row)


def test_precision_meta_step_measurement():
  row = harness.measure_meta_step('sinusoid', 'second_order', 1, repeats=2, min_block_s=0.01,
                                  precision='bfloat16')
  assert (row['precision'], row['num_devices']) == ('bfloat16', 1)
  for key in POSITIVE:
    assert math.isfinite(row[key]) and row[key] > 0, (key, row)
  assert 'second_order bfloat16' in harness._step_table([row], 1e9)[-1]


@pytest.mark.slow
def test_devices_row_on_two_simulated_devices():
  """A devices row: a fresh process with two simulated CPU devices."""
  row = harness.run_worker('meta_step', name='omniglot_5way1shot', variant='first_order',
                           inner_steps=1, repeats=1, min_block_s=0.01, task_map=None,
                           num_devices=2)
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
      (s, o, p, t) for s in gpu.SHAPES for o in ('second', 'first')
      for p in ('float32', 'bfloat16') for t in (2, 4)}
  for r in report['rows']:
    assert r.get('tasks_per_s', 0) > 0 or 'unavailable' in r, r
  assert [r['num_tasks'] for r in report['eval']] == [8, 8]
  assert all(r['call_s_median'] > 0 for r in report['eval'])
