"""Data parallelism over tasks: the meta-batch split across a device mesh.

Tasks are independent until their outer gradients are averaged, so the
meta-batch axis is the natural one to split. ``task_mesh`` builds a 1-D
``jax.sharding.Mesh`` (axis ``'tasks'``) over devices; ``make_meta_step(...,
mesh=mesh)`` then runs each device's share of the tasks with ``jax.shard_map``
and averages the outer gradients with ``lax.pmean``: the parameters and the
optimizer state are replicated, and XLA does the reduction. Every device runs
the same per-task code as one device does (any ``task_map``), so the result is
the single-device one up to float reassociation of the mean.

On several hosts, call ``jax.distributed.initialize()`` first: ``jax.devices()``
is then every device of every host and the mesh spans them. Tasks drawn inside
the compiled step (``make_meta_step(..., sampler=...)``) are one global
meta-batch, split by the mesh, so no two devices, and no two hosts, draw the
same task.
"""

from collections.abc import Sequence
import numbers
from typing import Any

import jax
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec
import numpy as np

TASK_AXIS = 'tasks'
"""The name of the mesh axis the meta-batch is split over."""


def task_mesh(devices: int | Sequence[Any] | None = None) -> Mesh:
  """A 1-D mesh with axis ``'tasks'`` over ``devices``.

  Args:
    devices: the devices (distinct ``jax.Device`` objects, e.g. a slice of
      ``jax.devices()``), or how many of ``jax.devices()`` to take (the
      first ones), or None for all of them (on every host, after
      ``jax.distributed.initialize()``).

  Returns:
    A ``jax.sharding.Mesh`` of shape ``{'tasks': len(devices)}``.

  Raises:
    TypeError: for anything else as ``devices`` (a string, a sequence of
      non-devices).
    ValueError: for a count outside ``1..len(jax.devices())``, no devices or
      a repeated device.

  Examples:
    >>> from jaxmaml import task_mesh
    >>> dict(task_mesh(1).shape)
    {'tasks': 1}
  """
  available = jax.devices()
  if devices is None:
    chosen = available
  elif isinstance(devices, Sequence) and not isinstance(devices, (str, bytes)):
    chosen = list(devices)
    for device in chosen:
      if not isinstance(device, jax.Device):
        raise TypeError(
          'devices must be jax.Device objects (e.g. jax.devices()[:2]) or a count, got '
          f'{device!r} in {devices!r}.'
        )
    if len(set(chosen)) != len(chosen):
      raise ValueError(f'devices must be distinct, got {chosen}.')
  elif isinstance(devices, numbers.Integral) and not isinstance(devices, bool):
    count = int(devices)
    if not 1 <= count <= len(available):
      raise ValueError(
        f'devices must be between 1 and the {len(available)} available '
        f'({jax.default_backend()}) devices, got {count}. On CPU, set '
        'XLA_FLAGS=--xla_force_host_platform_device_count=N before JAX starts '
        'to simulate N devices.'
      )
    chosen = available[:count]
  else:
    raise TypeError(f'devices must be an int, a sequence of devices or None, got {devices!r}.')
  if not chosen:
    raise ValueError('devices must name at least one device, got none.')
  return Mesh(np.asarray(chosen), (TASK_AXIS,))


def num_shards(mesh: Mesh) -> int:
  """How many parts the meta-batch is split into on ``mesh``."""
  if TASK_AXIS not in mesh.shape:
    raise ValueError(
      f'mesh must have an axis named {TASK_AXIS!r} (see jaxmaml.task_mesh), got '
      f'axes {tuple(mesh.shape)}.'
    )
  return mesh.shape[TASK_AXIS]


def check_divisible(num_tasks: int, mesh: Mesh, name: str = 'meta_batch_size') -> None:
  """Raises a ValueError unless ``num_tasks`` splits evenly over ``mesh``.

  Every device gets the same number of tasks: there is no padding, because a
  padded task would change the mean outer gradient.
  """
  shards = num_shards(mesh)
  if num_tasks % shards:
    raise ValueError(
      f'{name} ({num_tasks} tasks) must be divisible by the number of devices '
      f'({shards}) so that every device gets the same number of tasks; use a '
      f'meta-batch that is a multiple of {shards}, or fewer devices.'
    )


def task_sharding(mesh: Mesh) -> NamedSharding:
  """Arrays split along their leading (task) axis over ``mesh``."""
  return NamedSharding(mesh, PartitionSpec(TASK_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  """Arrays held whole by every device of ``mesh``."""
  return NamedSharding(mesh, PartitionSpec())


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Puts every leaf of ``tree`` on every device of ``mesh`` (e.g. the train
  state, or a dataset sampled from inside the step), once, so that a step does
  not copy it again on every call."""
  return jax.device_put(tree, replicated(mesh))


def shard_tasks(tasks: Any, mesh: Mesh) -> Any:
  """Splits a meta-batch (leaves ``[num_tasks, ...]``) over ``mesh``.

  Raises:
    ValueError: if ``num_tasks`` is not divisible by the number of devices.
  """
  leaves = jax.tree_util.tree_leaves(tasks)
  if leaves:
    check_divisible(np.shape(leaves[0])[0], mesh, 'num_tasks')
  return jax.device_put(tasks, task_sharding(mesh))
