"""The command: ``python -m benchmarks.harness [--quick] [--sections ...]``."""

import argparse
import json
import os
import sys
import time

from benchmarks import measure
import benchmarks.harness
from benchmarks.harness import reporting
from benchmarks.harness import sections
from benchmarks.harness import workers
from benchmarks.harness.configs import FAMILY
from benchmarks.harness.configs import MEMORY_STEPS
from benchmarks.harness.configs import SHAPES


def parse_args(argv) -> argparse.Namespace:
  """The harness's arguments, with the ``--quick`` defaults filled in."""
  from experiments.fewshot import config as fewshot_config  # pylint: disable=import-outside-toplevel

  parser = argparse.ArgumentParser(
    prog='python -m benchmarks.harness',
    description=benchmarks.harness.__doc__.splitlines()[0],
    formatter_class=argparse.ArgumentDefaultsHelpFormatter,
  )
  parser.add_argument(
    '--quick', action='store_true', help='fewer repeats, a shorter sweep and accuracy budget'
  )
  parser.add_argument(
    '--sections',
    nargs='+',
    default=list(sections.NAMES),
    choices=sections.NAMES,
    help='; '.join(f'{s.name}: {s.description}' for s in sections.SECTIONS),
  )
  parser.add_argument(
    '--shapes',
    nargs='+',
    default=list(SHAPES),
    choices=list(SHAPES),
    help='shapes of the variants section',
  )
  parser.add_argument(
    '--family',
    nargs='+',
    default=list(FAMILY),
    choices=list(FAMILY),
    help='algorithms of the family and family_accuracy sections',
  )
  parser.add_argument(
    '--device_counts',
    nargs='+',
    type=int,
    default=[1, 2, 4, 8],
    help='device counts of the devices section (32 tasks split evenly)',
  )
  parser.add_argument(
    '--sweep_shapes',
    nargs='+',
    choices=list(SHAPES),
    default=None,
    help='default: sinusoid and omniglot_5way1shot (--quick: sinusoid)',
  )
  parser.add_argument(
    '--sweep_steps', nargs='+', type=int, default=None, help='default: 1 2 5 10 20 (--quick: 1 2 5)'
  )
  parser.add_argument(
    '--memory_shapes',
    nargs='+',
    choices=[n for n, s in SHAPES.items() if s.model == 'resnet12'],
    default=None,
    help='shapes of the resnet12_memory section (default: resnet12_32 resnet12_84; '
    '--quick: resnet12_tiny)',
  )
  parser.add_argument(
    '--memory_steps',
    nargs='+',
    type=int,
    default=list(MEMORY_STEPS),
    help='inner steps of the resnet12_memory section, fitted linearly',
  )
  parser.add_argument(
    '--memory_compile_only',
    nargs='*',
    default=['resnet12_84'],
    help='resnet12_memory shapes compiled but not run (too slow to time on a CPU)',
  )
  parser.add_argument(
    '--task_map',
    choices=('vmap', 'map'),
    default=None,
    help="override the shapes' task mapping (Omniglot: map over chunks of "
    '4 tasks, the fastest on CPU; vmap is the natural choice on a GPU)',
  )
  parser.add_argument(
    '--repeats', type=int, default=None, help='timed blocks (default 20, --quick 5)'
  )
  parser.add_argument(
    '--min_block_s',
    type=float,
    default=0.2,
    help='each timed block repeats the step for at least this long',
  )
  parser.add_argument(
    '--pause',
    nargs='*',
    type=int,
    default=[],
    help='PIDs (e.g. background trainings) stopped (SIGSTOP) during every timed '
    'measurement and resumed after it',
  )
  parser.add_argument(
    '--also_running', default='nothing', help='what else ran on the machine, recorded in the JSON'
  )
  parser.add_argument('--matmul_size', type=int, default=2048)
  parser.add_argument(
    '--budget_s',
    type=float,
    default=None,
    help='meta-training seconds per variant in the accuracy section (default 600, --quick 30)',
  )
  parser.add_argument(
    '--eval_every',
    type=int,
    default=None,
    help='validation interval in iterations (default 250, --quick 25)',
  )
  parser.add_argument('--num_val_tasks', type=int, default=None, help='default 160, --quick 32')
  parser.add_argument('--num_test_tasks', type=int, default=600)
  parser.add_argument('--data_dir', default=fewshot_config.DEFAULT_DATA_DIRS['omniglot'])
  parser.add_argument('--cache_dir', default=None)
  parser.add_argument('--out', default='runs/benchmarks/harness')
  parser.add_argument('--worker', default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  quick = args.quick
  defaults = dict(
    sweep_shapes=['sinusoid'] if quick else ['sinusoid', 'omniglot_5way1shot'],
    memory_shapes=['resnet12_tiny'] if quick else ['resnet12_32', 'resnet12_84'],
    sweep_steps=[1, 2, 5] if quick else [1, 2, 5, 10, 20],
    repeats=5 if quick else 20,
    budget_s=30.0 if quick else 600.0,
    eval_every=25 if quick else 250,
    num_val_tasks=32 if quick else 160,
  )
  for key, value in defaults.items():
    if getattr(args, key) is None:
      setattr(args, key, value)
  for key in ('repeats', 'matmul_size', 'eval_every', 'num_val_tasks', 'num_test_tasks'):
    if getattr(args, key) < 1:
      parser.error(f'--{key} must be a positive int, got {getattr(args, key)}.')
  for key in ('sweep_steps', 'memory_steps'):
    if min(getattr(args, key)) < 1:
      parser.error(f'--{key} must be positive ints, got {getattr(args, key)}.')
  if not args.budget_s > 0 or not args.min_block_s > 0:
    parser.error('--budget_s and --min_block_s must be positive.')
  return args


def main(argv=None) -> dict:
  """Runs the chosen sections; returns the report (``harness.json``).

  With ``--worker`` (``measure.run_fresh``'s protocol), runs the one
  measurement of ``workers.WORKERS`` it names and prints its row as JSON.
  """
  args = parse_args(sys.argv[1:] if argv is None else argv)
  if args.worker:
    spec = json.loads(args.worker)
    print(json.dumps(workers.WORKERS[spec.pop('kind')](**spec)))
    return {}
  # pylint: disable=import-outside-toplevel
  from experiments import cli
  from jaxmaml.files import atomic_write

  report = {
    'benchmark': 'harness',
    'time': time.strftime('%Y-%m-%dT%H:%M:%S'),
    'command': ' '.join(['python -m benchmarks.harness'] + (argv or sys.argv[1:])),
    'environment': cli.environment(),
    'config': vars(args),
  }

  def save():
    atomic_write(
      os.path.join(args.out, 'harness.json'),
      lambda f: f.write(json.dumps(report, indent=2).encode()),
    )
    atomic_write(
      os.path.join(args.out, 'harness.md'), lambda f: f.write(reporting.markdown(report).encode())
    )

  with measure.paused(args.pause):
    report['matmul'] = workers.run_worker(
      'matmul', n=args.matmul_size, repeats=args.repeats, min_block_s=args.min_block_s
    )
  print(f'dense matmul: {report["matmul"]["flop_per_s"] / 1e9:.1f} GFLOP/s', flush=True)
  context = sections.Context(args, report, save)
  for section in sections.SECTIONS:
    if section.name in args.sections:
      section.run(context)
  save()
  print(reporting.markdown(report))
  print(f'wrote {args.out}/harness.json, harness.md and plots')
  return report
