"""Shared helpers for the tests: a relative L2 distance and tiny models."""

import jax
import jax.numpy as jnp
import numpy as np

import jaxmaml


def rel_l2(a, b) -> float:
  """``||a - b|| / ||b||`` over all leaves of two pytrees of the same structure."""
  flat_a = np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(a)])
  flat_b = np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(b)])
  return float(np.linalg.norm(flat_a - flat_b) / np.linalg.norm(flat_b))


def tiny_regression(key, *, num_tasks=4, num_support=5, num_query=7, width=8,
                    activation=jnp.tanh, dtype=jnp.float32):
  """A small smooth MLP regression problem: (loss_fn, params, tasks)."""
  from jaxmaml.data import sinusoid

  model = jaxmaml.MLP(features=(width, width, 1), activation=activation)
  init_key, task_key = jax.random.split(key)
  params = model.init(init_key, jnp.zeros([1, 1]))['params']
  tasks = sinusoid.sample_tasks(task_key, num_tasks, num_support, num_query)
  cast = lambda tree: jax.tree_util.tree_map(lambda x: x.astype(dtype), tree)
  return jaxmaml.mse_loss(jaxmaml.apply_fn(model)), cast(params), cast(tasks)


def task(tasks, i):
  """Task ``i`` of a meta-batch."""
  return jax.tree_util.tree_map(lambda x: x[i], tasks)


def counting(loss_fn):
  """Wraps ``loss_fn`` to record each call (under jit: each trace).

  Returns:
    ``(counting_loss_fn, calls)``; ``len(calls)`` is the number of calls.
  """
  calls = []

  def counting_loss(params, batch):
    calls.append(1)
    return loss_fn(params, batch)

  return counting_loss, calls


def quadratic_task(key, dim=4):
  """Support/query losses 0.5 x^T A x - b^T x with SPD A: batch = (A, b)."""
  keys = jax.random.split(key, 4)

  def spd(k):
    m = jax.random.normal(k, (dim, dim))
    return m @ m.T / dim + jnp.eye(dim)

  return jaxmaml.Task(support=(spd(keys[0]), jax.random.normal(keys[1], (dim,))),
                      query=(spd(keys[2]), jax.random.normal(keys[3], (dim,))))


def quadratic_loss(theta, batch):
  a, b = batch
  return 0.5 * theta @ a @ theta - b @ theta
