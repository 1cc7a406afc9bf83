"""Meta-SGD: uniform rates equal MAML, and the rates are really meta-learned."""

import jax
import jax.numpy as jnp
from jax.test_util import check_grads
import numpy as np
import optax
import pytest

import jaxmaml
from tests.utils import rel_l2
from tests.utils import task
from tests.utils import tiny_regression


def test_uniform_rates_equal_maml_and_rates_get_gradients(variant, regression_task):
  loss_fn, params, t = regression_task
  learner = jaxmaml.meta_sgd(loss_fn, init_lr=0.05, num_steps=2)
  meta_params = learner.init(params)
  task_grad = variant(learner.task_grad)
  grad, metrics = task_grad(meta_params, t)
  maml_grad, maml_metrics = jaxmaml.maml(loss_fn, inner_lr=0.05, num_steps=2).task_grad(params, t)
  assert rel_l2(grad['params'], maml_grad) < 1e-5
  np.testing.assert_allclose(metrics['loss'], maml_metrics['loss'], rtol=1e-6)
  for leaf in jax.tree_util.tree_leaves(grad['inner_lr']):
    assert float(jnp.abs(leaf).max()) > 0


def test_rate_gradient_matches_finite_differences():
  with jax.enable_x64(True):
    loss_fn, params, tasks = tiny_regression(
      jax.random.key(1), num_tasks=2, width=4, dtype=jnp.float64
    )
    learner = jaxmaml.meta_sgd(loss_fn, init_lr=0.05, num_steps=2)
    meta_params = learner.init(params)
    rates = jax.tree_util.tree_map(  # Non-uniform rates.
      lambda r: r * (1 + 0.5 * jax.random.uniform(jax.random.key(2), r.shape)),
      meta_params['inner_lr'],
    )
    loss = jax.jit(
      lambda rates: learner.task_loss({'params': params, 'inner_lr': rates}, task(tasks, 0))[0]
    )
    check_grads(loss, (rates,), order=1, modes=['rev'], eps=1e-5, atol=1e-6, rtol=1e-6)


def test_meta_step_moves_the_rates():
  loss_fn, params, tasks = tiny_regression(jax.random.key(3))
  learner = jaxmaml.meta_sgd(loss_fn, init_lr=0.05)
  optimizer = optax.adam(1e-2)
  state = jaxmaml.init_train_state(learner.init(params), optimizer)
  state, _ = jaxmaml.make_meta_step(learner, optimizer)(state, tasks)
  before = learner.init(params)['inner_lr']
  for new, old in zip(
    jax.tree_util.tree_leaves(state.params['inner_lr']), jax.tree_util.tree_leaves(before)
  ):
    assert float(jnp.abs(new - old).min()) > 0  # Every rate moved.


def test_bad_init_lr():
  with pytest.raises(ValueError, match='init_lr must be a finite scalar'):
    jaxmaml.meta_sgd(lambda p, b: 0.0, init_lr=np.ones((2, 2)))
  with pytest.raises(ValueError, match='init_lr must be a finite scalar'):
    jaxmaml.meta_sgd(lambda p, b: 0.0, init_lr=float('nan'))
