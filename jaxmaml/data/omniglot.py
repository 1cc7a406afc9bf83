"""Omniglot (Lake, Salakhutdinov & Tenenbaum, 2015) as preprocessed numpy arrays.

Omniglot has 1,623 handwritten characters from 50 alphabets, each drawn once by
20 people ("drawers"): 964 characters in ``images_background`` (30 alphabets,
global character ids 1..964) and 659 in ``images_evaluation`` (20 alphabets,
ids 965..1623). Every image is a 105x105 1-bit PNG with black strokes on white.

``load_omniglot`` reads the data from any of three sources and returns the
same arrays from each (tested):

- the two original zips, ``images_background.zip`` and ``images_evaluation.zip``;
- the folders they extract to, ``images_background/`` and ``images_evaluation/``;
- a TensorFlow Datasets ``data_dir`` holding ``omniglot/3.0.0/`` in
  ``array_record`` format (read without TensorFlow).

Pixels follow the MAML code (Finn et al., 2017): ink is high (strokes 255,
background 0) and images are resized from 105 to ``image_size`` with PIL's
Lanczos filter on the 8-bit image. The result is cached once per source and
preprocessing options (see ``load_omniglot``).

Canonical order: characters by global character id (1..1623, the ``NNNN`` in
``NNNN_DD.png``), and each character's drawings by drawer (``DD`` = 01..20).
TFDS records carry no drawer or file name; the drawer is recovered from the
record order, which TFDS fixes by sorting the examples of a split by the md5 of
``split name + example key`` (``tfds.core.hashing``), where the key is
``f'{alphabet}_{alphabet_char_id}_{NNNN}_{DD}.png'``. Among one character's 20
records, the k-th in file order therefore belongs to the drawer whose key has
the k-th smallest hash; the loader then checks that the hashes of all records
of the split increase strictly in file order, so a different build order is
detected rather than silently mislabelled. The PNG bytes in the TFDS records
are the original files' bytes, so both sources give identical arrays.

Usage (with the data set in ``DIR``)::

  data = omniglot.load_omniglot('DIR/omniglot')  # images [1623, 20, 28, 28] uint8
  splits = omniglot.split_characters()           # {'train': [1100], 'val': [100], 'test': [423]}
  train_images = data.images[splits['train']]    # [1100, 20, 28, 28]
"""

from collections.abc import Callable, Sequence
import hashlib
import io
import json
import os
import pathlib
import random
import re
from typing import NamedTuple
import zipfile
import zlib

import numpy as np

from jaxmaml import checks
from jaxmaml.data import cache as cache_lib
from jaxmaml.data import extras
from jaxmaml.files import atomic_write

NUM_CHARACTERS = 1623
NUM_BACKGROUND_CHARACTERS = 964
NUM_EVALUATION_CHARACTERS = 659
NUM_DRAWERS = 20
ORIGINAL_SIZE = 105
TFDS_VERSION = '3.0.0'
NUM_LAKE_RUNS = 20
LAKE_WAYS = 20

SOURCE_KINDS = ('zip', 'folder', 'tfds')
_SUBSETS = {'images_background': 'train', 'images_evaluation': 'test'}  # TFDS splits.
_IMAGE_PATH = re.compile(
  r'^(images_background|images_evaluation)/([^/]+)/character(\d+)/(\d{4})_(\d{2})\.png$'
)
_CACHE_FORMAT = 1  # Bump when preprocessing changes, to invalidate old caches.
_HASH_CHUNK = 1 << 20
_PathLike = str | os.PathLike


class Omniglot(NamedTuple):
  """All of Omniglot, in canonical order (by character id, then drawer).

  Attributes:
    images: uint8 ``[1623, 20, image_size, image_size]``; ``images[c, d]`` is
      drawer ``d + 1``'s drawing of character ``character_ids[c]``; ink 255,
      background 0.
    alphabets: str ``[1623]``, the alphabet of each character (e.g. ``'Latin'``).
    character_ids: int32 ``[1623]``, the global character ids ``1..1623``;
      ids ``1..964`` are the background set, ``965..1623`` the evaluation set.
  """

  images: np.ndarray
  alphabets: np.ndarray
  character_ids: np.ndarray


class LakeRuns(NamedTuple):
  """Lake et al.'s 20 runs of 20-way one-shot classification.

  Attributes:
    train_images: uint8 ``[20, 20, image_size, image_size]``;
      ``train_images[r, k]`` is run ``r + 1``'s ``training/class{k + 1:02d}.png``,
      one image of each of the run's 20 characters.
    test_images: uint8 ``[20, 20, image_size, image_size]``;
      ``test_images[r, j]`` is run ``r + 1``'s ``test/item{j + 1:02d}.png``.
    labels: int32 ``[20, 20]``; ``labels[r, j]`` is the index ``k`` of the
      training image of the same character as ``test_images[r, j]`` (from the
      run's ``class_labels.txt``); each row is a permutation of ``0..19``.
  """

  train_images: np.ndarray
  test_images: np.ndarray
  labels: np.ndarray


class _Drawing(NamedTuple):
  """One image of a source: global character id, alphabet, drawer, PNG bytes."""

  character_id: int
  alphabet: str
  drawer: int
  png: bytes


# ----------------------------------------------------------------------------
# Arguments and sources.


def _check_image_size(image_size: int) -> None:
  if (
    isinstance(image_size, bool)
    or not isinstance(image_size, (int, np.integer))
    or not 1 <= image_size <= ORIGINAL_SIZE
  ):
    raise ValueError(
      f'image_size must be an int in [1, {ORIGINAL_SIZE}] (the images are '
      f'{ORIGINAL_SIZE}x{ORIGINAL_SIZE}), got {image_size!r}.'
    )


def _tfds_versions(source: pathlib.Path) -> list[str]:
  directory = source / 'omniglot'
  if not directory.is_dir():
    return []
  return sorted(
    p.name for p in directory.iterdir() if p.is_dir() and re.fullmatch(r'\d+\.\d+\.\d+', p.name)
  )


def _detect_kind(source: pathlib.Path) -> str | None:
  """Which source ``source`` holds; zips win over folders over TFDS."""
  if any((source / f'{s}.zip').exists() for s in _SUBSETS):
    return 'zip'
  if any((source / s).is_dir() for s in _SUBSETS):
    return 'folder'
  if _tfds_versions(source):
    return 'tfds'
  return None


def _expected_files(kind: str | None, source: pathlib.Path) -> str:
  background, evaluation = (source / s for s in _SUBSETS)
  if kind == 'zip':
    return f'{background}.zip and {evaluation}.zip'
  if kind == 'folder':
    return f'folders {background}/ and {evaluation}/'
  if kind == 'tfds':
    return f'a TFDS data_dir with {source / "omniglot" / TFDS_VERSION}/'
  return (
    'images_background.zip and images_evaluation.zip, or the extracted folders '
    'images_background/ and images_evaluation/, or a TFDS data_dir holding '
    f'omniglot/{TFDS_VERSION}/'
  )


def _resolve_source(
  source: _PathLike, source_kind: str | None, download: bool
) -> tuple[pathlib.Path, str]:
  """Validates ``source`` (cheaply) and returns it with its kind."""
  if source_kind is not None and source_kind not in SOURCE_KINDS:
    raise ValueError(f'source_kind must be one of {SOURCE_KINDS} or None, got {source_kind!r}.')
  if not isinstance(download, bool):
    raise ValueError(f'download must be a bool, got {download!r}.')
  if download and source_kind not in (None, 'tfds'):
    raise ValueError(
      f"download=True only applies to source_kind='tfds' (TFDS downloads and "
      f'prepares the data); got source_kind={source_kind!r}.'
    )
  path = pathlib.Path(source).expanduser()
  if download:
    return path, 'tfds'
  if not path.exists():
    raise FileNotFoundError(
      f'Omniglot source {path} does not exist; expected a directory holding '
      f'{_expected_files(source_kind, path)}.'
    )
  if not path.is_dir():
    raise NotADirectoryError(
      f'Omniglot source {path} is not a directory; expected a directory holding '
      f'{_expected_files(source_kind, path)}.'
    )
  kind = source_kind or _detect_kind(path)
  if kind is None:
    hint = ''
    if (path / 'omniglot' / 'images_background.zip').exists():
      hint = f' (the zips are in {path / "omniglot"}: pass that directory)'
    raise FileNotFoundError(
      f'No Omniglot data in {path}: expected {_expected_files(None, path)}{hint}.'
    )
  if kind == 'tfds':
    version_dir = path / 'omniglot' / TFDS_VERSION
    if not version_dir.is_dir():
      found = _tfds_versions(path)
      raise FileNotFoundError(
        f'No TFDS Omniglot version {TFDS_VERSION} in {path}: expected {version_dir}/ '
        f'(found versions {found or "none"}); pass download=True to let TFDS build it.'
      )
    for split in ('train', 'test'):
      if not list(version_dir.glob(f'omniglot-{split}.array_record-*')):
        other = sorted(p.name for p in version_dir.glob(f'omniglot-{split}.*'))
        raise FileNotFoundError(
          f'{version_dir} has no array_record shards for split {split!r} (found '
          f'{other or "none"}); this loader reads TFDS data prepared with '
          "file_format='array_record'."
        )
  else:
    suffix = '.zip' if kind == 'zip' else ''
    for subset in _SUBSETS:
      expected = path / f'{subset}{suffix}'
      if not (expected.is_file() if kind == 'zip' else expected.is_dir()):
        raise FileNotFoundError(
          f'Omniglot {kind} source {path} lacks {expected}; expected {_expected_files(kind, path)}.'
        )
  return path, kind


# ----------------------------------------------------------------------------
# Source fingerprints (the cache key).


def _hash_file(digest, path: pathlib.Path) -> None:
  digest.update(f'{path.name}:{path.stat().st_size}\n'.encode())
  with open(path, 'rb') as f:
    while chunk := f.read(_HASH_CHUNK):
      digest.update(chunk)


def _fingerprint(path: pathlib.Path, kind: str) -> str:
  """A hash of the source: contents of zips and TFDS files, names and sizes of folders."""
  digest = hashlib.sha256(f'{kind}\n'.encode())
  if kind == 'zip':
    for subset in _SUBSETS:
      _hash_file(digest, path / f'{subset}.zip')
  elif kind == 'tfds':
    version_dir = path / 'omniglot' / TFDS_VERSION
    for file in sorted(version_dir.iterdir()):
      if file.is_file():
        _hash_file(digest, file)
  else:  # Hashing 32,460 small files would take seconds: names and sizes only.
    for subset in _SUBSETS:
      for root, dirs, files in os.walk(path / subset):
        dirs.sort()
        rel = os.path.relpath(root, path)
        for name in sorted(files):
          digest.update(f'{rel}/{name}:{os.path.getsize(os.path.join(root, name))}\n'.encode())
  return digest.hexdigest()


# ----------------------------------------------------------------------------
# Reading the sources into PNG bytes (fast; no decoding yet).


def _parse_names(names: Sequence[str], where: str) -> list[tuple[str, str, int, int]]:
  """``(name, alphabet, character id, drawer)`` of each image; other files are ignored."""
  rows = []
  for name in names:
    if not name.endswith('.png') or '__MACOSX' in name or '/.' in name:
      continue
    match = _IMAGE_PATH.match(name)
    if match is None:
      raise ValueError(
        f'{where}: unexpected image {name!r}; expected '
        "'images_{background,evaluation}/<Alphabet>/characterNN/NNNN_DD.png'."
      )
    _, alphabet, _, character_id, drawer = match.groups()
    rows.append((name, alphabet, int(character_id), int(drawer)))
  return rows


def _read_zip(path: pathlib.Path) -> list[_Drawing]:
  drawings = []
  for subset in _SUBSETS:
    zip_path = path / f'{subset}.zip'
    try:
      with zipfile.ZipFile(zip_path) as archive:
        rows = _parse_names(archive.namelist(), str(zip_path))
        if not rows or any(not name.startswith(subset + '/') for name, *_ in rows):
          raise ValueError(
            f'{zip_path}: expected its images under {subset}/, found '
            f'{len(rows)} images, e.g. {[r[0] for r in rows[:2]]}.'
          )
        for name, alphabet, character_id, drawer in rows:
          drawings.append(_Drawing(character_id, alphabet, drawer, archive.read(name)))
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
      raise ValueError(f'{zip_path} is not a readable zip (truncated or corrupted?): {e}') from e
  return drawings


def _read_folder(path: pathlib.Path) -> list[_Drawing]:
  names = []
  for subset in _SUBSETS:
    for root, dirs, files in os.walk(path / subset):
      dirs.sort()
      rel = pathlib.Path(os.path.relpath(root, path)).as_posix()
      names.extend(f'{rel}/{name}' for name in sorted(files))
  drawings = []
  for name, alphabet, character_id, drawer in _parse_names(names, str(path)):
    drawings.append(_Drawing(character_id, alphabet, drawer, (path / name).read_bytes()))
  return drawings


def _key_hash(salt, key: str) -> int:
  """TFDS's shuffling hash of an example key (``tfds.core.hashing.Hasher``)."""
  digest = salt.copy()
  digest.update(key.encode('utf-8'))
  return int(digest.hexdigest(), 16)


def _tfds_drawers(
  split: str,
  alphabets: Sequence[str],
  alphabet_char_ids: Sequence[int],
  labels: Sequence[int],
  where: str,
) -> list[int]:
  """Recovers the drawer (1..20) of each record of a TFDS split from the record order.

  TFDS's omniglot builder yields each image under the key
  ``f'{alphabet}_{alphabet_char_id}_{file name}'`` and writes a split sorted by
  ``md5(split + key)``. So the k-th record of a character in file order is the
  drawer whose key has the k-th smallest hash.
  """
  salt = hashlib.md5(split.encode('utf-8'))
  positions: dict[int, list[int]] = {}
  for i, label in enumerate(labels):
    positions.setdefault(label, []).append(i)
  drawers = [0] * len(labels)
  hashes = [0] * len(labels)
  for label, where_in_file in positions.items():
    if len(where_in_file) != NUM_DRAWERS:
      raise ValueError(
        f'{where}: character {label + 1} has {len(where_in_file)} records in split '
        f'{split!r}, expected {NUM_DRAWERS}.'
      )
    first = where_in_file[0]
    prefix = f'{alphabets[first]}_{alphabet_char_ids[first]}_{label + 1:04d}_'
    by_hash = sorted(
      (_key_hash(salt, f'{prefix}{d:02d}.png'), d) for d in range(1, NUM_DRAWERS + 1)
    )
    for i, (key_hash, drawer) in zip(where_in_file, by_hash):
      drawers[i], hashes[i] = drawer, key_hash
  if any(a >= b for a, b in zip(hashes, hashes[1:])):
    raise ValueError(
      f'{where}: the records of split {split!r} are not in TFDS key-hash order, so '
      'their drawers cannot be recovered (was the data set built with '
      'disable_shuffling or a different builder?). Use the zip or folder source.'
    )
  return drawers


def _tfds():
  """``tensorflow_datasets``, imported when first needed."""
  return extras.import_optional('tensorflow_datasets', purpose='The TFDS Omniglot source')


def _read_tfds(path: pathlib.Path, download: bool) -> list[_Drawing]:
  tfds = _tfds()

  drawings = []
  for split in _SUBSETS.values():
    source = tfds.data_source(
      f'omniglot:{TFDS_VERSION}',
      data_dir=str(path),
      split=split,
      download=download,
      decoders={'image': tfds.decode.SkipDecoding()},
    )
    alphabet_names = source.dataset_info.features['alphabet'].names
    records = source.__getitems__(list(range(len(source))))
    alphabets = [alphabet_names[r['alphabet']] for r in records]
    alphabet_char_ids = [int(r['alphabet_char_id']) for r in records]
    labels = [int(r['label']) for r in records]
    where = str(path / 'omniglot' / TFDS_VERSION)
    drawers = _tfds_drawers(split, alphabets, alphabet_char_ids, labels, where)
    for record, alphabet, label, drawer in zip(records, alphabets, labels, drawers):
      drawings.append(_Drawing(label + 1, alphabet, drawer, bytes(record['image'])))
  return drawings


def _check_drawings(drawings: Sequence[_Drawing], where: str) -> list[_Drawing]:
  """Checks that every character 1..1623 has drawers 1..20; returns them sorted."""
  alphabet_of: dict[int, str] = {}
  drawers_of: dict[int, set[int]] = {}
  for d in drawings:
    if alphabet_of.setdefault(d.character_id, d.alphabet) != d.alphabet:
      raise ValueError(
        f'{where}: character {d.character_id} appears in alphabets '
        f'{alphabet_of[d.character_id]!r} and {d.alphabet!r}.'
      )
    drawers_of.setdefault(d.character_id, set()).add(d.drawer)
  expected_ids = set(range(1, NUM_CHARACTERS + 1))
  if set(drawers_of) != expected_ids:
    missing = sorted(expected_ids - set(drawers_of))
    extra = sorted(set(drawers_of) - expected_ids)
    raise ValueError(
      f'{where}: expected characters 1..{NUM_CHARACTERS}; missing {missing[:10]}'
      f'{"..." if len(missing) > 10 else ""} ({len(missing)}), unexpected {extra[:10]}.'
    )
  expected_drawers = set(range(1, NUM_DRAWERS + 1))
  for character_id, drawers in drawers_of.items():
    if drawers != expected_drawers:
      raise ValueError(
        f'{where}: character {character_id} has drawers {sorted(drawers)}, '
        f'expected 1..{NUM_DRAWERS}.'
      )
  if len(drawings) != NUM_CHARACTERS * NUM_DRAWERS:
    raise ValueError(
      f'{where}: {len(drawings)} images, expected {NUM_CHARACTERS * NUM_DRAWERS} '
      '(some appear twice).'
    )
  return sorted(drawings, key=lambda d: (d.character_id, d.drawer))


# ----------------------------------------------------------------------------
# Preprocessing.

# PIL decodes the 1-bit PNGs to {0, 255}; images stored as 0/1 decode to {0, 1}.
# Either way, ink is the dark half: these tables binarise and invert (ink -> 255).
_INK_TABLES = {
  white: np.array([255 if 2 * v < white else 0 for v in range(256)], np.uint8) for white in (1, 255)
}


def _pillow(module: str = 'PIL.Image'):
  """``PIL.Image`` (or ``PIL``), imported when first needed."""
  return extras.import_optional(module, purpose='Reading Omniglot images')


def _preprocess_png(png: bytes, image_size: int) -> np.ndarray:
  """Decodes one Omniglot PNG to uint8 ``[image_size, image_size]``, ink 255."""
  pil_image = _pillow()
  with pil_image.open(io.BytesIO(png)) as image:
    if image.size != (ORIGINAL_SIZE, ORIGINAL_SIZE):
      raise ValueError(f'expected a {ORIGINAL_SIZE}x{ORIGINAL_SIZE} image, got {image.size}')
    gray = image.convert('L')
  pixels = np.asarray(gray)
  ink = _INK_TABLES[1 if pixels.max() <= 1 else 255][pixels]
  if image_size == ORIGINAL_SIZE:
    return ink
  resized = pil_image.fromarray(ink).resize((image_size, image_size), pil_image.Resampling.LANCZOS)
  return np.asarray(resized)


def _preprocess_all(
  pngs: Sequence[bytes], image_size: int, name: Callable[[int], str]
) -> np.ndarray:
  """``[len(pngs), image_size, image_size]`` uint8; errors name the image."""
  images = np.empty([len(pngs), image_size, image_size], np.uint8)
  for i, png in enumerate(pngs):
    try:
      images[i] = _preprocess_png(png, image_size)
    except (OSError, ValueError, SyntaxError) as e:  # PIL's errors for bad images.
      raise ValueError(f'Cannot decode {name(i)}: {e}') from e
  return images


def _build(drawings: Sequence[_Drawing], image_size: int, where: str) -> Omniglot:
  drawings = _check_drawings(drawings, where)
  images = _preprocess_all(
    [d.png for d in drawings],
    image_size,
    lambda i: f'character {drawings[i].character_id} drawer {drawings[i].drawer} in {where}',
  )
  firsts = drawings[::NUM_DRAWERS]
  return Omniglot(
    images=images.reshape(NUM_CHARACTERS, NUM_DRAWERS, image_size, image_size),
    alphabets=np.array([d.alphabet for d in firsts]),
    character_ids=np.array([d.character_id for d in firsts], np.int32),
  )


# ----------------------------------------------------------------------------
# The cache.


def _cache_path(
  cache_dir: pathlib.Path, kind: str, fingerprint: str, image_size: int
) -> pathlib.Path:
  options = json.dumps(
    {
      'format': _CACHE_FORMAT,
      'image_size': image_size,
      'resample': 'lanczos',
      'pillow': _pillow('PIL').__version__,
      'source': fingerprint,
    },
    sort_keys=True,
  )
  key = hashlib.sha256(options.encode()).hexdigest()[:24]
  return cache_dir / f'omniglot-{kind}-{image_size}px-{key}.npz'


def _save_cache(path: pathlib.Path, data: Omniglot) -> None:
  """Writes ``data`` to ``path`` atomically (a temporary file, then ``os.replace``),
  then its checksum sidecar (``jaxmaml.data.cache.record_checksum``)."""
  atomic_write(path, lambda f: np.savez_compressed(f, **data._asdict()))
  cache_lib.record_checksum(path, data._asdict())


def _load_cache(path: pathlib.Path, image_size: int) -> Omniglot | None:
  """The cached arrays, checked against their checksum; None if there are none.

  Raises:
    ValueError: if the file is unreadable, does not match its checksum, or
      holds images of another shape, naming it and saying to delete it.
  """
  if not path.is_file():
    return None
  try:
    with np.load(path, allow_pickle=False) as f:
      data = Omniglot(**{field: f[field] for field in Omniglot._fields})
  except (OSError, ValueError, KeyError, zipfile.BadZipFile, zlib.error, EOFError) as e:
    raise cache_lib.unreadable(path, e) from None
  cache_lib.check_entry(path, data._asdict())
  expected = (NUM_CHARACTERS, NUM_DRAWERS, image_size, image_size)
  if data.images.shape != expected:
    raise ValueError(
      f'The Omniglot cache {path} holds images of shape {data.images.shape}, expected '
      f'{expected}; it is not used (nor overwritten). Delete {path} and '
      f'{cache_lib.checksum_path(path)} to rebuild it.'
    )
  return data


# ----------------------------------------------------------------------------
# Public API.


def load_omniglot(
  source: _PathLike,
  *,
  image_size: int = 28,
  source_kind: str | None = None,
  cache_dir: _PathLike | None = None,
  download: bool = False,
) -> Omniglot:
  """Loads all 1,623 Omniglot characters x 20 drawers, preprocessed and cached.

  ``source`` is one of:

  - ``'zip'``: a directory holding ``images_background.zip`` and
    ``images_evaluation.zip`` (the official files, or re-zipped copies with the
    same layout ``images_background/<Alphabet>/characterNN/NNNN_DD.png``);
  - ``'folder'``: a directory holding the extracted ``images_background/`` and
    ``images_evaluation/``;
  - ``'tfds'``: a TensorFlow Datasets ``data_dir`` holding
    ``omniglot/3.0.0/`` prepared with ``file_format='array_record'``. Reading it
    needs ``tensorflow_datasets`` but not TensorFlow.

  The kind is detected (zips, then folders, then TFDS) unless ``source_kind``
  names it. All three give identical arrays (``images``, ``alphabets`` and
  ``character_ids``), in the canonical order of the module docstring.

  Preprocessing: each PNG is decoded to 8-bit gray, binarised and inverted so
  that ink is 255 and background 0, then resized from 105x105 to
  ``image_size`` with PIL's Lanczos filter (antialiased, so stroke edges take
  intermediate values). This is the MAML resize script's stated filter; note
  that the script applied it to the 1-bit image, for which Pillow silently
  uses nearest-neighbour instead, so the MAML files were binary.

  The arrays are computed once per source and ``image_size`` and cached in
  ``cache_dir`` as a compressed ``.npz`` (6.6 MB at 28x28, 5.8 MB at
  105x105), keyed by a hash of the source (contents of the zips or TFDS files;
  names and sizes of the folder's files), the options and the Pillow version;
  the file is written to a temporary name and moved into place, so a crash
  never leaves a partial cache, and a checksum sidecar (sha256 of each array,
  ``jaxmaml.data.cache``) is written after it and checked on every load: an
  entry that does not match raises ``ValueError`` naming its files (delete
  them to rebuild), one from before checksums is accepted with a warning and
  its checksum recorded. Measured on a shared 2-core CPU: the first
  load takes 10 to 14 s from any of the three sources (TFDS includes about 2 s
  to import tensorflow_datasets and 3 s to read its records); a cached load
  takes 0.12 to 0.15 s at 28x28 (hashing the source included; checking the
  25 MB of images against their checksum adds about 0.02 s) and 1.0 s at
  105x105 (the checksum of its 358 MB adds about 0.25 s).

  Args:
    source: the directory described above.
    image_size: the side of the output images, in ``[1, 105]``; 105 keeps the
      original resolution (then the images are exactly binary).
    source_kind: ``'zip'``, ``'folder'``, ``'tfds'``, or None to detect it.
    cache_dir: where to cache the arrays; None means ``$JAXMAML_CACHE`` or
      ``~/.cache/jaxmaml``. It must be writable when the arrays are not
      cached yet (checked before any image is decoded).
    download: TFDS only: let TFDS download and prepare ``omniglot:3.0.0`` into
      ``source`` if it is not there. Preparing TFDS data needs TensorFlow
      (reading it does not); the zip and folder sources never need it.

  Returns:
    An ``Omniglot(images, alphabets, character_ids)`` with ``images`` uint8
    ``[1623, 20, image_size, image_size]``, ``alphabets`` str ``[1623]`` and
    ``character_ids`` int32 ``[1623]`` (= ``1..1623``).

  Raises:
    ValueError: for a bad argument, a corrupted or truncated zip, an image that
      does not decode, a source whose files do not form the full data set, or
      a cache entry that is unreadable or does not match its checksum.
    OSError: if the arrays must be built and ``cache_dir`` is not writable,
      before anything is decoded.
    FileNotFoundError: if ``source`` does not exist or holds none of the
      expected files, or holds TFDS Omniglot only in another version.
    ImportError: without Pillow, or tensorflow-datasets for the TFDS source
      (both optional: ``pip install 'jaxmaml[data]'``).
  """
  _check_image_size(image_size)
  image_size = int(image_size)
  path, kind = _resolve_source(source, source_kind, download)
  if download and not (path / 'omniglot' / TFDS_VERSION).is_dir():
    _prepare_tfds(path)
  cache_dir = cache_lib.cache_dir_or_default(cache_dir)
  cache = _cache_path(cache_dir, kind, _fingerprint(path, kind), image_size)
  data = _load_cache(cache, image_size)
  if data is not None:
    return data
  cache_lib.check_writable(cache_dir, 'Omniglot')
  if kind == 'zip':
    drawings = _read_zip(path)
  elif kind == 'folder':
    drawings = _read_folder(path)
  else:
    drawings = _read_tfds(path, download=False)
  data = _build(drawings, image_size, str(path))
  _save_cache(cache, data)
  return data


def _prepare_tfds(path: pathlib.Path) -> None:
  """Lets TFDS download and prepare ``omniglot:3.0.0`` in ``path`` (needs TensorFlow)."""
  tfds = _tfds()

  builder = tfds.builder(f'omniglot:{TFDS_VERSION}', data_dir=str(path), file_format='array_record')
  builder.download_and_prepare()


def split_characters(
  num_characters: int = NUM_CHARACTERS,
  *,
  num_train: int = 1100,
  num_val: int = 100,
  seed: int = 1,
) -> dict[str, np.ndarray]:
  """Splits character indices into meta-train, meta-validation and meta-test.

  This is the MAML protocol (``data_generator.py`` in cbfinn/maml):
  ``random.seed(1); random.shuffle(character_folders)``, then the first 1,100
  characters for training, the next 100 for validation and the remaining 423
  for testing, mixing background and evaluation alphabets. The original listed
  the folders with ``os.listdir``, i.e. in file-system order, so its exact
  split cannot be reproduced; here the characters are shuffled in canonical
  order (by character id) with ``random.Random(seed).shuffle``, the same
  shuffle as the original's, so the split is deterministic. The seed is a
  plain int, not a JAX key, to keep that correspondence.

  Args:
    num_characters: how many characters to split (indices ``0..n-1`` into
      ``Omniglot.images``).
    num_train: characters for meta-training.
    num_val: characters for meta-validation; the rest are for meta-testing.
    seed: the seed of the shuffle.

  Returns:
    ``{'train': [num_train], 'val': [num_val], 'test': [num_characters -
    num_train - num_val]}``, int32 index arrays, disjoint, covering
    ``0..num_characters-1``, each in shuffled order.

  Examples:
    >>> from jaxmaml.data import omniglot
    >>> splits = omniglot.split_characters()
    >>> {name: len(indices) for name, indices in splits.items()}
    {'train': 1100, 'val': 100, 'test': 423}
  """
  checks.positive_int(num_characters, 'num_characters')
  checks.int_at_least(num_train, 'num_train', 0)
  checks.int_at_least(num_val, 'num_val', 0)
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
    raise ValueError(f'seed must be an int, got {seed!r}.')
  if num_train + num_val > num_characters:
    raise ValueError(
      f'num_train + num_val = {num_train} + {num_val} = {num_train + num_val} '
      f'exceeds num_characters = {num_characters}.'
    )
  order = list(range(num_characters))
  random.Random(int(seed)).shuffle(order)
  order = np.asarray(order, np.int32)
  return {
    'train': order[:num_train],
    'val': order[num_train : num_train + num_val],
    'test': order[num_train + num_val :],
  }


def load_lake_runs(path: _PathLike, *, image_size: int = 28) -> LakeRuns:
  """Loads Lake et al.'s 20 runs of 20-way one-shot classification.

  ``path`` is the official ``all_runs.zip`` (from
  ``brendenlake/omniglot/python/one-shot-classification``), holding
  ``runNN/training/classKK.png`` (one drawing of each of 20 evaluation
  characters), ``runNN/test/itemJJ.png`` (another drawing of each, shuffled)
  and ``runNN/class_labels.txt`` (lines ``runNN/test/itemJJ.png
  runNN/training/classKK.png``). Images are preprocessed as in
  ``load_omniglot`` (ink 255, Lanczos resize); this takes about 0.2 s and is
  not cached.

  Args:
    path: the ``all_runs.zip`` file.
    image_size: the side of the output images, in ``[1, 105]``.

  Returns:
    ``LakeRuns(train_images, test_images, labels)``: uint8
    ``[20, 20, image_size, image_size]`` twice and int32 ``[20, 20]``.

  Raises:
    FileNotFoundError: if ``path`` does not exist.
    ValueError: for a bad ``image_size``, or a file that is not a readable zip
      with the layout above.
    ImportError: without Pillow (optional: ``pip install 'jaxmaml[data]'``).
  """
  _check_image_size(image_size)
  image_size = int(image_size)
  path = pathlib.Path(path).expanduser()
  if not path.is_file():
    raise FileNotFoundError(
      f'Lake runs file {path} does not exist (or is not a file); expected all_runs.zip '
      'with run01..run20/{training,test}/*.png and class_labels.txt.'
    )
  pngs, labels = [], np.zeros([NUM_LAKE_RUNS, LAKE_WAYS], np.int32)
  try:
    with zipfile.ZipFile(path) as archive:
      members = set(archive.namelist())
      names = [
        f'run{r:02d}/{part}/{stem}{i:02d}.png'
        for r in range(1, NUM_LAKE_RUNS + 1)
        for part, stem in (('training', 'class'), ('test', 'item'))
        for i in range(1, LAKE_WAYS + 1)
      ]
      missing = [n for n in names if n not in members]
      if missing:
        raise ValueError(f'{path}: missing {len(missing)} images, e.g. {missing[:3]}.')
      for r in range(1, NUM_LAKE_RUNS + 1):
        labels[r - 1] = _parse_class_labels(archive, path, r)
      pngs = [archive.read(n) for n in names]
  except (zipfile.BadZipFile, zlib.error, EOFError, OSError, KeyError) as e:
    raise ValueError(f'{path} is not a readable zip (truncated or corrupted?): {e}') from e
  images = _preprocess_all(pngs, image_size, lambda i: f'{names[i]} in {path}')
  images = images.reshape(NUM_LAKE_RUNS, 2, LAKE_WAYS, image_size, image_size)
  return LakeRuns(train_images=images[:, 0], test_images=images[:, 1], labels=labels)


def _parse_class_labels(archive: zipfile.ZipFile, path: pathlib.Path, run: int) -> np.ndarray:
  """Row ``[20]`` of ``LakeRuns.labels`` from ``runNN/class_labels.txt``."""
  name = f'run{run:02d}/class_labels.txt'
  lines = archive.read(name).decode('utf-8').split()
  pattern = re.compile(rf'run{run:02d}/test/item(\d\d)\.png run{run:02d}/training/class(\d\d)\.png')
  pairs = [pattern.fullmatch(f'{a} {b}') for a, b in zip(lines[::2], lines[1::2])]
  if len(lines) != 2 * LAKE_WAYS or not all(pairs):
    raise ValueError(
      f'{path}: {name} should have {LAKE_WAYS} lines '
      f"'run{run:02d}/test/itemJJ.png run{run:02d}/training/classKK.png'."
    )
  row = np.full([LAKE_WAYS], -1, np.int32)
  for match in pairs:
    assert match is not None  # Every line matched, checked above.
    row[int(match.group(1)) - 1] = int(match.group(2)) - 1
  if sorted(row.tolist()) != list(range(LAKE_WAYS)):
    raise ValueError(
      f'{path}: {name} does not match the 20 test items to the 20 classes one to one.'
    )
  return row
