"""Atomic, resumable checkpoints of a pytree (e.g. a ``MetaTrainState``).

A checkpoint is written to a temporary file in the same directory and moved
into place with ``os.replace``, so a crash mid-write leaves the previous
checkpoint intact, never a truncated one.
"""

import json
import os
import pathlib
import tempfile
from typing import Any, BinaryIO, Callable

import flax.serialization
import jax
import numpy as np


def default_cache_dir() -> pathlib.Path:
  """Where preprocessed datasets are cached: ``$JAXMAML_CACHE``, else ``~/.cache/jaxmaml``."""
  return pathlib.Path(os.environ.get('JAXMAML_CACHE') or '~/.cache/jaxmaml').expanduser()


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], Any]) -> None:
  """Calls ``write(file)`` on a temporary file beside ``path``, then moves it
  into place with ``os.replace``: readers see the old file or the new one,
  never a partial one. Creates the parent directory."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix='.tmp-')
  try:
    with os.fdopen(fd, 'wb') as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def save_checkpoint(path: str, target: Any, metadata: dict | None = None) -> None:
  """Writes ``target`` (a pytree) and JSON-able ``metadata`` to ``path`` atomically."""
  state = flax.serialization.to_state_dict(jax.device_get(target))
  payload = flax.serialization.msgpack_serialize(
      {'state': state, 'metadata': json.dumps(metadata or {})})
  atomic_write(path, lambda f: f.write(payload))


def restore_checkpoint(path: str, target: Any) -> tuple[Any, dict] | None:
  """Reads a checkpoint into the structure of ``target``.

  Args:
    path: a file written by ``save_checkpoint``.
    target: a pytree with the structure, shapes and dtypes to restore into.

  Returns:
    ``(restored, metadata)``, or None when ``path`` does not exist.

  Raises:
    ValueError: if the file is not a checkpoint or does not match ``target``.
  """
  if not os.path.exists(path):
    return None
  with open(path, 'rb') as f:
    try:
      payload = flax.serialization.msgpack_restore(f.read())
      restored = flax.serialization.from_state_dict(target, payload['state'])
    except Exception as e:  # Malformed file or mismatched structure.
      raise ValueError(f'{path} is not a checkpoint matching the target: {e}') from e
  for got, want in zip(jax.tree_util.tree_leaves(restored), jax.tree_util.tree_leaves(target)):
    if np.shape(got) != np.shape(want):
      raise ValueError(
          f'{path} holds an array of shape {np.shape(got)} where the target '
          f'has {np.shape(want)}.')
  return restored, json.loads(payload['metadata'])
