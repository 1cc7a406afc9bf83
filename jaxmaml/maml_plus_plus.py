"""MAML++ (Antoniou et al., 2019): MAML with switchable fixes, on the shared ``adapt``.

* multi-step loss, MSL (``msl_iterations``): the query loss after every inner
  step, weighted, the weights annealed towards the last step;
* per-layer per-step learned inner learning rates, LSLR (``learn_inner_lr``);
* per-step BatchNorm parameters (``per_step_bn``): a separate BatchNorm offset
  (and scale) for every inner step, meta-learned and not adapted;
* derivative-order annealing, DA (``first_order_iterations``): first order for
  the first iterations, then second order;
* cosine annealing of the outer learning rate: a choice of outer optimizer,
  ``optax.adam(optax.cosine_decay_schedule(...))``, see the experiments.

With every piece off the learner computes what ``jaxmaml.maml`` does (tested).
BatchNorm statistics: MAML++'s reference code keeps per-step running
statistics but always normalises with the statistics of the current batch
(``F.batch_norm(..., training=True)``); jaxmaml's batch-statistics BatchNorm
does the same, so each step is normalised with its own batch's statistics and
there are no running averages to keep.
"""

import jax
import jax.numpy as jnp

from jaxmaml import adapt as adapt_lib
from jaxmaml import base
from jaxmaml import checks
from jaxmaml import kit

MIN_NON_FINAL_WEIGHT = 0.03
"""Each non-final step's MSL weight stays at least ``0.03 / num_steps`` (the paper's code)."""


def msl_weights(num_steps: int, iteration, msl_iterations: int) -> jax.Array:
  """The MSL weights of the query losses after steps ``1..num_steps``, ``[num_steps]``.

  They start uniform (``1 / num_steps``); over ``msl_iterations`` the
  non-final weights decay linearly to ``0.03 / num_steps`` and the last grows
  to take the rest; from ``msl_iterations`` on (and when ``iteration`` is
  None) only the last step counts, as in the MAML++ code.
  """
  last = jax.nn.one_hot(num_steps - 1, num_steps)
  if msl_iterations == 0 or iteration is None or num_steps == 1:
    return last
  progress = jnp.asarray(iteration, jnp.float32) / msl_iterations
  floor = MIN_NON_FINAL_WEIGHT / num_steps
  non_final = jnp.maximum((1.0 - progress) / num_steps, floor)
  final = jnp.minimum((1.0 + progress * (num_steps - 1)) / num_steps, 1.0 - (num_steps - 1) * floor)
  weights = jnp.concatenate([jnp.full([num_steps - 1], non_final), final[None]])
  return jnp.where(progress < 1.0, weights, last)


def maml_plus_plus(
  loss_fn: base.LossFn,
  *,
  inner_lr: float,
  num_steps: int,
  msl_iterations: int = 0,
  learn_inner_lr: bool = False,
  per_step_bn=None,
  first_order_iterations: int = 0,
  remat: bool = False,
  unroll: int | bool | None = None,
  has_aux: bool = False,
  allow_negative_lr: bool = False,
) -> base.MetaLearner:
  """MAML++; every piece is off by default and switched on by its argument.

  The meta-parameters are ``{'params': model_params, 'inner_lr': rates}``:
  ``rates`` has the structure of ``model_params`` with one ``[num_steps]``
  leaf per parameter array (LSLR: one rate per layer and step, all starting
  at ``inner_lr``; constant unless ``learn_inner_lr``). With ``per_step_bn``
  each selected leaf of ``model_params`` becomes a ``[num_steps, ...]`` stack:
  inner step ``k`` and the query loss after it use slice ``k``.

  Args:
    loss_fn: ``loss_fn(params, batch) -> loss`` (or ``(loss, metrics)``).
    inner_lr: the inner learning rate (its initial value with LSLR).
    num_steps: inner steps, the same in training and at test (LSLR learns a
      rate per step).
    msl_iterations: MSL: train on the weighted query losses after every step
      for the first ``msl_iterations`` meta-iterations (the paper: 10 epochs
      of 500); 0 turns MSL off.
    learn_inner_lr: LSLR: meta-learn a rate per parameter array and step.
      The rates are unconstrained, as in the paper: they can grow, or turn
      negative. On sinusoid regression they grew until an inner step
      diverged; clipping the meta-gradient
      (``optax.chain(optax.clip_by_global_norm(1.0), optimizer)``) prevented
      it in our runs (README).
    per_step_bn: which parameters are the per-step BatchNorm parameters: a
      pytree of Python bools with the structure of ``model_params``, or
      ``params -> mask`` (e.g. ``jaxmaml.models.batch_norm_params``). They
      are meta-learned, not adapted in the inner loop. None turns this off.
    first_order_iterations: DA: first order for meta-iterations below this,
      second order after; 0 is second order throughout.
    remat: checkpoint each inner step for the backward pass.
    unroll: ``lax.scan`` unroll of the inner loop; None unrolls up to
      ``jaxmaml.adapt.MAX_DEFAULT_UNROLL`` steps.
    has_aux: whether ``loss_fn`` returns ``(loss, metrics)``.
    allow_negative_lr: accept a negative ``inner_lr`` (gradient-ascent
      experiments); otherwise a negative one is a ValueError.

  Returns:
    A ``MetaLearner``. ``task_grad(params, task, iteration)`` uses the
    meta-iteration for MSL and DA (``None``: after annealing);
    ``task_loss`` is the query loss after the last step (evaluation).

  Examples:
    >>> import jax.numpy as jnp
    >>> from jaxmaml import maml_plus_plus, Task
    >>> loss = lambda w, batch: jnp.mean((batch[0] * w - batch[1]) ** 2)
    >>> learner = maml_plus_plus(loss, inner_lr=0.1, num_steps=2, msl_iterations=100,
    ...                          learn_inner_lr=True)
    >>> meta_params = learner.init(jnp.array(0.0))
    >>> meta_params['inner_lr'].shape
    (2,)
    >>> task = Task(support=(jnp.ones(5), jnp.ones(5)), query=(jnp.ones(5), jnp.ones(5)))
    >>> grad, metrics = learner.task_grad(meta_params, task, 0)
    >>> metrics['step_losses'].shape
    (2,)
  """
  num_steps = checks.positive_int(num_steps, 'num_steps')
  checks.finite_scalar(inner_lr, 'inner_lr')
  checks.rate(inner_lr, 'inner_lr', allow_negative=allow_negative_lr)
  checks.int_at_least(msl_iterations, 'msl_iterations', 0)
  checks.int_at_least(first_order_iterations, 'first_order_iterations', 0)

  def bn_flags(params):
    if per_step_bn is None:
      return jax.tree_util.tree_map(lambda _: False, params)
    mask = per_step_bn(params) if callable(per_step_bn) else per_step_bn
    checks.bool_mask(mask, params)  # Checks the structure.
    return mask

  def init(params: base.Params) -> base.Params:
    rates = jax.tree_util.tree_map(
      lambda p: jnp.full([num_steps], inner_lr, jnp.result_type(p)), params
    )
    stacked = jax.tree_util.tree_map(
      lambda p, m: jnp.broadcast_to(p, (num_steps, *jnp.shape(p))) if m else p,
      params,
      bn_flags(params),
    )
    return {'params': stacked, 'inner_lr': rates}

  def run(meta_params, task: base.Task, first_order: bool):
    """Adapts step by step; the query loss (and metrics) after each step, ``[num_steps]``."""
    params, rates = kit.params_and_rates(meta_params, 'maml_plus_plus')
    if not learn_inner_lr:
      rates = jax.lax.stop_gradient(rates)
    flags = bn_flags(params)  # Per-step BatchNorm stacks: read, not adapted.

    def at_step(params, k):
      """The model parameters of step ``k``: slice ``k`` of the per-step stacks."""
      return jax.tree_util.tree_map(lambda p, m: p[k] if m else p, params, flags)

    # The per-step "support" is the step index: step k reads slice k of the
    # per-step parameters, on the whole support set.
    trajectory = adapt_lib.make_trajectory(
      lambda p, k: loss_fn(at_step(p, k), task.support),
      adapt_lib.scale_by_rates(rates, per_step=True),
      num_steps=num_steps,
      observe=lambda p, k: kit.split_aux(loss_fn(at_step(p, k), task.query), has_aux),
      first_order=first_order,
      remat=remat,
      unroll=unroll,
      has_aux=has_aux,
      mask=None if per_step_bn is None else jax.tree_util.tree_map(lambda m: not m, flags),
      per_step_support=True,
    )
    params, support_losses, (losses, aux) = trajectory(params, jnp.arange(num_steps))
    return params, support_losses, losses, aux

  def adapt(meta_params, support):
    task = base.Task(support=support, query=support)
    params, support_losses, _, _ = run(meta_params, task, first_order=False)
    return params, support_losses

  def metrics(support_losses, losses, aux):
    last = jax.tree_util.tree_map(lambda x: x[-1], aux)
    return {**last, 'loss': losses[-1], 'support_losses': support_losses, 'step_losses': losses}

  def task_loss(meta_params, task: base.Task):
    _, support_losses, losses, aux = run(meta_params, task, first_order=False)
    return losses[-1], metrics(support_losses, losses, aux)

  def objective(meta_params, task, iteration, first_order):
    _, support_losses, losses, aux = run(meta_params, task, first_order)
    weights = msl_weights(num_steps, iteration, msl_iterations)
    return jnp.sum(weights * losses), metrics(support_losses, losses, aux)

  grads = {order: jax.grad(objective, has_aux=True) for order in (False, True)}

  def task_grad(meta_params, task: base.Task, iteration=None):
    second = lambda: grads[False](meta_params, task, iteration, False)
    if first_order_iterations == 0 or iteration is None:
      return second()
    first = lambda: grads[True](meta_params, task, iteration, True)
    return jax.lax.cond(iteration < first_order_iterations, first, second)

  return base.MetaLearner(init=init, adapt=adapt, task_loss=task_loss, task_grad=task_grad)
