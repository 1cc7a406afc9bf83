"""The harness's sections as a table: ``SECTIONS``, one ``Section`` each.

A section's ``run(context)`` measures and writes its rows into
``context.report`` under its keys, calling ``context.save()`` after every
measurement so that an interrupted run keeps what it measured. The command
runs the chosen sections in the table's order.
"""

import argparse
from collections.abc import Callable
import importlib.util
import json
import os
import subprocess
import sys
from typing import NamedTuple

from benchmarks import measure
from benchmarks.harness import reporting
from benchmarks.harness import workers
from benchmarks.harness.configs import FAMILY
from benchmarks.harness.configs import MEMORY_VARIANTS
from benchmarks.harness.configs import SHAPES
from benchmarks.harness.configs import VARIANTS


class Context(NamedTuple):
  """What a section runs with and writes to.

  Attributes:
    args: the harness's parsed arguments.
    report: the report so far (``harness.json``); sections add their keys.
    save: writes the report (``harness.json`` and ``harness.md``).
  """

  args: argparse.Namespace
  report: dict
  save: Callable[[], None]


class Section(NamedTuple):
  """One part of a run.

  Attributes:
    name: its ``--sections`` name.
    run: ``run(context)``, which writes its rows into ``context.report``.
    description: what it measures (the command's help).
  """

  name: str
  run: Callable[[Context], None]
  description: str


def _meta_steps(context: Context, key: str, configs, table=reporting.step_table) -> None:
  """``report[key]``: one fresh-process meta-step measurement per
  ``(shape, variant, inner_steps, extra keyword arguments)`` of ``configs``,
  each printed as a line of ``table``."""
  args, report = context.args, context.report
  rows = report[key] = []
  for name, variant, steps, extra in configs:
    with measure.paused(args.pause if extra.get('time_step', True) else []):
      rows.append(
        workers.run_worker(
          'meta_step',
          name=name,
          variant=variant,
          inner_steps=steps,
          task_map=args.task_map,
          repeats=args.repeats,
          min_block_s=args.min_block_s,
          **extra,
        )
      )
    context.save()
    print(table(rows[-1:], report['matmul']['flop_per_s'])[-1], flush=True)


def _trained(context: Context, key: str, runs, plot: str | None = None) -> None:
  """``report[key]``: one equal-budget training (``training.train``, in a fresh
  process) per ``(name, config overrides)`` of ``runs``, plotted into ``plot``
  under ``--out``; skipped without the data."""
  args = context.args
  if not os.path.isdir(args.data_dir):
    context.report[key] = {'skipped': f'no Omniglot data at {args.data_dir}'}
    return
  budget = dict(
    time_budget_s=args.budget_s,
    eval_every=args.eval_every,
    num_val_tasks=args.num_val_tasks,
    num_test_tasks=args.num_test_tasks,
  )
  rows = context.report[key] = []
  for name, overrides in runs:
    row = workers.run_worker(
      'train',
      variant=name,
      overrides={**overrides, **budget},
      workdir=os.path.join(args.out, 'accuracy', name),
      data_dir=args.data_dir,
      cache_dir=args.cache_dir,
    )
    rows.append({'variant': name, 'error': row['error']} if 'error' in row else row)
    context.save()
  if plot:
    reporting.plot_accuracy(rows, os.path.join(args.out, plot))


def variants(context: Context) -> None:
  _meta_steps(
    context,
    'variants',
    [(n, v, SHAPES[n].inner_steps, {}) for n in context.args.shapes for v in VARIANTS],
  )


def sweep(context: Context) -> None:
  args = context.args
  _meta_steps(
    context,
    'sweep',
    [(n, v, s, {}) for n in args.sweep_shapes for s in args.sweep_steps for v in VARIANTS],
  )
  reporting.plot_sweep(context.report['sweep'], os.path.join(args.out, 'sweep.png'))


def accuracy(context: Context) -> None:
  _trained(
    context,
    'accuracy',
    [(v, {'first_order': VARIANTS[v]['first_order']}) for v in ('second_order', 'first_order')],
    'accuracy_vs_time.png',
  )


def family(context: Context) -> None:
  _meta_steps(
    context,
    'family',
    [
      (n, f, FAMILY[f].get('train_inner_steps', SHAPES[n].inner_steps), {})
      for n in ('sinusoid', 'omniglot_5way1shot')
      for f in context.args.family
      if not (n == 'sinusoid' and f == 'protonets')
    ],
  )


def family_accuracy(context: Context) -> None:
  _trained(
    context,
    'family_accuracy',
    [(f, FAMILY[f]) for f in context.args.family],
    'family_accuracy_vs_time.png',
  )


def precision(context: Context) -> None:
  _meta_steps(
    context,
    'precision',
    [
      (n, v, SHAPES[n].inner_steps, {'precision': p})
      for n in ('sinusoid', 'omniglot_5way1shot')
      for v in ('second_order', 'first_order')
      for p in ('float32', 'bfloat16')
    ],
  )
  _trained(
    context,
    'precision_accuracy',
    [
      (f'second_order_{p}', {'first_order': False, 'precision': p}) for p in ('float32', 'bfloat16')
    ],
  )


def devices(context: Context) -> None:
  _meta_steps(
    context,
    'devices',
    [
      ('omniglot_5way1shot', 'second_order', 1, {'num_devices': n})
      for n in context.args.device_counts
    ],
  )


def resnet12_memory(context: Context) -> None:
  """``report['resnet12_memory']``: every variant of ``MEMORY_VARIANTS`` at each
  of ``--memory_steps`` inner steps on each of ``--memory_shapes`` (timed at the
  shape's own inner steps, compile-only otherwise and on
  ``--memory_compile_only`` shapes); ``report['resnet12_memory_fit']``: the
  linear fit of memory against inner steps, and the steps within each budget."""
  args = context.args
  _meta_steps(
    context,
    'resnet12_memory',
    [
      (n, v, s, {'time_step': s == SHAPES[n].inner_steps and n not in args.memory_compile_only})
      for n in args.memory_shapes
      for v in MEMORY_VARIANTS
      for s in args.memory_steps
    ],
    reporting.memory_table,
  )
  context.report['resnet12_memory_fit'] = reporting.memory_fits(context.report['resnet12_memory'])
  context.save()
  reporting.plot_memory(
    context.report['resnet12_memory'], os.path.join(args.out, 'resnet12_memory.png')
  )


def peers(context: Context) -> None:
  """``report['peers']``: the peers' shape table (``benchmarks.peers``), if
  PyTorch is installed."""
  args = context.args
  if importlib.util.find_spec('torch') is None:
    context.report['peers'] = {'skipped': 'PyTorch is not installed (pip install torch==2.13.0)'}
    return
  out = os.path.join(args.out, 'peers.json')
  command = [sys.executable, '-m', 'benchmarks.peers', '--out', out] + (
    ['--quick', '--shapes', 'omniglot_5w1s_q1_1step', '--orders', 'second'] if args.quick else []
  )
  proc = subprocess.run(command, capture_output=True, text=True)
  if proc.returncode != 0:
    context.report['peers'] = {'error': proc.stderr.strip().splitlines()[-1:]}
    return
  with open(out) as f:
    context.report['peers'] = json.load(f)


SECTIONS = (
  Section(
    'variants',
    variants,
    "every MAML variant at each shape's inner steps: lowering and compile time, "
    'step time (median and IQR), tasks/s, memory and FLOP/s',
  ),
  Section('sweep', sweep, 'the same against the number of inner steps (sweep.png)'),
  Section(
    'accuracy',
    accuracy,
    'first vs second order Omniglot 5-way 1-shot trained for the same meta-training '
    'time, tested on --num_test_tasks tasks (accuracy_vs_time.png; needs the data)',
  ),
  Section(
    'family',
    family,
    'the meta-step of every algorithm of the family on the sinusoid and Omniglot '
    '5-way 1-shot shapes',
  ),
  Section(
    'family_accuracy',
    family_accuracy,
    'every algorithm of the family trained on Omniglot 5-way 1-shot for the same '
    'meta-training time, with its own hyperparameters (family_accuracy_vs_time.png)',
  ),
  Section(
    'precision',
    precision,
    'first and second order meta-steps in float32 and bfloat16, and second order '
    'Omniglot trained in each for the same meta-training time',
  ),
  Section(
    'devices',
    devices,
    'the Omniglot 5-way 1-shot second-order meta-step with its 32 tasks split over '
    '--device_counts devices (simulated on CPU: the overhead, not a speed-up)',
  ),
  Section(
    'resnet12_memory',
    resnet12_memory,
    'second-order MAML on ResNet-12 (5-way 1-shot, 15 queries) without remat, with '
    'remat and two-level remat, first order and iMAML: memory against inner steps, '
    'step time, and the inner steps that fit in 16 and 80 GiB (resnet12_memory.png)',
  ),
  Section('peers', peers, 'benchmarks.peers (PyTorch, learn2learn), if PyTorch is installed'),
)
NAMES = tuple(section.name for section in SECTIONS)
