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


def _dtype(leaf):
  return np.dtype(leaf.dtype) if getattr(leaf, 'dtype', None) is not None else None


def _check_leaves(path, target, saved) -> None:
  """Raises a ValueError naming the first leaf of ``target`` the checkpoint disagrees with.

  Args:
    path: the checkpoint, for the message.
    target: the pytree restored into.
    saved: ``key_path -> leaf or None``, what the checkpoint holds at a leaf
      of ``target`` (an array, or Orbax's metadata of one): its shape and,
      where the target leaf has one (an array, not a Python scalar), its
      dtype are compared, so that int32 parameters are not silently restored
      (or cast) into a float32 state.
  """
  for key, want in jax.tree_util.tree_leaves_with_path(target):
    got = saved(key)
    if got is None:
      continue
    where = jax.tree_util.keystr(key) or '(the root)'
    got_shape = tuple(got.shape) if hasattr(got, 'shape') else np.shape(got)
    if got_shape != np.shape(want):
      raise ValueError(
        f'{path}: leaf {where} holds an array of shape {got_shape} where the target '
        f'has {np.shape(want)}.'
      )
    want_dtype, got_dtype = _dtype(want), _dtype(got)
    if want_dtype is not None and got_dtype is not None and got_dtype != want_dtype:
      raise ValueError(
        f'{path}: leaf {where} holds {got_dtype} where the target has {want_dtype}; cast the '
        'target (or the saved state) so that the dtypes agree.'
      )


def _names(key_path) -> tuple[str, ...]:
  """A key path as plain names: Orbax's metadata has dicts where the state has NamedTuples."""
  return tuple(str(getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k)))) for k in key_path)


def _saved_metadata(manager: Any, step: int):
  """``key_path -> ArrayMetadata or None`` of the checkpoint's state (None if unreadable)."""
  try:
    tree = manager.item_metadata(step)['state']
  except Exception:  # No metadata (older Orbax): the restored arrays are checked instead.
    return None
  if tree is None:
    return None
  leaves = {_names(k): leaf for k, leaf in jax.tree_util.tree_leaves_with_path(tree)}
  return lambda key: leaves.get(_names(key))


def _by_path(restored):
  """``key_path -> leaf`` of ``restored``."""
  leaves = dict(jax.tree_util.tree_leaves_with_path(restored))
  return leaves.get


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
      not match ``target`` (its structure, or a leaf's shape or dtype: the
      error names the leaf), naming its directory.
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
  # Orbax casts to the target's dtypes: compare with what was saved.
  _check_leaves(path, target, _saved_metadata(manager, step) or _by_path(restored.state))
  _check_leaves(path, target, _by_path(restored.state))
  return restored.state, dict(restored.metadata or {})


def restore_msgpack(path: str, target: Any) -> tuple[Any, dict] | None:
  """Reads a checkpoint file of jaxmaml before Orbax into the structure of ``target``.

  Returns:
    ``(restored, metadata)``, or None when ``path`` does not exist.

  Raises:
    ValueError: if the file is not such a checkpoint or does not match
      ``target`` (its structure, or a leaf's shape or dtype: the error names
      the leaf).
  """
  if not os.path.exists(path):
    return None
  with open(path, 'rb') as f:
    try:
      payload = typing.cast(dict, flax.serialization.msgpack_restore(f.read()))
      restored = flax.serialization.from_state_dict(target, payload['state'])
    except Exception as e:  # Malformed file or mismatched structure.
      raise ValueError(f'{path} is not a checkpoint matching the target: {e}') from e
  _check_leaves(path, target, _by_path(restored))
  return restored, json.loads(payload['metadata'])
