"""Held-out evaluation: per-task metrics after adaptation, mean and 95% CI."""

import functools
import math
import statistics

import jax
import jax.numpy as jnp
import numpy as np

from jaxmaml import adapt as adapt_lib
from jaxmaml import base
from jaxmaml import checks
from jaxmaml import kit
from jaxmaml import tasks as tasks_lib


@functools.partial(jax.jit, static_argnames=('task_loss', 'task_map', 'batch_size'))
def _evaluate(task_loss, params, tasks, task_map, batch_size):
  return tasks_lib.map_tasks(
    lambda task: task_loss(params, task)[1],
    tasks,
    task_map=task_map,
    batch_size=batch_size,
  )


def evaluate(
  task_loss: base.TaskLossFn,
  params: base.Params,
  tasks: base.Task,
  *,
  task_map: str = 'vmap',
  batch_size: int | None = None,
) -> base.Metrics:
  """Per-task metrics of ``task_loss`` on a meta-batch of held-out tasks.

  To evaluate with a different number of inner steps than in training (as the
  MAML paper does), build a second learner for evaluation, e.g.
  ``maml(loss_fn, inner_lr=0.01, num_steps=10).task_loss``.

  Args:
    task_loss: ``(params, task) -> (loss, metrics)``, e.g. ``learner.task_loss``.
      Compiled once per distinct function object, so keep it around between
      calls rather than rebuilding it.
    params: meta-parameters.
    tasks: the held-out tasks, leaves ``[num_tasks, n, ...]``.
    task_map, batch_size: how tasks are mapped, see ``jaxmaml.map_tasks``;
      ``task_map='map'`` with a ``batch_size`` bounds memory for many tasks.

  Returns:
    A dict of metrics, each with a leading ``[num_tasks]`` axis.

  Raises:
    TypeError, ValueError: for a malformed or empty meta-batch
      (``jaxmaml.check_tasks``), before any compute.
  """
  tasks_lib.check_task_map(task_map, batch_size)
  tasks_lib.check_tasks(tasks)
  return _evaluate(task_loss, params, tasks, task_map, batch_size)


@functools.partial(
  jax.jit, static_argnames=('loss_fn', 'has_aux', 'num_steps', 'task_map', 'batch_size')
)
def _adaptation_curve(loss_fn, params, tasks, inner_lr, has_aux, num_steps, task_map, batch_size):
  def score(p, batch):
    loss, aux = kit.split_aux(loss_fn(p, batch), has_aux)
    return {**aux, 'loss': loss}

  def one_task(task):
    trajectory = adapt_lib.make_trajectory(
      loss_fn,
      adapt_lib.inner_sgd(inner_lr, num_steps),
      num_steps=num_steps,
      observe=lambda p, _: score(p, task.query),
      has_aux=has_aux,
      unroll=1,
    )
    _, _, after = trajectory(params, task.support)
    before = score(params, task.query)
    return jax.tree_util.tree_map(lambda b, a: jnp.concatenate([b[None], a]), before, after)

  return tasks_lib.map_tasks(one_task, tasks, task_map=task_map, batch_size=batch_size)


def adaptation_curve(
  loss_fn: base.LossFn,
  params: base.Params,
  tasks: base.Task,
  *,
  inner_lr,
  num_steps: int,
  has_aux: bool = False,
  task_map: str = 'vmap',
  batch_size: int | None = None,
  allow_negative_lr: bool = False,
) -> base.Metrics:
  """Query metrics after 0, 1, ..., ``num_steps`` inner steps, in one pass.

  The figure of the MAML paper (loss against gradient steps). Step ``k`` of the
  curve equals ``evaluate`` with ``maml(..., num_steps=k).task_loss``, but the
  whole curve costs one adaptation of ``num_steps`` steps and one compile.

  Args:
    loss_fn: ``(params, batch) -> loss`` (or ``(loss, metrics)``, ``has_aux``).
    params: the initial parameters (meta-learned or pretrained).
    tasks: held-out tasks, leaves ``[num_tasks, n, ...]``.
    inner_lr: a scalar or a ``[num_steps]`` schedule (array or callable).
    num_steps: the last step of the curve, a positive int.
    has_aux: whether ``loss_fn`` returns ``(loss, metrics)``.
    task_map, batch_size: how tasks are mapped, see ``jaxmaml.map_tasks``.
    allow_negative_lr: accept a negative ``inner_lr`` (gradient ascent), as
      for ``jaxmaml.maml``.

  Returns:
    A dict with ``loss`` (and the loss function's metrics), each shaped
    ``[num_tasks, num_steps + 1]``; column ``k`` is after ``k`` steps.
  """
  num_steps = checks.positive_int(num_steps, 'num_steps')
  if callable(inner_lr):
    inner_lr = inner_lr(jnp.arange(num_steps))
  # Checks inner_lr before any compute.
  adapt_lib.inner_sgd(inner_lr, num_steps, allow_negative_lr=allow_negative_lr)
  if adapt_lib.is_per_parameter(inner_lr):
    raise ValueError('adaptation_curve takes a scalar or schedule inner_lr, not a pytree.')
  rates = jnp.broadcast_to(jnp.asarray(inner_lr, jnp.float32), (num_steps,))
  tasks_lib.check_task_map(task_map, batch_size)
  tasks_lib.check_tasks(tasks)
  return _adaptation_curve(loss_fn, params, tasks, rates, has_aux, num_steps, task_map, batch_size)


def mean_confidence_interval(values, confidence: float = 0.95) -> tuple[float, float]:
  """Mean and the half-width of its normal-approximation confidence interval.

  This is how few-shot papers report results: ``mean ± z * std / sqrt(n)``
  over ``n`` independent tasks (``z = 1.96`` for 95%).

  Args:
    values: per-task values, shape ``[n]`` with ``n >= 2``.
    confidence: the two-sided confidence level, in (0, 1).

  Returns:
    ``(mean, half_width)`` as Python floats.
  """
  values = np.asarray(values, dtype=np.float64).reshape(-1)
  if values.size < 2:
    raise ValueError(f'values needs at least 2 entries, got {values.size}.')
  if not 0.0 < confidence < 1.0:
    raise ValueError(f'confidence must be in (0, 1), got {confidence}.')
  z = statistics.NormalDist().inv_cdf((1.0 + confidence) / 2.0)
  half_width = z * values.std(ddof=1) / math.sqrt(values.size)
  return float(values.mean()), float(half_width)
