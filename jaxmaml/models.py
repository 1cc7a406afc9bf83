"""Flax models used by the experiments.

The library works on plain parameter pytrees, so models are Flax **linen**
modules: ``model.apply({'params': params}, x)`` is already a pure function of
the parameters, which is exactly what the inner loop differentiates. (Flax NNX
would need ``nnx.split``/``nnx.merge`` around every call to get the same
functional form; linen gives it directly.)
"""

from typing import Callable, Sequence

import flax.linen as nn
import jax


class MLP(nn.Module):
  """A multilayer perceptron, ``[..., in] -> [..., out]``.

  Attributes:
    features: widths of the hidden layers followed by the output width, e.g.
      ``(40, 40, 1)`` for the MAML sinusoid network.
    activation: applied after every hidden layer.
  """

  features: Sequence[int]
  activation: Callable[[jax.Array], jax.Array] = nn.relu

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for width in self.features[:-1]:
      x = self.activation(nn.Dense(width)(x))
    return nn.Dense(self.features[-1])(x)


def apply_fn(model: nn.Module) -> Callable[[dict, jax.Array], jax.Array]:
  """``(params, inputs) -> outputs`` for a linen module without mutable state."""
  return lambda params, inputs: model.apply({'params': params}, inputs)
