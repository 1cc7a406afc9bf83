"""Writing a file so that readers never see a partial one.

Checkpoints (``jaxmaml.checkpoint``), the data loaders' caches
(``jaxmaml.data.cache``) and the benchmarks' reports all write this way.
"""

from collections.abc import Callable
import os
import tempfile
from typing import Any, BinaryIO


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
