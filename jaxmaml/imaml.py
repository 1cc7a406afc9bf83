"""iMAML (Rajeswaran et al., 2019): MAML with an implicit meta-gradient.

The inner problem of a task is proximal: starting from the meta-parameters
``theta``, gradient descent on

    L_support(phi) + reg / 2 * ||phi - theta||^2,

whose minimiser ``phi*(theta)`` satisfies
``grad L_support(phi*) + reg (phi* - theta) = 0``. Differentiating that
condition gives ``d phi* / d theta = (I + H / reg)^{-1}``, with ``H`` the
Hessian of the (un-regularised) support loss at ``phi*``, so the outer
gradient is the solution ``v`` of

    (I + H / reg) v = grad L_query(phi*),

found by a few conjugate-gradient iterations on Hessian-vector products. Only
``phi*`` is needed, not the path that reached it: nothing of the inner loop is
kept for the backward pass, and memory does not grow with ``num_steps``.
"""

import jax
import jax.numpy as jnp
import optax

from jaxmaml import adapt as adapt_lib
from jaxmaml import base
from jaxmaml import checks
from jaxmaml import kit


def _vdot(a: base.Params, b: base.Params) -> jax.Array:
  """``<a, b>`` summed over all leaves of two pytrees of the same structure."""
  leaves = [
    jnp.sum(x * y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))
  ]
  return sum(leaves[1:], leaves[0])


def _axpy(alpha: float | jax.Array, x: base.Params, y: base.Params) -> base.Params:
  """``alpha * x + y`` leaf by leaf, keeping the dtypes of ``y``."""
  return jax.tree_util.tree_map(lambda a, b: (alpha * a + b).astype(b.dtype), x, y)


def _scale(alpha: float, x: base.Params) -> base.Params:
  return x if alpha == 1.0 else jax.tree_util.tree_map(lambda a: (alpha * a).astype(a.dtype), x)


def conjugate_gradient(matvec, b: base.Params, num_steps: int):
  """``num_steps`` conjugate-gradient iterations for ``matvec(x) = b``, from ``x = 0``.

  A fixed number of iterations in one ``lax.fori_loop``, so the solve is
  jittable and vmappable and its cost is known in advance. Exact, in exact
  arithmetic, after as many iterations as ``b`` has entries.

  Args:
    matvec: ``x -> A x`` for a symmetric positive-definite linear operator
      ``A`` on pytrees with the structure of ``b``.
    b: the right-hand side, a pytree (e.g. parameters).
    num_steps: the number of iterations, a positive int.

  Returns:
    ``(x, residual)``: ``x`` has the structure of ``b``; ``residual`` is the
    scalar relative residual ``||b - A x|| / ||b||`` as maintained by the CG
    recursion (0 for ``b = 0``).

  Examples:
    >>> import jax.numpy as jnp
    >>> a = jnp.array([[2.0, 1.0], [1.0, 3.0]])
    >>> x, residual = conjugate_gradient(lambda v: a @ v, jnp.array([1.0, 2.0]), 2)
    >>> print([round(float(v), 4) for v in x], float(residual) < 1e-5)
    [0.2, 0.6] True
  """
  num_steps = checks.positive_int(num_steps, 'num_steps')

  def safe_div(num, den):
    # 0 / 0 only happens once the residual is exactly 0: stay there.
    nonzero = den != 0
    return jnp.where(nonzero, num / jnp.where(nonzero, den, 1), 0)

  def body(_, carry):
    x, r, p, rs = carry
    ap = matvec(p)
    alpha = safe_div(rs, _vdot(p, ap))
    x = _axpy(alpha, p, x)
    r = _axpy(-alpha, ap, r)
    rs_new = _vdot(r, r)
    p = _axpy(safe_div(rs_new, rs), p, r)
    return x, r, p, rs_new

  rs0 = _vdot(b, b)
  x0 = jax.tree_util.tree_map(jnp.zeros_like, b)
  x, _, _, rs = jax.lax.fori_loop(0, num_steps, body, (x0, b, b, rs0))
  return x, jnp.sqrt(safe_div(rs, rs0))


def imaml(
  loss_fn: base.LossFn,
  *,
  inner_lr: adapt_lib.InnerLR | None = None,
  num_steps: int,
  reg: float,
  cg_steps: int = 5,
  cg_damping: float = 0.0,
  reg_damping: float = 0.0,
  has_aux: bool = False,
  unroll: int | bool | None = None,
  inner_optimizer: optax.GradientTransformation | None = None,
  allow_negative_lr: bool = False,
) -> base.MetaLearner:
  """Implicit MAML: the outer gradient from the inner problem's optimality.

  ``adapt(theta, support)`` runs ``num_steps`` steps of ``jaxmaml.make_adapt``
  on the proximal loss ``L_support(phi) + reg / 2 * ||phi - theta||^2``, from
  ``phi = theta``, with ``theta`` held constant in the regulariser. The
  outer gradient (``task_grad``) is ``v = (I + H / reg)^{-1} grad
  L_query(phi)``, ``H`` the support-loss Hessian at the adapted ``phi``,
  solved by ``cg_steps`` conjugate-gradient iterations on Hessian-vector
  products (``jax.linearize`` of ``jax.grad``). It is the exact meta-gradient
  when the inner problem is solved exactly and CG has converged; the
  metric ``cg_residual`` shows how far CG is from converged.

  CG assumes ``I + H / reg`` positive definite, i.e. ``reg`` larger than
  minus the most negative eigenvalue of ``H`` (a ``cg_residual`` near or
  above 1 is the sign that it is not). A larger ``reg`` also makes the inner
  problem better conditioned (fewer ``num_steps``) and keeps ``phi`` closer
  to ``theta``, but the proximal term adds ``reg`` to the curvature, so
  gradient descent needs ``inner_lr < 2 / (max eigenvalue of H + reg)``.

  ``cg_damping`` and ``reg_damping`` damp the linear system to
  ``((1 + cg_damping) I + H / (reg + reg_damping)) v = g``, the form of the
  iMAML authors' code (``imaml_dev``, ``Learner.matrix_evaluator``), whose
  Omniglot runs use ``cg_damping=1`` and ``reg_damping=10`` with ``reg=2``.
  Damping keeps the system positive definite for a non-convex support loss at
  the price of a biased gradient (shrunk towards ``g / (1 + cg_damping)``,
  the first-order direction). Both default to 0: the exact implicit gradient.

  Args:
    loss_fn: ``loss_fn(params, batch) -> loss`` (or ``(loss, metrics)`` with
      ``has_aux=True``), used for both support and query.
    inner_lr: inner learning rate (scalar, schedule or per-parameter pytree,
      see ``jaxmaml.adapt.InnerLR``); or give ``inner_optimizer``.
    num_steps: inner steps on the proximal loss, a positive int.
    reg: the proximal regularisation strength lambda, a positive finite
      scalar.
    cg_steps: conjugate-gradient iterations per task, a positive int; each
      costs one Hessian-vector product of the support loss.
    cg_damping: added to the identity term of the system, >= 0.
    reg_damping: added to ``reg`` in the Hessian term of the system (not in
      the inner problem), >= 0.
    has_aux: whether ``loss_fn`` returns ``(loss, metrics)``.
    unroll: ``lax.scan`` unroll of the inner loop (see ``make_adapt``).
    inner_optimizer: an Optax optimizer for the inner problem instead of
      gradient descent at ``inner_lr`` (the implicit gradient only needs the
      minimiser, not how it was reached).
    allow_negative_lr: accept a negative ``inner_lr`` (the inner loop then
      ascends the loss, for gradient-ascent experiments); otherwise a
      negative rate is a ValueError.

  Returns:
    A ``MetaLearner`` whose functions act on one task:

    * ``init``: the identity (the meta-parameters are the model's);
    * ``adapt(params, support) -> (phi, support_losses[num_steps])``;
      ``support_losses`` holds the *proximal* objective before each step
      (the plain support loss at step 0, where ``phi = theta``);
    * ``task_loss(params, task) -> (query_loss, metrics)``: adapt, then
      score on ``task.query``, for evaluation. Its own gradient is the
      first-order one, ``grad L_query(phi)``; the meta-gradient is
      ``task_grad``;
    * ``task_grad(params, task, iteration=None) -> (v, metrics)``: the
      implicit gradient, with the structure of ``params``; metrics hold the
      query ``loss``, ``support_losses``, the metrics of ``loss_fn`` and
      ``cg_residual``, the relative residual
      ``||g - A v|| / ||g||`` of the CG solve of ``A v = g`` (as the CG
      recursion maintains it), with ``g = grad L_query(phi)``.

  Raises:
    TypeError, ValueError: for a non-positive-finite ``reg``, a negative or
      non-finite damping, a non-positive or non-integer ``cg_steps`` or
      ``num_steps``, or a bad (or negative) ``inner_lr``, before any compute.

  Examples:
    >>> import jax.numpy as jnp
    >>> from jaxmaml.imaml import imaml
    >>> from jaxmaml import Task
    >>> loss = lambda w, batch: jnp.mean((batch[0] * w - batch[1]) ** 2)
    >>> learner = imaml(loss, inner_lr=0.2, num_steps=20, reg=1.0, cg_steps=1)
    >>> task = Task(support=(jnp.ones(5), jnp.ones(5)),
    ...             query=(jnp.ones(5), jnp.ones(5)))
    >>> grad, metrics = learner.task_grad(jnp.array(0.0), task)
    >>> # phi* = 2/3; grad = (1 + 2 / reg)^{-1} * 2 (phi* - 1) = -2/9.
    >>> print(f"{float(grad):.3f}", sorted(metrics))
    -0.222 ['cg_residual', 'loss', 'support_losses']
  """
  reg = checks.real_number(reg, 'reg', positive=True)
  identity_coef = 1.0 + checks.real_number(cg_damping, 'cg_damping', positive=False)
  hessian_coef = 1.0 / (reg + checks.real_number(reg_damping, 'reg_damping', positive=False))
  cg_steps = checks.positive_int(cg_steps, 'cg_steps')
  value = kit.loss_only(loss_fn, has_aux)

  def proximal_loss(phi, batch):
    anchor, support = batch
    diff = jax.tree_util.tree_map(lambda p, a: p - a, phi, anchor)
    sq_dist = _vdot(diff, diff)
    return value(phi, support) + 0.5 * reg * sq_dist

  proximal_adapt = adapt_lib.make_adapt(
    proximal_loss,
    adapt_lib.sgd_or(inner_optimizer, inner_lr, num_steps, allow_negative_lr=allow_negative_lr),
    num_steps=num_steps,
    first_order=True,
    unroll=unroll,
  )

  def adapt(params: base.Params, support: base.Batch):
    return proximal_adapt(params, (jax.lax.stop_gradient(params), support))

  def query_value_and_grad(phi, query):
    scored = lambda p: kit.split_aux(loss_fn(p, query), has_aux)
    return jax.value_and_grad(scored, has_aux=True)(phi)

  def task_grad(params: base.Params, task: base.Task, iteration=None):
    del iteration
    phi, support_losses = adapt(params, task.support)
    phi = jax.lax.stop_gradient(phi)
    (loss, aux), g = query_value_and_grad(phi, task.query)
    _, hvp = jax.linearize(jax.grad(lambda p: value(p, task.support)), phi)
    v, residual = conjugate_gradient(
      lambda x: _axpy(hessian_coef, hvp(x), _scale(identity_coef, x)), g, cg_steps
    )
    return v, {**aux, 'loss': loss, 'support_losses': support_losses, 'cg_residual': residual}

  return base.MetaLearner(
    init=kit.identity,
    adapt=adapt,
    task_loss=kit.task_loss_from_adapt(adapt, loss_fn, has_aux=has_aux),
    task_grad=task_grad,
  )
