"""The meta-training step: mean outer gradient over a meta-batch + an Optax update."""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxmaml import base
from jaxmaml import checks
from jaxmaml import sharding as sharding_lib
from jaxmaml import tasks as tasks_lib


class MetaTrainState(NamedTuple):
  """Everything that changes during meta-training.

  Attributes:
    params: the meta-parameters (e.g. a Flax ``params`` collection).
    opt_state: the Optax state of the outer optimizer.
    step: number of meta-steps taken, an int32 scalar.
  """

  params: base.Params
  opt_state: optax.OptState
  step: jax.Array


def init_train_state(
  params: base.Params, optimizer: optax.GradientTransformation
) -> MetaTrainState:
  """Builds the initial ``MetaTrainState`` for ``params``."""
  checks.gradient_transformation(optimizer, 'optimizer')
  return MetaTrainState(params, optimizer.init(params), jnp.zeros([], jnp.int32))


MetaStepFn = Callable[..., tuple[MetaTrainState, base.Metrics]]
"""``meta_step(state, tasks)``, or with a sampler ``meta_step(state, key, *data)``."""


def meta_gradient(
  learner: base.MetaLearner,
  params: base.Params,
  tasks: base.Task,
  *,
  task_map: str = 'vmap',
  batch_size: int | None = None,
  iteration: jax.Array | None = None,
  mesh: jax.sharding.Mesh | None = None,
) -> tuple[base.Params, base.Metrics]:
  """Mean outer gradient over a meta-batch, and per-task metrics.

  Args:
    learner: the algorithm.
    params: meta-parameters.
    tasks: a meta-batch, leaves ``[num_tasks, n, ...]``.
    task_map, batch_size: how tasks are mapped, see ``jaxmaml.map_tasks``.
    iteration: the meta-iteration, passed to ``learner.task_grad`` (MAML++
      anneals with it); None means after annealing.
    mesh: split the tasks over this mesh's ``'tasks'`` axis (see
      ``jaxmaml.task_mesh``): each device maps its share of the tasks as
      ``task_map`` says and the per-device mean gradients are averaged with
      ``lax.pmean``. ``num_tasks`` must be divisible by the number of devices.

  Returns:
    ``(grads, metrics)``: ``grads`` has the structure of ``params`` (replicated
    over ``mesh``); every metric has a leading ``[num_tasks]`` axis (split
    over ``mesh``).

  Raises:
    TypeError, ValueError: for a malformed or empty meta-batch
      (``jaxmaml.check_tasks``, shapes only: free when tracing).
  """
  _check_learner(learner)
  num_tasks = tasks_lib.check_tasks(tasks)

  def mean_grad(params, tasks, iteration):
    grads, metrics = tasks_lib.map_tasks(
      lambda task: learner.task_grad(params, task, iteration),
      tasks,
      task_map=task_map,
      batch_size=batch_size,
    )
    return jax.tree_util.tree_map(lambda g: jnp.mean(g, axis=0), grads), metrics

  if mesh is None:
    return mean_grad(params, tasks, iteration)
  sharding_lib.check_divisible(num_tasks, mesh, 'num_tasks')

  def per_device(params, tasks, iteration):
    grads, metrics = mean_grad(params, tasks, iteration)
    return jax.lax.pmean(grads, sharding_lib.TASK_AXIS), metrics

  split, whole = jax.sharding.PartitionSpec(sharding_lib.TASK_AXIS), jax.sharding.PartitionSpec()
  # check_vma=False: with it, a gradient with respect to the replicated params
  # would already be summed over devices inside task_grad.
  return jax.shard_map(
    per_device,
    mesh=mesh,
    in_specs=(whole, split, whole),
    out_specs=(whole, split),
    check_vma=False,
  )(params, tasks, iteration)


def _check_learner(learner) -> None:
  if not callable(getattr(learner, 'task_grad', None)):
    raise TypeError(
      f'learner must be a jaxmaml.MetaLearner (e.g. jaxmaml.maml(...)), got {learner!r}.'
    )


def make_meta_step(
  learner: base.MetaLearner,
  optimizer: optax.GradientTransformation | None = None,
  *,
  task_map: str = 'vmap',
  batch_size: int | None = None,
  jit: bool = True,
  donate: bool = False,
  sampler: Callable[..., base.Task] | None = None,
  mesh: jax.sharding.Mesh | None = None,
) -> MetaStepFn:
  """Builds ``meta_step(state, tasks) -> (state, metrics)``.

  The step averages ``learner.task_grad`` over the tasks of the meta-batch and
  applies ``optimizer``. It is jitted once here: calling it repeatedly with
  meta-batches of the same shapes does not retrace. The meta-batch is checked
  (``jaxmaml.check_tasks``) on every call, before any compute.

  Args:
    learner: the algorithm, e.g. ``jaxmaml.maml(...)``.
    optimizer: the outer optimizer; ``optax.adam(1e-3)`` when None.
    task_map: ``'vmap'``, ``'map'`` or ``'loop'``, see ``jaxmaml.map_tasks``.
    batch_size: tasks vmapped per iteration with ``task_map='map'``.
    jit: compile the step with ``jax.jit`` (False is for debugging).
    donate: donate the input state's buffers to the output (saves memory; the
      state passed in must not be used again).
    sampler: ``sampler(key, *data) -> tasks``, jittable (e.g. a partial of
      ``jaxmaml.data.episodes.sample_episodes``). With a sampler the step is
      ``meta_step(state, key, *data)``: tasks are drawn inside the compiled
      step, with no host round-trip. Pass the dataset as ``data`` (an array
      on the device) rather than closing over it, so that it is an argument
      of the compiled program and not a constant baked into it.
    mesh: data parallelism over tasks (``jaxmaml.task_mesh``): each device
      computes the outer gradients of its share of the meta-batch, the mean
      is reduced across devices, and every device applies the same update to
      its replica of the state. Place the state (and a sampler's data) with
      ``jaxmaml.replicate(..., mesh)`` once, so that no step copies them.
      Sampled tasks are one meta-batch split over the devices: the same tasks
      as on one device. The meta-batch size must be divisible by the number of
      devices (a ValueError before any compute otherwise).

  Returns:
    ``meta_step(state, tasks)``; ``metrics`` are per task (leading
    ``[num_tasks]`` axis).

  Examples:
    >>> import jax.numpy as jnp, optax
    >>> from jaxmaml import maml, make_meta_step, init_train_state, Task
    >>> loss = lambda w, batch: jnp.mean((batch[0] * w - batch[1]) ** 2)
    >>> learner = maml(loss, inner_lr=0.1, num_steps=1)
    >>> optimizer = optax.sgd(0.1)
    >>> state = init_train_state(jnp.array(0.0), optimizer)
    >>> tasks = Task(support=(jnp.ones((2, 5)), jnp.ones((2, 5))),
    ...              query=(jnp.ones((2, 5)), jnp.ones((2, 5))))
    >>> state, metrics = make_meta_step(learner, optimizer)(state, tasks)
    >>> metrics['loss'].shape
    (2,)
  """
  _check_learner(learner)
  tasks_lib.check_task_map(task_map, batch_size)
  if optimizer is None:
    optimizer = optax.adam(1e-3)
  checks.gradient_transformation(optimizer, 'optimizer')
  if sampler is not None and not callable(sampler):
    raise TypeError(f'sampler must be a function sampler(key, *data) -> tasks, got {sampler!r}.')
  if mesh is not None and not isinstance(mesh, jax.sharding.Mesh):
    raise TypeError(f'mesh must be a jax.sharding.Mesh (jaxmaml.task_mesh), got {mesh!r}.')

  def update(state: MetaTrainState, tasks: base.Task):
    grads, metrics = meta_gradient(
      learner,
      state.params,
      tasks,
      task_map=task_map,
      batch_size=batch_size,
      iteration=state.step,
      mesh=mesh,
    )
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return MetaTrainState(params, opt_state, state.step + 1), metrics

  maybe_jit = (
    (lambda f: jax.jit(f, donate_argnums=(0,) if donate else ())) if jit else (lambda f: f)
  )

  if sampler is not None:

    def sampled_step(state: MetaTrainState, key: jax.Array, *data):
      tasks = sampler(key, *data)
      num_tasks = tasks_lib.check_tasks(tasks)  # Shapes only: checked once, when tracing.
      if mesh is not None:
        sharding_lib.check_divisible(num_tasks, mesh, 'the sampled meta-batch')
        # Each device draws only its own share of the tasks.
        tasks = jax.lax.with_sharding_constraint(tasks, sharding_lib.task_sharding(mesh))
      return update(state, tasks)

    return maybe_jit(sampled_step)

  step = maybe_jit(update)

  def meta_step(state: MetaTrainState, tasks: base.Task):
    num_tasks = tasks_lib.check_tasks(tasks)
    if mesh is not None:
      sharding_lib.check_divisible(num_tasks, mesh, 'num_tasks')
    return step(state, tasks)

  return meta_step
