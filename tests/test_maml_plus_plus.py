"""MAML++: each piece against an oracle; all pieces off equals MAML."""

import jax
import jax.numpy as jnp
from jax.test_util import check_grads
import numpy as np
import pytest

import jaxmaml
from jaxmaml.maml_plus_plus import msl_weights
from tests.utils import rel_l2
from tests.utils import task
from tests.utils import tiny_regression

ALPHA, STEPS = 0.05, 3


def _problem(dtype=jnp.float32):
  loss_fn, params, tasks = tiny_regression(jax.random.key(0), num_tasks=2, dtype=dtype)
  return loss_fn, params, task(tasks, 0)


def _first_bias(params):
  """A stand-in "BatchNorm" mask for the MLP: the first layer's bias."""
  mask = jax.tree_util.tree_map(lambda _: False, params)
  mask['Dense_0']['bias'] = True
  return mask


def test_all_pieces_off_equals_maml(variant):
  loss_fn, params, t = _problem()
  learner = jaxmaml.maml_plus_plus(loss_fn, inner_lr=ALPHA, num_steps=STEPS)
  meta_params = learner.init(params)
  task_grad = variant(learner.task_grad)
  grad, metrics = task_grad(meta_params, t, 0)
  maml_grad, maml_metrics = jaxmaml.maml(loss_fn, inner_lr=ALPHA, num_steps=STEPS).task_grad(
    params, t
  )
  assert rel_l2(grad['params'], maml_grad) < 1e-6
  np.testing.assert_allclose(metrics['loss'], maml_metrics['loss'], rtol=1e-6)
  np.testing.assert_allclose(metrics['support_losses'], maml_metrics['support_losses'], rtol=1e-6)
  for leaf in jax.tree_util.tree_leaves(grad['inner_lr']):  # Rates fixed without LSLR.
    np.testing.assert_array_equal(leaf, 0.0)


def test_msl_weights_anneal():
  start = np.asarray(msl_weights(5, 0, 1000))
  np.testing.assert_allclose(start, np.full(5, 0.2), rtol=1e-6)
  middle = np.asarray(msl_weights(5, 500, 1000))
  np.testing.assert_allclose(middle.sum(), 1.0, rtol=1e-6)
  assert middle[-1] > 0.2 > middle[0] and np.allclose(middle[:-1], middle[0])
  floor = np.asarray(msl_weights(5, 999, 1000))
  np.testing.assert_allclose(floor[:-1], 0.03 / 5, rtol=1e-5)
  np.testing.assert_allclose(floor[-1], 1 - 4 * 0.03 / 5, rtol=1e-5)
  for iteration in (1000, 5000, None):
    np.testing.assert_array_equal(msl_weights(5, iteration, 1000), [0, 0, 0, 0, 1])


@pytest.mark.slow  # ~12 s; the everything-on check covers MSL.
def test_multi_step_loss_is_the_weighted_sum_of_maml_losses():
  """MSL objective = sum_k w_k * (MAML query loss after k steps): values and gradients."""
  loss_fn, params, t = _problem()
  learner = jaxmaml.maml_plus_plus(loss_fn, inner_lr=ALPHA, num_steps=STEPS, msl_iterations=100)
  grad, metrics = jax.jit(learner.task_grad)(learner.init(params), t, 30)
  weights = msl_weights(STEPS, 30, 100)
  per_step = [
    jaxmaml.maml(loss_fn, inner_lr=ALPHA, num_steps=k + 1).task_loss for k in range(STEPS)
  ]
  np.testing.assert_allclose(metrics['step_losses'], [f(params, t)[0] for f in per_step], rtol=1e-5)
  expected = jax.grad(lambda p: sum(w * f(p, t)[0] for w, f in zip(weights, per_step)))(params)
  assert rel_l2(grad['params'], expected) < 1e-5


def test_per_step_bn_equals_masked_maml_and_stays_unadapted():
  """Fresh per-step stacks (all slices equal), constant rates: MAML with those
  leaves masked out of the inner loop; their gradient is the sum over slices."""
  loss_fn, params, t = _problem()
  learner = jaxmaml.maml_plus_plus(
    loss_fn, inner_lr=ALPHA, num_steps=STEPS, per_step_bn=_first_bias
  )
  meta_params = learner.init(params)
  assert meta_params['params']['Dense_0']['bias'].shape == (STEPS, 8)
  adapted, _ = learner.adapt(meta_params, t.support)
  np.testing.assert_array_equal(
    adapted['Dense_0']['bias'], meta_params['params']['Dense_0']['bias']
  )
  grad, _ = jax.jit(learner.task_grad)(meta_params, t)
  not_bn = jax.tree_util.tree_map(lambda m: not m, _first_bias(params))
  expected, _ = jaxmaml.maml(loss_fn, inner_lr=ALPHA, num_steps=STEPS, mask=not_bn).task_grad(
    params, t
  )
  expected_bias = expected['Dense_0']['bias']
  np.testing.assert_allclose(
    grad['params']['Dense_0']['bias'].sum(0), expected_bias, rtol=1e-4, atol=1e-6
  )
  grad['params']['Dense_0']['bias'] = expected_bias
  assert rel_l2(grad['params'], expected) < 1e-5
  # Each step's slice gets its own gradient.
  assert float(jnp.abs(grad['params']['Dense_0']['bias'][0]).max()) > 0


def test_everything_on_matches_finite_differences():
  """LSLR rates, per-step stacks and MSL together, in float64, non-uniform values."""
  with jax.enable_x64(True):
    loss_fn, params, tasks = tiny_regression(
      jax.random.key(1), num_tasks=1, width=4, dtype=jnp.float64
    )
    learner = jaxmaml.maml_plus_plus(
      loss_fn,
      inner_lr=ALPHA,
      num_steps=2,
      msl_iterations=10,
      learn_inner_lr=True,
      per_step_bn=_first_bias,
    )
    meta_params = learner.init(params)
    noise = lambda x, i: x + 0.01 * jax.random.normal(jax.random.key(i), x.shape, x.dtype)
    leaves, treedef = jax.tree_util.tree_flatten(meta_params)
    meta_params = treedef.unflatten([noise(x, i) for i, x in enumerate(leaves)])
    objective = jax.jit(
      lambda mp: jnp.vdot(
        msl_weights(2, 3, 10), learner.task_grad(mp, task(tasks, 0), 3)[1]['step_losses']
      )
    )
    check_grads(objective, (meta_params,), order=1, modes=['rev'], eps=1e-5, atol=1e-6, rtol=1e-6)
    grad, _ = learner.task_grad(meta_params, task(tasks, 0), 3)
    assert rel_l2(grad, jax.grad(objective)(meta_params)) < 1e-10


@pytest.mark.slow  # ~10 s; the default suite must stay under 10 min.
def test_derivative_order_annealing():
  loss_fn, params, t = _problem()
  learner = jaxmaml.maml_plus_plus(
    loss_fn, inner_lr=ALPHA, num_steps=STEPS, first_order_iterations=10
  )
  task_grad = jax.jit(learner.task_grad)
  meta_params = learner.init(params)
  first = jaxmaml.maml(loss_fn, inner_lr=ALPHA, num_steps=STEPS, first_order=True)
  second = jaxmaml.maml(loss_fn, inner_lr=ALPHA, num_steps=STEPS)
  assert rel_l2(task_grad(meta_params, t, 9)[0]['params'], first.task_grad(params, t)[0]) < 1e-6
  assert rel_l2(task_grad(meta_params, t, 10)[0]['params'], second.task_grad(params, t)[0]) < 1e-6
  assert rel_l2(first.task_grad(params, t)[0], second.task_grad(params, t)[0]) > 1e-3


def test_bad_arguments():
  loss_fn = lambda p, b: 0.0
  with pytest.raises(ValueError, match='msl_iterations must be an int >= 0'):
    jaxmaml.maml_plus_plus(loss_fn, inner_lr=0.1, num_steps=2, msl_iterations=-1)
  with pytest.raises(ValueError, match='first_order_iterations must be an int >= 0'):
    jaxmaml.maml_plus_plus(loss_fn, inner_lr=0.1, num_steps=2, first_order_iterations=0.5)
  with pytest.raises(ValueError, match='inner_lr must be a finite scalar'):
    jaxmaml.maml_plus_plus(loss_fn, inner_lr=jnp.ones(2), num_steps=2)
  learner = jaxmaml.maml_plus_plus(loss_fn, inner_lr=0.1, num_steps=2, per_step_bn={'w': True})
  with pytest.raises(ValueError, match='mask must have the structure of params'):
    learner.init({'w': 1.0, 'b': 2.0})
