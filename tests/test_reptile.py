"""Reptile's outer direction against its closed form and a hand-written loop."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxmaml
from tests.utils import quadratic_loss
from tests.utils import quadratic_task


def test_sgd_direction_closed_form_on_quadratic(variant):
  """k SGD steps on 0.5 x^T A x - b^T x: theta - theta_k = (I - (I - aA)^k)(theta - A^-1 b)."""
  alpha, k, dim = 0.1, 4, 4
  t = quadratic_task(jax.random.key(0), dim)
  theta = jax.random.normal(jax.random.key(1), (dim,))
  learner = jaxmaml.reptile(quadratic_loss, inner_lr=alpha, num_steps=k)
  task_grad = variant(learner.task_grad)
  direction, metrics = task_grad(theta, t)
  a, b = t.support
  optimum = jnp.linalg.solve(a, b)
  contraction = jnp.linalg.matrix_power(jnp.eye(dim) - alpha * a, k)
  np.testing.assert_allclose(
    direction, (jnp.eye(dim) - contraction) @ (theta - optimum), rtol=1e-5, atol=1e-6
  )
  adapted = optimum + contraction @ (theta - optimum)
  np.testing.assert_allclose(metrics['loss'], quadratic_loss(adapted, t.query), rtol=1e-5)
  assert metrics['support_losses'].shape == (k,)


def test_adam_inner_loop_matches_hand_written_adam():
  """inner_optimizer=Adam(b1=0), as in the paper, against Adam written out."""
  lr, b2, eps, k, dim = 0.05, 0.999, 1e-8, 5, 4
  t = quadratic_task(jax.random.key(2), dim)
  theta = jax.random.normal(jax.random.key(3), (dim,))
  learner = jaxmaml.reptile(
    quadratic_loss, num_steps=k, inner_optimizer=optax.adam(lr, b1=0.0, b2=b2, eps=eps)
  )
  direction, _ = jax.jit(learner.task_grad)(theta, t)
  x, nu = np.asarray(theta, np.float64), np.zeros(dim)
  a, b = (np.asarray(v, np.float64) for v in t.support)
  for i in range(1, k + 1):
    g = a @ x - b
    nu = b2 * nu + (1 - b2) * g**2
    x = x - lr * g / (np.sqrt(nu / (1 - b2**i)) + eps)
  np.testing.assert_allclose(direction, np.asarray(theta) - x, rtol=1e-4, atol=1e-6)


def test_inner_mini_batches_cycle_through_the_support(variant):
  """inner_batch_size=b: step i trains on examples i*b .. i*b+b-1 (mod n), here
  5 steps of 2 out of 4 examples, against a hand-written loop."""
  alpha, n, b, k = 0.05, 4, 2, 5
  x = jax.random.normal(jax.random.key(4), (n, 3))
  y = jax.random.normal(jax.random.key(5), (n,))
  loss = lambda w, batch: jnp.mean((batch[0] @ w - batch[1]) ** 2)
  t = jaxmaml.Task(support=(x, y), query=(x, y))
  theta = jax.random.normal(jax.random.key(6), (3,))
  learner = jaxmaml.reptile(loss, inner_lr=alpha, num_steps=k, inner_batch_size=b)
  task_grad = variant(learner.task_grad)
  direction, metrics = task_grad(theta, t)
  w, losses = theta, []
  for i in range(k):
    index = np.arange(i * b, i * b + b) % n
    losses.append(loss(w, (x[index], y[index])))
    w = w - alpha * jax.grad(loss)(w, (x[index], y[index]))
  np.testing.assert_allclose(direction, theta - w, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(metrics['support_losses'], losses, rtol=1e-5)
  full, _ = jaxmaml.reptile(loss, inner_lr=alpha, num_steps=k).task_grad(theta, t)
  assert not np.allclose(full, direction, rtol=1e-3)  # Mini-batches are not full batches.


@pytest.mark.parametrize('size', [0, -1, 2.5, True])
def test_bad_inner_batch_size(size):
  with pytest.raises(ValueError, match='inner_batch_size'):
    jaxmaml.reptile(quadratic_loss, inner_lr=0.1, num_steps=2, inner_batch_size=size)


def test_sgd_outer_step_is_the_paper_update():
  """With optax.sgd(eps): theta <- theta + eps * (mean adapted - theta)."""
  eps, alpha = 0.5, 0.1
  tasks = jax.tree_util.tree_map(
    lambda *x: jnp.stack(x), *[quadratic_task(jax.random.key(i)) for i in range(3)]
  )
  theta = jax.random.normal(jax.random.key(9), (4,))
  learner = jaxmaml.reptile(quadratic_loss, inner_lr=alpha, num_steps=2)
  optimizer = optax.sgd(eps)
  state, _ = jaxmaml.make_meta_step(learner, optimizer)(
    jaxmaml.init_train_state(theta, optimizer), tasks
  )
  adapted = jax.vmap(lambda t: learner.adapt(theta, t.support)[0])(tasks)
  np.testing.assert_allclose(
    state.params, theta + eps * (adapted.mean(0) - theta), rtol=1e-5, atol=1e-6
  )


def test_needs_exactly_one_inner_rule():
  with pytest.raises(TypeError, match='inner_lr is required'):
    jaxmaml.reptile(quadratic_loss, num_steps=2)
  with pytest.raises(TypeError, match='exactly one of inner_lr and inner_optimizer'):
    jaxmaml.reptile(quadratic_loss, num_steps=2, inner_lr=0.1, inner_optimizer=optax.sgd(0.1))
