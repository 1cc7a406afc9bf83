"""Mapping per-task functions over a meta-batch, and checking meta-batches.

Every per-task function of a ``MetaLearner`` is written for one task. This
module maps it over the leading task axis of a meta-batch. The way tasks are
mapped is a choice because it matters for speed and correctness on some
backends: ``vmap`` turns per-task convolution weights into grouped
convolutions, which XLA:CPU runs slowly; ``map`` and ``loop`` process tasks one
at a time (``map`` with ``batch_size`` vmaps chunks of tasks).
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxmaml import base
from jaxmaml import checks

TASK_MAPS = ('vmap', 'map', 'loop')


def check_task_map(task_map: str, batch_size: int | None = None) -> None:
  """Raises a ValueError for an unknown ``task_map`` or a bad ``batch_size``."""
  if task_map not in TASK_MAPS:
    raise ValueError(f'task_map must be one of {TASK_MAPS}, got {task_map!r}.')
  if batch_size is not None:
    if task_map != 'map':
      raise ValueError(
        "batch_size (tasks vmapped per chunk) only applies to task_map='map', "
        f'got task_map={task_map!r}.'
      )
    checks.optional_positive_int(batch_size, 'batch_size')


def map_tasks(
  fn: Callable[[base.Task], Any],
  tasks: base.Task,
  *,
  task_map: str = 'vmap',
  batch_size: int | None = None,
) -> Any:
  """Applies a per-task function to every task of a meta-batch.

  Args:
    fn: ``fn(task) -> pytree`` for one task.
    tasks: a meta-batch, every leaf shaped ``[num_tasks, n, ...]``.
    task_map: ``'vmap'`` (one batched computation), ``'map'``
      (``lax.map``: a loop in the compiled program, ``batch_size`` tasks
      vmapped per iteration), or ``'loop'`` (a Python loop traced once: every
      task becomes its own copy of the computation, which compiles slower and
      can run faster on CPU).
    batch_size: with ``task_map='map'``, how many tasks to vmap per iteration.

  Returns:
    The outputs of ``fn`` stacked along a new leading ``[num_tasks]`` axis.
  """
  check_task_map(task_map, batch_size)
  if task_map == 'vmap':
    return jax.vmap(fn)(tasks)
  if task_map == 'map':
    if batch_size is None:
      return jax.lax.map(fn, tasks)
    # lax.map(batch_size=...) as written out, with explicit shapes: its own
    # reshapes fail on zero-size outputs (ProtoNets' support_losses, [0]).
    num_tasks = jax.tree_util.tree_leaves(tasks)[0].shape[0]
    chunks, full = num_tasks // batch_size, num_tasks // batch_size * batch_size
    split = lambda x: x[:full].reshape(chunks, batch_size, *x.shape[1:])
    outs = jax.tree_util.tree_map(
      lambda y: y.reshape(full, *y.shape[2:]),
      jax.lax.map(jax.vmap(fn), jax.tree_util.tree_map(split, tasks)),
    )
    if full == num_tasks:
      return outs
    rest = jax.vmap(fn)(jax.tree_util.tree_map(lambda x: x[full:], tasks))
    return jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), outs, rest)
  num_tasks = jax.tree_util.tree_leaves(tasks)[0].shape[0]
  outs = [fn(jax.tree_util.tree_map(lambda x, i=i: x[i], tasks)) for i in range(num_tasks)]
  return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *outs)


def check_tasks(tasks: base.Task, name: str = 'tasks', *, num_classes: int | None = None) -> int:
  """Checks that ``tasks`` is a well-formed meta-batch; returns ``num_tasks``.

  A meta-batch is a ``Task`` whose support and query have the same pytree
  structure; every leaf has shape ``[num_tasks, n, ...]`` with one
  ``num_tasks >= 1`` for all leaves, one ``n >= 1`` for all support leaves
  and one for all query leaves, and matching trailing (feature) shapes
  between a support leaf and its query counterpart. An empty meta-batch, or
  an empty support or query set, is refused: the mean over none is NaN.

  Only shapes are read, so the check is free under ``jit``; with
  ``num_classes`` the labels' values are read too, where concrete.

  Args:
    tasks: the meta-batch.
    name: what to call it in errors.
    num_classes: for classification meta-batches of ``(inputs, labels)``
      batches (the form of ``jaxmaml.cross_entropy_loss`` and
      ``jaxmaml.protonets``): check that the labels are integers and, where
      concrete (host data), in ``[0, num_classes)``. Tasks drawn by
      ``jaxmaml.data.episodes`` are correct by construction; this is for
      meta-batches built elsewhere. None checks shapes only.

  Raises:
    TypeError, ValueError: naming ``name`` and the offending leaf.
  """
  if not isinstance(tasks, base.Task):
    raise TypeError(
      f'{name} must be a jaxmaml.Task(support=..., query=...), got {type(tasks).__name__}.'
    )
  s_def = jax.tree_util.tree_structure(tasks.support)
  q_def = jax.tree_util.tree_structure(tasks.query)
  if s_def != q_def:
    raise ValueError(
      f'{name}.support and {name}.query must have the same structure, got {s_def} and {q_def}.'
    )
  s_leaves = jax.tree_util.tree_leaves_with_path(tasks.support)
  q_leaves = jax.tree_util.tree_leaves(tasks.query)
  if not s_leaves:
    raise ValueError(f'{name}.support has no arrays.')
  num_tasks = -1  # Set by the first leaf.
  examples = {}
  for (path, s), q in zip(s_leaves, q_leaves):
    where = jax.tree_util.keystr(path)
    for part, x in (('support', s), ('query', q)):
      shape = np.shape(x)
      if len(shape) < 2:
        raise ValueError(
          f'{name}.{part}{where} must have shape [num_tasks, num_examples, ...], got {shape}.'
        )
      num_tasks = shape[0] if num_tasks < 0 else num_tasks
      if shape[0] != num_tasks:
        raise ValueError(
          f'{name}.{part}{where} has {shape[0]} tasks on axis 0, other leaves have {num_tasks}.'
        )
      n = examples.setdefault(part, shape[1])
      if shape[1] != n:
        raise ValueError(
          f'{name}.{part}{where} has {shape[1]} examples on axis 1, other {part} leaves have {n}.'
        )
    if np.shape(s)[2:] != np.shape(q)[2:]:
      raise ValueError(
        f'{name}.support{where} has example shape {np.shape(s)[2:]} but '
        f'{name}.query{where} has {np.shape(q)[2:]}.'
      )
  if num_tasks == 0:
    raise ValueError(
      f'{name} has 0 tasks (axis 0 of every leaf): a meta-batch needs at least one task.'
    )
  for part, n in examples.items():
    if n == 0:
      raise ValueError(
        f'{name}.{part} has 0 examples on axis 1: every task needs at least one {part} example.'
      )
  if num_classes is not None:
    num_classes = checks.positive_int(num_classes, 'num_classes')
    for part in ('support', 'query'):
      batch = getattr(tasks, part)
      if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
        raise ValueError(
          f'with num_classes, {name}.{part} must be an (inputs, labels) pair, got '
          f'{jax.tree_util.tree_structure(batch)}.'
        )
      labels = batch[1]
      if np.ndim(labels) != 2:
        raise ValueError(
          f'{name}.{part} labels must have shape [num_tasks, num_examples], got {np.shape(labels)}.'
        )
      checks.class_labels(labels, num_classes, f'{name}.{part} labels')
  return num_tasks


CPU_CHUNK_ELEMENTS = 32768
"""On CPU, tasks are vmapped in chunks of about this many input elements
(support and query together): the chunk size measured fastest at the shapes
of ``benchmarks/peers`` (docs/benchmarks/peers_cpu.md)."""


def default_task_map(tasks: base.Task, backend: str | None = None) -> dict:
  """The task mapping measured fastest for this meta-batch's shapes.

  On GPU and TPU every task of the meta-batch runs in one batched computation
  (``'vmap'``). On CPU tasks are mapped with ``lax.map`` in chunks of
  ``batch_size`` tasks vmapped together, as many as fit in about
  ``CPU_CHUNK_ELEMENTS`` input elements (at least one): 4 tasks of Omniglot
  5-way 1-shot with one query per class, one task at a time with 15 queries
  or on miniImageNet, where larger chunks were measured slower.

  Args:
    tasks: a meta-batch (leaves ``[num_tasks, n, ...]``); only shapes are read.
    backend: ``'cpu'``, ``'gpu'``, ``'tpu'``; None is ``jax.default_backend()``.

  Returns:
    ``{'task_map': ..., 'batch_size': ...}``, the keyword arguments of
    ``map_tasks``, ``meta_gradient``, ``make_meta_step`` and ``evaluate``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from jaxmaml import Task, default_task_map
    >>> images = jnp.zeros((32, 5, 28, 28, 1))
    >>> tasks = Task((images, jnp.zeros((32, 5))), (images, jnp.zeros((32, 5))))
    >>> default_task_map(tasks, backend='cpu')
    {'task_map': 'map', 'batch_size': 4}
  """
  num_tasks = check_tasks(tasks)
  if (backend or jax.default_backend()) != 'cpu':
    return {'task_map': 'vmap', 'batch_size': None}
  per_task = sum(int(np.prod(np.shape(x)[1:])) for x in jax.tree_util.tree_leaves(tasks))
  chunk = max(1, min(num_tasks, CPU_CHUNK_ELEMENTS // max(per_task, 1)))
  return {'task_map': 'map', 'batch_size': chunk}
