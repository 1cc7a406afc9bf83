"""The benchmark harness: first- vs second-order MAML (and remat) on cost and accuracy.

One command measures, for each variant (``second_order``, ``first_order``,
``second_order_remat``: each inner step checkpointed, ``second_order_remat_sqrt``:
two-level checkpointing with segments of about sqrt(inner steps) steps) and
each problem shape (the sinusoid MLP; the Omniglot
Conv4 in its 5-way 1-shot and 20-way 1-shot settings):

* ``variants``: lowering and compile time (separately), steady-state time of
  the whole jitted meta-step (Optax update included; median and interquartile
  range of repeated timed blocks after warm-up, ``block_until_ready``), tasks
  per second, memory, and FLOP/s;
* ``sweep``: the same against the number of inner steps (1, 2, 5, 10, 20);
* ``accuracy``: first- vs second-order Omniglot 5-way 1-shot trained for the
  same meta-training wall time (validation excluded), then tested on 600
  tasks (mean and 95% CI); needs the Omniglot data;
* ``family``: the same meta-step measurements for every algorithm of the
  family (``FAMILY``) on the sinusoid and Omniglot 5-way 1-shot shapes;
* ``family_accuracy``: every algorithm trained on Omniglot 5-way 1-shot for
  the same meta-training wall time, with its own hyperparameters
  (``FAMILY``), then tested on 600 tasks;
* ``precision``: the meta-step of first- and second-order MAML in float32 and
  bfloat16 (``jaxmaml.mixed_precision``) on the sinusoid and Omniglot 5-way
  1-shot shapes, and second-order Omniglot trained in each precision for the
  same meta-training wall time;
* ``devices``: the Omniglot 5-way 1-shot second-order meta-step with its 32
  tasks split over 1, 2, 4 and 8 devices (``make_meta_step(..., mesh=...)``).
  On CPU the devices are simulated
  (``--xla_force_host_platform_device_count``) and share the machine's cores:
  this measures the overhead of the split, not a speed-up;
* ``peers``: ``benchmarks.peers`` (PyTorch, learn2learn) in the same run, if
  PyTorch is installed.

Each measurement of the first two sections runs in a fresh Python process, so
that its peak RSS is its own. Definitions:

* memory: ``xla_temp_bytes`` is the scratch memory of the compiled step
  (XLA's memory analysis: what grows with inner steps); ``xla_peak_bytes``
  adds its arguments and outputs (minus donated aliases); ``peak_rss_bytes``
  is the process's peak resident set (the JAX runtime included; compare it
  with ``rss_before_build_bytes``); ``device_peak_bytes`` is the device's
  allocator peak where the backend reports one (GPU, TPU).
* FLOPs are *model* FLOPs: XLA's cost analysis of the same meta-step lowered
  with tasks vmapped and the inner loop unrolled (a loop body would be counted
  once), without remat (its recomputation is overhead, not work).
  ``matmul_fraction`` compares the achieved FLOP/s with a dense float32
  matmul measured on the same device in the same run.

Writes ``harness.json`` (machine, versions, config, every figure),
``harness.md`` (tables) and PNG plots into ``--out``.

    python -m benchmarks.harness --quick     # a few minutes on CPU
    python -m benchmarks.harness             # the full run
"""

import argparse
import json
import math
import os
import subprocess
import sys
import time
from typing import NamedTuple

import numpy as np

from benchmarks import measure

VARIANTS = {  # remat='sqrt': two-level checkpointing, segments of ~sqrt(inner steps).
    'second_order': dict(first_order=False, remat=False),
    'first_order': dict(first_order=True, remat=False),
    'second_order_remat': dict(first_order=False, remat=True),
    'second_order_remat_sqrt': dict(first_order=False, remat='sqrt'),
}


# The family: how ``experiments.algorithms`` builds each one, and the flags
# of its Omniglot 5-way 1-shot run (on top of the MAML paper's config).
FAMILY = {
    'maml': (dict(algorithm='maml'), []),
    'fomaml': (dict(algorithm='maml', first_order=True), ['--first_order']),
    'anil': (dict(algorithm='anil'), ['--algorithm', 'anil']),
    'meta_sgd': (dict(algorithm='meta_sgd'), ['--algorithm', 'meta_sgd']),
    # MAML++'s Omniglot config: 5 steps at 0.1 (learned per layer and step),
    # meta-batch 8, MSL over the first 10 epochs of 500 iterations, cosine.
    'maml_plus_plus': (dict(algorithm='maml_plus_plus', msl_iterations=5000, inner_steps=5),
                       ['--algorithm', 'maml_plus_plus', '--inner_lr', '0.1',
                        '--train_inner_steps', '5', '--eval_inner_steps', '5',
                        '--meta_batch_size', '8', '--msl_iterations', '5000',
                        '--outer_schedule', 'cosine']),
    # Reptile: 5 inner SGD steps (50 at test), meta-batch 5, outer step 1
    # annealed linearly to 0 (the paper's schedule; it uses inner Adam).
    'reptile': (dict(algorithm='reptile', inner_steps=5),
                ['--algorithm', 'reptile', '--inner_lr', '0.1', '--train_inner_steps', '5',
                 '--eval_inner_steps', '50', '--meta_batch_size', '5', '--outer_lr', '1.0',
                 '--outer_schedule', 'linear']),
    # Reptile as its paper trains Omniglot 5-way 1-shot: 10 training shots per
    # class, 5 inner Adam (b1=0) steps at 0.001 on shuffled batches of 10, 50
    # steps at test on the 1-shot support.
    'reptile_paper': (dict(algorithm='reptile', inner_steps=5, inner_optimizer='adam'),
                      ['--algorithm', 'reptile', '--inner_optimizer', 'adam',
                       '--inner_lr', '0.001', '--train_shots', '10', '--inner_batch_size', '10',
                       '--train_inner_steps', '5', '--eval_inner_steps', '50',
                       '--meta_batch_size', '5', '--outer_lr', '1.0',
                       '--outer_schedule', 'linear']),
    # iMAML: 10 proximal steps at 0.1, lambda 2, 5 CG iterations.
    'imaml': (dict(algorithm='imaml', inner_steps=10),
              ['--algorithm', 'imaml', '--inner_lr', '0.1', '--train_inner_steps', '10',
               '--eval_inner_steps', '10', '--imaml_reg', '2.0', '--cg_steps', '5']),
    # iMAML with the authors' Omniglot settings: 16 steps at 0.1, lambda 2,
    # 5 CG iterations on their damped system (cg_damping 1, reg_damping 10).
    'imaml_damped': (dict(algorithm='imaml', inner_steps=16, cg_damping=1.0, reg_damping=10.0),
                     ['--algorithm', 'imaml', '--inner_lr', '0.1', '--train_inner_steps', '16',
                      '--eval_inner_steps', '16', '--imaml_reg', '2.0', '--cg_steps', '5',
                      '--cg_damping', '1.0', '--reg_damping', '10.0']),
    'protonets': (dict(algorithm='protonets'), ['--algorithm', 'protonets']),
}


class Shape(NamedTuple):
  """A problem: the model and the meta-batch it is trained on."""

  model: str  # 'mlp' (sinusoid) or 'conv4' (Omniglot, 28x28x1).
  ways: int
  shots: int
  queries: int
  meta_batch_size: int
  inner_lr: float
  inner_steps: int
  task_map: str
  batch_size: int | None = None


SHAPES = {  # Hyperparameters of the MAML paper; task mapping as in our configs.
    'sinusoid': Shape('mlp', 1, 10, 10, 25, 0.01, 1, 'vmap'),
    'omniglot_5way1shot': Shape('conv4', 5, 1, 1, 32, 0.4, 1, 'map', 4),
    'omniglot_20way1shot': Shape('conv4', 20, 1, 1, 16, 0.1, 5, 'map', 4),
}


def _family_learner(spec: dict, shape: Shape, loss_fn, embed_fn, inner_steps: int):
  """The learner of ``FAMILY`` entry ``spec``, built as the experiments build it."""
  import types
  import jaxmaml
  from experiments import algorithms

  config = types.SimpleNamespace(
      algorithm=spec['algorithm'], first_order=spec.get('first_order', False),
      inner_lr=shape.inner_lr, train_inner_steps=inner_steps, eval_inner_steps=inner_steps,
      msl_iterations=spec.get('msl_iterations', 0), imaml_reg=2.0, cg_steps=5,
      cg_damping=spec.get('cg_damping', 0.0), reg_damping=spec.get('reg_damping', 0.0),
      inner_optimizer=spec.get('inner_optimizer', 'sgd'), inner_batch_size=None)
  conv = shape.model == 'conv4'
  learner, _ = algorithms.make_learners(
      config, loss_fn, has_aux=conv, per_step_bn=jaxmaml.batch_norm_params if conv else None,
      embed_fn=embed_fn, num_ways=shape.ways)
  return learner


def _problem(shape: Shape, inner_steps: int, family: str | None = None,
             precision: str = 'float32', **learner_kwargs):
  """``(learner, optimizer, state, tasks)`` for ``shape`` on synthetic data.

  With ``family``, the learner is that algorithm of ``FAMILY``; otherwise MAML
  with ``learner_kwargs``. The model computes in ``precision``.
  """
  import jax
  import optax
  import jaxmaml
  from benchmarks import problems
  from jaxmaml.data import sinusoid

  if learner_kwargs.get('remat') == 'sqrt':
    learner_kwargs['remat'] = max(1, round(math.sqrt(inner_steps)))
  data_key, init_key = jax.random.split(jax.random.key(0))
  if shape.model == 'mlp':
    model = jaxmaml.MLP(features=(40, 40, 1))
    loss_fn = jaxmaml.mse_loss(jaxmaml.mixed_precision(jaxmaml.apply_fn(model), precision))
    tasks = sinusoid.sample_tasks(data_key, shape.meta_batch_size, shape.shots, shape.queries)
  else:
    protonets = family == 'protonets'
    model = jaxmaml.Conv4(None if protonets else shape.ways)
    loss_fn = jaxmaml.cross_entropy_loss(
        jaxmaml.mixed_precision(jaxmaml.apply_fn(model), precision))
    learner_kwargs['has_aux'] = True
    tasks = problems.random_tasks(data_key, shape.meta_batch_size, shape.ways,
                                       shape.shots, shape.queries)
  params = model.init(init_key, jax.tree_util.tree_map(lambda x: x[0], tasks.support[0]))['params']
  if family:
    learner = _family_learner(FAMILY[family][0], shape, loss_fn, jaxmaml.apply_fn(model),
                              inner_steps)
  else:
    learner = jaxmaml.maml(loss_fn, inner_lr=shape.inner_lr, num_steps=inner_steps,
                           **learner_kwargs)
  optimizer = optax.sgd(1.0) if family == 'reptile' else optax.adam(1e-3)
  return learner, optimizer, jaxmaml.init_train_state(learner.init(params), optimizer), tasks


def _device_peak_bytes():
  import jax
  stats = jax.devices()[0].memory_stats()
  return None if not stats else stats.get('peak_bytes_in_use')


def _time_blocks(fn, args, repeats: int, min_block_s: float) -> list[float]:
  """Seconds per call of ``fn(*args) -> args`` over ``repeats`` timed blocks."""
  import jax
  start = time.perf_counter()
  args = jax.block_until_ready(fn(*args))
  calls = max(1, math.ceil(min_block_s / (time.perf_counter() - start)))
  for _ in range(calls):  # Warm-up.
    args = fn(*args)
  jax.block_until_ready(args)
  per_call = []
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(calls):
      args = fn(*args)
    jax.block_until_ready(args)
    per_call.append((time.perf_counter() - start) / calls)
  return per_call


def measure_meta_step(name: str, variant: str, inner_steps: int, repeats: int,
                      min_block_s: float, task_map: str | None = None,
                      precision: str = 'float32', num_devices: int = 1) -> dict:
  """Compile time, step time, memory and FLOPs of one jitted meta-step, its
  model in ``precision``, its tasks split over ``num_devices`` devices."""
  import jax
  import jaxmaml

  shape = SHAPES[name]
  if task_map:
    shape = shape._replace(task_map=task_map,
                           batch_size=shape.batch_size if task_map == 'map' else None)
  rss_before = measure.peak_rss_bytes()
  family = variant if variant in FAMILY else None
  kwargs = {} if family else VARIANTS[variant]
  learner, optimizer, state, tasks = _problem(shape, inner_steps, family, precision, **kwargs)
  mapping = dict(task_map=shape.task_map, batch_size=shape.batch_size)
  mesh = None
  if num_devices > 1:
    mesh = jaxmaml.task_mesh(num_devices)
    state, tasks = jaxmaml.replicate(state, mesh), jaxmaml.shard_tasks(tasks, mesh)
  step = jax.jit(jaxmaml.make_meta_step(learner, optimizer, jit=False, mesh=mesh, **mapping))
  start = time.perf_counter()
  lowered = step.lower(state, tasks)
  lower_s = time.perf_counter() - start
  start = time.perf_counter()
  compiled = lowered.compile()
  compile_s = time.perf_counter() - start

  # The family's inner loops are unrolled already (at most 10 steps).
  counted, _, _, _ = (_problem(shape, inner_steps, family, precision) if family else _problem(
      shape, inner_steps, precision=precision, first_order=VARIANTS[variant]['first_order'],
      unroll=True))
  counting_step = jaxmaml.make_meta_step(counted, optimizer, jit=False, task_map='vmap')
  counting = jax.jit(counting_step).lower(state, tasks)
  # The HLO cost analysis before compiling; some backends (GPU) only have it
  # after compiling.
  flops = (counting.cost_analysis() or counting.compile().cost_analysis())['flops']

  times = _time_blocks(lambda s: (compiled(s, tasks)[0],), (state,), repeats, min_block_s)
  median = float(np.median(times))
  memory = compiled.memory_analysis()
  return {
      'shape': name, 'variant': variant, 'inner_steps': inner_steps,
      'precision': precision, 'num_devices': num_devices,
      'meta_batch_size': shape.meta_batch_size,
      'task_map': shape.task_map + (f':{shape.batch_size}' if shape.batch_size else ''),
      'lower_s': lower_s, 'compile_s': compile_s,
      'step_s_median': median,
      'step_s_iqr': [float(np.percentile(times, 25)), float(np.percentile(times, 75))],
      'timed_blocks': len(times),
      'tasks_per_s': shape.meta_batch_size / median,
      'model_flops_per_step': float(flops),
      'achieved_flop_per_s': float(flops) / median,
      'xla_temp_bytes': int(memory.temp_size_in_bytes),
      'xla_peak_bytes': int(memory.temp_size_in_bytes + memory.argument_size_in_bytes
                            + memory.output_size_in_bytes - memory.alias_size_in_bytes),
      'rss_before_build_bytes': rss_before,
      'peak_rss_bytes': measure.peak_rss_bytes(),
      'device_peak_bytes': _device_peak_bytes(),
  }


def measure_matmul(n: int, repeats: int, min_block_s: float) -> dict:
  """Dense float32 ``[n, n] @ [n, n]`` FLOP/s: the hardware reference."""
  import jax
  import jax.numpy as jnp

  a, b = jax.random.normal(jax.random.key(0), (2, n, n), jnp.float32)
  matmul = jax.jit(lambda a, b: (jnp.dot(a, b) * (1.0 / n), b))
  times = _time_blocks(matmul, (a, b), repeats, min_block_s)
  median = float(np.median(times))
  return {'n': n, 'step_s_median': median, 'flop_per_s': 2 * n**3 / median}


WORKERS = {'meta_step': measure_meta_step, 'matmul': measure_matmul}


def run_worker(kind: str, **kwargs) -> dict:
  """Runs ``WORKERS[kind](**kwargs)`` in a fresh Python process.

  A failure (e.g. out of memory) is returned as ``{'error': ...}`` so that
  one configuration cannot lose the rest of the run. With ``num_devices > 1``
  the process simulates that many CPU devices (the flag must be set before
  JAX starts; it does not affect GPUs or TPUs).
  """
  env = {}
  if kwargs.get('num_devices', 1) > 1:
    env['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_'
                        f"count={kwargs['num_devices']}")
  row = measure.run_fresh('benchmarks.harness', {'kind': kind, **kwargs}, env=env)
  return {**kwargs, 'error': [row['error']]} if 'error' in row else row


def run_accuracy(variant: str, args, flags=None) -> dict:
  """Trains Omniglot 5-way 1-shot for ``args.budget_s`` of meta-training; test accuracy.

  ``variant`` names a MAML variant (``VARIANTS``), or with ``flags`` (the
  experiment's command-line flags) an algorithm of ``FAMILY``.
  """
  workdir = os.path.join(args.out, 'accuracy', variant)
  command = [sys.executable, '-m', 'experiments.fewshot.main', '--config', 'omniglot_5way1shot',
             '--workdir', workdir, '--data_dir', args.data_dir,
             '--time_budget_s', str(args.budget_s), '--eval_every', str(args.eval_every),
             '--num_val_tasks', str(args.num_val_tasks),
             '--num_test_tasks', str(args.num_test_tasks)]
  command += flags if flags is not None else (
      ['--first_order'] if VARIANTS[variant]['first_order'] else ['--no-first_order'])
  if args.cache_dir:
    command += ['--cache_dir', args.cache_dir]
  proc = subprocess.run(command, capture_output=True, text=True)
  if proc.returncode != 0:
    return {'variant': variant, 'error': proc.stderr.strip().splitlines()[-1:]}
  with open(os.path.join(workdir, 'results.json')) as f:
    results = json.load(f)['results']
  with open(os.path.join(workdir, 'log.jsonl')) as f:
    curve = [json.loads(line) for line in f]
  return {'variant': variant, 'budget_s': args.budget_s,
          'meta_train_time_s': results['meta_train_time_s'],
          'iterations': results['iterations'], 'test': results['test'],
          'best_val_accuracy': results['best_val_accuracy'],
          'val_curve': [(r['meta_train_time_s'], r['val_accuracy'], r['val_ci95'])
                        for r in curve if 'val_accuracy' in r]}


def run_peers(args) -> dict:
  """The peers' shape table (``benchmarks.peers``), if PyTorch is installed."""
  import importlib.util
  if importlib.util.find_spec('torch') is None:
    return {'skipped': 'PyTorch is not installed (pip install torch==2.13.0)'}
  out = os.path.join(args.out, 'peers.json')
  command = [sys.executable, '-m', 'benchmarks.peers', '--out', out] + (
      ['--quick', '--shapes', 'omniglot_5w1s_q1_1step', '--orders', 'second']
      if args.quick else [])
  proc = subprocess.run(command, capture_output=True, text=True)
  if proc.returncode != 0:
    return {'error': proc.stderr.strip().splitlines()[-1:]}
  with open(out) as f:
    return json.load(f)


def _mib(x) -> str:
  return 'n/a' if x is None else f'{x / 2**20:.1f}'


def _step_table(rows: list[dict], matmul_flop_per_s: float) -> list[str]:
  lines = ['| shape | variant | inner steps | lower + compile (s) | step (ms), median [IQR] '
           '| tasks/s | GFLOP/s | of matmul | XLA temp / peak (MiB) | peak RSS (MiB) |',
           '|---' * 10 + '|']
  for r in rows:
    variant = r['variant'] + ('' if r.get('precision', 'float32') == 'float32'
                              else f" {r['precision']}")
    if r.get('num_devices', 1) > 1:
      variant += f", {r['num_devices']} devices"
    if 'error' in r:
      lines.append(f"| {r['name']} | {variant} | {r['inner_steps']} | error: {r['error']} |")
      continue
    lo, hi = r['step_s_iqr']
    lines.append(
        f"| {r['shape']} | {variant} | {r['inner_steps']} "
        f"| {r['lower_s']:.1f} + {r['compile_s']:.1f} "
        f"| {1e3 * r['step_s_median']:.2f} [{1e3 * lo:.2f}, {1e3 * hi:.2f}] "
        f"| {r['tasks_per_s']:.0f} | {r['achieved_flop_per_s'] / 1e9:.1f} "
        f"| {r['achieved_flop_per_s'] / matmul_flop_per_s:.1%} "
        f"| {_mib(r['xla_temp_bytes'])} / {_mib(r['xla_peak_bytes'])} "
        f"| {_mib(r['peak_rss_bytes'])} |")
  return lines


def _remat_summary(rows: list[dict]) -> list[str]:
  """Peak memory at the most inner steps relative to one step, per variant."""
  lines = []
  for name in dict.fromkeys(r['shape'] for r in rows if 'error' not in r):
    for variant in VARIANTS:
      mine = sorted((r['inner_steps'], r) for r in rows
                    if r.get('shape') == name and r['variant'] == variant)
      if len(mine) > 1 and mine[0][0] == 1:
        (_, one), (steps, most) = mine[0], mine[-1]
        lines.append(
            f"- {name}, {variant}: XLA peak memory x{most['xla_peak_bytes'] / one['xla_peak_bytes']:.2f}"
            f" and step time x{most['step_s_median'] / one['step_s_median']:.1f} "
            f"from 1 to {steps} inner steps")
  return lines


def plot_sweep(rows: list[dict], path: str) -> None:
  """Step time and XLA peak memory vs inner steps, one column per shape."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  rows = [r for r in rows if 'error' not in r]
  names = list(dict.fromkeys(r['shape'] for r in rows))
  fig, axes = plt.subplots(2, len(names), figsize=(5 * len(names), 7), squeeze=False)
  for col, name in enumerate(names):
    for variant in VARIANTS:
      mine = sorted((r['inner_steps'], r) for r in rows
                    if r['shape'] == name and r['variant'] == variant)
      steps = [s for s, _ in mine]
      axes[0, col].plot(steps, [1e3 * r['step_s_median'] for _, r in mine], 'o-', label=variant)
      axes[1, col].plot(steps, [r['xla_peak_bytes'] / 2**20 for _, r in mine], 'o-',
                        label=variant)
    axes[0, col].set(title=name, ylabel='meta-step time (ms)', yscale='log')
    axes[1, col].set(xlabel='inner steps', ylabel='XLA peak memory (MiB)')
    axes[0, col].legend()
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_accuracy(rows: list[dict], path: str) -> None:
  """Validation accuracy vs meta-training wall time, one line per variant."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6, 4))
  for r in rows:
    if 'error' not in r and r['val_curve']:
      t, acc, ci = map(np.asarray, zip(*r['val_curve']))
      ax.errorbar(t, acc, yerr=ci, marker='o', capsize=2,
                  label=f"{r['variant']} ({r['iterations']} it)")
  ax.set(xlabel='meta-training wall time (s)', ylabel='validation accuracy (%)',
         title='Omniglot 5-way 1-shot at equal budget')
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


SECTIONS = ('variants', 'sweep', 'accuracy', 'family', 'family_accuracy', 'precision',
            'devices', 'peers')


def parse_args(argv):
  from experiments.fewshot import config as fewshot_config
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument('--quick', action='store_true',
                      help='fewer repeats, a shorter sweep and accuracy budget')
  parser.add_argument('--sections', nargs='+', default=list(SECTIONS), choices=SECTIONS)
  parser.add_argument('--shapes', nargs='+', default=list(SHAPES), choices=list(SHAPES),
                      help='shapes of the variants section')
  parser.add_argument('--family', nargs='+', default=list(FAMILY), choices=list(FAMILY),
                      help='algorithms of the family and family_accuracy sections')
  parser.add_argument('--device_counts', nargs='+', type=int, default=[1, 2, 4, 8],
                      help='device counts of the devices section (32 tasks split evenly)')
  parser.add_argument('--sweep_shapes', nargs='+', choices=list(SHAPES), default=None,
                      help='default: sinusoid and omniglot_5way1shot (--quick: sinusoid)')
  parser.add_argument('--sweep_steps', nargs='+', type=int, default=None,
                      help='default: 1 2 5 10 20 (--quick: 1 2 5)')
  parser.add_argument('--task_map', choices=('vmap', 'map'), default=None,
                      help="override the shapes' task mapping (Omniglot: map over chunks of "
                      "4 tasks, the fastest on CPU; vmap is the natural choice on a GPU)")
  parser.add_argument('--repeats', type=int, default=None, help='timed blocks (default 20, --quick 5)')
  parser.add_argument('--min_block_s', type=float, default=0.2,
                      help='each timed block repeats the step for at least this long')
  parser.add_argument('--matmul_size', type=int, default=2048)
  parser.add_argument('--budget_s', type=float, default=None,
                      help='meta-training seconds per variant in the accuracy section '
                      '(default 600, --quick 30)')
  parser.add_argument('--eval_every', type=int, default=None,
                      help='validation interval in iterations (default 250, --quick 25)')
  parser.add_argument('--num_val_tasks', type=int, default=None, help='default 160, --quick 32')
  parser.add_argument('--num_test_tasks', type=int, default=600)
  parser.add_argument('--data_dir', default=fewshot_config.DEFAULT_DATA_DIRS['omniglot'])
  parser.add_argument('--cache_dir', default=None)
  parser.add_argument('--out', default='runs/benchmarks/harness')
  parser.add_argument('--worker', default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  quick = args.quick
  defaults = dict(sweep_shapes=['sinusoid'] if quick else ['sinusoid', 'omniglot_5way1shot'],
                  sweep_steps=[1, 2, 5] if quick else [1, 2, 5, 10, 20],
                  repeats=5 if quick else 20, budget_s=30.0 if quick else 600.0,
                  eval_every=25 if quick else 250, num_val_tasks=32 if quick else 160)
  for key, value in defaults.items():
    if getattr(args, key) is None:
      setattr(args, key, value)
  for key in ('repeats', 'matmul_size', 'eval_every', 'num_val_tasks', 'num_test_tasks'):
    if getattr(args, key) < 1:
      parser.error(f'--{key} must be a positive int, got {getattr(args, key)}.')
  if min(args.sweep_steps) < 1:
    parser.error(f'--sweep_steps must be positive ints, got {args.sweep_steps}.')
  if not args.budget_s > 0 or not args.min_block_s > 0:
    parser.error('--budget_s and --min_block_s must be positive.')
  return args


def _markdown(report: dict) -> str:
  """The tables of ``report`` as Markdown."""
  flop_per_s = report['matmul']['flop_per_s']
  lines = [f"Dense float32 matmul ({report['matmul']['n']}^2): {flop_per_s / 1e9:.1f} GFLOP/s.",
           '']
  if 'variants' in report:
    lines += ["## Variants at the paper's inner steps", '']
    lines += _step_table(report['variants'], flop_per_s) + ['']
  if 'sweep' in report:
    lines += ['## Inner-step sweep', ''] + _step_table(report['sweep'], flop_per_s) + ['']
    lines += _remat_summary(report['sweep']) + ['']
  for key, title in (('family', 'The family (one meta-step each)'),
                     ('precision', 'float32 vs bfloat16 compute'),
                     ('devices', 'The meta-batch split over devices')):
    if key in report:
      lines += [f'## {title}', ''] + _step_table(report[key], flop_per_s) + ['']
  for key, title in (('accuracy', 'Omniglot 5-way 1-shot at equal meta-training time'),
                     ('family_accuracy', 'The family on Omniglot 5-way 1-shot at equal '
                      'meta-training time'),
                     ('precision_accuracy', 'Second-order Omniglot 5-way 1-shot, float32 vs '
                      'bfloat16, at equal meta-training time')):
    rows = report.get(key)
    if not isinstance(rows, list):
      continue
    lines += [f'## {title}', '',
              '| variant | budget (s) | iterations | test accuracy (%) | tasks |',
              '|---|---|---|---|---|']
    for r in rows:
      lines.append(f"| {r['variant']} | error: {r['error']} |" if 'error' in r else
                   f"| {r['variant']} | {r['meta_train_time_s']:.0f} | {r['iterations']} "
                   f"| {r['test']['accuracy']:.2f} ± {r['test']['ci95']:.2f} "
                   f"| {r['test']['num_tasks']} |")
    lines.append('')
  if 'results' in report.get('peers', {}):
    from benchmarks import peers
    lines += ['## Peers (PyTorch, learn2learn)', '', peers.markdown(report['peers'])]
  for key, value in report.items():
    if isinstance(value, dict) and set(value) & {'skipped', 'error'}:
      lines.append(f"{key}: {value.get('skipped') or value.get('error')}")
  return '\n'.join(lines) + '\n'


def main(argv=None) -> dict:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  if args.worker:
    spec = json.loads(args.worker)
    print(json.dumps(WORKERS[spec.pop('kind')](**spec)))
    return {}
  from experiments import cli
  from jaxmaml.checkpoint import atomic_write

  timing = dict(repeats=args.repeats, min_block_s=args.min_block_s)
  report = {'benchmark': 'harness', 'time': time.strftime('%Y-%m-%dT%H:%M:%S'),
            'command': ' '.join(['python -m benchmarks.harness'] + (argv or sys.argv[1:])),
            'environment': cli.environment(), 'config': vars(args)}

  def save():  # After every measurement: an interrupted run keeps what it measured.
    atomic_write(os.path.join(args.out, 'harness.json'),
                 lambda f: f.write(json.dumps(report, indent=2).encode()))
    atomic_write(os.path.join(args.out, 'harness.md'),
                 lambda f: f.write(_markdown(report).encode()))

  report['matmul'] = run_worker('matmul', n=args.matmul_size, **timing)
  print(f"dense matmul: {report['matmul']['flop_per_s'] / 1e9:.1f} GFLOP/s", flush=True)

  def steps_section(key, configs):
    report[key] = []
    for name, variant, steps, *extra in configs:
      report[key].append(run_worker('meta_step', name=name, variant=variant, inner_steps=steps,
                                    task_map=args.task_map, **timing, **dict(extra)))
      save()
      print(_step_table(report[key][-1:], report['matmul']['flop_per_s'])[-1], flush=True)

  if 'variants' in args.sections:
    steps_section('variants', [(n, v, SHAPES[n].inner_steps) for n in args.shapes
                               for v in VARIANTS])
  if 'sweep' in args.sections:
    steps_section('sweep', [(n, v, s) for n in args.sweep_shapes for s in args.sweep_steps
                            for v in VARIANTS])
    plot_sweep(report['sweep'], os.path.join(args.out, 'sweep.png'))
  if 'accuracy' in args.sections:
    if not os.path.isdir(args.data_dir):
      report['accuracy'] = {'skipped': f'no Omniglot data at {args.data_dir}'}
    else:
      report['accuracy'] = []
      for variant in ('second_order', 'first_order'):
        report['accuracy'].append(run_accuracy(variant, args))
        save()
      plot_accuracy(report['accuracy'], os.path.join(args.out, 'accuracy_vs_time.png'))
  if 'family' in args.sections:
    steps_section('family', [(n, f, FAMILY[f][0].get('inner_steps', SHAPES[n].inner_steps))
                             for n in ('sinusoid', 'omniglot_5way1shot') for f in args.family
                             if not (n == 'sinusoid' and f == 'protonets')])
  if 'family_accuracy' in args.sections:
    if not os.path.isdir(args.data_dir):
      report['family_accuracy'] = {'skipped': f'no Omniglot data at {args.data_dir}'}
    else:
      report['family_accuracy'] = []
      for name in args.family:
        report['family_accuracy'].append(run_accuracy(name, args, FAMILY[name][1]))
        save()
      plot_accuracy(report['family_accuracy'],
                    os.path.join(args.out, 'family_accuracy_vs_time.png'))
  if 'precision' in args.sections:
    steps_section('precision', [(n, v, SHAPES[n].inner_steps, ('precision', p))
                                for n in ('sinusoid', 'omniglot_5way1shot')
                                for v in ('second_order', 'first_order')
                                for p in ('float32', 'bfloat16')])
    if not os.path.isdir(args.data_dir):
      report['precision_accuracy'] = {'skipped': f'no Omniglot data at {args.data_dir}'}
    else:
      report['precision_accuracy'] = []
      for precision in ('float32', 'bfloat16'):
        report['precision_accuracy'].append(run_accuracy(
            f'second_order_{precision}', args, ['--no-first_order', '--precision', precision]))
        save()
  if 'devices' in args.sections:
    steps_section('devices', [('omniglot_5way1shot', 'second_order', 1, ('num_devices', n))
                              for n in args.device_counts])
  if 'peers' in args.sections:
    report['peers'] = run_peers(args)
  save()
  print(_markdown(report))
  print(f'wrote {args.out}/harness.json, harness.md and plots')
  return report


if __name__ == '__main__':
  main()
