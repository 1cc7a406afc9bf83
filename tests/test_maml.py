"""MAML's meta-gradient against independent oracles, and the meta-step."""

import jax
import jax.numpy as jnp
from jax.test_util import check_grads
import numpy as np
import optax
import pytest

import jaxmaml
from jaxmaml.data import sinusoid
from tests.utils import counting
from tests.utils import quadratic_loss
from tests.utils import quadratic_task
from tests.utils import rel_l2
from tests.utils import task
from tests.utils import tiny_regression


def meta_loss(learner, params, tasks):
  return jnp.mean(jax.vmap(lambda t: learner.task_loss(params, t)[0])(tasks))


@pytest.mark.parametrize('num_steps', [1, pytest.param(2, marks=pytest.mark.slow)])  # ~15 s.
def test_second_order_meta_gradient_matches_finite_differences(num_steps):
  """check_grads order 2 in float64: the meta-gradient and its derivative."""
  with jax.enable_x64(True):
    loss_fn, params, tasks = tiny_regression(
      jax.random.key(1), num_tasks=3, width=6, dtype=jnp.float64
    )
    learner = jaxmaml.maml(loss_fn, inner_lr=0.05, num_steps=num_steps)
    check_grads(
      jax.jit(lambda p: meta_loss(learner, p, tasks)),
      (params,),
      order=2,
      modes=['rev'],
      eps=1e-4,
      atol=1e-5,
      rtol=1e-5,
    )
    # The gradient that check_grads just validated is what task_grad returns.
    grads, _ = jaxmaml.meta_gradient(learner, params, tasks)
    assert rel_l2(grads, jax.grad(lambda p: meta_loss(learner, p, tasks))(params)) < 1e-12


def test_finite_difference_check_rejects_first_order():
  """The oracle above can fail: first-order MAML is not the true gradient."""
  with jax.enable_x64(True):
    loss_fn, params, tasks = tiny_regression(
      jax.random.key(1), num_tasks=3, width=6, dtype=jnp.float64
    )
    learner = jaxmaml.maml(loss_fn, inner_lr=0.05, num_steps=2, first_order=True)

    with pytest.raises(AssertionError):
      check_grads(
        lambda p: meta_loss(learner, p, tasks),
        (params,),
        order=1,
        modes=['rev'],
        eps=1e-4,
        atol=1e-5,
        rtol=1e-5,
      )


@pytest.mark.parametrize('first_order', [False, True])
def test_one_step_quadratic_oracle(first_order, variant):
  """grad = (I - alpha H_s) grad L_q(theta'); first order drops alpha H_s."""
  alpha, dim = 0.1, 4
  t = quadratic_task(jax.random.key(2), dim)
  theta = jax.random.normal(jax.random.key(3), (dim,))
  learner = jaxmaml.maml(quadratic_loss, inner_lr=alpha, num_steps=1, first_order=first_order)
  grad, metrics = variant(learner.task_grad)(theta, t)

  (a_s, b_s), (a_q, b_q) = t.support, t.query
  theta_adapted = theta - alpha * (a_s @ theta - b_s)
  query_grad = a_q @ theta_adapted - b_q
  jacobian = jnp.eye(dim) if first_order else jnp.eye(dim) - alpha * a_s
  np.testing.assert_allclose(grad, jacobian @ query_grad, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(metrics['loss'], quadratic_loss(theta_adapted, t.query), rtol=1e-5)
  np.testing.assert_allclose(
    metrics['support_losses'], [quadratic_loss(theta, t.support)], rtol=1e-5
  )


def test_three_step_quadratic_oracle():
  """Three steps of a quadratic: the Jacobian is (I - alpha A_s)^3."""
  alpha, dim = 0.1, 4
  t = quadratic_task(jax.random.key(4), dim)
  theta = jax.random.normal(jax.random.key(5), (dim,))
  grad, _ = jaxmaml.maml(quadratic_loss, inner_lr=alpha, num_steps=3).task_grad(theta, t)
  (a_s, b_s), (a_q, b_q) = t.support, t.query
  theta_adapted = theta
  for _ in range(3):
    theta_adapted = theta_adapted - alpha * (a_s @ theta_adapted - b_s)
  jacobian = jnp.linalg.matrix_power(jnp.eye(dim) - alpha * a_s, 3)
  np.testing.assert_allclose(grad, jacobian @ (a_q @ theta_adapted - b_q), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
  'task_map, batch_size',
  [
    ('vmap', None),
    ('map', None),
    *(pytest.param(m, b, marks=pytest.mark.slow) for m, b in (('map', 4), ('loop', None))),
  ],
)  # ~18 s: compiles per task.
def test_task_maps_match_per_task_loop(task_map, batch_size):
  """Every way of mapping tasks equals a Python loop of per-task gradients at
  the paper's meta-batch size (25)."""
  loss_fn, params, tasks = tiny_regression(jax.random.key(6), num_tasks=25)
  learner = jaxmaml.maml(loss_fn, inner_lr=0.05, num_steps=2)
  grads, metrics = jax.jit(
    lambda p, t: jaxmaml.meta_gradient(learner, p, t, task_map=task_map, batch_size=batch_size)
  )(params, tasks)
  per_task = [jax.jit(learner.task_grad)(params, task(tasks, i)) for i in range(25)]
  ref = jax.tree_util.tree_map(lambda *g: sum(g) / 25, *[g for g, _ in per_task])
  assert rel_l2(grads, ref) < 1e-5
  np.testing.assert_allclose(metrics['loss'], [m['loss'] for _, m in per_task], rtol=1e-5)
  assert metrics['support_losses'].shape == (25, 2)


def _meta_steps(jit, num_steps=3):
  loss_fn, params, tasks = tiny_regression(jax.random.key(7))
  optimizer = optax.adam(1e-2)
  step = jaxmaml.make_meta_step(
    jaxmaml.maml(loss_fn, inner_lr=0.05, num_steps=2), optimizer, jit=jit
  )
  state = jaxmaml.init_train_state(params, optimizer)
  losses = []
  for _ in range(num_steps):
    state, metrics = step(state, tasks)
    losses.append(float(metrics['loss'].mean()))
  return state, losses


@pytest.mark.slow  # ~13 s; the default suite must stay under 10 min.
def test_meta_step_jit_equals_no_jit():
  (s_jit, l_jit), (s_eager, l_eager) = _meta_steps(True), _meta_steps(False)
  assert int(s_jit.step) == int(s_eager.step) == 3
  assert rel_l2(s_jit.params, s_eager.params) < 1e-5
  np.testing.assert_allclose(l_jit, l_eager, rtol=1e-5)
  assert l_jit[-1] < l_jit[0]  # Meta-training lowers the query loss.


def test_meta_step_compiles_once():
  loss_fn, params, _ = tiny_regression(jax.random.key(8))
  counting_loss, traces = counting(loss_fn)

  optimizer = optax.adam(1e-3)
  step = jaxmaml.make_meta_step(jaxmaml.maml(counting_loss, inner_lr=0.05, num_steps=2), optimizer)
  state = jaxmaml.init_train_state(params, optimizer)
  counts = []
  for i in range(4):
    state, _ = step(state, sinusoid.sample_tasks(jax.random.key(i), 4, 5, 7))
    counts.append(len(traces))
  assert counts[0] > 0
  assert counts == [counts[0]] * 4, counts  # No retrace after the first step.


def test_classification_metrics_with_aux():
  """has_aux threads the loss's metrics (accuracy) to the per-task metrics."""
  model = jaxmaml.MLP(features=(16, 3))
  params = model.init(jax.random.key(0), jnp.zeros([1, 2]))['params']
  loss_fn = jaxmaml.cross_entropy_loss(jaxmaml.apply_fn(model))
  keys = jax.random.split(jax.random.key(1), 4)
  centers = jax.random.normal(keys[0], (6, 3, 2)) * 3  # 6 tasks, 3 classes.
  labels = jnp.tile(jnp.arange(3), (6, 2))  # [6, 6]
  x = lambda k: centers[jnp.arange(6)[:, None], labels] + 0.1 * jax.random.normal(k, (6, 6, 2))
  tasks = jaxmaml.Task(support=(x(keys[1]), labels), query=(x(keys[2]), labels))
  learner = jaxmaml.maml(loss_fn, inner_lr=0.5, num_steps=5, has_aux=True)
  metrics = jaxmaml.evaluate(learner.task_loss, params, tasks)
  assert set(metrics) == {'loss', 'accuracy', 'support_losses'}
  assert metrics['accuracy'].shape == (6,)
  # Five steps on well-separated clusters fit the support and generalise.
  assert float(metrics['accuracy'].mean()) > 0.9
