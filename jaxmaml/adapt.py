"""The inner loop: ``num_steps`` updates of an Optax transformation as one ``lax.scan``.

One core serves every algorithm of the family. The update rule is an
``optax.GradientTransformation``: plain gradient descent is ``optax.sgd(lr)``
(``inner_sgd`` builds it from any ``InnerLR``), Meta-SGD's and MAML++'s learned
rates are ``scale_by_rates``, Reptile's Adam is ``optax.adam``. The loop is
differentiable end to end (second-order MAML differentiates through it), can
cut the second-order term (``first_order=True``), and can trade compute for
memory (``remat``). ``make_trajectory`` is the same loop that also reports
what ``observe`` sees after every step (MAML++'s multi-step loss, the
adaptation curve); ``make_adapt`` is it without observations.
"""

from collections.abc import Callable
import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxmaml import base
from jaxmaml import checks
from jaxmaml import kit

# Inner loops with at most this many steps are fully unrolled by default: on
# XLA:CPU, convolutions differentiated inside a rolled while loop were measured
# about 12x slower than unrolled; beyond this, compile time dominates.
MAX_DEFAULT_UNROLL = 10

InnerLR = Any
"""A scalar, a schedule, or a per-parameter pytree.

* scalar (``float`` or 0-d array): the same rate for every step and parameter;
* schedule: a 1-d array of shape ``[num_steps]``, or a callable
  ``step -> rate`` such as an ``optax.Schedule``, evaluated at
  ``0 .. num_steps - 1``;
* per-parameter: a pytree with the structure of ``params`` whose leaves are
  scalars or arrays broadcastable to the matching parameter (Meta-SGD).
"""

Observe = Callable[[base.Params, base.Batch], Any]
"""``observe(params_after_step, step_batch) -> pytree``, recorded after every step."""


def _is_none(x) -> bool:
  return x is None


class ScaleByRatesState(NamedTuple):
  """The step count of ``scale_by_rates(..., per_step=True)``."""

  count: jax.Array


def scale_by_rates(rates, *, per_step: bool = False) -> optax.GradientTransformation:
  """Gradient descent with one rate per parameter (and step): ``u = -rates * g``.

  The rates may be traced (meta-learned): build the transformation inside the
  function that is differentiated, as Meta-SGD and MAML++ do.

  Args:
    rates: a pytree with the structure of the parameters; each leaf a scalar
      or an array broadcastable to its parameter, or with ``per_step`` a
      ``[num_steps, ...]`` stack of those (step ``k`` uses ``leaf[k]``).
      Leaves of parameters that are not updated (``None`` updates) are unused.
    per_step: whether the leaves carry a leading step axis.

  Returns:
    An ``optax.GradientTransformation``.
  """

  def init(params):
    """Checks ``rates`` against ``params`` (before any compute) and starts the count."""
    params_def = jax.tree_util.tree_structure(params, is_leaf=_is_none)
    rates_def = jax.tree_util.tree_structure(rates)
    if rates_def != params_def:
      raise ValueError(
        'inner_lr as a per-parameter pytree must have the structure of params; got '
        f'{rates_def}, expected {params_def}.'
      )

    def check(path, p, r):
      shape = np.shape(r)[1:] if per_step else np.shape(r)
      if p is not None and not _broadcasts_to(shape, np.shape(p)):
        raise ValueError(
          f'inner_lr{jax.tree_util.keystr(path)} has shape {np.shape(r)}, not '
          f'broadcastable to the parameter shape {np.shape(p)}'
          + (' after its leading step axis.' if per_step else '.')
        )

    jax.tree_util.tree_map_with_path(check, params, rates, is_leaf=_is_none)
    return ScaleByRatesState(count=jnp.zeros([], jnp.int32)) if per_step else optax.EmptyState()

  def update(updates, state, params=None):
    del params
    step_rates = rates
    if per_step:
      step_rates = jax.tree_util.tree_map(lambda r: r[state.count], rates)
      state = ScaleByRatesState(count=state.count + 1)
    scale = lambda g, r: None if g is None else -r * g
    return jax.tree_util.tree_map(scale, updates, step_rates, is_leaf=_is_none), state

  return optax.GradientTransformation(init, update)


def _broadcasts_to(shape, target) -> bool:
  try:
    return np.broadcast_shapes(shape, target) == tuple(target)
  except ValueError:
    return False


def is_per_parameter(inner_lr: InnerLR) -> bool:
  """Whether ``inner_lr`` is a per-parameter pytree (not a scalar, array or callable)."""
  return not callable(inner_lr) and not isinstance(
    inner_lr, (numbers.Number, np.ndarray, jax.Array)
  )


def inner_sgd(
  inner_lr: InnerLR, num_steps: int, *, allow_negative_lr: bool = False
) -> optax.GradientTransformation:
  """Plain gradient descent ``params - inner_lr * grad`` for any ``InnerLR``, checked.

  A scalar gives ``optax.sgd(inner_lr)``; a schedule ``optax.sgd`` of it,
  evaluated (and checked) at steps ``0 .. num_steps - 1``; a pytree
  ``scale_by_rates(inner_lr)``.

  Args:
    inner_lr: the rate, see ``InnerLR``; finite, and >= 0 unless
      ``allow_negative_lr`` (0 is no adaptation).
    num_steps: the number of inner steps, a positive int.
    allow_negative_lr: accept negative rates: the inner loop then ascends the
      loss (gradient-ascent experiments). Off by default, since a negative
      rate is otherwise a sign error that trains silently.

  Raises:
    TypeError, ValueError: naming ``inner_lr``, for a missing, non-numeric,
      non-finite, negative or malformed rate, before any compute.
  """
  num_steps = checks.positive_int(num_steps, 'num_steps')
  if inner_lr is None:
    raise TypeError('inner_lr is required (a scalar, schedule or pytree).')
  if callable(inner_lr):
    inner_lr = jnp.broadcast_to(jnp.asarray(inner_lr(jnp.arange(num_steps))), (num_steps,))
  checks.rate(inner_lr, 'inner_lr', allow_negative=allow_negative_lr)
  if is_per_parameter(inner_lr):
    return scale_by_rates(inner_lr)
  if np.ndim(inner_lr) == 0:
    return optax.sgd(inner_lr)
  if np.ndim(inner_lr) == 1:
    if np.shape(inner_lr)[0] != num_steps:
      raise ValueError(
        f'inner_lr as a schedule must have shape [num_steps] = [{num_steps}], got shape '
        f'{np.shape(inner_lr)}.'
      )
    rates = jnp.asarray(inner_lr)
    return optax.sgd(lambda count: rates[count])
  raise ValueError(
    'inner_lr must be a scalar, a [num_steps] schedule, a callable schedule, or a pytree '
    f'with the structure of params; got an array of shape {np.shape(inner_lr)}.'
  )


def sgd_or(
  inner_optimizer: optax.GradientTransformation | None,
  inner_lr: InnerLR | None,
  num_steps: int,
  *,
  allow_negative_lr: bool = False,
) -> optax.GradientTransformation:
  """``inner_optimizer``, or ``inner_sgd(inner_lr, num_steps, allow_negative_lr=...)``.

  Exactly one of ``inner_optimizer`` and ``inner_lr`` is given.
  """
  if inner_lr is None and inner_optimizer is None:
    raise TypeError(
      'inner_lr is required (a scalar, schedule or pytree) unless inner_optimizer is given.'
    )
  if inner_lr is not None and inner_optimizer is not None:
    raise TypeError('Give exactly one of inner_lr and inner_optimizer, not both.')
  if inner_optimizer is None:
    return inner_sgd(inner_lr, num_steps, allow_negative_lr=allow_negative_lr)
  return inner_optimizer


def make_trajectory(
  loss_fn: base.LossFn,
  inner_optimizer: optax.GradientTransformation,
  *,
  num_steps: int,
  observe: Observe,
  first_order: bool = False,
  remat: bool | int = False,
  unroll: int | bool | None = None,
  has_aux: bool = False,
  mask: Any = None,
  per_step_support: bool = False,
) -> Callable[[base.Params, base.Batch], tuple[base.Params, jax.Array, Any]]:
  """Builds ``trajectory(params, support)``: the inner loop, observed after every step.

  Step ``k`` computes ``g = jax.grad(loss_fn)(params, batch_k)`` and applies
  ``inner_optimizer``'s update of ``g`` (its state starts fresh for every
  call), inside ``jax.lax.scan``; then records ``observe(params, batch_k)``.

  Args:
    loss_fn: ``loss_fn(params, batch) -> loss`` (or ``(loss, aux)`` with
      ``has_aux=True``), ``loss`` a scalar.
    inner_optimizer: the update rule, an ``optax.GradientTransformation``:
      ``optax.sgd(lr)`` (or ``inner_sgd(inner_lr, num_steps)`` for schedules and
      per-parameter rates), ``scale_by_rates`` for learned rates,
      ``optax.adam(...)``.
    num_steps: number of inner steps, a positive int.
    observe: ``observe(params, batch) -> pytree``, called after every step
      with the parameters after it and that step's batch.
    first_order: if True, ``lax.stop_gradient`` is applied to each inner
      gradient, so differentiating through the loop drops second-order terms
      (first-order MAML).
    remat: rematerialisation of the inner loop for the backward pass.
      ``True`` (or 1): each step is wrapped in ``jax.checkpoint``; the
      backward pass keeps only the parameters entering each step, not the
      activations and gradients inside it, and recomputes those: memory grows
      by one copy of the parameters per step instead of one step's
      activations. An int ``s > 1``: two-level checkpointing, steps grouped
      into segments of ``s`` steps, each segment checkpointed as a whole and
      each step inside it too: about ``num_steps / s + s`` parameter copies
      (fewest at ``s`` near ``sqrt(num_steps)``) for one more forward pass
      of the inner loop.
    unroll: passed to ``lax.scan``. ``None`` unrolls fully when
      ``num_steps <= MAX_DEFAULT_UNROLL`` and keeps a rolled loop otherwise,
      or with ``remat=True`` (XLA can undo rematerialisation across unrolled
      steps: measured no memory saving unrolled, 25% rolled, at 5 steps of
      the sinusoid MLP).
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``; the aux is ignored by
      the inner loop.
    mask: which parameters the inner loop adapts: a pytree of Python bools
      with the structure of ``params``, or a function ``params -> mask``.
      Only ``True`` leaves are differentiated and updated (the optimizer sees
      ``None`` for the others, as with ``optax.masked``); the others stay as
      they are (ANIL adapts the head only). ``None`` adapts everything.
    per_step_support: if True, every leaf of ``support`` has a leading
      ``[num_steps]`` axis and step ``k`` uses ``support[k]`` (inner
      mini-batches, as Reptile's ``inner_batch_size``); otherwise every step
      uses the whole ``support``.

  Returns:
    ``trajectory(params, support) -> (adapted_params, support_losses,
    observed)``: ``support_losses`` has shape ``[num_steps]`` and holds the
    support loss (of that step's batch) *before* each step; ``observed`` is
    ``observe``'s output stacked on a leading ``[num_steps]`` axis.

  Raises:
    TypeError, ValueError: for a non-positive ``num_steps``, an
      ``inner_optimizer`` that is not a ``GradientTransformation``, or a
      malformed ``remat``, ``unroll`` or ``mask``, before any compute.
  """
  num_steps = checks.positive_int(num_steps, 'num_steps')
  if not isinstance(inner_optimizer, optax.GradientTransformation):
    raise TypeError(
      'inner_optimizer must be an optax.GradientTransformation (e.g. optax.sgd(0.1), or '
      f'jaxmaml.adapt.inner_sgd(inner_lr, num_steps) for schedules), got {inner_optimizer!r}.'
    )
  if not isinstance(remat, numbers.Integral) or remat < 0:
    raise ValueError(f'remat must be a bool or a positive int (segment length), got {remat!r}.')
  segment = int(remat)
  if unroll is None:
    unroll = 1 if remat else num_steps <= MAX_DEFAULT_UNROLL
  elif not isinstance(unroll, bool) and (not isinstance(unroll, numbers.Integral) or unroll <= 0):
    raise ValueError(f'unroll must be a bool, a positive int or None, got {unroll!r}.')
  inner_loss = kit.loss_only(loss_fn, has_aux)

  def trajectory(params: base.Params, support: base.Batch):
    leaves, treedef = jax.tree_util.tree_flatten(params)
    flags = [True] * len(leaves) if mask is None else checks.bool_mask(mask, params)
    if per_step_support:
      for leaf in jax.tree_util.tree_leaves(support):
        if np.shape(leaf)[:1] != (num_steps,):
          raise ValueError(
            'with per_step_support=True every support leaf needs a leading '
            f'[num_steps] = [{num_steps}] axis, got shape {np.shape(leaf)}.'
          )

    def full(adapted):
      """The whole parameter pytree: the adapted leaves, the others as they were."""
      return jax.tree_util.tree_map(
        lambda a, p: p if a is None else a, adapted, params, is_leaf=_is_none
      )

    def step(carry, batch):
      adapted, opt_state = carry
      batch = batch if per_step_support else support
      loss, grads = jax.value_and_grad(lambda a: inner_loss(full(a), batch))(adapted)
      if first_order:
        grads = jax.lax.stop_gradient(grads)
      updates, opt_state = inner_optimizer.update(grads, opt_state, adapted)
      adapted = optax.apply_updates(adapted, updates)
      return (adapted, opt_state), (loss, observe(full(adapted), batch))

    if remat:
      step = jax.checkpoint(step)
    scan = lambda carry, xs, length: jax.lax.scan(step, carry, xs, length=length, unroll=unroll)
    xs = support if per_step_support else None
    adapted = treedef.unflatten([p if m else None for p, m in zip(leaves, flags)])
    carry = (adapted, inner_optimizer.init(adapted))
    if segment <= 1 or segment >= num_steps:
      carry, (losses, observed) = scan(carry, xs, num_steps)
      return full(carry[0]), losses, observed
    # Two-level checkpointing: a checkpointed scan over whole segments, then
    # the remaining steps.
    num_segments = num_steps // segment
    split = num_segments * segment
    segment_xs = jax.tree_util.tree_map(
      lambda x: x[:split].reshape(num_segments, segment, *x.shape[1:]), xs
    )
    run_segment = jax.checkpoint(lambda carry, xs: scan(carry, xs, segment))
    carry, outs = jax.lax.scan(run_segment, carry, segment_xs, length=num_segments)
    outs = jax.tree_util.tree_map(lambda x: x.reshape(split, *x.shape[2:]), outs)
    if split < num_steps:
      carry, rest = scan(carry, jax.tree_util.tree_map(lambda x: x[split:], xs), num_steps - split)
      outs = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), outs, rest)
    return full(carry[0]), *outs

  return trajectory


def _nothing(params, batch):
  del params, batch
  return None


def make_adapt(
  loss_fn: base.LossFn,
  inner_optimizer: optax.GradientTransformation,
  *,
  num_steps: int,
  **options,
) -> base.AdaptFn:
  """Builds ``adapt(params, support)``: ``num_steps`` inner updates on one task.

  ``make_trajectory`` without observations.

  Args:
    loss_fn, inner_optimizer, num_steps: as for ``make_trajectory``.
    **options: ``first_order``, ``remat``, ``unroll``, ``has_aux``, ``mask``,
      ``per_step_support``, as for ``make_trajectory``.

  Returns:
    ``adapt(params, support) -> (adapted_params, support_losses)``, where
    ``support_losses`` has shape ``[num_steps]`` and holds the support loss
    (of that step's batch) *before* each step.

  Examples:
    >>> import jax.numpy as jnp, optax
    >>> from jaxmaml import make_adapt
    >>> loss = lambda w, batch: jnp.mean((batch[0] * w - batch[1]) ** 2)
    >>> adapt = make_adapt(loss, optax.sgd(0.1), num_steps=3)
    >>> w, losses = adapt(jnp.array(0.0), (jnp.ones(4), 2 * jnp.ones(4)))
    >>> losses.shape
    (3,)
  """
  trajectory = make_trajectory(
    loss_fn, inner_optimizer, num_steps=num_steps, observe=_nothing, **options
  )

  def adapt(params: base.Params, support: base.Batch):
    adapted, losses, _ = trajectory(params, support)
    return adapted, losses

  return adapt
