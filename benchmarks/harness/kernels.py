"""One meta-step (or the reference matmul) measured, in this process.

``measure_meta_step`` builds a problem of ``configs.SHAPES`` on synthetic data
with a MAML variant (``configs.VARIANTS``) or an algorithm of the family
(``configs.FAMILY``) and reports its lowering and compile time, steady-state
step time, memory and model FLOPs; ``measure_matmul`` the hardware's
reference FLOP/s. Both run in this process (``workers`` runs them in fresh
ones).
"""

import math
import time

import numpy as np

from benchmarks import measure
from benchmarks.harness.configs import FAMILY
from benchmarks.harness.configs import SHAPES
from benchmarks.harness.configs import VARIANTS
from benchmarks.harness.configs import Shape


def _family_learner(name: str, shape: Shape, apply_fn, loss, inner_steps: int, precision: str):
  """The training learner of ``FAMILY[name]``, built as the experiments build it,
  with ``shape``'s inner rate and ``inner_steps`` steps on the whole support."""
  # pylint: disable=import-outside-toplevel
  from experiments import algorithms
  import jaxmaml

  fields = {k: v for k, v in FAMILY[name].items() if k in algorithms.FIELDS}
  algo = algorithms.AlgorithmConfig(
    **{
      **fields,
      'inner_lr': shape.inner_lr,
      'train_inner_steps': inner_steps,
      'eval_inner_steps': inner_steps,
      'inner_batch_size': None,
      'precision': precision,
    }
  )
  conv = shape.model != 'mlp'
  return algorithms.make_learners(
    algo,
    apply_fn,
    loss,
    has_aux=conv,
    per_step_bn=jaxmaml.batch_norm_params if conv else None,
    num_ways=shape.ways,
  ).training


def build(
  shape: Shape,
  inner_steps: int,
  family: str | None = None,
  precision: str = 'float32',
  **learner_kwargs,
):
  """``(learner, optimizer, state, tasks)`` for ``shape`` on synthetic data.

  With ``family``, the learner is that algorithm of ``FAMILY``; otherwise MAML
  with ``learner_kwargs``. The model computes in ``precision``.
  """
  # pylint: disable=import-outside-toplevel
  import jax
  import optax

  from benchmarks import problems
  import jaxmaml
  from jaxmaml.data import sinusoid

  if learner_kwargs.get('remat') == 'sqrt':
    learner_kwargs['remat'] = max(1, round(math.sqrt(inner_steps)))
  data_key, init_key = jax.random.split(jax.random.key(0))
  if shape.model == 'mlp':
    model, loss = jaxmaml.MLP(features=(40, 40, 1)), jaxmaml.mse_loss
    tasks = sinusoid.sample_tasks(data_key, shape.meta_batch_size, shape.shots, shape.queries)
  else:  # ProtoNets: the network without its head, the embedding.
    num_classes = None if family == 'protonets' else shape.ways
    model = (
      jaxmaml.ResNet12(num_classes, **({'channels': shape.widths} if shape.widths else {}))
      if shape.model == 'resnet12'
      else jaxmaml.Conv4(num_classes)
    )
    loss = jaxmaml.cross_entropy_loss
    learner_kwargs['has_aux'] = True
    channels = 3 if shape.model == 'resnet12' else 1
    tasks = problems.random_tasks(
      data_key,
      shape.meta_batch_size,
      shape.ways,
      shape.shots,
      shape.queries,
      (shape.image_size, shape.image_size, channels),
      binary=channels == 1,
    )
  params = jax.jit(model.init)(init_key, jax.tree_util.tree_map(lambda x: x[0], tasks.support[0]))[
    'params'
  ]
  if family:
    learner = _family_learner(family, shape, jaxmaml.apply_fn(model), loss, inner_steps, precision)
  else:
    learner = jaxmaml.maml(
      loss(jaxmaml.mixed_precision(jaxmaml.apply_fn(model), precision)),
      inner_lr=shape.inner_lr,
      num_steps=inner_steps,
      **learner_kwargs,
    )
  optimizer = optax.sgd(1.0) if family == 'reptile' else optax.adam(1e-3)
  return learner, optimizer, jaxmaml.init_train_state(learner.init(params), optimizer), tasks


def measure_meta_step(
  name: str,
  variant: str,
  inner_steps: int,
  repeats: int,
  min_block_s: float,
  task_map: str | None = None,
  precision: str = 'float32',
  num_devices: int = 1,
  time_step: bool = True,
) -> dict:
  """Compile time, step time, memory and FLOPs of one jitted meta-step.

  Args:
    name: a shape of ``SHAPES``.
    variant: a MAML variant of ``VARIANTS`` or an algorithm of ``FAMILY``.
    inner_steps: inner steps of the meta-step.
    repeats, min_block_s: timed blocks, and their least seconds each.
    task_map: ``'vmap'`` or ``'map'`` instead of the shape's task mapping.
    precision: the model's compute dtype.
    num_devices: devices the meta-batch is split over.
    time_step: run and time the step, and count its FLOPs; False compiles
      only (lowering, compile time and XLA's memory analysis).

  Returns:
    A row of the report: the configuration, ``lower_s``, ``compile_s``, the
    step time (``step_s_median``, ``step_s_iqr``), ``tasks_per_s``, model
    FLOPs and FLOP/s, XLA's memory analysis and the process's peak RSS.
  """
  # pylint: disable=import-outside-toplevel
  import jax

  import jaxmaml

  shape = SHAPES[name]
  if task_map:
    shape = shape._replace(
      task_map=task_map, batch_size=shape.batch_size if task_map == 'map' else None
    )
  rss_before = measure.peak_rss_bytes()
  family = variant if variant in FAMILY else None
  kwargs = {} if family else VARIANTS[variant]
  learner, optimizer, state, tasks = build(shape, inner_steps, family, precision, **kwargs)
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
  row = {
    'shape': name,
    'variant': variant,
    'inner_steps': inner_steps,
    'precision': precision,
    'num_devices': num_devices,
    'meta_batch_size': shape.meta_batch_size,
    'task_map': shape.task_map + (f':{shape.batch_size}' if shape.batch_size else ''),
    'lower_s': lower_s,
    'compile_s': compile_s,
    **measure.xla_memory(compiled),
  }
  if not time_step:
    return {**row, 'rss_before_build_bytes': rss_before, 'peak_rss_bytes': measure.peak_rss_bytes()}

  # The family's inner loops are unrolled already (at most 10 steps).
  counted, _, _, _ = (
    build(shape, inner_steps, family, precision)
    if family
    else build(
      shape,
      inner_steps,
      precision=precision,
      first_order=VARIANTS[variant]['first_order'],
      unroll=True,
    )
  )
  counting_step = jaxmaml.make_meta_step(counted, optimizer, jit=False, task_map='vmap')
  counting = jax.jit(counting_step).lower(state, tasks)
  # The HLO cost analysis before compiling; some backends (GPU) only have it
  # after compiling.
  flops = (counting.cost_analysis() or counting.compile().cost_analysis())['flops']

  times = measure.time_blocks(
    lambda s: (compiled(s, tasks)[0],), min_block_s, repeats, carry=(state,), warmup_blocks=1
  )
  median = float(np.median(times))
  return {
    **row,
    'step_s_median': median,
    'step_s_iqr': [float(np.percentile(times, 25)), float(np.percentile(times, 75))],
    'timed_blocks': len(times),
    'tasks_per_s': shape.meta_batch_size / median,
    'model_flops_per_step': float(flops),
    'achieved_flop_per_s': float(flops) / median,
    'rss_before_build_bytes': rss_before,
    'peak_rss_bytes': measure.peak_rss_bytes(),
    'device_peak_bytes': measure.device_peak_bytes(),
  }


def measure_matmul(n: int, repeats: int, min_block_s: float) -> dict:
  """Dense float32 ``[n, n] @ [n, n]`` FLOP/s: the hardware reference."""
  # pylint: disable=import-outside-toplevel
  import jax
  import jax.numpy as jnp

  a, b = jax.random.normal(jax.random.key(0), (2, n, n), jnp.float32)
  matmul = jax.jit(lambda a, b: (jnp.dot(a, b) * (1.0 / n), b))
  times = measure.time_blocks(matmul, min_block_s, repeats, carry=(a, b), warmup_blocks=1)
  median = float(np.median(times))
  return {'n': n, 'step_s_median': median, 'flop_per_s': 2 * n**3 / median}
