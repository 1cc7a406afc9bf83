"""Checkpoints of a pytree (e.g. a ``MetaTrainState``) with Orbax.

``checkpoint_manager(directory)`` is an ``orbax.checkpoint.CheckpointManager``
keeping the latest step: each save writes a new step directory under a
temporary name and renames it into place when it is complete, then deletes
the older one, so a crash at any moment leaves a complete checkpoint. Every
process of a multi-host run calls ``save_checkpoint`` and
``restore_checkpoint`` (Orbax coordinates who writes what); with
``async_save=True`` the writing happens in the background after the arrays
are copied to the host. A checkpoint holds the pytree and JSON metadata.

``restore_msgpack`` reads the single-file checkpoints jaxmaml wrote before
it used Orbax (``flax.serialization`` msgpack), so runs saved that way
resume.

Orbax is an optional dependency: ``pip install 'jaxmaml[checkpoint]'``.
"""

import json
import os
import typing
from typing import Any

import flax.serialization
import jax
import numpy as np

from jaxmaml.data import extras


def _orbax():
  return extras.import_optional('orbax.checkpoint', purpose='jaxmaml.checkpoint')


def checkpoint_manager(
  directory: str | os.PathLike, *, async_save: bool = False, max_to_keep: int = 1
) -> Any:
  """An Orbax ``CheckpointManager`` for checkpoints in ``directory``.

  Args:
    directory: where the step directories are (created if missing).
    async_save: write in a background thread (``manager.wait_until_finished()``
      waits for it; ``manager.close()`` too).
    max_to_keep: how many of the latest steps are kept.

  Returns:
    The manager; close it with ``manager.close()``.
  """
  ocp = _orbax()
  return ocp.CheckpointManager(
    os.path.abspath(directory),
    options=ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep,
      enable_async_checkpointing=async_save,
      create=True,
      cleanup_tmp_directories=True,
    ),
    item_names=('state', 'metadata'),
  )


def save_checkpoint(manager: Any, step: int, target: Any, metadata: dict | None = None) -> None:
  """Saves ``target`` (a pytree of arrays) and JSON-able ``metadata`` as ``step``."""
  ocp = _orbax()
  manager.save(
    step,
    args=ocp.args.Composite(
      state=ocp.args.StandardSave(target), metadata=ocp.args.JsonSave(metadata or {})
    ),
    force=True,
  )


def _check_shapes(path, restored, target) -> None:
  for got, want in zip(jax.tree_util.tree_leaves(restored), jax.tree_util.tree_leaves(target)):
    if np.shape(got) != np.shape(want):
      raise ValueError(
        f'{path} holds an array of shape {np.shape(got)} where the target has {np.shape(want)}.'
      )


def restore_checkpoint(manager: Any, target: Any) -> tuple[Any, dict] | None:
  """The latest checkpoint of ``manager``, in the structure of ``target``.

  Args:
    manager: from ``checkpoint_manager``.
    target: a pytree with the structure, shapes, dtypes (and shardings) to
      restore into.

  Returns:
    ``(restored, metadata)``, or None when there is no checkpoint.

  Raises:
    ValueError: if the checkpoint is unreadable (corrupt, truncated) or does
      not match ``target``, naming its directory.
  """
  ocp = _orbax()
  step = manager.latest_step()
  if step is None:
    return None
  path = os.path.join(str(manager.directory), str(step))
  abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
  try:
    restored = manager.restore(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), metadata=ocp.args.JsonRestore()
      ),
    )
  except Exception as e:  # Corrupt files or a mismatched structure.
    raise ValueError(f'{path} is not a checkpoint matching the target: {e}') from e
  _check_shapes(path, restored.state, target)
  return restored.state, dict(restored.metadata or {})


def restore_msgpack(path: str, target: Any) -> tuple[Any, dict] | None:
  """Reads a checkpoint file of jaxmaml before Orbax into the structure of ``target``.

  Returns:
    ``(restored, metadata)``, or None when ``path`` does not exist.

  Raises:
    ValueError: if the file is not such a checkpoint or does not match ``target``.
  """
  if not os.path.exists(path):
    return None
  with open(path, 'rb') as f:
    try:
      payload = typing.cast(dict, flax.serialization.msgpack_restore(f.read()))
      restored = flax.serialization.from_state_dict(target, payload['state'])
    except Exception as e:  # Malformed file or mismatched structure.
      raise ValueError(f'{path} is not a checkpoint matching the target: {e}') from e
  _check_shapes(path, restored, target)
  return restored, json.loads(payload['metadata'])
