"""Sinusoid regression tasks (Finn et al., 2017, section 5.1).

A task is ``y = amplitude * sin(x - phase)`` with amplitude in U[0.1, 5],
phase in U[0, pi] and inputs x in U[-5, 5]. Everything is sampled with
``jax.random`` so tasks can be drawn inside a jitted step.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxmaml import base
from jaxmaml import checks


class SinusoidFamily(NamedTuple):
  """The task distribution; the defaults are the MAML paper's."""

  amplitude_range: tuple[float, float] = (0.1, 5.0)
  phase_range: tuple[float, float] = (0.0, float(jnp.pi))
  input_range: tuple[float, float] = (-5.0, 5.0)


class Sinusoids(NamedTuple):
  """Parameters of a batch of sinusoids, each of shape ``[num_tasks]``."""

  amplitude: jax.Array
  phase: jax.Array

  def __call__(self, x: jax.Array) -> jax.Array:
    """Evaluates every sinusoid: ``x [num_tasks, n, 1] -> y [num_tasks, n, 1]``."""
    return self.amplitude[:, None, None] * jnp.sin(x - self.phase[:, None, None])


def sample_sinusoids(
  key: jax.Array, num_tasks: int, family: SinusoidFamily = SinusoidFamily()
) -> Sinusoids:
  """Draws ``num_tasks`` sinusoids (amplitude and phase) from ``family``."""
  checks.positive_int(num_tasks, 'num_tasks')
  amp_key, phase_key = jax.random.split(key)
  return Sinusoids(
    amplitude=jax.random.uniform(
      amp_key, [num_tasks], minval=family.amplitude_range[0], maxval=family.amplitude_range[1]
    ),
    phase=jax.random.uniform(
      phase_key, [num_tasks], minval=family.phase_range[0], maxval=family.phase_range[1]
    ),
  )


def sample_inputs(
  key: jax.Array,
  num_tasks: int,
  num_points: int,
  family: SinusoidFamily = SinusoidFamily(),
) -> jax.Array:
  """Inputs ``x`` of shape ``[num_tasks, num_points, 1]``, uniform on the range."""
  checks.positive_int(num_points, 'num_points')
  low, high = family.input_range
  return jax.random.uniform(key, [num_tasks, num_points, 1], minval=low, maxval=high)


def make_tasks(
  key: jax.Array,
  sinusoids: Sinusoids,
  num_support: int,
  num_query: int,
  family: SinusoidFamily = SinusoidFamily(),
) -> base.Task:
  """Support and query sets for given sinusoids, with fresh random inputs.

  Returns:
    A ``Task`` meta-batch: support ``(x, y)`` each ``[num_tasks, num_support, 1]``,
    query ``(x, y)`` each ``[num_tasks, num_query, 1]``.
  """
  checks.positive_int(num_support, 'num_support')
  checks.positive_int(num_query, 'num_query')
  num_tasks = sinusoids.amplitude.shape[0]
  x = sample_inputs(key, num_tasks, num_support + num_query, family)
  y = sinusoids(x)
  return base.Task(
    support=(x[:, :num_support], y[:, :num_support]),
    query=(x[:, num_support:], y[:, num_support:]),
  )


def sample_tasks(
  key: jax.Array,
  num_tasks: int,
  num_support: int,
  num_query: int,
  family: SinusoidFamily = SinusoidFamily(),
) -> base.Task:
  """Draws a meta-batch of sinusoid regression tasks.

  Args:
    key: a ``jax.random`` key; the same key gives the same tasks.
    num_tasks: tasks in the meta-batch.
    num_support: K, the support points per task.
    num_query: query points per task.
    family: the task distribution.

  Returns:
    A ``Task`` with support ``(x, y)`` of shapes ``[num_tasks, num_support, 1]``
    and query ``(x, y)`` of shapes ``[num_tasks, num_query, 1]``.

  Examples:
    >>> import jax
    >>> from jaxmaml.data import sinusoid
    >>> tasks = sinusoid.sample_tasks(jax.random.key(0), 25, 10, 10)
    >>> tasks.support[0].shape
    (25, 10, 1)
  """
  sinusoid_key, input_key = jax.random.split(key)
  return make_tasks(
    input_key, sample_sinusoids(sinusoid_key, num_tasks, family), num_support, num_query, family
  )
