"""Atomic, resumable checkpoints of a pytree (e.g. a ``MetaTrainState``).

A checkpoint is written to a temporary file in the same directory and moved
into place with ``os.replace``, so a crash mid-write leaves the previous
checkpoint intact, never a truncated one (``jaxmaml.files.atomic_write``).
"""

import json
import os
import typing
from typing import Any

import flax.serialization
import jax
import numpy as np

from jaxmaml.files import atomic_write


def save_checkpoint(path: str, target: Any, metadata: dict | None = None) -> None:
  """Writes ``target`` (a pytree) and JSON-able ``metadata`` to ``path`` atomically."""
  state = flax.serialization.to_state_dict(jax.device_get(target))
  payload = flax.serialization.msgpack_serialize(
    {'state': state, 'metadata': json.dumps(metadata or {})}
  )
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
      payload = typing.cast(dict, flax.serialization.msgpack_restore(f.read()))
      restored = flax.serialization.from_state_dict(target, payload['state'])
    except Exception as e:  # Malformed file or mismatched structure.
      raise ValueError(f'{path} is not a checkpoint matching the target: {e}') from e
  for got, want in zip(jax.tree_util.tree_leaves(restored), jax.tree_util.tree_leaves(target)):
    if np.shape(got) != np.shape(want):
      raise ValueError(
        f'{path} holds an array of shape {np.shape(got)} where the target has {np.shape(want)}.'
      )
  return restored, json.loads(payload['metadata'])
