"""Flax models used by the experiments.

The library works on plain parameter pytrees, so models are Flax **linen**
modules: ``model.apply({'params': params}, x)`` is already a pure function of
the parameters, which is exactly what the inner loop differentiates. (Flax NNX
and Equinox models get the same form through ``jaxmaml.adapters``.)
"""

from collections.abc import Callable, Sequence
import typing

import flax.errors
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxmaml import normalization


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
  """``(params, inputs) -> outputs`` for a linen module without mutable state.

  Raises:
    ValueError: naming ``inputs`` when their shape does not fit ``params``
      (e.g. images of another size or channel count than the parameters
      were initialised for), or naming ``params`` when they are not this
      model's; when tracing, before any compute.
  """
  name = type(model).__name__

  def apply(params: dict, inputs: jax.Array) -> jax.Array:
    # Without mutable collections, apply returns the outputs alone.
    try:
      return typing.cast(jax.Array, model.apply({'params': params}, inputs))
    except flax.errors.ScopeParamShapeError as e:
      raise ValueError(
        f'inputs of shape {np.shape(inputs)} do not fit the {name} params (check the shape '
        f'of the task inputs against the shape the params were initialised with): {e}'
      ) from e
    except flax.errors.ScopeParamNotFoundError as e:
      raise ValueError(f'params are not those of this {name}: {e}') from e

  return apply


CONV_IMPLS = ('matmul', 'xla')
SMALL_C_IN = 3  # conv3x3 'matmul' lays out the patches of at most this many channels leading.
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


def _both(fn, x: jax.Array, reference: jax.Array | None):
  """``fn`` applied to the inputs and, where there is one, to the reference stream."""
  return fn(x), None if reference is None else fn(reference)


class ConvBlock(nn.Module):
  """3x3 conv (64 or 32 filters) -> BatchNorm -> ReLU -> 2x2 max-pool or stride 2.

  ``(x [n, h, w, c], reference [m, h, w, c] or None) -> (x, reference)``:
  BatchNorm normalises ``x`` with the statistics of ``reference`` where one is
  given, of ``x`` otherwise (see ``jaxmaml.normalization``); ``'none'`` has no
  normalisation. Its learnable offset (and scale, with ``bn_scale=True``) are
  ordinary parameters, adapted in the inner loop like every other parameter.
  """

  features: int
  pooling: str = 'stride'
  batch_norm: str = 'transductive'
  bn_scale: bool = False
  conv: str = 'matmul'

  @nn.compact
  def __call__(self, x: jax.Array, reference: jax.Array | None = None):
    kernel = self.param(
      'kernel', nn.initializers.xavier_uniform(), (3, 3, x.shape[-1], self.features)
    )
    stride = 2 if self.pooling == 'stride' else 1
    x, reference = _both(lambda y: conv3x3(y, kernel, stride, self.conv), x, reference)
    x, reference = normalization.batch_norm(x, reference, self.batch_norm)
    scale = None
    if self.batch_norm != 'none' and self.bn_scale:
      scale = self.param('scale', nn.initializers.ones, (self.features,))
    bias = self.param('bias', nn.initializers.zeros, (self.features,))

    def rest(y):
      y = nn.relu((y if scale is None else y * scale) + bias)
      return max_pool_2x2(y) if self.pooling == 'max' else y

    return _both(rest, x, reference)


def _check_choices(model: nn.Module, choices) -> None:
  for name, value, allowed in choices:
    if value not in allowed:
      raise ValueError(f'{name} must be one of {allowed}, got {value!r}.')
  object.__setattr__(model, 'batch_norm', normalization.check_mode(model.batch_norm))


def _check_images(model: str, x, reference) -> None:
  for name, y in (('inputs', x), ('reference', reference)):
    if y is not None and y.ndim != 4:
      raise ValueError(f'{model} expects {name} [n, height, width, channels], got {y.shape}.')
  if reference is not None and reference.shape[1:] != x.shape[1:]:
    raise ValueError(
      f'{model}: reference examples {reference.shape[1:]} must be shaped like the '
      f'inputs {x.shape[1:]}.'
    )


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
    batch_norm: ``'transductive'`` (the statistics of the batch given, the
      papers' setting), ``'inductive'`` (those of a reference batch: the
      inputs are ``jaxmaml.Referenced``, see ``jaxmaml.inductive_batch_norm``)
      or ``'none'``; see ``jaxmaml.normalization``.
    bn_scale: learn a BatchNorm scale as well as the offset (the original
      MAML code has the offset only; PyTorch ports usually have both).
    conv: ``'matmul'`` or ``'xla'``, see ``conv3x3``; both compute the same.
  """

  num_classes: int | None
  features: int = 64
  pooling: str = 'stride'
  head: str = 'mean'
  batch_norm: str = 'transductive'
  bn_scale: bool = False
  conv: str = 'matmul'

  def __post_init__(self):
    _check_choices(
      self,
      (
        ('pooling', self.pooling, POOLINGS),
        ('head', self.head, ('mean', 'flatten')),
        ('conv', self.conv, CONV_IMPLS),
      ),
    )
    super().__post_init__()

  @nn.compact
  def __call__(self, x) -> jax.Array:
    x, reference = normalization.streams(x, self.batch_norm, 'Conv4')
    _check_images('Conv4', x, reference)
    for _ in range(4):
      x, reference = ConvBlock(
        self.features, self.pooling, self.batch_norm, self.bn_scale, self.conv
      )(x, reference)
    x = jnp.mean(x, axis=(1, 2)) if self.head == 'mean' else x.reshape(x.shape[0], -1)
    return x if self.num_classes is None else nn.Dense(self.num_classes)(x)


def drop_block(x: jax.Array, key: jax.Array, rate: float, block_size: int) -> jax.Array:
  """DropBlock (Ghiasi et al., 2018): zeroes ``block_size``-square regions, ``[n, h, w, c]``.

  Block centres are drawn per example and channel where a whole block fits,
  at the rate that drops about ``rate`` of the units; the kept units are
  rescaled so that the mean activation is unchanged. The block is clipped to
  the feature map.
  """
  _, h, w, _ = x.shape
  size = min(block_size, h, w)
  gamma = rate / size**2 * (h * w) / ((h - size + 1) * (w - size + 1))
  centres = jax.random.bernoulli(key, gamma, (x.shape[0], h - size + 1, w - size + 1, x.shape[3]))
  low, high = (size - 1) // 2, size // 2
  padded = jnp.pad(centres.astype(x.dtype), ((0, 0), (low, high), (low, high), (0, 0)))
  # A unit is dropped where any centre within block reach is set.
  dropped = jax.lax.reduce_window(
    padded,
    jnp.array(0, x.dtype),
    jax.lax.max,
    (1, size, size, 1),
    (1, 1, 1, 1),
    [(0, 0), (high, low), (high, low), (0, 0)],
  )
  keep = 1.0 - dropped
  return x * keep * (keep.size / jnp.maximum(jnp.sum(keep), 1.0))


class BatchNorm(nn.Module):
  """BatchNorm in one of ``jaxmaml.normalization.MODES``, with a learned scale and offset.

  ``(x [n, ..., c], reference [m, ..., c] or None) -> (x, reference)``.
  """

  mode: str = 'transductive'

  @nn.compact
  def __call__(self, x: jax.Array, reference: jax.Array | None = None):
    if self.mode == 'none':
      return x, reference
    x, reference = normalization.batch_norm(x, reference, self.mode)
    scale = self.param('scale', nn.initializers.ones, (x.shape[-1],))
    bias = self.param('bias', nn.initializers.zeros, (x.shape[-1],))
    return _both(lambda y: y * scale + bias, x, reference)


class ResidualBlock(nn.Module):
  """ResNet-12's block: three 3x3 convs with BatchNorm (leaky ReLU after the first
  two), a 1x1-conv + BatchNorm shortcut, leaky ReLU, 2x2 max-pool, optional DropBlock.

  ``(x [n, h, w, c], reference or None) -> (x [n, h // 2, w // 2, features], reference)``.
  """

  features: int
  batch_norm: str = 'transductive'
  conv: str = 'matmul'
  drop_rate: float = 0.0
  drop_block_size: int = 5
  deterministic: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, reference: jax.Array | None = None):
    init = nn.initializers.he_normal()
    shortcut = self.param('shortcut', init, (x.shape[-1], self.features))
    short, short_reference = BatchNorm(self.batch_norm)(
      *_both(lambda y: y @ shortcut, x, reference)
    )
    for i in range(3):
      kernel = self.param(f'conv{i}', init, (3, 3, x.shape[-1], self.features))
      x, reference = _both(lambda y, k=kernel: conv3x3(y, k, 1, self.conv), x, reference)
      x, reference = BatchNorm(self.batch_norm)(x, reference)
      if i < 2:
        x, reference = _both(lambda y: nn.leaky_relu(y, 0.1), x, reference)
    x = nn.leaky_relu(x + short, 0.1)
    if reference is not None and short_reference is not None:
      reference = nn.leaky_relu(reference + short_reference, 0.1)
    x, reference = _both(max_pool_2x2, x, reference)
    if self.drop_rate > 0 and not self.deterministic:
      drop = lambda y: drop_block(y, self.make_rng('dropout'), self.drop_rate, self.drop_block_size)
      x, reference = _both(drop, x, reference)
    return x, reference


class ResNet12(nn.Module):
  """ResNet-12 (as in MetaOptNet, Lee et al., 2019), ``[n, h, w, 3] -> [n, num_classes]``.

  Four ``ResidualBlock`` modules of 64, 160, 320 and 640 channels, each halving the
  resolution (84x84 -> 5x5, 32x32 -> 2x2), the output averaged over space (640
  features) and a linear head. About 12.4 million parameters.

  Attributes:
    num_classes: N; ``None`` leaves out the head (an embedding of 640).
    channels: the blocks' widths.
    batch_norm: ``'transductive'``, ``'inductive'`` or ``'none'``, as for
      ``Conv4``. BatchNorm has a learned scale and offset (``'none'``: neither).
    conv: ``'matmul'`` or ``'xla'``, see ``conv3x3``.
    drop_rate: DropBlock in the last two blocks (MetaOptNet: 0.1, block 5;
      it also anneals the rate and uses dropout in the first two, which this
      model does not); active only with ``deterministic=False``, which then
      needs a ``'dropout'`` rng in ``apply``.
    drop_block_size: DropBlock's block side (clipped to the feature map).
    deterministic: no DropBlock.
  """

  num_classes: int | None
  channels: Sequence[int] = (64, 160, 320, 640)
  batch_norm: str = 'transductive'
  conv: str = 'matmul'
  drop_rate: float = 0.0
  drop_block_size: int = 5
  deterministic: bool = True

  def __post_init__(self):
    _check_choices(self, (('conv', self.conv, CONV_IMPLS),))
    if not 0.0 <= self.drop_rate < 1.0:
      raise ValueError(f'drop_rate must be in [0, 1), got {self.drop_rate!r}.')
    super().__post_init__()

  @nn.compact
  def __call__(self, x) -> jax.Array:
    x, reference = normalization.streams(x, self.batch_norm, 'ResNet12')
    _check_images('ResNet12', x, reference)
    for i, features in enumerate(self.channels):
      x, reference = ResidualBlock(
        features,
        self.batch_norm,
        self.conv,
        self.drop_rate if i >= len(self.channels) - 2 else 0.0,
        self.drop_block_size,
        self.deterministic,
      )(x, reference)
    x = jnp.mean(x, axis=(1, 2))
    return x if self.num_classes is None else nn.Dense(self.num_classes)(x)


def batch_norm_params(params: dict) -> dict:
  """The mask of the BatchNorm offsets and scales of ``Conv4`` and ``ResNet12``
  (MAML++'s per-step BatchNorm).

  Returns:
    A pytree of Python bools with the structure of ``params``: True for the
    ``bias`` and ``scale`` of every ``ConvBlock`` and ``BatchNorm``.
  """

  def is_batch_norm(path, _) -> bool:
    modules = [str(k.key) for k in path[:-1]]
    return path[-1].key in ('bias', 'scale') and any(
      m.startswith(('ConvBlock', 'BatchNorm')) for m in modules
    )

  return jax.tree_util.tree_map_with_path(is_batch_norm, params)


def conv4_miniimagenet(num_classes: int | None, **kwargs) -> Conv4:
  """MAML's miniImageNet network: 32 filters, max-pooling, flattened head."""
  return Conv4(num_classes, **{'features': 32, 'pooling': 'max', 'head': 'flatten', **kwargs})
