"""Smoke test of the benchmark script: schema, finite and positive numbers."""

import json
import math

from benchmarks import sinusoid_orders


def test_sinusoid_orders_quick(tmp_path):
  out = tmp_path / 'bench.json'
  sinusoid_orders.main(['--inner_steps', '1', '2', '--warmup', '1', '--repeats', '2',
                        '--steps_per_repeat', '2', '--meta_batch_size', '4',
                        '--out', str(out)])
  report = json.loads(out.read_text())
  assert report['environment']['backend'] == 'cpu'
  rows = report['results']
  assert {(r['variant'], r['inner_steps']) for r in rows} == {
      (v, n) for v in sinusoid_orders.VARIANTS for n in (1, 2)}
  for r in rows:
    keys = ['compile_s', 'step_s_median', 'tasks_per_s']
    if r['inner_loop'] == 'unrolled':
      keys.append('flops_per_step')
    else:
      assert r['flops_per_step'] is None
    for key in keys:
      assert math.isfinite(r[key]) and r[key] > 0, (key, r)
    lo, hi = r['step_s_iqr']
    assert 0 < lo <= r['step_s_median'] <= hi
    assert r['memory']['temp_bytes'] > 0
  # Second order does strictly more arithmetic than first order.
  flops = {(r['variant'], r['inner_steps']): r['flops_per_step'] for r in rows}
  assert flops['second_order', 2] > flops['first_order', 2]
