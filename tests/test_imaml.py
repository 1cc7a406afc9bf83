"""iMAML's implicit meta-gradient against closed forms and independent oracles."""

import jax
from jax.flatten_util import ravel_pytree
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxmaml
from jaxmaml.imaml import conjugate_gradient
from jaxmaml.imaml import imaml
from tests.utils import counting
from tests.utils import rel_l2
from tests.utils import task
from tests.utils import tiny_regression


def quadratic_loss(phi, batch):
  """0.5 (phi - c)^T M (phi - c) for a batch (M, c)."""
  m, c = batch
  return 0.5 * (phi - c) @ m @ (phi - c)


def _quadratic_problem(key, dim=4):
  """A task of quadratic losses (SPD support and query Hessians) and theta."""
  keys = jax.random.split(key, 5)

  def spd(k):
    m = jax.random.normal(k, (dim, dim), jnp.float64)
    return m @ m.T / dim + 0.5 * jnp.eye(dim)

  t = jaxmaml.Task(
    support=(spd(keys[0]), jax.random.normal(keys[1], (dim,), jnp.float64)),
    query=(spd(keys[2]), jax.random.normal(keys[3], (dim,), jnp.float64)),
  )
  return t, jax.random.normal(keys[4], (dim,), jnp.float64)


def _quadratic_oracle(t, theta, reg):
  """phi* = (A + reg I)^{-1} (A a + reg theta), the exact meta-gradient, and g."""
  (a, center), (b, query_center) = t.support, t.query
  eye = np.eye(len(theta))
  phi = np.linalg.solve(a + reg * eye, a @ center + reg * theta)
  g = b @ (phi - query_center)
  return phi, np.linalg.solve(eye + a / reg, g), g


def _converging_learner(t, reg, **kwargs):
  """iMAML whose inner gradient descent converges to machine precision."""
  eigs = np.linalg.eigvalsh(t.support[0])
  lr = 1.0 / (eigs.max() + reg)  # Contraction 1 - (min + reg) / (max + reg) per step.
  return imaml(quadratic_loss, inner_lr=lr, num_steps=300, reg=reg, **kwargs)


@pytest.mark.parametrize('reg', [0.3, 2.0])
def test_quadratic_oracle(reg, variant):
  """Exact inner solution + dim CG steps = reg (A + reg I)^{-1} grad L_q(phi*)."""
  dim = 4
  with jax.enable_x64(True):
    t, theta = _quadratic_problem(jax.random.key(0), dim)
    learner = _converging_learner(t, reg, cg_steps=dim)
    task_grad = variant(learner.task_grad)
    grad, metrics = task_grad(theta, t)
    phi_star, exact, _ = _quadratic_oracle(t, theta, reg)

    phi, support_losses = learner.adapt(theta, t.support)
    np.testing.assert_allclose(phi, phi_star, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grad, exact, rtol=1e-10, atol=1e-12)
    assert float(metrics['cg_residual']) < 1e-10
    np.testing.assert_allclose(metrics['loss'], quadratic_loss(phi_star, t.query), rtol=1e-12)
    assert metrics['support_losses'].shape == (300,)
    # Before the first step phi = theta: the proximal term is zero.
    np.testing.assert_allclose(support_losses[0], quadratic_loss(theta, t.support), rtol=1e-12)

    # An independent route: jax.grad of the query loss through the closed form.
    a, center = t.support

    def through_closed_form(theta):
      phi = jnp.linalg.solve(a + reg * jnp.eye(dim), a @ center + reg * theta)
      return quadratic_loss(phi, t.query)

    np.testing.assert_allclose(grad, jax.grad(through_closed_form)(theta), rtol=1e-10, atol=1e-12)


def test_quadratic_oracle_rejects_wrong_gradients():
  """The oracle above can fail: the first-order gradient g (no inverse) and a
  truncated CG solve are both far from the exact implicit gradient, and the
  reported residual says so."""
  dim, reg = 4, 0.3
  with jax.enable_x64(True):
    t, theta = _quadratic_problem(jax.random.key(0), dim)
    _, exact, g = _quadratic_oracle(t, theta, reg)
    assert rel_l2(g, exact) > 1.0  # Far outside the 1e-10 tolerance of the oracle.

    grad, metrics = _converging_learner(t, reg, cg_steps=1).task_grad(theta, t)
    assert rel_l2(grad, exact) > 1e-2
    assert float(metrics['cg_residual']) > 1e-2
    # The first-order gradient is the gradient of task_loss (theta held in the
    # regulariser, no gradient through the inner loop): not the meta-gradient.
    first_order, _ = jax.grad(_converging_learner(t, reg).task_loss, has_aux=True)(theta, t)
    np.testing.assert_allclose(first_order, g, rtol=1e-10)


@pytest.mark.parametrize('cg_damping, reg_damping', [(1.0, 10.0), (0.5, 0.0), (0.0, 3.0)])
def test_damped_system_oracle(cg_damping, reg_damping):
  """With damping the gradient is the dense solve of the damped system
  ((1 + cg_damping) I + A / (reg + reg_damping)) v = g, and it differs from
  the exact implicit gradient (the damping is not silently ignored)."""
  dim, reg = 4, 2.0
  with jax.enable_x64(True):
    t, theta = _quadratic_problem(jax.random.key(3), dim)
    learner = _converging_learner(
      t, reg, cg_steps=dim, cg_damping=cg_damping, reg_damping=reg_damping
    )
    grad, metrics = jax.jit(learner.task_grad)(theta, t)
    _, exact, g = _quadratic_oracle(t, theta, reg)
    damped = np.linalg.solve((1 + cg_damping) * np.eye(dim) + t.support[0] / (reg + reg_damping), g)
  np.testing.assert_allclose(grad, damped, rtol=1e-10, atol=1e-12)
  assert float(metrics['cg_residual']) < 1e-10
  assert rel_l2(grad, exact) > 1e-2


def test_conjugate_gradient_on_pytrees():
  """CG on a dict of two leaves equals a dense solve; b = 0 gives 0, no NaN."""
  with jax.enable_x64(True):
    m = jax.random.normal(jax.random.key(1), (6, 6), jnp.float64)
    a = m @ m.T + 0.1 * jnp.eye(6)
    b = jax.random.normal(jax.random.key(2), (6,), jnp.float64)
    unravel = lambda v: {'w': v[:4].reshape(2, 2), 'b': v[4:]}
    ravel = lambda tree: jnp.concatenate([tree['w'].ravel(), tree['b']])
    matvec = lambda tree: unravel(a @ ravel(tree))
    x, residual = conjugate_gradient(matvec, unravel(b), 6)
    assert jax.tree_util.tree_structure(x) == jax.tree_util.tree_structure(unravel(b))
    np.testing.assert_allclose(ravel(x), np.linalg.solve(a, b), rtol=1e-8)
    assert float(residual) < 1e-8
    # More iterations than dimensions: the residual reaches 0 and stays finite.
    x, residual = conjugate_gradient(matvec, unravel(jnp.zeros(6)), 8)
    assert float(residual) == 0.0
    assert not np.any(ravel(x))


def test_mlp_matches_dense_solve_and_unrolled_differentiation():
  """On a tanh MLP (several leaves, a non-quadratic loss whose Hessian has a
  negative eigenvalue): the implicit gradient equals a dense solve with the
  full Hessian, and the gradient of the query loss differentiated through the
  converged, unrolled proximal inner loop (theta in both the start and the
  regulariser)."""
  reg, lr, num_steps = 5.0, 1 / 16, 150  # lr < 1 / (max eigenvalue of H + reg).
  with jax.enable_x64(True):
    loss_fn, params, tasks = tiny_regression(
      jax.random.key(3), num_tasks=1, width=6, dtype=jnp.float64
    )
    t = task(tasks, 0)
    learner = imaml(loss_fn, inner_lr=lr, num_steps=num_steps, reg=reg, cg_steps=15)

    def unrolled(theta):
      def step(phi, _):
        inner = jax.grad(lambda p: loss_fn(p, t.support))(phi)
        return jax.tree_util.tree_map(
          lambda p, d, th: p - lr * (d + reg * (p - th)), phi, inner, theta
        ), None

      phi, _ = jax.lax.scan(step, theta, None, length=num_steps)
      return loss_fn(phi, t.query)

    @jax.jit
    def everything(params):
      grad, metrics = learner.task_grad(params, t)
      flat_phi, unravel = ravel_pytree(learner.adapt(params, t.support)[0])
      support = lambda v: loss_fn(unravel(v), t.support)
      stationarity = jax.grad(support)(flat_phi) + reg * (flat_phi - ravel_pytree(params)[0])
      g = jax.grad(lambda v: loss_fn(unravel(v), t.query))(flat_phi)
      return (
        grad,
        metrics,
        stationarity,
        jax.hessian(support)(flat_phi),
        g,
        jax.grad(unrolled)(params),
      )

    grad, metrics, stationarity, hessian, g, through_unrolled = everything(params)
    assert np.linalg.norm(stationarity) < 1e-12  # The inner problem is solved.
    assert np.linalg.eigvalsh(hessian)[0] < 0  # Not convex; I + H / reg still is SPD.
    dense = np.linalg.solve(np.eye(len(g)) + hessian / reg, g)
    assert rel_l2(ravel_pytree(grad)[0], dense) < 1e-12
    assert rel_l2(grad, through_unrolled) < 1e-12
    assert float(metrics['cg_residual']) < 1e-12
    assert rel_l2(g, dense) > 0.1  # The inverse matters here too.


def test_inner_optimizer():
  """The implicit gradient only needs the minimiser: an Optax inner loop
  (momentum) reaches the same one."""
  dim, reg = 4, 0.3
  with jax.enable_x64(True):
    t, theta = _quadratic_problem(jax.random.key(0), dim)
    learner = imaml(
      quadratic_loss,
      inner_optimizer=optax.sgd(0.1, momentum=0.5),
      num_steps=300,
      reg=reg,
      cg_steps=dim,
    )
    grad, _ = learner.task_grad(theta, t)
    np.testing.assert_allclose(grad, _quadratic_oracle(t, theta, reg)[1], rtol=1e-10)


def test_meta_step():
  """make_meta_step vmaps task_grad over the meta-batch, compiles once, and
  lowers the query loss."""
  loss_fn, params, tasks = tiny_regression(jax.random.key(4))
  counting_loss, traces = counting(loss_fn)
  optimizer = optax.adam(1e-2)
  learner = imaml(counting_loss, inner_lr=0.05, num_steps=2, reg=1.0, cg_steps=2)
  step = jaxmaml.make_meta_step(learner, optimizer)
  state = jaxmaml.init_train_state(params, optimizer)
  losses, counts = [], []
  for _ in range(3):
    state, metrics = step(state, tasks)
    losses.append(float(metrics['loss'].mean()))
    counts.append(len(traces))
  assert counts == [counts[0]] * 3, counts  # No retrace after the first step.
  assert losses[-1] < losses[0]
  assert set(metrics) == {'loss', 'support_losses', 'cg_residual'}
  assert metrics['support_losses'].shape == (4, 2)
  assert metrics['cg_residual'].shape == (4,)


def test_classification_metrics_with_aux():
  """has_aux threads the loss's accuracy to the metrics of both functions."""
  model = jaxmaml.MLP(features=(8, 3))
  params = model.init(jax.random.key(0), jnp.zeros([1, 2]))['params']
  loss_fn = jaxmaml.cross_entropy_loss(jaxmaml.apply_fn(model))
  labels = jnp.arange(6) % 3
  x = jax.random.normal(jax.random.key(1), (6, 2))
  t = jaxmaml.Task(support=(x, labels), query=(x, labels))
  learner = imaml(loss_fn, inner_lr=0.1, num_steps=3, reg=1.0, has_aux=True)
  grad, metrics = jax.eval_shape(learner.task_grad, params, t)
  assert jax.tree_util.tree_structure(grad) == jax.tree_util.tree_structure(params)
  assert set(metrics) == {'loss', 'accuracy', 'support_losses', 'cg_residual'}
  _, metrics = jax.eval_shape(learner.task_loss, params, t)
  assert set(metrics) == {'loss', 'accuracy', 'support_losses'}


@pytest.mark.slow  # ~8 s; the default suite must stay under 10 min.
def test_memory_does_not_grow_with_num_steps():
  """The compiled task_grad needs the same temporary memory at 2 and 20 inner
  steps (nothing is kept for a backward pass); second-order MAML's grows."""
  loss_fn, params, tasks = tiny_regression(jax.random.key(5), num_tasks=1)
  t = task(tasks, 0)

  def temp_bytes(learner):
    compiled = jax.jit(learner.task_grad).lower(params, t).compile()
    return compiled.memory_analysis().temp_size_in_bytes

  def implicit(n):
    return temp_bytes(imaml(loss_fn, inner_lr=0.05, num_steps=n, reg=1.0, unroll=1))

  def second_order(n):
    return temp_bytes(jaxmaml.maml(loss_fn, inner_lr=0.05, num_steps=n, unroll=1))

  assert implicit(20) == implicit(2)
  assert second_order(20) > 2 * second_order(2)  # The measurement can tell.


@pytest.mark.parametrize(
  'kwargs, error, match',
  [
    ({'reg': 0.0}, ValueError, 'reg'),
    ({'reg': -1.0}, ValueError, 'reg'),
    ({'reg': float('nan')}, ValueError, 'reg'),
    ({'reg': float('inf')}, ValueError, 'reg'),
    ({'reg': 'strong'}, TypeError, 'reg'),
    ({'reg': True}, TypeError, 'reg'),
    ({'reg': None}, TypeError, 'reg'),
    ({'reg': np.ones(2)}, TypeError, 'reg'),
    ({'cg_damping': -0.1}, ValueError, 'cg_damping'),
    ({'cg_damping': float('inf')}, ValueError, 'cg_damping'),
    ({'reg_damping': -1.0}, ValueError, 'reg_damping'),
    ({'reg_damping': 'x'}, TypeError, 'reg_damping'),
    ({'cg_steps': 0}, ValueError, 'cg_steps'),
    ({'cg_steps': -2}, ValueError, 'cg_steps'),
    ({'cg_steps': 2.5}, TypeError, 'cg_steps'),
    ({'cg_steps': True}, TypeError, 'cg_steps'),
    ({'num_steps': 0}, ValueError, 'num_steps'),
    ({'inner_lr': float('nan')}, ValueError, 'inner_lr'),
    ({'inner_optimizer': optax.sgd(0.1)}, TypeError, 'inner_lr and inner_optimizer'),
  ],
)
def test_bad_arguments(kwargs, error, match):
  args = {'inner_lr': 0.1, 'num_steps': 2, 'reg': 1.0, **kwargs}
  with pytest.raises(error, match=match):
    imaml(lambda p, b: 0.0, **args)
