"""First- vs second-order (and remat) MAML meta-step on the sinusoid MLP.

Reports, per variant and number of inner steps: compile time (lower + compile,
separately from running), steady-state meta-step time (median and
interquartile range over repeated timed blocks after warm-up, with
``block_until_ready``), tasks per second, XLA's compiled memory analysis
(``temp`` = scratch memory of the step, the part that grows with inner steps)
and FLOP count (from XLA's cost analysis; not reported for rolled inner loops,
whose body XLA counts once). Writes a JSON file and a Markdown table.

    python -m benchmarks.sinusoid_orders            # full
    python -m benchmarks.sinusoid_orders --quick    # a few seconds
"""

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxmaml
from jaxmaml.data import sinusoid
from experiments import cli

VARIANTS = {
    'second_order': dict(first_order=False, remat=False),
    'second_order_remat': dict(first_order=False, remat=True),
    'first_order': dict(first_order=True, remat=False),
}


def _memory(compiled) -> dict:
  try:
    m = compiled.memory_analysis()
    return {'temp_bytes': int(m.temp_size_in_bytes),
            'argument_bytes': int(m.argument_size_in_bytes),
            'output_bytes': int(m.output_size_in_bytes)}
  except Exception:  # Not every backend reports it.
    return {}


def _flops(compiled) -> float | None:
  try:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get('flops', float('nan')))
  except Exception:
    return None


def bench_one(variant: str, num_steps: int, args) -> dict:
  model = jaxmaml.MLP(features=(40, 40, 1))
  params = model.init(jax.random.key(0), jnp.zeros([1, 1]))['params']
  loss_fn = jaxmaml.mse_loss(jaxmaml.apply_fn(model))
  learner = jaxmaml.maml(loss_fn, inner_lr=0.01, num_steps=num_steps, **VARIANTS[variant])
  optimizer = optax.adam(1e-3)
  state = jaxmaml.init_train_state(params, optimizer)
  tasks = sinusoid.sample_tasks(jax.random.key(1), args.meta_batch_size, args.shots, args.shots)
  step = jax.jit(jaxmaml.make_meta_step(learner, optimizer, jit=False))

  start = time.perf_counter()
  compiled = step.lower(state, tasks).compile()
  compile_s = time.perf_counter() - start

  for _ in range(args.warmup):
    state, _ = compiled(state, tasks)
  jax.block_until_ready(state)
  per_step = []
  for _ in range(args.repeats):
    start = time.perf_counter()
    for _ in range(args.steps_per_repeat):
      state, _ = compiled(state, tasks)
    jax.block_until_ready(state)
    per_step.append((time.perf_counter() - start) / args.steps_per_repeat)
  median = float(np.median(per_step))
  # XLA's cost analysis counts the body of a rolled loop once, not once per
  # iteration: FLOPs are only reported for fully unrolled inner loops.
  rolled = VARIANTS[variant]['remat'] and num_steps > 1
  flops = None if rolled else _flops(compiled)
  return {
      'variant': variant,
      'inner_steps': num_steps,
      'compile_s': compile_s,
      'step_s_median': median,
      'step_s_iqr': [float(np.percentile(per_step, 25)), float(np.percentile(per_step, 75))],
      'tasks_per_s': args.meta_batch_size / median,
      'inner_loop': 'rolled' if rolled else 'unrolled',
      'flops_per_step': flops,
      'achieved_flop_per_s': flops / median if flops else None,
      'memory': _memory(compiled),
  }


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--quick', action='store_true', help='few repeats, inner steps 1 and 5')
  parser.add_argument('--inner_steps', type=int, nargs='+', default=[1, 5, 10])
  parser.add_argument('--meta_batch_size', type=int, default=25)
  parser.add_argument('--shots', type=int, default=10)
  parser.add_argument('--warmup', type=int, default=20)
  parser.add_argument('--repeats', type=int, default=20)
  parser.add_argument('--steps_per_repeat', type=int, default=50)
  parser.add_argument('--out', default='runs/benchmarks/sinusoid_orders.json')
  args = parser.parse_args(argv)
  if args.quick:
    args.inner_steps, args.warmup, args.repeats, args.steps_per_repeat = [1, 5], 5, 5, 10

  rows = []
  table = ['| variant | inner steps | compile (s) | step (ms), median | step (ms), IQR '
           '| tasks/s | GFLOP/s | scratch memory (KiB) |', '|---' * 8 + '|']
  print(table[0])
  for num_steps in args.inner_steps:
    for variant in VARIANTS:
      r = bench_one(variant, num_steps, args)
      rows.append(r)
      lo, hi = r['step_s_iqr']
      gflops = r['achieved_flop_per_s']
      temp = r['memory'].get('temp_bytes')
      table.append(
          f"| {variant} | {num_steps} | {r['compile_s']:.2f} | {1e3 * r['step_s_median']:.3f} "
          f"| {1e3 * lo:.3f}-{1e3 * hi:.3f} | {r['tasks_per_s']:.0f} "
          f"| {'n/a' if gflops is None else f'{gflops / 1e9:.1f}'} "
          f"| {'n/a' if temp is None else f'{temp / 1024:.0f}'} |")
      print(table[-1], flush=True)
  report = {
      'benchmark': 'sinusoid_orders',
      'time': time.strftime('%Y-%m-%dT%H:%M:%S'),
      'environment': cli.environment(),
      'config': vars(args),
      'results': rows,
  }
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, 'w') as f:
    json.dump(report, f, indent=2)
  with open(os.path.splitext(args.out)[0] + '.md', 'w') as f:
    f.write('\n'.join(table) + '\n')
  print(f'wrote {args.out} and its Markdown table')
  return report


if __name__ == '__main__':
  main()
