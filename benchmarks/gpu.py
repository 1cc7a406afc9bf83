"""jaxmaml on one accelerator: meta-batch scaling, evaluation, and the PyTorch
loops on the same card, within a time budget.

In order, each part skipped when the budget is spent (``--budget_s``):

1. the jitted meta-step (meta-gradient + Adam, state donated, tasks already
   on the device) of Omniglot 5-way 1-shot (the MAML paper's setting) and
   miniImageNet 5-way 1-shot, second and first order, float32, at each
   ``--meta_batch_sizes`` in increasing order (a series stops at its first
   out-of-memory): compile time, step time, tasks per second, the device
   allocator's peak (cumulative in this process, so each row's peak is at
   least that of the rows before it);
2. the ``torch.autograd`` loop (learn2learn's algorithm) and ``torch.func``
   vmapped on the same card, same shapes, at ``--torch_meta_batch_sizes``;
3. the evaluation path: 600 test tasks adapted and scored in one jitted call;
4. the meta-step in bfloat16 (``jaxmaml.mixed_precision``).

    python -m benchmarks.gpu --out docs/benchmarks/gpu.json      # the GPU run (~8 min)
    python -m benchmarks.gpu --quick_cpu_check --out /tmp/gpu.json   # tiny sizes, any machine

Writes JSON and Markdown after every measurement.
"""

import argparse
import dataclasses
import json
import os
import time

import jax
import numpy as np
import optax

from benchmarks import measure
from benchmarks import peers
from benchmarks import problems
from benchmarks.peers import jaxmaml_peer
import jaxmaml

SHAPES = ('omniglot_5w1s_q1_1step', 'miniimagenet_5w1s')


def _is_oom(error: Exception) -> bool:
  return 'RESOURCE_EXHAUSTED' in str(error) or 'out of memory' in str(error).lower()


def meta_step_row(problem: problems.Problem, num_tasks: int, precision: str, args) -> dict:
  model = problems.make_model(problem, conv=args.conv)
  apply = jaxmaml.mixed_precision(jaxmaml.apply_fn(model), precision)
  learner = jaxmaml.maml(
    jaxmaml.cross_entropy_loss(apply),
    inner_lr=problem.inner_lr,
    num_steps=problem.inner_steps,
    first_order=problem.first_order,
    has_aux=True,
  )
  tasks = jax.device_put(problems.make_tasks(problem, num_tasks))
  optimizer = optax.adam(1e-3)
  state = jaxmaml.init_train_state(
    jax.device_put(problems.unflatten(problems.init_params(problem))), optimizer
  )
  mapping = jaxmaml.default_task_map(tasks)
  step = jax.jit(jaxmaml.make_meta_step(learner, optimizer, jit=False, **mapping), donate_argnums=0)
  start = time.perf_counter()
  compiled = step.lower(state, tasks).compile()
  compile_s = time.perf_counter() - start
  holder = [state]

  def run():
    holder[0] = jax.block_until_ready(compiled(holder[0], tasks)[0])

  times = measure.time_blocks(run, args.min_block_s, args.repeats)
  median = float(np.median(times))
  return {
    'compile_s': compile_s,
    'step_s_median': median,
    'step_s_min': float(np.min(times)),
    'tasks_per_s': num_tasks / median,
    'task_map': mapping,
    'device_peak_bytes': measure.device_peak_bytes(),
  }


def eval_row(problem: problems.Problem, num_tasks: int, args) -> dict:
  tasks = jax.device_put(problems.make_tasks(problem, num_tasks, salt=1))
  params = jax.device_put(problems.unflatten(problems.init_params(problem)))
  task_loss = jaxmaml_peer.learner(problem, problem.eval_inner_steps, True, args.conv).task_loss
  mapping = jaxmaml.default_task_map(tasks)
  start = time.perf_counter()
  jax.block_until_ready(jaxmaml.evaluate(task_loss, params, tasks, **mapping))
  first_s = time.perf_counter() - start
  times = measure.time_blocks(
    lambda: jax.block_until_ready(jaxmaml.evaluate(task_loss, params, tasks, **mapping)),
    args.min_block_s,
    args.repeats,
  )
  return {
    'num_tasks': num_tasks,
    'first_call_s': first_s,
    'call_s_median': float(np.median(times)),
    'task_map': mapping,
    'device_peak_bytes': measure.device_peak_bytes(),
  }


def torch_row(name: str, problem: problems.Problem, args) -> dict:
  reason = peers.unavailable(name)
  if reason:
    return {'unavailable': reason}
  import torch  # pylint: disable=import-outside-toplevel

  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  params, tasks = problems.init_params(problem), problems.make_tasks(problem)
  peer = peers.make(name, problem, params, tasks, np.float32, device=device)
  times = measure.time_blocks(peer.step, args.min_block_s, args.repeats)
  median = float(np.median(times))
  return {
    'device': device,
    'step_s_median': median,
    'step_s_min': float(np.min(times)),
    'tasks_per_s': problem.meta_batch_size / median,
    'cuda_peak_bytes': torch.cuda.max_memory_allocated() if device == 'cuda' else None,
  }


def markdown(report: dict) -> str:
  lines = [
    f'Device: {report["environment"]["devices"][0]} ({report["environment"].get("device_kind")}).',
    '',
    '| shape | order | precision | implementation | tasks | compile (s) | step (ms) '
    '| tasks/s | device peak (GiB) |',
    '|---|---|---|---|---|---|---|---|---|',
  ]
  for r in report['rows']:
    if 'step_s_median' in r:
      peak = r.get('device_peak_bytes') or r.get('cuda_peak_bytes')
      lines.append(
        f'| {r["shape"]} | {r["order"]} | {r["precision"]} | {r["impl"]} | {r["tasks"]} '
        f'| {r.get("compile_s", float("nan")):.1f} | {1e3 * r["step_s_median"]:.2f} '
        f'| {r["tasks_per_s"]:.0f} | {peak / 2**30 if peak else float("nan"):.2f} |'
      )
    else:
      lines.append(
        f'| {r["shape"]} | {r["order"]} | {r["precision"]} | {r["impl"]} '
        f'| {r["tasks"]} | {r.get("error") or r.get("unavailable") or r.get("skipped")} |'
      )
  lines += [
    '',
    '| shape | evaluation: tasks in one call | first call (s) | call (s) |',
    '|---|---|---|---|',
  ]
  for r in report['eval']:
    lines.append(
      f'| {r["shape"]} | {r["num_tasks"]} | '
      + (
        f'{r["first_call_s"]:.2f} | {r["call_s_median"]:.3f} |'
        if 'call_s_median' in r
        else f'{r.get("error") or r.get("skipped")} | |'
      )
    )
  return '\n'.join(lines) + '\n'


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--budget_s', type=float, default=450)
  parser.add_argument('--meta_batch_sizes', type=int, nargs='+', default=[32, 128, 512, 2048])
  parser.add_argument('--torch_meta_batch_sizes', type=int, nargs='+', default=[32])
  parser.add_argument('--eval_tasks', type=int, default=600)
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--min_block_s', type=float, default=0.2)
  parser.add_argument('--conv', default='matmul', choices=jaxmaml.models.CONV_IMPLS)
  parser.add_argument('--features', type=int, default=None, help='override (CPU check)')
  parser.add_argument(
    '--quick_cpu_check',
    action='store_true',
    help='tiny sizes: 4 filters, meta-batches 2 and 4, 8 test tasks',
  )
  parser.add_argument('--out', default='runs/benchmarks/gpu.json')
  args = parser.parse_args(argv)
  if args.quick_cpu_check:
    args.features, args.meta_batch_sizes, args.torch_meta_batch_sizes = 4, [2, 4], [2]
    args.eval_tasks, args.repeats, args.min_block_s = 8, 2, 0.0
  deadline = time.perf_counter() + args.budget_s
  from experiments import cli  # pylint: disable=import-outside-toplevel

  try:
    import torch  # pylint: disable=import-outside-toplevel

    torch_info = {
      'torch': torch.__version__,
      'cuda': torch.cuda.is_available() and torch.cuda.get_device_name(0),
    }
  except ImportError:
    torch_info = {'torch': None}
  report = {
    'benchmark': 'gpu',
    'time': time.strftime('%Y-%m-%dT%H:%M:%S'),
    'environment': {**cli.environment(), **torch_info, 'device_kind': jax.devices()[0].device_kind},
    'config': vars(args),
    'rows': [],
    'eval': [],
  }
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)

  def save():
    with open(args.out, 'w') as f:
      json.dump(report, f, indent=2)
    with open(os.path.splitext(args.out)[0] + '.md', 'w') as f:
      f.write(markdown(report))

  def problem_of(shape, order, tasks):
    return dataclasses.replace(
      problems.SHAPES[shape],
      first_order=order == 'first',
      meta_batch_size=tasks,
      **({'features': args.features} if args.features else {}),
    )

  def attempt(key, fn):
    if time.perf_counter() > deadline:
      return {**key, 'skipped': 'time budget spent'}
    try:
      return {**key, **fn()}
    except Exception as e:  # pylint: disable=broad-except
      return {
        **key,
        'error': f'{type(e).__name__}: {str(e).splitlines()[0][:200]}',
        'oom': _is_oom(e),
      }

  def meta_step_series(precision):
    for shape in SHAPES:
      for order in ('second', 'first'):
        for tasks in sorted(args.meta_batch_sizes):
          key = {
            'shape': shape,
            'order': order,
            'precision': precision,
            'impl': 'jaxmaml',
            'tasks': tasks,
          }
          row = attempt(
            key, lambda: meta_step_row(problem_of(shape, order, tasks), tasks, precision, args)
          )
          report['rows'].append(row)
          save()
          print(row, flush=True)
          if 'error' in row or 'skipped' in row:
            break

  meta_step_series('float32')
  for shape in SHAPES:
    for order in ('second', 'first'):
      for tasks in args.torch_meta_batch_sizes:
        for name in ('torch_autograd_loop', 'torch_func_vmap'):
          key = {
            'shape': shape,
            'order': order,
            'precision': 'float32',
            'impl': name,
            'tasks': tasks,
          }
          row = attempt(key, lambda: torch_row(name, problem_of(shape, order, tasks), args))
          report['rows'].append(row)
          save()
          print(row, flush=True)
  for shape in SHAPES:
    row = attempt(
      {'shape': shape}, lambda: eval_row(problem_of(shape, 'first', 1), args.eval_tasks, args)
    )
    report['eval'].append(row)
    save()
    print(row, flush=True)
  meta_step_series('bfloat16')
  print(markdown(report), flush=True)
  return report


if __name__ == '__main__':
  main()
