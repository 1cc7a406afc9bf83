"""Flax models used by the experiments.

The library works on plain parameter pytrees, so models are Flax **linen**
modules: ``model.apply({'params': params}, x)`` is already a pure function of
the parameters, which is exactly what the inner loop differentiates. (Flax NNX
would need ``nnx.split``/``nnx.merge`` around every call to get the same
functional form; linen gives it directly.)
"""

from collections.abc import Callable, Sequence
import typing

import flax.linen as nn
import jax
import jax.numpy as jnp


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

  def apply(params: dict, inputs: jax.Array) -> jax.Array:
    # Without mutable collections, apply returns the outputs alone.
    return typing.cast(jax.Array, model.apply({'params': params}, inputs))

  return apply


CONV_IMPLS = ('matmul', 'xla')
SMALL_C_IN = 3  # conv3x3 'matmul' lays out the patches of at most this many channels leading.
BATCH_NORMS = ('batch', 'none')
POOLINGS = ('stride', 'max')


def conv3x3(x: jax.Array, kernel: jax.Array, stride: int, impl: str) -> jax.Array:
  """A 3x3 'SAME' convolution, ``[n, h, w, c_in] -> [n, h', w', c_out]``.

  Args:
    x: inputs, NHWC.
    kernel: ``[3, 3, c_in, c_out]`` (HWIO, as ``flax.linen.Conv``).
    stride: 1 or 2, in both spatial dimensions.
    impl: ``'xla'``: ``lax.conv_general_dilated``. ``'matmul'``: nine shifted,
      strided slices of the padded input concatenated on the channel axis and
      one dense matmul with the reshaped kernel (im2col). Its forward and both
      backward passes are slices, pads and matmuls, which XLA:CPU runs much
      faster than its convolution backward, and which stay plain (batched)
      matmuls under ``vmap`` with per-task kernels instead of becoming grouped
      convolutions. For at most ``SMALL_C_IN`` input channels the patches are
      laid out ``[9 * c_in, positions]`` (same result).
  """
  if impl == 'xla':
    return jax.lax.conv_general_dilated(
      x, kernel, (stride, stride), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')
    )
  n, h, w, c = x.shape
  out_h, out_w = -(-h // stride), -(-w // stride)
  # 'SAME' padding as XLA computes it: total = max((out - 1) * stride + 3 - size, 0).
  pad_h = max((out_h - 1) * stride + 3 - h, 0)
  pad_w = max((out_w - 1) * stride + 3 - w, 0)
  x = jnp.pad(
    x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0))
  )
  window = lambda i, j: jax.lax.slice(
    x,
    (0, i, j, 0),
    (n, i + (out_h - 1) * stride + 1, j + (out_w - 1) * stride + 1, c),
    (1, stride, stride, 1),
  )  # [n, out_h, out_w, c]
  if c <= SMALL_C_IN:
    # Few input channels (the images): the patch axis leads, [9 * c, positions],
    # so that the kernel gradient contracts the long positions axis without
    # transposing it (measured 14% faster on the miniImageNet meta-step).
    patches = jnp.stack([jnp.moveaxis(window(i, j), -1, 0) for i in range(3) for j in range(3)])
    out = jax.lax.dot_general(
      patches.reshape(9 * c, -1), kernel.reshape(9 * c, -1), (((0,), (0,)), ((), ()))
    )
    return out.reshape(n, out_h, out_w, -1)
  patches = jnp.concatenate(
    [window(i, j) for i in range(3) for j in range(3)], axis=-1
  )  # [n, out_h, out_w, 9 * c]
  return patches @ kernel.reshape(9 * c, -1)


def max_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2 max-pooling with stride 2 ('VALID'), ``[n, h, w, c] -> [n, h // 2, w // 2, c]``.

  Equal to ``nn.max_pool(x, (2, 2), strides=(2, 2))`` in value and in both
  derivatives, ties included (the gradient goes to the first maximum of each
  window in row-major order, as ``reduce_window``'s does), but written as a
  reshape and three selects: XLA:CPU runs ``reduce_window``'s backward
  (``select_and_scatter``) slowly.
  """
  n, h, w, c = x.shape
  x = x[:, : h // 2 * 2, : w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c)
  a, b, c, d = x[:, :, 0, :, 0], x[:, :, 0, :, 1], x[:, :, 1, :, 0], x[:, :, 1, :, 1]
  top = jax.lax.stop_gradient(jnp.maximum(jnp.maximum(a, b), jnp.maximum(c, d)))
  return jnp.where(a == top, a, jnp.where(b == top, b, jnp.where(c == top, c, d)))


class ConvBlock(nn.Module):
  """3x3 conv (64 or 32 filters) -> BatchNorm -> ReLU -> 2x2 max-pool or stride 2.

  BatchNorm semantics are explicit: ``'batch'`` normalises with the statistics
  of the batch it is given (every call, training and test, as the original
  MAML code does: transductive, no running averages); ``'none'`` has no
  normalisation. Its learnable offset (and scale, with ``bn_scale=True``) are
  ordinary parameters, adapted in the inner loop like every other parameter.
  """

  features: int
  pooling: str = 'stride'
  batch_norm: str = 'batch'
  bn_scale: bool = False
  conv: str = 'matmul'

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param(
      'kernel', nn.initializers.xavier_uniform(), (3, 3, x.shape[-1], self.features)
    )
    x = conv3x3(x, kernel, 2 if self.pooling == 'stride' else 1, self.conv)
    if self.batch_norm == 'batch':
      # Statistics in float32 whatever the compute dtype (jaxmaml.mixed_precision),
      # as mixed-precision practice keeps normalisation.
      dtype, x = x.dtype, x.astype(jnp.promote_types(x.dtype, jnp.float32))
      mean = jnp.mean(x, axis=(0, 1, 2))
      var = jnp.mean(jnp.square(x - mean), axis=(0, 1, 2))
      x = ((x - mean) * jax.lax.rsqrt(var + 1e-5)).astype(dtype)
      if self.bn_scale:
        x = x * self.param('scale', nn.initializers.ones, (self.features,))
    x = x + self.param('bias', nn.initializers.zeros, (self.features,))
    x = nn.relu(x)
    if self.pooling == 'max':
      x = max_pool_2x2(x)
    return x


class Conv4(nn.Module):
  """The 4-block conv net of MAML (Finn et al., 2017), ``[n, h, w, c] -> [n, num_classes]``.

  Omniglot (the defaults): 28x28x1 inputs, 64 filters, stride-2 convolutions
  instead of max-pooling, the 2x2x64 output averaged over space, a linear head.
  miniImageNet: ``conv4_miniimagenet(num_classes)``: 84x84x3 inputs, 32
  filters, 2x2 max-pooling, the 5x5x32 output flattened.

  Attributes:
    num_classes: N, the number of ways; ``None`` leaves out the linear head,
      so the network returns its features ``[n, dim]`` (an embedding, e.g.
      for ProtoNets: 64 for Omniglot, 800 for miniImageNet).
    features: filters per conv layer.
    pooling: ``'stride'`` (stride-2 conv) or ``'max'`` (2x2 max-pool).
    head: ``'mean'`` (average over space) or ``'flatten'``.
    batch_norm: ``'batch'`` (batch statistics, always) or ``'none'``.
    bn_scale: learn a BatchNorm scale as well as the offset (the original
      MAML code has the offset only; PyTorch ports usually have both).
    conv: ``'matmul'`` or ``'xla'``, see ``conv3x3``; both compute the same.
  """

  num_classes: int | None
  features: int = 64
  pooling: str = 'stride'
  head: str = 'mean'
  batch_norm: str = 'batch'
  bn_scale: bool = False
  conv: str = 'matmul'

  def __post_init__(self):
    for name, value, allowed in (
      ('pooling', self.pooling, POOLINGS),
      ('head', self.head, ('mean', 'flatten')),
      ('batch_norm', self.batch_norm, BATCH_NORMS),
      ('conv', self.conv, CONV_IMPLS),
    ):
      if value not in allowed:
        raise ValueError(f'{name} must be one of {allowed}, got {value!r}.')
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if x.ndim != 4:
      raise ValueError(f'Conv4 expects inputs [n, height, width, channels], got {x.shape}.')
    for _ in range(4):
      x = ConvBlock(self.features, self.pooling, self.batch_norm, self.bn_scale, self.conv)(x)
    x = jnp.mean(x, axis=(1, 2)) if self.head == 'mean' else x.reshape(x.shape[0], -1)
    return x if self.num_classes is None else nn.Dense(self.num_classes)(x)


def batch_norm_params(params: dict) -> dict:
  """The mask of ``Conv4``'s BatchNorm offsets and scales (MAML++'s per-step BatchNorm).

  Returns:
    A pytree of Python bools with the structure of ``params``: True for the
    ``bias`` and ``scale`` of every ``ConvBlock``.
  """
  return jax.tree_util.tree_map_with_path(
    lambda path, _: str(path[0].key).startswith('ConvBlock') and path[-1].key in ('bias', 'scale'),
    params,
  )


def conv4_miniimagenet(num_classes: int | None, **kwargs) -> Conv4:
  """MAML's miniImageNet network: 32 filters, max-pooling, flattened head."""
  return Conv4(num_classes, **{'features': 32, 'pooling': 'max', 'head': 'flatten', **kwargs})
