"""Where the data loaders keep their preprocessed arrays, and how each entry is checked.

The first load of a data set decodes and resizes its images; the loader writes
the result once into the cache directory under a name keyed by the source and
the options, and later loads read it back. An entry is a data file (``.npy``,
or Omniglot's ``.npz``) and a **checksum sidecar** beside it,
``<data file name>.checksum.json``::

  {"format": 1, "algorithm": "sha256",
   "arrays": {"images": {"shape": [1623, 20, 28, 28], "dtype": "|u1", "sha256": "..."}, ...},
   "meta_sha256": "..."}

``arrays`` holds, per array of the entry, its shape, dtype and the sha256 of
its bytes in C order (its content: independent of the file format and of the
zip timestamps of an ``.npz``); ``meta_sha256``, where the entry has a JSON
sidecar of its own (``classes``, ``counts``), the sha256 of that dict as
canonical JSON. Both files are written atomically (``jaxmaml.files.atomic_write``:
a temporary file, then ``os.replace``), the data first and the checksum last,
so a checksum on disk means its data is complete.

Every load checks the entry (``check_entry``): shapes and dtypes first, then
the digests, hashing the whole array (its cost: ``docs/datasets.md``). On a
mismatch the entry is neither used nor overwritten: ``ValueError`` names its
files and says to delete them, and the next load rebuilds it. A cache entry
that was changed or damaged after it was written is a sign of a failing disk
or of another program writing there, and it may be the only copy of hours of
preprocessing; the user decides.

An entry without a checksum sidecar was written before checksums existed (or
its writer was killed between the data and the checksum; the data itself is
written atomically, so it is complete): it is accepted once, with a warning,
and its checksum is recorded from its current content, so every later load
checks it. An unreadable data file is refused like a mismatch.

``check_writable`` is called before any preprocessing: an unwritable cache
directory raises ``OSError`` naming it before anything is decoded. Loads that
find their entry in the cache write nothing (but to adopt an old entry), so a
read-only cache with complete entries works.
"""

from collections.abc import Iterable, Mapping, Sequence
import hashlib
import json
import os
import pathlib
import tempfile
from typing import Any
import warnings

import numpy as np

from jaxmaml.files import atomic_write

CHECKSUM_FORMAT = 1
CHECKSUM_SUFFIX = '.checksum.json'
_CHUNK = 1 << 24  # Bytes hashed at a time: large enough to hash at full speed.


def default_cache_dir() -> pathlib.Path:
  """Where preprocessed datasets are cached: ``$JAXMAML_CACHE``, else ``~/.cache/jaxmaml``."""
  return pathlib.Path(os.environ.get('JAXMAML_CACHE') or '~/.cache/jaxmaml').expanduser()


def cache_dir_or_default(cache_dir: str | os.PathLike | None) -> pathlib.Path:
  """``cache_dir`` as a path (``~`` expanded), or ``default_cache_dir()`` when it is None."""
  return default_cache_dir() if cache_dir is None else pathlib.Path(cache_dir).expanduser()


def check_writable(cache_dir: pathlib.Path, dataset: str) -> None:
  """Creates ``cache_dir`` if needed and checks that a file can be written in it.

  Called before any preprocessing, so that an unwritable cache is found
  before the work whose result it would hold, not after.

  Raises:
    OSError: of the kind the file system raised (``PermissionError``,
      ``FileExistsError`` for a regular file in the way, ...), naming
      ``cache_dir`` and what to do.
  """
  try:
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, probe = tempfile.mkstemp(dir=cache_dir, prefix='.tmp-')
    os.close(fd)
    os.remove(probe)
  except OSError as e:
    raise type(e)(
      f'{dataset}: the cache directory {cache_dir} is not writable ({e.strerror or e}), so '
      'the preprocessed arrays could not be kept; nothing was preprocessed. Pass cache_dir= '
      'a writable directory or set $JAXMAML_CACHE.'
    ) from e


def checksum_path(path: pathlib.Path) -> pathlib.Path:
  """The checksum sidecar of the cache entry ``path``: ``<path>.checksum.json``."""
  return path.with_name(path.name + CHECKSUM_SUFFIX)


def _update(digest: Any, array: np.ndarray) -> None:
  """Feeds ``array``'s bytes in C order to ``digest``, a chunk at a time (a memory map too)."""
  flat = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
  for start in range(0, flat.size, _CHUNK):
    digest.update(flat[start : start + _CHUNK])


def array_sha256(array: np.ndarray) -> str:
  """The sha256 hex digest of ``array``'s bytes in C order.

  Examples:
    >>> array_sha256(np.zeros(3, np.uint8)) == hashlib.sha256(bytes(3)).hexdigest()
    True
  """
  digest = hashlib.sha256()
  _update(digest, array)
  return digest.hexdigest()


def _meta_sha256(meta: Mapping[str, Any]) -> str:
  return hashlib.sha256(json.dumps(dict(meta), sort_keys=True).encode()).hexdigest()


def _record(arrays: Mapping[str, tuple[Sequence[int], np.dtype, str]], meta) -> dict[str, Any]:
  record: dict[str, Any] = {
    'format': CHECKSUM_FORMAT,
    'algorithm': 'sha256',
    'arrays': {
      name: {'shape': [int(s) for s in shape], 'dtype': np.dtype(dtype).str, 'sha256': digest}
      for name, (shape, dtype, digest) in arrays.items()
    },
  }
  if meta is not None:
    record['meta_sha256'] = _meta_sha256(meta)
  return record


def _write_record(path: pathlib.Path, record: Mapping[str, Any]) -> None:
  atomic_write(checksum_path(path), lambda f: f.write(json.dumps(record, indent=1).encode()))


def record_checksum(
  path: pathlib.Path, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any] | None = None
) -> None:
  """Writes the checksum sidecar of the entry ``path`` holding ``arrays`` (and ``meta``).

  Call it after the data file is in place (the checksum's presence then means
  the data is complete).
  """
  described = {name: (a.shape, a.dtype, array_sha256(a)) for name, a in arrays.items()}
  _write_record(path, _record(described, meta))


def _names(files: Sequence[pathlib.Path]) -> str:
  """``'/dir/a.npy and, beside it, a.json and a.npy.checksum.json'``."""
  first, *others = files
  names = [f.name for f in others]
  if not names:
    return str(first)
  listed = names[0] if len(names) == 1 else f'{", ".join(names[:-1])} and {names[-1]}'
  return f'{first} and, beside it, {listed}'


def _delete_hint(files: Sequence[pathlib.Path]) -> str:
  return f'Delete {_names(files)} to rebuild the entry from the source.'


def _files(path: pathlib.Path, also: Sequence[pathlib.Path]) -> list[pathlib.Path]:
  return [path, *also, checksum_path(path)]


def unreadable(
  path: pathlib.Path, error: Exception, also: Sequence[pathlib.Path] = ()
) -> ValueError:
  """The error for a cache entry whose data file cannot be read (neither used nor overwritten)."""
  return ValueError(
    f'The cache entry {path} is unreadable ({error}): it was damaged (or a file of it '
    f'removed) after it was written, so it is not used (nor overwritten). '
    f'{_delete_hint(_files(path, also))}'
  )


def check_entry(
  path: pathlib.Path,
  arrays: Mapping[str, np.ndarray],
  meta: Mapping[str, Any] | None = None,
  also: Sequence[pathlib.Path] = (),
) -> None:
  """Checks the ``arrays`` (and ``meta``) read from the cache entry ``path`` against its checksum.

  Args:
    path: the entry's data file.
    arrays: what was read from it, by name (``{'array': a}`` for an ``.npy``).
    meta: the entry's JSON sidecar, if it has one.
    also: the entry's other files (its JSON sidecar), named in the error.

  Raises:
    ValueError: naming the entry's files and saying to delete them, if a
      shape, dtype or digest differs from the recorded one, or the checksum
      sidecar is unreadable. The entry is not modified.

  Warns:
    UserWarning: if the entry has no checksum sidecar (an entry from before
      checksums): its checksum is recorded now, from its current content.
  """
  sidecar = checksum_path(path)
  if not sidecar.is_file():
    _adopt(path, arrays, meta, also)
    return
  hint = _delete_hint(_files(path, also))
  try:
    recorded = json.loads(sidecar.read_text())
    recorded_arrays = recorded['arrays']
    if not all(isinstance(v, dict) for v in recorded_arrays.values()):
      raise TypeError('an entry of "arrays" is not an object')
  except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
    raise ValueError(
      f'The checksum {sidecar} of the cache entry {path} is unreadable ({e!r}), so the entry '
      f'is not used (nor overwritten). {hint}'
    ) from None
  problem = None
  if recorded.get('format') != CHECKSUM_FORMAT or recorded.get('algorithm') != 'sha256':
    problem = (
      f'checksum format {recorded.get("format")!r} / {recorded.get("algorithm")!r}, '
      f'expected {CHECKSUM_FORMAT} / sha256'
    )
  elif sorted(recorded_arrays) != sorted(arrays):
    problem = f'arrays {sorted(arrays)}, recorded {sorted(recorded_arrays)}'
  else:  # Shapes and dtypes first: they cost nothing to check.
    for name, array in arrays.items():
      want = recorded_arrays[name]
      got = {'shape': list(array.shape), 'dtype': array.dtype.str}
      if got != {'shape': want.get('shape'), 'dtype': want.get('dtype')}:
        problem = f'{name!r} has shape {got["shape"]} and dtype {got["dtype"]}, recorded {want}'
        break
  if problem is None and (meta is not None or 'meta_sha256' in recorded):
    got_meta = None if meta is None else _meta_sha256(meta)
    if got_meta != recorded.get('meta_sha256'):
      problem = f'its JSON sidecar has sha256 {got_meta}, recorded {recorded.get("meta_sha256")}'
  if problem is None:
    for name, array in arrays.items():
      got_digest = array_sha256(array)
      if got_digest != recorded_arrays[name].get('sha256'):
        problem = (
          f'{name!r} has sha256 {got_digest}, recorded {recorded_arrays[name].get("sha256")}'
        )
        break
  if problem is not None:
    raise ValueError(
      f'The cache entry {path} does not match the checksum recorded in {sidecar.name}: '
      f'{problem}. It was changed or damaged after it was written, so it is not used (nor '
      f'overwritten). {hint}'
    )


def _adopt(path, arrays, meta, also) -> None:
  """Records the checksum of an entry written without one, with a warning."""
  message = (
    f'The cache entry {path} has no checksum (written by a jaxmaml from before cache '
    'checksums, or its writer stopped before writing it); it is used as it is, and its '
    f'checksum is recorded now, from its current content, in {checksum_path(path).name}. '
    f'If in doubt, delete {_names(_files(path, also))} to rebuild it.'
  )
  try:
    record_checksum(path, arrays, meta)
  except OSError as e:
    message += f' The checksum could not be written ({e}): the warning will repeat.'
  warnings.warn(message, stacklevel=4)


def write_npy(
  path: pathlib.Path,
  shape: Sequence[int],
  blocks: Iterable[np.ndarray],
  *,
  dtype: Any = np.uint8,
  meta: Mapping[str, Any] | None = None,
) -> None:
  """Writes an ``.npy`` of ``shape`` from its blocks along axis 0, then its checksum sidecar.

  The array is streamed: each block (``shape[1:]``) is hashed and written as
  it comes, so the whole array is never in memory. Both files are written
  atomically, the data first.

  Args:
    path: the entry's data file.
    shape: the array's shape.
    blocks: ``shape[0]`` arrays of ``shape[1:]`` (cast to ``dtype``).
    dtype: the array's dtype.
    meta: the entry's JSON sidecar (written by the caller), whose digest the
      checksum records.

  Raises:
    ValueError: if a block has another shape or there are not ``shape[0]``
      blocks; nothing is written then.
  """
  shape = tuple(int(s) for s in shape)
  dtype = np.dtype(dtype)
  digest = hashlib.sha256()

  def write(f):
    np.lib.format.write_array_header_1_0(
      f, {'descr': dtype.str, 'fortran_order': False, 'shape': shape}
    )
    count = 0
    for block in blocks:
      block = np.ascontiguousarray(block, dtype=dtype)
      if block.shape != shape[1:]:
        raise ValueError(f'block {count} has shape {block.shape}, expected {shape[1:]}.')
      _update(digest, block)
      f.write(block.tobytes())
      count += 1
    if count != shape[0]:
      raise ValueError(f'{count} blocks written, expected {shape[0]}.')

  atomic_write(path, write)
  _write_record(path, _record({'array': (shape, dtype, digest.hexdigest())}, meta))


def read_npy(
  path: pathlib.Path,
  meta: Mapping[str, Any] | None = None,
  also: Sequence[pathlib.Path] = (),
) -> np.ndarray | None:
  """The ``.npy`` cache entry ``path``, memory-mapped and checked; None if absent.

  Raises:
    ValueError: if the file is unreadable or does not match its checksum,
      naming the entry's files (``also``: its JSON sidecar) and saying to
      delete them.
  """
  if not path.is_file():
    return None
  try:
    array = np.load(path, mmap_mode='r', allow_pickle=False)
  except (OSError, ValueError, EOFError) as e:
    raise unreadable(path, e, also) from None
  check_entry(path, {'array': array}, meta, also)
  return array
