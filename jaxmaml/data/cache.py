"""Where the data loaders keep their preprocessed arrays.

The first load of a data set decodes and resizes its images; the loader writes
the result once into the cache directory (atomically, with
``jaxmaml.files.atomic_write``) under a name keyed by the source and the
options, and later loads read it back.
"""

import os
import pathlib


def default_cache_dir() -> pathlib.Path:
  """Where preprocessed datasets are cached: ``$JAXMAML_CACHE``, else ``~/.cache/jaxmaml``."""
  return pathlib.Path(os.environ.get('JAXMAML_CACHE') or '~/.cache/jaxmaml').expanduser()


def cache_dir_or_default(cache_dir: str | os.PathLike | None) -> pathlib.Path:
  """``cache_dir`` as a path (``~`` expanded), or ``default_cache_dir()`` when it is None."""
  return default_cache_dir() if cache_dir is None else pathlib.Path(cache_dir).expanduser()
