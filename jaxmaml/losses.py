"""Loss functions in the ``loss_fn(params, batch)`` form the inner loop expects.

Each factory takes ``apply(params, inputs) -> outputs`` (for a Flax module,
``jaxmaml.models.apply_fn(model)``) and returns a loss on ``(inputs, targets)``
batches.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

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


def cross_entropy_loss(apply: ApplyFn):
  """Softmax cross-entropy on ``(inputs [n, ...], integer labels [n])``.

  Returns:
    ``loss_fn(params, batch) -> (loss, {'accuracy': acc})`` (use
    ``has_aux=True``).
  """

  def loss_fn(params, batch):
    inputs, labels = batch
    logits = apply(params, inputs)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == labels)
    return loss, {'accuracy': accuracy}

  return loss_fn
