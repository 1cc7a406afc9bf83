"""jaxmaml's Conv4 written as a PyTorch module, and the Flax <-> torch layouts.

Omniglot: 4 x [3x3 conv without bias, stride 2, XLA's 'SAME' padding done
with ``F.pad`` (for an even input size (0 before, 1 after), which
``padding=1`` would get wrong), batch-statistics BatchNorm (eps 1e-5, biased
variance, no running statistics) with a learnable offset (and, with
``bn_scale``, a scale), ReLU], mean over space, linear head. miniImageNet: 32
filters, stride 1 with ``padding=1``, 2x2 max-pooling after the ReLU (the
first maximum of a window gets the gradient, as in XLA), the 5x5x32 output
flattened in jaxmaml's HWC order, linear head.

Flax kernels are HWIO and Dense kernels ``[in, out]``; the torch weights are
OIHW and ``[out, in]``, converted both ways here.
"""

import numpy as np

from benchmarks import problems

try:
  import torch
  import torch.nn.functional as F

  Module = torch.nn.Module
except ImportError:  # The modules that import this check unavailable() first.
  torch = F = None
  Module = object

BN_IMPLS = ('native', 'manual', 'native_no_weight')

NATIVE_BN_WITHOUT_WEIGHT_ERROR = 'Expected a proper Tensor but got None'
"""What torch 2.13 raises for the second-order MAML gradient through
``F.batch_norm(..., weight=None, bias=offset, training=True)`` (the offset-only
BatchNorm of the MAML paper), in every peer, vmapped or not: the double
backward of batch_norm does not handle a missing weight. ``'native'`` passes a
constant unit weight instead; ``'native_no_weight'`` reproduces the error."""


def unavailable() -> str | None:
  return 'torch is not installed (pip install torch==2.13.0)' if torch is None else None


def same_padding(size: int, stride: int = 2, kernel: int = 3) -> tuple[int, int]:
  """XLA's 'SAME' padding ``(before, after)`` of one spatial dimension."""
  total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


class TorchConvBlock(Module):
  """3x3 conv -> batch-statistics BatchNorm -> ReLU (-> 2x2 max-pool), NCHW.

  Parameters: ``kernel`` ``[c_out, c_in, 3, 3]``, ``bias`` ``[c_out]`` (the
  BatchNorm offset) and, with ``bn_scale``, ``scale`` ``[c_out]``.
  """

  def __init__(self, c_in: int, c_out: int, stride: int, bn_scale: bool, bn_impl: str):
    super().__init__()
    self.stride, self.bn_scale, self.bn_impl = stride, bn_scale, bn_impl
    self.kernel = torch.nn.Parameter(torch.zeros(c_out, c_in, 3, 3))
    self.bias = torch.nn.Parameter(torch.zeros(c_out))
    if bn_scale:
      self.scale = torch.nn.Parameter(torch.ones(c_out))

  def forward(self, x):
    (top, bottom), (left, right) = (
      same_padding(x.shape[-2], self.stride),
      same_padding(x.shape[-1], self.stride),
    )
    x = F.conv2d(F.pad(x, (left, right, top, bottom)), self.kernel, stride=self.stride)
    scale = self.scale if self.bn_scale else None
    if self.bn_impl == 'native':
      # A constant unit scale, not None: with weight=None the double backward
      # of batch_norm fails (see NATIVE_BN_WITHOUT_WEIGHT_ERROR).
      weight = scale if scale is not None else torch.ones_like(self.bias)
      x = F.batch_norm(x, None, None, weight, self.bias, training=True, eps=1e-5)
    elif self.bn_impl == 'native_no_weight':
      x = F.batch_norm(x, None, None, scale, self.bias, training=True, eps=1e-5)
    else:
      mean = x.mean(dim=(0, 2, 3), keepdim=True)
      var = (x - mean).square().mean(dim=(0, 2, 3), keepdim=True)
      x = (x - mean) * torch.rsqrt(var + 1e-5)
      if scale is not None:
        x = x * scale[:, None, None]
      x = x + self.bias[:, None, None]
    x = F.relu(x)
    return x if self.stride == 2 else F.max_pool2d(x, 2)


class TorchConv4(Module):
  """jaxmaml's ``Conv4`` for ``problem`` in PyTorch, ``[n, c, h, w] -> [n, ways]``.

  Parameter names are the Flax paths with '.' for '/' (``ConvBlock_0.kernel``,
  ``Dense_0.weight`` for the Dense kernel, ``Dense_0.bias``).
  """

  def __init__(self, problem: problems.Problem, bn_impl: str = 'native'):
    super().__init__()
    features, channels = problem.num_features, problem.image_shape[-1]
    self.omniglot = problem.dataset == 'omniglot'
    for i in range(4):
      self.add_module(
        f'ConvBlock_{i}',
        TorchConvBlock(
          channels if i == 0 else features,
          features,
          2 if self.omniglot else 1,
          problem.bn_scale,
          bn_impl,
        ),
      )
    size = problem.image_shape[0]
    for _ in range(4):
      size = size // 2
    self.Dense_0 = torch.nn.Linear(
      features if self.omniglot else features * size * size, problem.ways
    )

  def forward(self, x):
    for i in range(4):
      x = getattr(self, f'ConvBlock_{i}')(x)
    x = x.mean(dim=(2, 3)) if self.omniglot else x.permute(0, 2, 3, 1).flatten(1)
    return self.Dense_0(x)


def torch_name(flax_name: str) -> str:
  """A Flax parameter name as the torch module's.

  ``'ConvBlock_0/kernel'`` -> ``'ConvBlock_0.kernel'``;
  ``'Dense_0/kernel'`` -> ``'Dense_0.weight'``.
  """
  module, leaf = flax_name.split('/')
  return f'{module}.{"weight" if module.startswith("Dense") and leaf == "kernel" else leaf}'


def to_torch_layout(flax_name: str, value: np.ndarray) -> np.ndarray:
  """HWIO conv kernel -> OIHW; Dense kernel ``[in, out]`` -> ``[out, in]``."""
  if flax_name.endswith('/kernel'):
    return value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T
  return value


def to_flax_layout(flax_name: str, value: np.ndarray) -> np.ndarray:
  """The inverse of ``to_torch_layout``."""
  if flax_name.endswith('/kernel'):
    return value.transpose(2, 3, 1, 0) if value.ndim == 4 else value.T
  return value


def torch_params(params: problems.FlatParams, dtype, device: str = 'cpu') -> dict:
  """Flax parameters as ``{torch_name: tensor}`` in the torch layouts."""
  return {
    torch_name(k): torch.tensor(
      np.ascontiguousarray(to_torch_layout(k, v)), dtype=dtype, device=device
    )
    for k, v in params.items()
  }


def flax_grads(grads: dict, params: problems.FlatParams) -> problems.FlatParams:
  """``{torch_name: tensor}`` gradients -> flattened Flax layout, numpy."""
  return {k: to_flax_layout(k, grads[torch_name(k)].detach().cpu().numpy()) for k in params}


def torch_tasks(tasks, dtype, device: str = 'cpu') -> tuple:
  """``(x_s, y_s, x_q, y_q)``: images NHWC -> ``[tasks, n, c, h, w]``, labels int64."""
  (xs, ys), (xq, yq) = tasks
  image = lambda x: torch.tensor(
    np.ascontiguousarray(x.transpose(0, 1, 4, 2, 3)), dtype=dtype, device=device
  )
  label = lambda y: torch.tensor(np.asarray(y), dtype=torch.int64, device=device)
  return image(xs), label(ys), image(xq), label(yq)


def make_module(
  problem: problems.Problem,
  params: problems.FlatParams,
  dtype,
  bn_impl: str = 'native',
  device: str = 'cpu',
) -> TorchConv4:
  """A ``TorchConv4`` holding ``params``."""
  if bn_impl not in BN_IMPLS:
    raise ValueError(f'bn_impl must be one of {BN_IMPLS}, got {bn_impl!r}.')
  module = TorchConv4(problem, bn_impl).to(dtype=dtype, device=device)
  module.load_state_dict(torch_params(params, dtype, device), strict=True)
  return module


def synchronized(fn, device: str):
  """``fn`` that waits for the device's queued work before returning (CUDA)."""
  if not str(device).startswith('cuda'):
    return fn

  def wrapped():
    out = fn()
    torch.cuda.synchronize()
    return out

  return wrapped


def torch_dtype(dtype):
  """numpy float32/float64 -> the torch dtype."""
  return torch.float64 if np.dtype(dtype) == np.float64 else torch.float32


def accuracy(logits, labels) -> 'torch.Tensor':
  return (logits.argmax(-1) == labels).to(logits.dtype).mean()
