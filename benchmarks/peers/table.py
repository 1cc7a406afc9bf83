"""The shape table: jaxmaml and its peers side by side at the shapes the field runs.

For every shape of ``benchmarks.problems.SHAPES``, second and first order,
and every implementation, one fresh process (so that its peak RSS is its
own, and every one gets the same threads): steady-state meta-gradient time
(median of repeats after warm-up), the process's peak RSS, the evaluation path
(seconds per 600 test tasks: ``eval_inner_steps`` of adaptation and the query
accuracy, no outer gradient) and the float64 meta-gradient, compared with
jaxmaml's float64 one (relative L2). For jaxmaml also compile time, XLA's
memory analysis and model FLOP/s against a dense float32 matmul measured in
the same run. Writes JSON and Markdown, after every measurement.

    python -m benchmarks.peers                                   # every shape, order, peer
    python -m benchmarks.peers --shapes omniglot_5w1s_q15_1step --orders second --quick
    python -m benchmarks.peers --impls jaxmaml --jax_task_maps default map:1 map:4 vmap xla/map:1
"""

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time

import numpy as np

from benchmarks import measure
from benchmarks import peers
from benchmarks import problems

ORDERS = ('second', 'first')


def _jax_options(spec: str) -> dict:
  """``[conv/]task_map[:chunk]``: ``'default'`` -> {} (``jaxmaml.default_task_map``);
  ``'map:4'`` -> task_map='map', batch_size=4; ``'xla/vmap'`` -> conv='xla', vmap."""
  conv, _, spec = spec.rpartition('/')
  options = {'conv': conv} if conv else {}
  if spec == 'default':
    return options
  mapping, _, size = spec.partition(':')
  return {**options, 'task_map': mapping, 'batch_size': int(size) if size else None}


def worker(spec: dict) -> dict:
  """One implementation on one problem, in this (fresh) process."""
  threads = measure.limit_threads(spec['threads'])
  rss_before = measure.peak_rss_bytes()
  problem = problems.Problem(**spec['problem'])
  if spec['impl'] == 'matmul':
    return {'threads': threads, **_matmul(spec['matmul_size'])}
  params, tasks = problems.init_params(problem), problems.make_tasks(problem)
  options = spec.get('options', {})
  start = time.perf_counter()
  peer = peers.make(spec['impl'], problem, params, tasks, np.float32, **options)
  build_s = time.perf_counter() - start
  outputs = []
  times = measure.time_calls(lambda: outputs.append(peer.step()), spec['warmup'], spec['repeats'])
  loss32, grads32 = peer.result(outputs[-1])
  outputs.clear()
  row = {
    'impl': spec['impl'],
    'options': dict(peer.options),
    'threads': threads,
    'build_s': build_s,
    **times,
    'loss_float32': loss32,
    'rss_before_build_bytes': rss_before,
    'peak_rss_bytes': measure.peak_rss_bytes(),
    **(peer.extras or {}),
  }
  if spec['eval_tasks']:
    chunk = min(spec['eval_chunk'], spec['eval_tasks'])
    run = peer.evaluator(problems.make_tasks(problem, chunk, salt=1))
    accuracies = []
    eval_times = measure.time_calls(lambda: accuracies.append(run()), 1, spec['eval_repeats'])
    row['eval'] = {
      'tasks_per_call': chunk,
      'first_call_s': eval_times['first_call_s'],
      'call_s_median': eval_times['step_s_median'],
      's_per_600_tasks': eval_times['step_s_median'] * 600 / chunk,
      'mean_accuracy': float(np.mean(accuracies[-1])),
    }
  if spec.get('grads_out'):
    peer64 = peers.make(spec['impl'], problem, params, tasks, np.float64, **options)
    loss64, grads64 = peer64.result(peer64.step())
    np.savez(spec['grads_out'], **grads64)
    row['loss_float64'] = loss64
    with tempfile.NamedTemporaryFile(suffix='.npz', delete=False) as f:
      np.savez(f, **grads32)
      row['grads_float32_path'] = f.name
  return row


def _matmul(n: int) -> dict:
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  a, b = jax.random.normal(jax.random.key(0), (2, n, n), jnp.float32)
  matmul = jax.jit(lambda a, b: jnp.dot(a, b))
  times = measure.time_calls(lambda: jax.block_until_ready(matmul(a, b)), 3, 10)
  return {
    'n': n,
    'step_s_median': times['step_s_median'],
    'flop_per_s': 2 * n**3 / times['step_s_median'],
  }


def _grads(path: str) -> dict:
  with np.load(path) as f:
    return dict(f)


def compare_row(rows: dict, reference: str) -> None:
  """Adds float64 gradient agreement and time ratios against ``rows[reference]``."""
  ref = rows[reference]
  ref_grads64 = _grads(ref['grads_path']) if 'grads_path' in ref else None
  for row in rows.values():
    if 'error' in row or 'step_s_median' not in row:
      continue
    row['time_vs_jaxmaml'] = row['step_s_median'] / ref['step_s_median']
    if ref_grads64 is not None and 'grads_path' in row:
      total, per_leaf = problems.relative_l2(_grads(row['grads_path']), ref_grads64)
      row['grad_rel_l2_float64'] = total
      row['worst_leaf_float64'] = max(per_leaf, key=per_leaf.get)
      row['grad_rel_l2_float32_vs_jaxmaml_float64'] = problems.relative_l2(
        _grads(row['grads_float32_path']), ref_grads64
      )[0]
    if 'eval' in row and 'eval' in ref:
      row['eval']['time_vs_jaxmaml'] = (
        row['eval']['s_per_600_tasks'] / ref['eval']['s_per_600_tasks']
      )


def markdown(report: dict) -> str:
  """The shape table as Markdown."""
  matmul = report.get('matmul', {}).get('flop_per_s')
  impls = report['config']['impls']
  lines = [
    f'jaxmaml vs peers, {report["config"]["threads"]} threads each, fresh process per '
    f'measurement; dense float32 matmul: {matmul / 1e9:.0f} GFLOP/s.'
    if matmul
    else '',
    '',
    '| shape | order | jaxmaml (s) [task map] | '
    + ' | '.join(f'{p} (s)' for p in impls if p != 'jaxmaml')
    + ' | learn2learn / jaxmaml | worst float64 grad rel. L2 | jaxmaml compile (s) '
    '| GFLOP/s (of matmul) | peak RSS (GiB): jaxmaml / learn2learn '
    '| 600 test tasks (s): jaxmaml / learn2learn |',
    '|' + '---|' * (len(impls) + 8),
  ]
  gib = lambda row: f'{row["peak_rss_bytes"] / 2**30:.2f}' if 'peak_rss_bytes' in row else '-'
  for entry in report['rows']:
    rows = entry['impls']
    ours = rows.get('jaxmaml', {})
    if 'step_s_median' not in ours:
      lines.append(f'| {entry["shape"]} | {entry["order"]} | failed: {ours.get("error")} |')
      continue
    mapping = ours['options']
    cells = [
      entry['shape'],
      entry['order'],
      f'{ours["step_s_median"]:.3f} [{mapping["task_map"]}'
      + (f':{mapping["batch_size"]}' if mapping.get('batch_size') else '')
      + ']',
    ]
    for name in impls:
      if name == 'jaxmaml':
        continue
      row = rows.get(name, {})
      cells.append(
        f'{row["step_s_median"]:.3f}'
        if 'step_s_median' in row
        else ('n/a' if 'unavailable' in row else 'failed')
      )
    l2l = rows.get('learn2learn', {})
    cells.append(f'**{l2l["time_vs_jaxmaml"]:.2f}**' if 'time_vs_jaxmaml' in l2l else '-')
    errors = [
      r['grad_rel_l2_float64']
      for n, r in rows.items()
      if n != 'jaxmaml' and 'grad_rel_l2_float64' in r
    ]
    cells.append(f'{max(errors):.1e}' if errors else '-')
    cells.append(f'{ours["compile_s"]:.1f}')
    flops = ours['model_flops'] / ours['step_s_median']
    cells.append(f'{flops / 1e9:.0f}' + (f' ({flops / matmul:.0%})' if matmul else ''))
    cells.append(f'{gib(ours)} / {gib(l2l)}')
    ev = lambda row: f'{row["eval"]["s_per_600_tasks"]:.1f}' if 'eval' in row else '-'
    cells.append(f'{ev(ours)} / {ev(l2l)}')
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--worker', help=argparse.SUPPRESS)
  parser.add_argument(
    '--shapes', nargs='+', default=list(problems.SHAPES), choices=list(problems.SHAPES)
  )
  parser.add_argument('--orders', nargs='+', default=list(ORDERS), choices=ORDERS)
  parser.add_argument(
    '--impls', nargs='+', default=list(peers.IMPLEMENTATIONS), choices=list(peers.IMPLEMENTATIONS)
  )
  parser.add_argument(
    '--jax_task_maps',
    nargs='+',
    default=['default'],
    help="jaxmaml's formulations to time, [conv/]task_map[:chunk]: "
    "'default' (jaxmaml.default_task_map), 'vmap', 'map', "
    "'map:<chunk>', 'xla/map:4' (lax.conv); the first is the one "
    'compared with the peers',
  )
  parser.add_argument(
    '--features',
    type=int,
    default=None,
    help="override every shape's filters per conv layer (tests)",
  )
  parser.add_argument(
    '--meta_batch_size', type=int, default=None, help="override every shape's meta-batch (tests)"
  )
  parser.add_argument('--threads', type=int, default=2)
  parser.add_argument('--warmup', type=int, default=2)
  parser.add_argument('--repeats', type=int, default=7)
  parser.add_argument('--eval_tasks', type=int, default=600, help='0 skips the evaluation path')
  parser.add_argument('--eval_repeats', type=int, default=3)
  parser.add_argument('--no_float64', action='store_true', help='skip the gradient check')
  parser.add_argument('--quick', action='store_true', help='1 warm-up, 3 repeats')
  parser.add_argument('--timeout_s', type=float, default=1800, help='per implementation and shape')
  parser.add_argument('--matmul_size', type=int, default=2048)
  parser.add_argument(
    '--pause',
    type=int,
    nargs='*',
    default=[],
    help='PIDs of background jobs to SIGSTOP while measuring',
  )
  parser.add_argument(
    '--also_running', default='nothing', help='what else ran on the machine, recorded in the JSON'
  )
  parser.add_argument('--out', default='runs/benchmarks/peers.json')
  return parser.parse_args(argv)


def main(argv=None) -> dict:
  args = parse_args(argv)
  if args.worker:
    print(json.dumps(worker(json.loads(args.worker))))
    return {}
  if args.quick:
    args.warmup, args.repeats, args.eval_repeats = 1, 3, 1
  from experiments import cli  # pylint: disable=import-outside-toplevel

  report = {
    'benchmark': 'peers',
    'time': time.strftime('%Y-%m-%dT%H:%M:%S'),
    'environment': {
      **cli.environment(),
      'also_running': args.also_running,
      'loadavg_1_5_15_min_at_start': os.getloadavg(),
    },
    'config': {k: v for k, v in vars(args).items() if k not in ('worker', 'pause')},
    'rows': [],
  }
  out_dir = os.path.dirname(os.path.abspath(args.out))
  os.makedirs(out_dir, exist_ok=True)
  grads_dir = tempfile.mkdtemp(prefix='peers_grads_')

  def save():
    with open(args.out, 'w') as f:
      json.dump(report, f, indent=2)
    with open(os.path.splitext(args.out)[0] + '.md', 'w') as f:
      f.write(markdown(report))

  def run(impl, problem, options=None, grads=True):
    reason = peers.unavailable(impl)
    if reason:
      return {'impl': impl, 'unavailable': reason}
    path = os.path.join(grads_dir, f'{impl}_{len(report["rows"])}_{time.time_ns()}.npz')
    spec = {
      'impl': impl,
      'problem': dataclasses.asdict(problem),
      'threads': args.threads,
      'warmup': args.warmup,
      'repeats': args.repeats,
      'eval_tasks': args.eval_tasks,
      'eval_chunk': 50 if problem.dataset == 'omniglot' else 20,
      'eval_repeats': args.eval_repeats,
      'options': options or {},
      'grads_out': path if grads and not args.no_float64 else None,
    }
    row = measure.run_fresh('benchmarks.peers', spec, args.timeout_s)
    if 'error' not in row and spec['grads_out']:
      row['grads_path'] = path
    print(
      f'  {impl} {options or ""}: '
      + (f'{row["step_s_median"]:.3f} s' if 'step_s_median' in row else row.get('error', '')),
      file=sys.stderr,
      flush=True,
    )
    return row

  with measure.paused(args.pause):
    report['matmul'] = measure.run_fresh(
      'benchmarks.peers',
      {'impl': 'matmul', 'problem': {}, 'threads': args.threads, 'matmul_size': args.matmul_size},
    )
    for shape in args.shapes:
      for order in args.orders:
        overrides = {
          k: getattr(args, k)
          for k in ('features', 'meta_batch_size')
          if getattr(args, k) is not None
        }
        problem = dataclasses.replace(
          problems.SHAPES[shape], first_order=order == 'first', **overrides
        )
        print(f'{shape}, {order} order', file=sys.stderr, flush=True)
        rows = {}
        for impl in args.impls:
          if impl == 'jaxmaml':
            for i, spec in enumerate(args.jax_task_maps):
              key = 'jaxmaml' if i == 0 else f'jaxmaml[{spec}]'
              rows[key] = run('jaxmaml', problem, _jax_options(spec), grads=i == 0)
          else:
            rows[impl] = run(impl, problem)
        if 'jaxmaml' in rows and 'error' not in rows['jaxmaml']:
          compare_row(rows, 'jaxmaml')
        for row in rows.values():
          row.pop('grads_path', None)
          path = row.pop('grads_float32_path', None)
          if path:
            os.remove(path)
        report['rows'].append(
          {'shape': shape, 'order': order, 'problem': dataclasses.asdict(problem), 'impls': rows}
        )
        save()
  print(markdown(report), flush=True)
  return report
