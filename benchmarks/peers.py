"""jaxmaml vs PyTorch peers: the second-order MAML meta-gradient of Omniglot Conv4.

Every peer gets the same Flax parameters and the same meta-batch (random
binary 28x28 images, as ``benchmarks/omniglot_conv.py``) and returns the
meta-loss and the meta-gradient in the Flax pytree layout. For each peer the
report gives its steady-state time (median, min and max over repeats after a
warm-up) as a ratio to jaxmaml's, measured in the same run on the same shapes,
and whether its meta-gradient matches jaxmaml's: the relative L2 norm
``|g_peer - g_jax| / |g_jax|`` over the whole gradient and per leaf, in
float32 and, with ``--float64``, in float64 (where a real difference stands
out from float32 reassociation noise). Writes JSON and a Markdown table.

    python -m benchmarks.peers                           # 5-way 1-shot, 1 query, 32 tasks
    python -m benchmarks.peers --float64 --bn_scale      # affine BatchNorm, also in float64
    python -m benchmarks.peers --queries 15 --peers torch_func_vmap learn2learn

Peers:

* ``torch_func_vmap``: ``torch.func``: one task's meta-gradient is
  ``torch.func.grad`` of the query loss after inner steps that are themselves
  ``torch.func.grad`` of the support loss (``functional_call`` on the module
  below; the inner graph is kept, so the outer grad is second order), and
  ``torch.func.vmap`` maps it over the meta-batch.
* ``torch_func_loop``: the same per-task function in a Python loop.
* ``torch_autograd_loop``: what learn2learn's ``MAML.adapt`` does, written
  directly: per task, ``torch.autograd.grad(create_graph=not first_order)``
  for the inner update, the query loss, ``.backward()`` accumulated over tasks.
* ``learn2learn``: ``l2l.algorithms.MAML`` (``clone()``, ``adapt()``,
  ``.backward()`` per task) around the same ``nn.Module``.

The network is jaxmaml's ``Conv4`` (Omniglot defaults) written as a PyTorch
module: 4 x [3x3 conv without bias, stride 2, XLA's 'SAME' padding done with
``F.pad`` (for an even input size (0 before, 1 after), which
``padding=1`` would get wrong), batch-statistics BatchNorm (eps 1e-5, biased
variance, no running statistics; ``F.batch_norm(training=True)``, or the same
formula written out with ``--torch_bn manual``) with a learnable offset and,
with ``--bn_scale``, a learnable scale (without it, ``F.batch_norm`` gets a
constant unit weight: see ``NATIVE_BN_WITHOUT_WEIGHT_ERROR``), ReLU], mean
over space, linear head.
Flax kernels are HWIO and Dense kernels ``[in, out]``; the torch weights are
OIHW and ``[out, in]``, converted both ways here. The meta-loss is the mean
over tasks of the mean query cross-entropy, the meta-gradient the mean over
tasks of its gradient, as ``jaxmaml.meta_gradient``.

jaxmaml runs as its fastest XLA:CPU setting: ``conv='matmul'``,
``task_map='map'`` with 4 tasks vmapped per iteration, ``jax.jit``,
``block_until_ready``.

Found with torch 2.13.0 (``tests/test_peers.py`` holds the small-shape cases
to it): all four peers' meta-gradients equal jaxmaml's to ~4e-15 relative L2
in float64 (2e-14 with 15 queries per class), at the default shapes second
and first order, with the BatchNorm offset only or scale and offset, with
``--torch_bn manual``, 15 queries, and seed 1; on small shapes also with 2
inner steps. That includes ``torch_func_vmap`` through affine BatchNorm, once
reported wrong by ~1e-2 "also in float64": not reproduced (see the float32
note below for what does give ~1e-2). What does fail is the second-order gradient
through ``F.batch_norm`` with ``weight=None`` (the offset-only BatchNorm
written the obvious way): it raises, in every peer (``--torch_bn
native_no_weight`` shows it).

A float32 difference of ~1e-2 is not necessarily a bug: with the default
meta-batch (seed 0), jaxmaml's own float32 meta-gradient is 1.75e-2 (relative
L2) from its float64 one, all of it from one task (task 31) whose support
pass has a pre-ReLU value of 2.6e-7 in the last block that float32 rounding
puts on the other side of the ReLU kink; the inner step then differs by a
whole ReLU derivative, and that task's meta-gradient by ~1e-1. Which side a
float32 implementation lands on depends on its summation order (here
``torch_func_vmap`` and the ``--torch_bn manual`` loops land with float64,
jaxmaml and the ``native`` loops the other way). Hence ``--float64``, which
also reports every float32 gradient against jaxmaml's float64 one. (A
float64 comparison that forgets ``jax_enable_x64`` silently runs JAX in
float32 and shows the same ~1e-2.)

Threads: ``--threads N`` (default ``os.cpu_count()``) calls
``torch.set_num_threads(N)``. XLA:CPU has no thread-count flag (its thread
pool is sized from the CPU affinity of the process when the backend starts,
see jax-ml/jax#1539), so for ``N`` below the CPUs available the process's CPU
affinity is restricted to the first ``N`` CPUs before the JAX backend
starts; this binds torch too. The report records both counts, the affinity and
the load average. On a 2-core machine with the other core busy, torch with 2
threads was measured ~100x slower per op than with 1 (every OpenMP parallel
region waits for a descheduled thread) while XLA slowed down little: there,
compare with ``--threads 1``.

How PyTorch and learn2learn were installed (Python 3.11.7, Linux x86_64, in
the project's ``.venv``; neither is a jaxmaml dependency):

1. ``.venv/bin/pip install torch==2.13.0`` (a CPU build: ``2.13.0+cpu``).
   It also upgraded the venv's setuptools from 65.5.0 to 84.2.1.
2. learn2learn 0.2.0 (the only release pip finds) as published does not
   build on Python 3.11: its sdist ships C files generated by Cython 0.29.24,
   which include ``longintrepr.h`` (moved in Python 3.11):
   ``fatal error: longintrepr.h: No such file or directory``. What worked::

     .venv/bin/pip install cython                # 3.3.1, build-time only
     .venv/bin/pip download --no-deps --no-binary :all: learn2learn==0.2.0
     tar xzf learn2learn-0.2.0.tar.gz && cd learn2learn-0.2.0
     # setup.py: delete `from distutils.core import setup` (unused) and
     # replace `use_cython = 'develop' in sys.argv or 'build_ext' in sys.argv`
     # by `use_cython = True`, so the .pyx files are cythonized anew.
     # learn2learn/__init__.py: replace `from . import vision` by
     #   try:
     #       from . import vision
     #   except ImportError:
     #       vision = None
     .venv/bin/pip install --no-deps --no-build-isolation .
     .venv/bin/pip install gym==0.26.2           # `import learn2learn` needs gym

   The ``__init__`` patch is for torchvision, which ``learn2learn.vision``
   imports: the torchvision wheel on PyPI matching torch 2.13.0
   (torchvision 0.28.0) is built against the CUDA torch (its ``_C.so`` links
   ``libtorch_cuda.so``), so with the CPU torch ``import torchvision`` fails
   (``RuntimeError: operator torchvision::nms does not exist``), and no
   torchvision sdist is published to build from. Nothing this benchmark uses
   (``learn2learn.algorithms.MAML``, ``learn2learn.utils``) touches
   torchvision. The other declared dependencies (gsutil, qpth) are not
   needed to import it and were not installed. Importing learn2learn prints
   gym's deprecation notice; it is silenced here.
"""

import argparse
import contextlib
import dataclasses
import io
import json
import os
import time
from typing import Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np

import jaxmaml
from benchmarks import omniglot_conv
from experiments import cli

try:
  import torch
  import torch.nn.functional as F
  _Module = torch.nn.Module
except ImportError:  # The jaxmaml half of the report runs without torch.
  torch = F = None
  _Module = object

PEERS = ('torch_func_vmap', 'torch_func_loop', 'torch_autograd_loop', 'learn2learn')
TORCH_BNS = ('native', 'manual', 'native_no_weight')

NATIVE_BN_WITHOUT_WEIGHT_ERROR = 'Expected a proper Tensor but got None'
"""What torch 2.13 raises for the second-order MAML gradient through
``F.batch_norm(..., weight=None, bias=offset, training=True)`` (the offset-only
BatchNorm of the MAML paper), in every peer, vmapped or not: the double
backward of batch_norm does not handle a missing weight. ``'native'`` passes a
constant unit weight instead; ``'native_no_weight'`` reproduces the error."""

FlatParams = dict[str, np.ndarray]
"""Flax parameters flattened to ``{'ConvBlock_0/kernel': array, ...}``."""


@dataclasses.dataclass(frozen=True)
class Config:
  """What is compared (defaults: the MAML paper's Omniglot 5-way 1-shot step).

  Attributes:
    peers: which of ``PEERS`` to run.
    ways, shots, queries: N-way K-shot, query examples per class.
    meta_batch_size: tasks per meta-gradient.
    inner_steps, inner_lr: the inner loop.
    first_order: first-order MAML instead of second order.
    bn_scale: BatchNorm learns a scale as well as the offset.
    features: filters per conv layer (64 for Omniglot; tests use fewer).
    torch_bn: the torch BatchNorm: ``'native'`` (``F.batch_norm``, with a
      constant unit weight when there is no scale), ``'manual'`` (mean, biased
      variance and rsqrt written out), or ``'native_no_weight'``
      (``F.batch_norm`` with ``weight=None`` without a scale; second order
      fails, see ``NATIVE_BN_WITHOUT_WEIGHT_ERROR``).
    conv, task_map, batch_size: jaxmaml's convolution and task mapping (the
      defaults are its fastest on XLA:CPU; ``conv='xla'`` computes the same
      and compiles faster, which the tests use).
    float64: check the gradients in float64 too (times are float32).
    threads: threads for torch and XLA; None is ``os.cpu_count()``.
    warmup, repeats: untimed and timed calls per implementation.
    quick: one warm-up call and three timed ones.
    seed: parameters and tasks.
  """

  peers: tuple[str, ...] = PEERS
  ways: int = 5
  shots: int = 1
  queries: int = 1
  meta_batch_size: int = 32
  inner_steps: int = 1
  inner_lr: float = 0.4
  first_order: bool = False
  bn_scale: bool = False
  features: int = 64
  torch_bn: str = 'native'
  conv: str = 'matmul'
  task_map: str = 'map'
  batch_size: int | None = 4
  float64: bool = False
  threads: int | None = None
  warmup: int = 2
  repeats: int = 10
  quick: bool = False
  seed: int = 0

  def __post_init__(self):
    cli.check_positive_ints(self, ('ways', 'shots', 'queries', 'meta_batch_size',
                                   'inner_steps', 'features', 'warmup', 'repeats'))
    for peer in self.peers:
      if peer not in PEERS:
        raise ValueError(f'peers must be among {PEERS}, got {peer!r}.')
    if self.torch_bn not in TORCH_BNS:
      raise ValueError(f'torch_bn must be one of {TORCH_BNS}, got {self.torch_bn!r}.')


# ----------------------------------------------------------------------------
# The shared inputs: Flax parameters and a meta-batch, as numpy.


def make_model(config: Config) -> jaxmaml.Conv4:
  """jaxmaml's Omniglot Conv4 (``config.conv``: by default ``'matmul'``, its fastest on XLA:CPU)."""
  return jaxmaml.Conv4(config.ways, features=config.features, bn_scale=config.bn_scale,
                       conv=config.conv)


def make_tasks(key: jax.Array, config: Config) -> jaxmaml.Task:
  """``omniglot_conv.random_tasks`` for ``config``, as numpy."""
  tasks = omniglot_conv.random_tasks(key, config.meta_batch_size, config.ways, config.shots,
                                     config.queries)
  return jax.tree_util.tree_map(np.asarray, tasks)


def init_params(key: jax.Array, config: Config, tasks: jaxmaml.Task) -> FlatParams:
  """Flax Conv4 parameters, flattened: ``'ConvBlock_i/kernel'`` is ``[3, 3, c_in, c_out]``,
  ``'ConvBlock_i/bias'`` (and ``/scale``) ``[c_out]``, ``'Dense_0/kernel'``
  ``[features, ways]``, ``'Dense_0/bias'`` ``[ways]``."""
  params = make_model(config).init(key, tasks.support[0][0])['params']
  return {k: np.asarray(v) for k, v in flax.traverse_util.flatten_dict(params, sep='/').items()}


def unflatten(flat: FlatParams) -> dict:
  """``{'a/b': x}`` -> ``{'a': {'b': x}}``, the Flax pytree layout."""
  return flax.traverse_util.unflatten_dict(flat, sep='/')


def relative_l2(grads: FlatParams, reference: FlatParams) -> tuple[float, dict[str, float]]:
  """``|g - g_ref| / |g_ref|`` over all leaves together, and per leaf (float64)."""
  diff = {k: np.asarray(grads[k], np.float64) - np.asarray(reference[k], np.float64)
          for k in reference}
  norm = lambda tree: float(np.sqrt(sum(np.sum(np.square(v)) for v in tree.values())))
  ref = {k: np.asarray(v, np.float64) for k, v in reference.items()}
  per_leaf = {k: float(np.linalg.norm(diff[k]) / max(np.linalg.norm(ref[k]), 1e-300))
              for k in reference}
  return norm(diff) / norm(ref), per_leaf


# ----------------------------------------------------------------------------
# jaxmaml.


def jax_meta_gradient_fn(config: Config) -> Callable:
  """``fn(params, tasks) -> (meta_loss, grads)``, jitted; ``params`` in the Flax layout."""
  learner = jaxmaml.maml(jaxmaml.cross_entropy_loss(jaxmaml.apply_fn(make_model(config))),
                         inner_lr=config.inner_lr, num_steps=config.inner_steps,
                         has_aux=True, first_order=config.first_order)

  def fn(params, tasks):
    grads, metrics = jaxmaml.meta_gradient(learner, params, tasks, task_map=config.task_map,
                                           batch_size=config.batch_size)
    return jnp.mean(metrics['loss']), grads

  return jax.jit(fn)


def jax_meta_gradient(config: Config, params: FlatParams, tasks: jaxmaml.Task,
                      dtype=np.float32) -> tuple[float, FlatParams]:
  """jaxmaml's meta-loss and meta-gradient (flattened) in ``dtype``.

  float64 runs inside ``jax.enable_x64(True)``; the global setting is untouched.
  """
  with jax.enable_x64(dtype == np.float64):
    cast = lambda x: jnp.asarray(x, dtype) if np.issubdtype(x.dtype, np.floating) else x
    loss, grads = jax_meta_gradient_fn(config)(
        unflatten({k: jnp.asarray(v, dtype) for k, v in params.items()}),
        jax.tree_util.tree_map(cast, tasks))
    flat = flax.traverse_util.flatten_dict(grads, sep='/')
    return float(loss), {k: np.asarray(v) for k, v in flat.items()}


# ----------------------------------------------------------------------------
# The PyTorch network, parameter layouts and peers.


def same_padding(size: int, stride: int = 2, kernel: int = 3) -> tuple[int, int]:
  """XLA's 'SAME' padding ``(before, after)`` of one spatial dimension."""
  total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


class TorchConvBlock(_Module):
  """3x3 conv (stride 2, 'SAME' as XLA) -> batch-statistics BatchNorm -> ReLU, NCHW.

  Parameters: ``kernel`` ``[c_out, c_in, 3, 3]``, ``bias`` ``[c_out]`` (the
  BatchNorm offset) and, with ``bn_scale``, ``scale`` ``[c_out]``.
  """

  def __init__(self, c_in: int, c_out: int, bn_scale: bool, bn_impl: str):
    super().__init__()
    self.bn_scale, self.bn_impl = bn_scale, bn_impl
    self.kernel = torch.nn.Parameter(torch.zeros(c_out, c_in, 3, 3))
    self.bias = torch.nn.Parameter(torch.zeros(c_out))
    if bn_scale:
      self.scale = torch.nn.Parameter(torch.ones(c_out))

  def forward(self, x):  # [n, c_in, h, w] -> [n, c_out, ceil(h / 2), ceil(w / 2)]
    (top, bottom), (left, right) = same_padding(x.shape[-2]), same_padding(x.shape[-1])
    x = F.conv2d(F.pad(x, (left, right, top, bottom)), self.kernel, stride=2)
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
    return F.relu(x)


class TorchConv4(_Module):
  """jaxmaml's Omniglot ``Conv4`` in PyTorch, ``[n, 1, 28, 28] -> [n, ways]``.

  Parameter names are the Flax paths with '.' for '/' (``ConvBlock_0.kernel``,
  ``Dense_0.weight`` for the Dense kernel, ``Dense_0.bias``).
  """

  def __init__(self, ways: int, features: int, bn_scale: bool, bn_impl: str):
    super().__init__()
    for i in range(4):
      self.add_module(f'ConvBlock_{i}',
                      TorchConvBlock(1 if i == 0 else features, features, bn_scale, bn_impl))
    self.Dense_0 = torch.nn.Linear(features, ways)

  def forward(self, x):
    for i in range(4):
      x = getattr(self, f'ConvBlock_{i}')(x)
    return self.Dense_0(x.mean(dim=(2, 3)))


def torch_name(flax_name: str) -> str:
  """``'ConvBlock_0/kernel'`` -> ``'ConvBlock_0.kernel'``; ``'Dense_0/kernel'`` -> ``'Dense_0.weight'``."""
  module, leaf = flax_name.split('/')
  return f"{module}.{'weight' if module.startswith('Dense') and leaf == 'kernel' else leaf}"


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


def torch_params(params: FlatParams, dtype) -> dict:
  """Flax parameters as ``{torch_name: tensor}`` in the torch layouts."""
  return {torch_name(k): torch.tensor(np.ascontiguousarray(to_torch_layout(k, v)), dtype=dtype)
          for k, v in params.items()}


def flax_grads(grads: dict, params: FlatParams) -> FlatParams:
  """``{torch_name: tensor}`` gradients -> flattened Flax layout, numpy."""
  return {k: to_flax_layout(k, grads[torch_name(k)].detach().numpy()) for k in params}


def torch_tasks(tasks: jaxmaml.Task, dtype) -> tuple:
  """``(x_s, y_s, x_q, y_q)``: images NHWC -> ``[tasks, n, 1, 28, 28]``, labels int64."""
  (xs, ys), (xq, yq) = tasks
  image = lambda x: torch.tensor(np.ascontiguousarray(x.transpose(0, 1, 4, 2, 3)), dtype=dtype)
  label = lambda y: torch.tensor(y, dtype=torch.int64)
  return image(xs), label(ys), image(xq), label(yq)


def make_module(config: Config, params: FlatParams, dtype) -> 'TorchConv4':
  """A ``TorchConv4`` holding ``params``."""
  module = TorchConv4(config.ways, config.features, config.bn_scale, config.torch_bn).to(dtype)
  module.load_state_dict(torch_params(params, dtype), strict=True)
  return module


def func_task_loss(module, config: Config) -> Callable:
  """``task_loss(params, (x_s, y_s, x_q, y_q)) -> query loss`` of one task, with torch.func.

  Each inner step is ``torch.func.grad`` of the support loss; first order
  detaches it (at the level of the outer grad).
  """

  def loss(params, x, y):
    return F.cross_entropy(torch.func.functional_call(module, params, (x,)), y)

  def task_loss(params, task):
    xs, ys, xq, yq = task
    for _ in range(config.inner_steps):
      grads = torch.func.grad(loss)(params, xs, ys)
      if config.first_order:
        grads = {k: g.detach() for k, g in grads.items()}
      params = {k: p - config.inner_lr * grads[k] for k, p in params.items()}
    return loss(params, xq, yq)

  return task_loss


def make_peer(name: str, config: Config, params: FlatParams, tasks: jaxmaml.Task,
              dtype) -> Callable[[], tuple]:
  """``step() -> (meta_loss, {torch_name: grad})`` of one peer on fixed inputs."""
  module = make_module(config, params, dtype)
  batch = torch_tasks(tasks, dtype)
  num_tasks = config.meta_batch_size
  if name in ('torch_func_vmap', 'torch_func_loop'):
    weights = torch_params(params, dtype)
    task_grad = torch.func.grad_and_value(func_task_loss(module, config))
    if name == 'torch_func_vmap':
      mapped = torch.func.vmap(task_grad, in_dims=(None, 0))

      def step():
        grads, losses = mapped(weights, batch)
        return losses.mean(), {k: g.mean(0) for k, g in grads.items()}

      return step

    def step():
      total, losses = None, []
      for i in range(num_tasks):
        grads, loss = task_grad(weights, tuple(t[i] for t in batch))
        total = grads if total is None else {k: total[k] + g for k, g in grads.items()}
        losses.append(loss)
      return torch.stack(losses).mean(), {k: g / num_tasks for k, g in total.items()}

    return step
  if name == 'torch_autograd_loop':
    weights = {k: v.requires_grad_(True) for k, v in torch_params(params, dtype).items()}
    loss_fn = lambda p, x, y: F.cross_entropy(torch.func.functional_call(module, p, (x,)), y)

    def step():
      for w in weights.values():
        w.grad = None
      total = 0.0
      for i in range(num_tasks):
        xs, ys, xq, yq = (t[i] for t in batch)
        adapted = weights
        for _ in range(config.inner_steps):
          grads = torch.autograd.grad(loss_fn(adapted, xs, ys), list(adapted.values()),
                                      create_graph=not config.first_order)
          adapted = {k: p - config.inner_lr * g for (k, p), g in zip(adapted.items(), grads)}
        query_loss = loss_fn(adapted, xq, yq) / num_tasks
        query_loss.backward()
        total += query_loss.detach()
      return total, {k: w.grad for k, w in weights.items()}

    return step
  if name == 'learn2learn':
    l2l = import_learn2learn()
    maml = l2l.algorithms.MAML(module, lr=config.inner_lr, first_order=config.first_order)

    def step():
      maml.zero_grad(set_to_none=True)
      total = 0.0
      for i in range(num_tasks):
        xs, ys, xq, yq = (t[i] for t in batch)
        learner = maml.clone()
        for _ in range(config.inner_steps):
          learner.adapt(F.cross_entropy(learner(xs), ys))
        query_loss = F.cross_entropy(learner(xq), yq) / num_tasks
        query_loss.backward()
        total += query_loss.detach()
      return total, {k: p.grad for k, p in maml.module.named_parameters()}

    return step
  raise ValueError(f'Unknown peer {name!r}; known: {PEERS}.')


def import_learn2learn():
  """``learn2learn``, with gym's import-time deprecation notice silenced."""
  with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    import learn2learn  # pylint: disable=import-outside-toplevel
  return learn2learn


def peer_unavailable(name: str) -> str | None:
  """Why ``name`` cannot run here, or None."""
  if torch is None:
    return 'torch is not installed'
  if name == 'learn2learn':
    try:
      import_learn2learn()
    except Exception as e:  # ImportError, or torchvision's RuntimeError.
      return f'import learn2learn failed: {type(e).__name__}: {e}'
  return None


def peer_meta_gradient(name: str, config: Config, params: FlatParams, tasks: jaxmaml.Task,
                       dtype=np.float32) -> tuple[float, FlatParams]:
  """One peer's meta-loss and meta-gradient (flattened Flax layout) in ``dtype``."""
  torch_dtype = torch.float64 if dtype == np.float64 else torch.float32
  loss, grads = make_peer(name, config, params, tasks, torch_dtype)()
  return float(loss), flax_grads(grads, params)


# ----------------------------------------------------------------------------
# The report.


def time_calls(fn: Callable[[], object], warmup: int, repeats: int) -> dict:
  """Median, min and max seconds of ``fn()`` over ``repeats`` calls after ``warmup``."""
  start = time.perf_counter()
  fn()
  first = time.perf_counter() - start
  for _ in range(warmup - 1):
    fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return {'first_call_s': first, 'step_s_median': float(np.median(times)),
          'step_s_min': float(np.min(times)), 'step_s_max': float(np.max(times))}


@contextlib.contextmanager
def limited_threads(threads: int):
  """Gives torch ``threads`` threads and XLA as many, restoring both on exit.

  XLA:CPU sizes its thread pool from the CPU affinity when its backend starts
  (and new threads inherit the affinity of the thread that makes them), so
  this binds XLA only if it runs before the JAX backend starts; the record
  says whether it had (``xla_backend_started_before``).

  Yields:
    ``{'threads', 'xla_backend_started_before', 'cpu_affinity', 'torch_threads'}``.
  """
  from jax._src import xla_bridge  # pylint: disable=import-outside-toplevel
  record = {'threads': threads,
            'xla_backend_started_before': xla_bridge.backends_are_initialized()}
  cpus = sorted(os.sched_getaffinity(0))
  torch_threads = torch.get_num_threads() if torch is not None else None
  if threads < len(cpus):
    os.sched_setaffinity(0, cpus[:threads])
  record['cpu_affinity'] = sorted(os.sched_getaffinity(0))
  if torch is not None:
    torch.set_num_threads(threads)
    record['torch_threads'] = torch.get_num_threads()
  try:
    yield record
  finally:
    os.sched_setaffinity(0, cpus)
    if torch is not None:
      torch.set_num_threads(torch_threads)


def correctness(name: str, config: Config, params: FlatParams, tasks: jaxmaml.Task,
                reference: dict, dtype, result=None) -> dict:
  """Relative L2 of a peer's meta-gradient against jaxmaml's in ``dtype``."""
  loss, grads = result if result is not None else peer_meta_gradient(
      name, config, params, tasks, dtype)
  ref_loss, ref_grads = reference[dtype]
  total, per_leaf = relative_l2(grads, ref_grads)
  out = {'grad_rel_l2': total, 'grad_rel_l2_per_leaf': per_leaf,
         'worst_leaf': max(per_leaf, key=per_leaf.get),
         'loss': loss, 'loss_abs_diff': abs(loss - ref_loss)}
  if dtype == np.float32 and np.float64 in reference:
    out['grad_rel_l2_vs_float64_jaxmaml'] = relative_l2(grads, reference[np.float64][1])[0]
  return out


def compare(config: Config) -> dict:
  """Times jaxmaml and every peer of ``config`` and checks their meta-gradients.

  Returns:
    ``{'jaxmaml': {...times, compile_s, loss, and with float64 its float32
    gradient's relative L2 to its float64 one}, 'results': [per peer:
    available, reason (if not), error (if its step raised), times,
    time_ratio (peer / jaxmaml, medians), time_ratio_min (of the minima), float32 (and float64): grad_rel_l2,
    grad_rel_l2_per_leaf, worst_leaf, loss, loss_abs_diff, and for float32
    with float64 also grad_rel_l2_vs_float64_jaxmaml]}``.
  """
  warmup, repeats = (1, 3) if config.quick else (config.warmup, config.repeats)
  key_tasks, key_params = jax.random.split(jax.random.key(config.seed))
  tasks = make_tasks(key_tasks, config)
  params = init_params(key_params, config, tasks)
  dtypes = (np.float32, np.float64) if config.float64 else (np.float32,)

  fn = jax_meta_gradient_fn(config)
  jax_params, jax_tasks = jax.device_put(unflatten(params)), jax.device_put(tasks)
  start = time.perf_counter()
  compiled = fn.lower(jax_params, jax_tasks).compile()
  compile_s = time.perf_counter() - start
  outputs = []
  jax_row = {'compile_s': compile_s, **time_calls(
      lambda: outputs.append(jax.block_until_ready(compiled(jax_params, jax_tasks))),
      warmup, repeats)}
  loss, grads = outputs[-1]
  reference = {np.float32: (float(loss), {
      k: np.asarray(v) for k, v in flax.traverse_util.flatten_dict(grads, sep='/').items()})}
  if config.float64:
    reference[np.float64] = jax_meta_gradient(config, params, tasks, np.float64)
    jax_row['float32_grad_rel_l2_vs_float64'] = relative_l2(
        reference[np.float32][1], reference[np.float64][1])[0]
  jax_row['loss'] = reference[np.float32][0]

  rows = []
  for name in config.peers:
    reason = peer_unavailable(name)
    row = {'peer': name, 'available': reason is None, 'reason': reason}
    if reason is None:
      step = make_peer(name, config, params, tasks, torch.float32)
      outputs = []
      try:
        row.update(time_calls(lambda: outputs.append(step()), warmup, repeats))
      except RuntimeError as e:  # A torch failure is a result, not a crash.
        row['error'] = f'{type(e).__name__}: {e}'
        rows.append(row)
        continue
      row['time_ratio'] = row['step_s_median'] / jax_row['step_s_median']
      row['time_ratio_min'] = row['step_s_min'] / jax_row['step_s_min']
      loss, grads = outputs[-1]
      last = (float(loss), flax_grads(grads, params))
      for dtype in dtypes:
        row[np.dtype(dtype).name] = correctness(
            name, config, params, tasks, reference, dtype,
            result=last if dtype == np.float32 else None)
    rows.append(row)
  return {'jaxmaml': jax_row, 'results': rows}


def markdown(report: dict) -> str:
  """The report as a Markdown table."""
  c, jax_row = report['config'], report['jaxmaml']
  lines = [
      f"Omniglot Conv4 MAML meta-gradient, {c['ways']}-way {c['shots']}-shot, "
      f"{c['queries']} quer{'y' if c['queries'] == 1 else 'ies'} per class, "
      f"{c['meta_batch_size']} tasks, {c['inner_steps']} inner step(s), "
      f"{'first' if c['first_order'] else 'second'} order, "
      f"BatchNorm {'scale+offset' if c['bn_scale'] else 'offset only'}, "
      f"torch BN {c['torch_bn']}, {report['environment']['threads']['threads']} thread(s).",
      '',
      f"jaxmaml ({c['conv']} conv, task_map={c['task_map']}:{c['batch_size']}, jit): "
      f"compile {jax_row['compile_s']:.1f} s, step {jax_row['step_s_median']:.3f} s "
      f"(min {jax_row['step_s_min']:.3f}, max {jax_row['step_s_max']:.3f})"
      + (f"; its float32 gradient vs its float64 one: rel. L2 "
         f"{jax_row['float32_grad_rel_l2_vs_float64']:.1e}."
         if 'float32_grad_rel_l2_vs_float64' in jax_row else '.'),
      '',
      'Gradient columns: relative L2 to jaxmaml in the same precision; "float32 vs '
      'float64 jaxmaml": the peer\'s float32 gradient against jaxmaml\'s float64 one.',
      '',
      '| peer | step (s), median | min | max | peer / jaxmaml | grad rel. L2, float32 '
      '| float64 | float32 vs float64 jaxmaml | worst leaf (float64 or 32) |',
      '|---|---|---|---|---|---|---|---|---|',
  ]
  for r in report['results']:
    if not r['available'] or 'error' in r:
      why = f"unavailable: {r['reason']}" if not r['available'] else f"failed: {r['error']}"
      lines.append(f"| {r['peer']} | {why.splitlines()[0]} | | | | | | | |")
      continue
    f64 = r.get('float64')
    worst = f64 or r['float32']
    f64_text = f"{f64['grad_rel_l2']:.1e}" if f64 else '-'
    truth = r['float32'].get('grad_rel_l2_vs_float64_jaxmaml')
    truth_text = f'{truth:.1e}' if truth is not None else '-'
    lines.append(
        f"| {r['peer']} | {r['step_s_median']:.3f} | {r['step_s_min']:.3f} "
        f"| {r['step_s_max']:.3f} | {r['time_ratio']:.2f} | {r['float32']['grad_rel_l2']:.1e} "
        f"| {f64_text} | {truth_text} "
        f"| {worst['worst_leaf']} ({worst['grad_rel_l2_per_leaf'][worst['worst_leaf']]:.1e}) |")
  return '\n'.join(lines) + '\n'


def versions() -> dict:
  """torch and learn2learn versions (None where not importable)."""
  out = {'torch': torch.__version__ if torch is not None else None}
  try:
    out['learn2learn'] = import_learn2learn().__version__
  except Exception:  # Recorded per peer as the reason.
    out['learn2learn'] = None
  return out


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  cli.add_config_flags(parser, Config)
  parser.add_argument('--out', default='runs/benchmarks/peers.json')
  args = parser.parse_args(argv)
  config = cli.config_from_args(parser, args, Config)
  with limited_threads(config.threads or os.cpu_count()) as threads:
    report = {'benchmark': 'peers', 'time': time.strftime('%Y-%m-%dT%H:%M:%S'),
              'environment': {**cli.environment(), **versions(), 'threads': threads,
                              'loadavg_1_5_15_min': os.getloadavg()},
              'config': dataclasses.asdict(config)}
    report.update(compare(config))
  table = markdown(report)
  print(table, flush=True)
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, 'w') as f:
    json.dump(report, f, indent=2)
  with open(os.path.splitext(args.out)[0] + '.md', 'w') as f:
    f.write(table)
  return report


if __name__ == '__main__':
  main()
