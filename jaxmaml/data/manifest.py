"""The few-shot benchmarks' manifests, the checks of their files, and their caches.

A manifest is a JSON file shipped in ``jaxmaml/data/manifests/`` (package
data): ``cifar100.json``, ``cifar_fs.json``, ``fc100.json``, ``cub.json``,
``tiered_imagenet.json``. Each has a ``source`` field that cites where its
class lists and checksums were read (paper, repository and file), ``splits``
(the published class splits) and/or ``files``: for each expected file (a
path relative to the data set's root) its published ``md5``/``sha256`` and
``size`` where there are any, and ``url``, where to get it. Nothing in them is
computed here: a value that was not published is absent, and the entry's
``note`` says so.

The loaders (``jaxmaml.data.cifar``, ``cub``, ``tiered_imagenet``) check their
files before decoding anything:

- ``require``: a missing file raises ``FileNotFoundError`` naming the file and
  where to get it;
- ``verify``: a file whose size or digest differs from the published one
  raises ``ValueError`` naming the file. Hashing a multi-GB archive takes a
  while, so a success is recorded under
  ``CACHE_DIR/verified/``, keyed by the file's resolved path, size and
  modification time and the expected digests: the next load only reads the file's
  size and time, and a changed file is hashed again.

They cache the arrays they build as ``.npy`` files (``write_class_blocks``:
written atomically with ``jaxmaml.files.atomic_write``, class by class, so a
split larger than memory is never held whole) with a JSON sidecar and a
checksum sidecar (``jaxmaml.data.cache``), and load them memory-mapped and
checked (``read_cached``).

The pickles of CIFAR-100 and tieredImageNet are read with ``load_pickle``,
which only rebuilds builtin containers and NumPy arrays: a pickle that names
any other global is refused rather than run.
"""

from collections.abc import Callable, Iterable, Mapping
import hashlib
import io
import json
import os
import pathlib
import pickle
from typing import IO, Any
import warnings

import numpy as np

from jaxmaml import checks
from jaxmaml.data import cache as cache_lib
from jaxmaml.data import extras
from jaxmaml.files import atomic_write

MANIFEST_DIR = pathlib.Path(__file__).resolve().parent / 'manifests'
DIGESTS = ('md5', 'sha256')
_CHUNK = 1 << 22


def load(name: str) -> dict[str, Any]:
  """The manifest ``name`` (e.g. ``'cub'``) as a dict, read from ``MANIFEST_DIR``.

  Raises:
    FileNotFoundError: if no such manifest is shipped.
  """
  path = MANIFEST_DIR / f'{name}.json'
  if not path.is_file():
    shipped = sorted(p.stem for p in MANIFEST_DIR.glob('*.json'))
    raise FileNotFoundError(f'No manifest {name!r} in {MANIFEST_DIR} (shipped: {shipped}).')
  with open(path) as f:
    return json.load(f)


def file_entry(manifest: Mapping[str, Any], name: str) -> dict[str, Any]:
  """The ``files`` entry of ``name`` in ``manifest``, with ``name`` added."""
  return {'name': name, **manifest['files'][name]}


def where_to_get(entry: Mapping[str, Any]) -> str:
  """``entry``'s ``url`` (and ``note``) as one phrase for error messages."""
  text = entry.get('url', 'see docs/datasets.md')
  return f'{text}. {entry["note"]}' if entry.get('note') else text


def require(path: pathlib.Path, entry: Mapping[str, Any], dataset: str) -> pathlib.Path:
  """``path`` if it is a file; else a FileNotFoundError naming it and where to get it."""
  if not path.is_file():
    raise FileNotFoundError(
      f'{dataset}: {path} not found (expected file {entry["name"]}; get it from '
      f'{where_to_get(entry)}; see docs/datasets.md).'
    )
  return path


def hash_file(path: str | os.PathLike, algorithms: Iterable[str]) -> dict[str, str]:
  """``{algorithm: hex digest}`` of the file's bytes, read once for all algorithms."""
  hashes = {a: hashlib.new(a) for a in algorithms}
  with open(path, 'rb') as f:
    while chunk := f.read(_CHUNK):
      for h in hashes.values():
        h.update(chunk)
  return {a: h.hexdigest() for a, h in hashes.items()}


def _record_path(path: pathlib.Path, expected: Mapping[str, Any], cache_dir: pathlib.Path):
  stat = path.stat()
  key = json.dumps(
    {
      'path': str(path.resolve()),
      'size': stat.st_size,
      'mtime_ns': stat.st_mtime_ns,
      'expected': dict(sorted(expected.items())),
    },
    sort_keys=True,
  )
  digest = hashlib.sha256(key.encode()).hexdigest()[:32]
  return cache_dir / 'verified' / f'{digest}.json', key


def verify(path: pathlib.Path, entry: Mapping[str, Any], cache_dir: pathlib.Path) -> bool:
  """Checks ``path`` against ``entry``'s published size and digests, once per file version.

  Args:
    path: the file (it must exist: see ``require``).
    entry: its manifest entry (``size``, ``md5``, ``sha256``: whichever are given).
    cache_dir: where successes are recorded (``cache_dir/verified/``).

  Returns:
    True if the file was hashed now, False if it was known good (recorded
    for its path, size and modification time) or nothing is published for it.

  Raises:
    ValueError: naming the file, its size or digest, and the published one.
  """
  expected = {k: entry[k] for k in ('size', *DIGESTS) if entry.get(k) is not None}
  if not expected:
    return False
  record, key = _record_path(path, expected, cache_dir)
  if record.is_file():
    return False
  size = path.stat().st_size
  if 'size' in expected and size != expected['size']:
    raise ValueError(
      f'{path} has {size} bytes, but {entry["name"]} has {expected["size"]} '
      f'(published): the file is truncated or not the official one; get it again from '
      f'{where_to_get(entry)}.'
    )
  algorithms = [a for a in DIGESTS if a in expected]
  if algorithms:
    got = hash_file(path, algorithms)
    for a in algorithms:
      if got[a] != expected[a].lower():
        raise ValueError(
          f'{path}: {a} {got[a]} does not match the published {a} {expected[a]} of '
          f'{entry["name"]}: the file is corrupt or not the official one; get it again '
          f'from {where_to_get(entry)}.'
        )
  try:
    atomic_write(record, lambda f: f.write(key.encode()))
  except OSError as e:  # A read-only cache: the check passed all the same.
    warnings.warn(
      f'{path} matches its published checksum, but the success could not be recorded in '
      f'{record.parent} ({e}): it will be hashed again on the next load.',
      stacklevel=2,
    )
  return True


# Globals a pickle of NumPy arrays (written by Python 2 or 3) may name;
# Python 3 writes bytes as _codecs.encode(str, 'latin1') in protocols < 3.
_NUMPY_GLOBALS = {
  ('_codecs', 'encode'),
  ('numpy.core.multiarray', '_reconstruct'),
  ('numpy._core.multiarray', '_reconstruct'),
  ('numpy.core.multiarray', 'scalar'),
  ('numpy._core.multiarray', 'scalar'),
  ('numpy.core.numeric', '_frombuffer'),
  ('numpy._core.numeric', '_frombuffer'),
  ('numpy', 'ndarray'),
  ('numpy', 'dtype'),
}


class _ArrayUnpickler(pickle.Unpickler):
  """Rebuilds builtin containers and NumPy arrays; refuses every other global."""

  def find_class(self, module: str, name: str):
    if (module, name) not in _NUMPY_GLOBALS:
      raise pickle.UnpicklingError(
        f'{module}.{name} is not allowed: only NumPy arrays and builtin containers are read.'
      )
    if module.startswith('numpy.core.'):  # NumPy >= 2 moved numpy.core to numpy._core.
      try:
        return super().find_class('numpy._core.' + module[len('numpy.core.') :], name)
      except (ImportError, AttributeError):
        pass
    return super().find_class(module, name)


def load_pickle(f: IO[bytes], where: str) -> Any:
  """Unpickles ``f`` (Python 2's ``str`` decoded as latin-1, as NumPy needs)
  allowing only NumPy arrays and builtin containers.

  Raises:
    ValueError: naming ``where`` if the pickle is malformed or names another global.
  """
  try:
    return _ArrayUnpickler(f, encoding='latin1').load()
  except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
    raise ValueError(f'{where} is not a readable pickle of arrays: {e}') from None


def as_str_keys(record: Mapping) -> dict[str, Any]:
  """``record`` with ``bytes`` keys decoded (Python 2 pickles read as bytes)."""
  return {(k.decode('latin1') if isinstance(k, bytes) else k): v for k, v in record.items()}


def write_class_blocks(
  path: pathlib.Path,
  shape: tuple[int, ...],
  blocks: Iterable[np.ndarray],
  meta: Mapping[str, Any],
) -> None:
  """Writes a uint8 ``.npy`` of ``shape`` from its blocks along axis 0, a JSON
  sidecar and a checksum sidecar.

  The array is streamed: each block ``[shape[1:]]`` (one class) is hashed and
  written as it comes, so the whole array is never in memory. The files are
  written atomically: the JSON sidecar (``path`` with ``.json``), the array,
  then the checksum (``jaxmaml.data.cache.write_npy``), which records the
  digests of both.
  """
  atomic_write(path.with_suffix('.json'), lambda f: f.write(json.dumps(dict(meta)).encode()))
  cache_lib.write_npy(path, shape, blocks, meta=meta)


def read_cached(path: pathlib.Path) -> tuple[np.ndarray, dict[str, Any]] | None:
  """``(memory-mapped array, sidecar dict)`` written by ``write_class_blocks``,
  checked against its checksum (``jaxmaml.data.cache.check_entry``); None if absent.

  Raises:
    ValueError: naming the entry's files and saying to delete them, if its
      JSON sidecar is missing or unreadable, or it does not match its checksum.
  """
  if not path.is_file():
    return None
  sidecar = path.with_suffix('.json')
  try:
    with open(sidecar) as f:
      meta = json.load(f)
  except (OSError, ValueError) as e:
    raise cache_lib.unreadable(path, e, (sidecar,)) from None
  array = cache_lib.read_npy(path, meta, (sidecar,))
  assert array is not None
  return array, meta


def fingerprint(payload: Any) -> str:
  """A short stable hash of a JSON-serialisable ``payload``, for cache file names."""
  return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def padded_blocks(
  groups: Iterable[list[Any]], per_class: int, decode: Callable[[Any], np.ndarray], shape
) -> Iterable[np.ndarray]:
  """Per group (class), ``[per_class, *shape]`` of ``decode``-d items, zero-padded at the end."""
  for items in groups:
    block = np.zeros((per_class, *shape), np.uint8)
    for j, item in enumerate(items):
      block[j] = decode(item)
    yield block


def check_arguments(
  root: str | os.PathLike,
  split: str,
  image_size: int,
  source_kind: str | None,
  *,
  dataset: str,
  splits: tuple[str, ...],
  kinds: tuple[str, ...],
) -> pathlib.Path:
  """Checks a loader's common arguments before any work; returns ``root`` as a path.

  Raises:
    ValueError, TypeError: for a bad ``split``, ``image_size`` or ``source_kind``,
      naming the argument.
    FileNotFoundError: if ``root`` is not a directory, naming ``root``.
  """
  if split not in splits:
    raise ValueError(f'split must be one of {splits}, got {split!r}.')
  checks.positive_int(image_size, 'image_size')
  if source_kind is not None and source_kind not in kinds:
    raise ValueError(f'source_kind must be None or one of {kinds}, got {source_kind!r}.')
  path = pathlib.Path(root).expanduser()
  if not path.is_dir():
    raise FileNotFoundError(f'{dataset} root {path} is not a directory (argument root).')
  return path


def decode_image(data: bytes, image_size: int, purpose: str) -> np.ndarray:
  """Encoded image bytes (JPEG, PNG) -> uint8 ``[image_size, image_size, 3]`` RGB,
  resized with PIL's Lanczos filter if needed (as miniImageNet's)."""
  pil_image = extras.import_optional('PIL.Image', purpose=purpose)
  with pil_image.open(io.BytesIO(data)) as image:
    image = image.convert('RGB')
    if image.size != (image_size, image_size):
      image = image.resize((image_size, image_size), resample=pil_image.LANCZOS)
    return np.asarray(image, dtype=np.uint8)


def resize(image: np.ndarray, image_size: int, purpose: str) -> np.ndarray:
  """A uint8 ``[h, w, 3]`` array resized to ``[image_size, image_size, 3]``
  (Lanczos); returned as it is when it has that size already."""
  if image.shape[:2] == (image_size, image_size):
    return image
  pil_image = extras.import_optional('PIL.Image', purpose=purpose)
  resized = pil_image.fromarray(image).resize((image_size, image_size), resample=pil_image.LANCZOS)
  return np.asarray(resized, dtype=np.uint8)
