"""The inner loop against an unrolled Python-loop reference."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxmaml
from tests.utils import rel_l2
from tests.utils import task
from tests.utils import tiny_regression

TOL = 1e-5  # float32, relative L2: scan and the Python loop do the same ops.


def reference_adapt(loss_fn, params, support, rates, first_order=False, tree_lr=None):
  """Plain Python loop of gradient steps: the oracle for ``make_adapt``."""
  losses = []
  for rate in rates:
    loss, grads = jax.value_and_grad(loss_fn)(params, support)
    if first_order:
      grads = jax.lax.stop_gradient(grads)
    if tree_lr is None:
      params = jax.tree_util.tree_map(lambda p, g: p - rate * g, params, grads)
    else:
      params = jax.tree_util.tree_map(lambda p, a, g: p - a * g, params, tree_lr, grads)
    losses.append(loss)
  return params, jnp.stack(losses)


def query_loss(loss_fn, adapt, params, t):
  return loss_fn(adapt(params, t.support)[0], t.query)


@pytest.fixture(scope='module')
def problem():
  loss_fn, params, tasks = tiny_regression(jax.random.key(0))
  return loss_fn, params, task(tasks, 0)


@pytest.mark.parametrize(
  'unroll, remat, first_order, num_steps',
  [
    (None, 2, False, 5),  # Two-level remat: 2 segments of 2 steps + 1 step.
    (1, 2, True, 3),
  ]
  + [
    # 3 steps in the default suite, 1 and 5 with the slow tests.
    pytest.param(
      unroll, remat, first_order, num_steps, marks=() if num_steps == 3 else pytest.mark.slow
    )
    for unroll in (None, 1)
    for remat in (False, True)
    for first_order in (False, True)
    for num_steps in (1, 3, 5)
  ],
)
def test_adapt_matches_python_loop(problem, num_steps, first_order, remat, unroll, variant):
  loss_fn, params, t = problem
  adapt = jaxmaml.make_adapt(
    loss_fn,
    optax.sgd(0.05),
    num_steps=num_steps,
    first_order=first_order,
    remat=remat,
    unroll=unroll,
  )
  ref = lambda p, s: reference_adapt(loss_fn, p, s, [0.05] * num_steps, first_order)
  adapted, losses = variant(adapt)(params, t.support)
  ref_adapted, ref_losses = jax.jit(ref)(params, t.support)
  assert rel_l2(adapted, ref_adapted) < TOL
  np.testing.assert_allclose(losses, ref_losses, rtol=TOL)
  assert losses.shape == (num_steps,)

  meta_grad = variant(jax.grad(lambda p: query_loss(loss_fn, adapt, p, t)))(params)
  ref_grad = jax.jit(jax.grad(lambda p: query_loss(loss_fn, ref, p, t)))(params)
  assert rel_l2(meta_grad, ref_grad) < TOL


@pytest.mark.parametrize('remat', [False, pytest.param(2, marks=pytest.mark.slow)])  # ~7 s.
def test_per_step_support_matches_python_loop(problem, variant, remat):
  """per_step_support: step i uses support[i]; second-order gradient included."""
  loss_fn, params, t = problem
  num_steps = 5
  batches = jax.tree_util.tree_map(
    lambda x: jnp.stack([jnp.roll(x, i, axis=0)[:3] for i in range(num_steps)]), t.support
  )
  adapt = jaxmaml.make_adapt(
    loss_fn, optax.sgd(0.05), num_steps=num_steps, remat=remat, per_step_support=True
  )

  def ref(p, batches):
    losses = []
    for i in range(num_steps):
      batch = jax.tree_util.tree_map(lambda x: x[i], batches)
      p, loss = reference_adapt(loss_fn, p, batch, [0.05])
      losses.append(loss[0])
    return p, jnp.stack(losses)

  adapted, losses = variant(adapt)(params, batches)
  ref_adapted, ref_losses = jax.jit(ref)(params, batches)
  assert rel_l2(adapted, ref_adapted) < TOL
  np.testing.assert_allclose(losses, ref_losses, rtol=TOL)
  meta = lambda a: jax.grad(lambda p: loss_fn(a(p, batches)[0], t.query))(params)
  assert rel_l2(variant(lambda: meta(adapt))(), jax.jit(lambda: meta(ref))()) < TOL
  with pytest.raises(ValueError, match=r'leading \[num_steps\] = \[5\] axis'):
    adapt(params, jax.tree_util.tree_map(lambda x: x[:2], t.support))


def test_first_order_differs_from_second_order(problem):
  loss_fn, params, t = problem
  grads = {}
  for first_order in (False, True):
    adapt = jaxmaml.make_adapt(loss_fn, optax.sgd(0.1), num_steps=3, first_order=first_order)
    grads[first_order] = jax.jit(jax.grad(lambda p: query_loss(loss_fn, adapt, p, t)))(params)
  assert rel_l2(grads[True], grads[False]) > 1e-3


@pytest.mark.parametrize('remat', [False, pytest.param(2, marks=pytest.mark.slow)])  # ~10 s.
def test_schedule_array_and_callable(problem, remat):
  loss_fn, params, t = problem
  rates = [0.1, 0.05, 0.02]
  schedule = optax.linear_schedule(0.1, 0.0, transition_steps=4)  # 0.1, 0.075, 0.05
  for inner_lr, expected in ((jnp.array(rates), rates), (schedule, [0.1, 0.075, 0.05])):
    adapt = jaxmaml.make_adapt(loss_fn, jaxmaml.inner_sgd(inner_lr, 3), num_steps=3, remat=remat)
    ref = lambda p, s: reference_adapt(loss_fn, p, s, expected)
    assert rel_l2(adapt(params, t.support)[0], ref(params, t.support)[0]) < TOL
    g = jax.jit(jax.grad(lambda p: query_loss(loss_fn, adapt, p, t)))(params)
    g_ref = jax.jit(jax.grad(lambda p: query_loss(loss_fn, ref, p, t)))(params)
    assert rel_l2(g, g_ref) < TOL


def test_per_parameter_learning_rates(problem):
  loss_fn, params, t = problem
  tree_lr = jax.tree_util.tree_map(
    lambda p: jax.random.uniform(jax.random.key(p.size), p.shape, maxval=0.1), params
  )
  adapt = jaxmaml.make_adapt(loss_fn, jaxmaml.inner_sgd(tree_lr, 2), num_steps=2)
  ref = lambda p, s: reference_adapt(loss_fn, p, s, [None] * 2, tree_lr=tree_lr)
  assert rel_l2(adapt(params, t.support)[0], ref(params, t.support)[0]) < TOL

  # Rates are differentiable inputs (Meta-SGD learns them).
  def loss_of_rates(rates):
    adapt = jaxmaml.make_adapt(loss_fn, jaxmaml.scale_by_rates(rates), num_steps=2)
    return query_loss(loss_fn, adapt, params, t)

  rate_grad = jax.jit(jax.grad(loss_of_rates))(tree_lr)
  ref_rate_grad = jax.jit(
    jax.grad(
      lambda r: loss_fn(
        reference_adapt(loss_fn, params, t.support, [None] * 2, tree_lr=r)[0], t.query
      )
    )
  )(tree_lr)
  assert rel_l2(rate_grad, ref_rate_grad) < TOL
  assert all(float(jnp.abs(g).sum()) > 0 for g in jax.tree_util.tree_leaves(rate_grad))


def test_scalar_per_parameter_tree_equals_scalar(problem):
  loss_fn, params, t = problem
  tree_lr = jax.tree_util.tree_map(lambda p: 0.05, params)
  a = jaxmaml.make_adapt(loss_fn, jaxmaml.inner_sgd(tree_lr, 2), num_steps=2)(params, t.support)[0]
  b = jaxmaml.make_adapt(loss_fn, optax.sgd(0.05), num_steps=2)(params, t.support)[0]
  assert rel_l2(a, b) < TOL


def test_has_aux_loss():
  def loss_fn(w, batch):
    loss = jnp.mean((batch[0] * w - batch[1]) ** 2)
    return loss, {'double': 2 * loss}

  batch = (jnp.arange(4.0), jnp.ones(4))
  adapt = jaxmaml.make_adapt(loss_fn, optax.sgd(0.1), num_steps=2, has_aux=True)
  plain = jaxmaml.make_adapt(lambda w, b: loss_fn(w, b)[0], optax.sgd(0.1), num_steps=2)
  (w, losses), (w_ref, losses_ref) = adapt(0.0, batch), plain(0.0, batch)
  np.testing.assert_allclose(w, w_ref)
  np.testing.assert_allclose(losses, losses_ref)


def test_trajectory_observes_every_step(problem):
  """make_trajectory records what the Python loop sees after each step, and its gradient."""
  loss_fn, params, t = problem
  rates = [0.1, 0.05, 0.02]
  trajectory = jaxmaml.make_trajectory(
    loss_fn,
    jaxmaml.inner_sgd(jnp.array(rates), 3),
    num_steps=3,
    observe=lambda p, _: loss_fn(p, t.query),
  )
  adapted, losses, observed = jax.jit(trajectory)(params, t.support)
  expected = [
    loss_fn(reference_adapt(loss_fn, params, t.support, rates[:k])[0], t.query) for k in (1, 2, 3)
  ]
  np.testing.assert_allclose(observed, jnp.stack(expected), rtol=TOL)
  ref_adapted, ref_losses = reference_adapt(loss_fn, params, t.support, rates)
  assert rel_l2(adapted, ref_adapted) < TOL
  np.testing.assert_allclose(losses, ref_losses, rtol=TOL)
  # The summed losses along the trajectory, differentiated through it.
  g = jax.jit(jax.grad(lambda p: trajectory(p, t.support)[2].sum()))(params)
  g_ref = jax.jit(
    jax.grad(
      lambda p: sum(
        loss_fn(reference_adapt(loss_fn, p, t.support, rates[:k])[0], t.query) for k in (1, 2, 3)
      )
    )
  )(params)
  assert rel_l2(g, g_ref) < TOL


def test_per_step_rates_are_a_schedule_per_parameter(problem):
  """scale_by_rates(per_step=True): step k uses slice k of every leaf."""
  loss_fn, params, t = problem
  per_step = jax.tree_util.tree_map(lambda p: jnp.array([0.1, 0.05]), params)
  a = jaxmaml.make_adapt(loss_fn, jaxmaml.scale_by_rates(per_step, per_step=True), num_steps=2)(
    params, t.support
  )[0]
  ref = reference_adapt(loss_fn, params, t.support, [0.1, 0.05])[0]
  assert rel_l2(a, ref) < TOL


def test_optax_optimizer_matches_python_loop(problem):
  """Any Optax transformation is the inner rule: Adam against optax's own loop."""
  loss_fn, params, t = problem
  optimizer = optax.adam(0.01, b1=0.0)
  adapted, _ = jax.jit(jaxmaml.make_adapt(loss_fn, optimizer, num_steps=3))(params, t.support)
  state, p = optimizer.init(params), params
  for _ in range(3):
    updates, state = optimizer.update(jax.grad(loss_fn)(p, t.support), state, p)
    p = optax.apply_updates(p, updates)
  assert rel_l2(adapted, p) < TOL


def test_masked_leaves_stay_and_are_not_differentiated(problem):
  loss_fn, params, t = problem
  mask = jax.tree_util.tree_map_with_path(lambda path, _: 'bias' in str(path), params)
  adapted, _ = jaxmaml.make_adapt(loss_fn, optax.sgd(0.1), num_steps=2, mask=mask)(
    params, t.support
  )
  for a, p, m in zip(*(jax.tree_util.tree_leaves(x) for x in (adapted, params, mask))):
    assert bool(jnp.any(a != p)) == m
