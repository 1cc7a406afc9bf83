"""Conv4 MAML meta-gradient on XLA:CPU: convolution formulation x task mapping.

The Omniglot setting of the MAML paper (5-way 1-shot, meta-batch 32, one inner
step, second order, Conv4 with stride-2 convolutions and batch-statistics
BatchNorm) on random binary 28x28 images. For each combination: compile time
and steady-state time of the jitted meta-gradient (median of repeats after a
warm-up, ``block_until_ready``). Writes JSON.

    python -m benchmarks.omniglot_conv                       # matmul/xla x vmap/map:8
    python -m benchmarks.omniglot_conv --task_maps vmap loop # the traced loop compiles for minutes
"""

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxmaml
from experiments import cli


def random_tasks(key: jax.Array, num_tasks: int, ways: int, shots: int,
                 queries: int) -> jaxmaml.Task:
  """A meta-batch of random binary images shaped like Omniglot episodes.

  Returns:
    ``Task((x_s, y_s), (x_q, y_q))``: images ``[num_tasks, ways * shots, 28, 28, 1]``
    (``ways * queries`` for the query), float32 in {0, 1}; labels
    ``[num_tasks, n]`` int32, ``0 .. ways - 1`` each repeated ``shots``
    (``queries``) times.
  """
  keys = jax.random.split(key, 2)
  x = lambda k, n: (jax.random.uniform(k, (num_tasks, n, 28, 28, 1)) > 0.8).astype(jnp.float32)
  labels = lambda n: jnp.tile(jnp.repeat(jnp.arange(ways, dtype=jnp.int32), n), (num_tasks, 1))
  return jaxmaml.Task((x(keys[0], ways * shots), labels(shots)),
                      (x(keys[1], ways * queries), labels(queries)))


def bench_one(conv: str, task_map: str, args) -> dict:
  ways = args.ways
  tasks = random_tasks(jax.random.key(0), args.meta_batch_size, ways, args.shots, args.queries)
  model = jaxmaml.Conv4(ways, conv=conv)
  params = model.init(jax.random.key(1), tasks.support[0][0])['params']
  learner = jaxmaml.maml(jaxmaml.cross_entropy_loss(jaxmaml.apply_fn(model)),
                         inner_lr=0.4, num_steps=args.inner_steps, has_aux=True,
                         first_order=args.first_order)
  mapping, _, size = task_map.partition(':')
  grad_fn = jax.jit(lambda p, t: jaxmaml.meta_gradient(
      learner, p, t, task_map=mapping, batch_size=int(size) if size else None)[0])
  start = time.perf_counter()
  compiled = grad_fn.lower(params, tasks).compile()
  compile_s = time.perf_counter() - start
  jax.block_until_ready(compiled(params, tasks))
  times = []
  for _ in range(args.repeats):
    start = time.perf_counter()
    jax.block_until_ready(compiled(params, tasks))
    times.append(time.perf_counter() - start)
  return {'conv': conv, 'task_map': task_map, 'compile_s': compile_s,
          'step_s_median': float(np.median(times)),
          'step_s_min': float(np.min(times)), 'step_s_max': float(np.max(times))}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--convs', nargs='+', default=['matmul', 'xla'])
  parser.add_argument('--task_maps', nargs='+', default=['vmap', 'map:8'],
                      help="'vmap', 'loop', 'map' or 'map:<tasks per chunk>'")
  parser.add_argument('--ways', type=int, default=5)
  parser.add_argument('--shots', type=int, default=1)
  parser.add_argument('--queries', type=int, default=1)
  parser.add_argument('--meta_batch_size', type=int, default=32)
  parser.add_argument('--inner_steps', type=int, default=1)
  parser.add_argument('--first_order', action='store_true')
  parser.add_argument('--repeats', type=int, default=10)
  parser.add_argument('--out', default='runs/benchmarks/omniglot_conv.json')
  args = parser.parse_args(argv)
  rows = []
  print('| conv | task map | compile (s) | step (s), median | min | max |\n|---|---|---|---|---|---|')
  for conv in args.convs:
    for task_map in args.task_maps:
      r = bench_one(conv, task_map, args)
      rows.append(r)
      print(f"| {conv} | {task_map} | {r['compile_s']:.1f} | {r['step_s_median']:.3f} "
            f"| {r['step_s_min']:.3f} | {r['step_s_max']:.3f} |", flush=True)
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, 'w') as f:
    json.dump({'benchmark': 'omniglot_conv', 'time': time.strftime('%Y-%m-%dT%H:%M:%S'),
               'environment': cli.environment(),
               'config': vars(args), 'results': rows}, f, indent=2)
  return rows


if __name__ == '__main__':
  main()
