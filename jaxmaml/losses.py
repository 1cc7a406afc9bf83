"""Loss functions in the ``loss_fn(params, batch)`` form the inner loop expects.

Each factory takes ``apply(params, inputs) -> outputs`` (for a Flax module,
``jaxmaml.models.apply_fn(model)``) and returns a loss on ``(inputs, targets)``
batches.

Labels out of range never give a finite, wrong answer. Integer labels must be
in ``[0, num_classes)``, ``num_classes`` the last axis of the logits. Where
the labels are concrete (a call outside ``jit``/``vmap``) others are refused
with a ValueError. Where they are traced (inside a jitted or task-mapped
meta-step, whose values the host cannot read without a round-trip), a label
outside the range makes the loss, its gradient and the accuracy NaN: the
meta-gradient of the whole meta-batch is then NaN, never a silently wrong
update, and a finite check of the loss or of the parameters catches it.
(``optax.softmax_cross_entropy_with_integer_labels`` alone scores label
``-1`` as the last class and gives a finite gradient for a label past the
end.)
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxmaml import checks

ApplyFn = Callable[[object, jax.Array], jax.Array]


def mse_loss(apply: ApplyFn):
  """Mean squared error on ``(inputs [n, ...], targets [n, ...])``.

  Returns:
    ``loss_fn(params, batch) -> loss``, a scalar.
  """

  def loss_fn(params, batch):
    inputs, targets = batch
    return jnp.mean((apply(params, inputs) - targets) ** 2)

  return loss_fn


def nan_unless_in_range(labels: jax.Array, num_classes: int, dtype) -> jax.Array:
  """``[n]`` labels -> ``[n]`` of ``dtype``: 0 where in ``[0, num_classes)``, NaN elsewhere.

  Added to what the labels score (the logits, the prototypes), it makes the
  value and every gradient through it NaN for an out-of-range label, and
  leaves everything else bitwise unchanged.
  """
  valid = (labels >= 0) & (labels < num_classes)
  return jnp.where(valid, jnp.zeros([], dtype), jnp.full([], jnp.nan, dtype))


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Mean softmax cross-entropy and accuracy, ``[n, classes], [n] -> (loss, accuracy)``.

  Labels must be integers of shape ``[n]``, in ``[0, classes)``: the dtype
  and shape are checked when tracing, concrete values on the host; an
  out-of-range traced label makes the loss, its gradient and the accuracy
  NaN (see the module docstring).

  Raises:
    TypeError: for labels that are not integers.
    ValueError: for labels not shaped ``logits.shape[:-1]``, or concrete
      labels out of range.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> logits = jnp.array([[2.0, 0.0], [0.0, 2.0]])
    >>> loss, accuracy = jax.jit(softmax_cross_entropy)(logits, jnp.array([0, 2]))
    >>> bool(jnp.isnan(loss)), bool(jnp.isnan(accuracy))
    (True, True)
    >>> grad = jax.jit(jax.grad(lambda x: softmax_cross_entropy(x, jnp.array([0, 2]))[0]))(logits)
    >>> bool(jnp.isnan(grad).any())
    True
  """
  num_classes = logits.shape[-1]
  checks.class_labels(labels, num_classes, 'labels')
  if np.shape(labels) != logits.shape[:-1]:
    raise ValueError(
      f'labels must have shape {logits.shape[:-1]} (one per output of shape '
      f'{logits.shape}), got {np.shape(labels)}.'
    )
  poison = nan_unless_in_range(labels, num_classes, logits.dtype)
  logits = logits + poison[..., None]
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == labels)
  return loss, accuracy + jnp.sum(poison).astype(accuracy.dtype)


def cross_entropy_loss(apply: ApplyFn):
  """Softmax cross-entropy on ``(inputs [n, ...], integer labels [n])``.

  Labels are in ``[0, num_classes)``, ``num_classes`` the last axis of
  ``apply``'s outputs. Non-integer labels are a TypeError, and concrete
  out-of-range labels a ValueError; traced out-of-range labels give a NaN
  loss, gradient and accuracy (see the module docstring).

  Returns:
    ``loss_fn(params, batch) -> (loss, {'accuracy': acc})`` (use
    ``has_aux=True``).
  """

  def loss_fn(params, batch):
    inputs, labels = batch
    loss, accuracy = softmax_cross_entropy(apply(params, inputs), labels)
    return loss, {'accuracy': accuracy}

  return loss_fn
