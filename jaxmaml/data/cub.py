"""CUB-200-2011 (Wah et al., 2011) with the few-shot 100 / 50 / 50 class split.

Caltech-UCSD Birds-200-2011 has 200 bird species, each with its own number of
photographs of varying size. The few-shot literature (Hilliard et al., 2018;
Chen et al., "A Closer Look at Few-shot Classification", 2019) splits the
species 100 / 50 / 50; the split ships as ``jaxmaml/data/manifests/cub.json``
with the archive's md5, citing their source (``jaxmaml.data.manifest``).

``root`` holds one of (the first found is used, or the one ``source_kind``
names):

- ``'folder'``: ``CUB_200_2011/`` as the archive extracts (or ``root`` is that
  folder), with ``images.txt`` (``<id> <class>/<file>.jpg`` per line) and
  ``images/<class>/<file>.jpg``. No per-file checksums are published: the
  images ``images.txt`` lists for the split must all be present;
- ``'archive'``: ``CUB_200_2011.tgz``, whose published md5 is checked (once
  per file version); the split's images are read from it in one pass,
  without extracting.

``load_cub(root, split)`` returns a ``CUBSplit``. Classes have unequal sizes,
so ``images`` is padded: uint8 ``[num_classes, max_count, s, s, 3]``, class
``c``'s images in ``images[c, :counts[c]]`` and zeros after. Nothing is
truncated. The samplers of ``jaxmaml.data.episodes`` take ``counts=`` and
draw only within them. Classes are in the manifest's order (by species
number); a class's images in order of file name. Each photograph is
converted to RGB and resized to ``s x s`` (``image_size``, default 84) with
PIL's Lanczos filter, aspect ratio not kept (no crop, no bounding box). The
split is cached as a ``.npy`` file (with a JSON sidecar for ``counts`` and
``classes``, and a checksum checked on every load: ``jaxmaml.data.cache``)
and loaded memory-mapped.

Usage::

  from jaxmaml.data import cub, episodes
  train = cub.load_cub('DIR', 'train')  # images [100, max_count, 84, 84, 3], counts [100]
  tasks = next(episodes.host_episodes(0, train.images, 4, num_ways=5, num_shots=1,
                                      num_queries=15, rotate=False, counts=train.counts))
"""

import collections
import os
import pathlib
import tarfile
from typing import NamedTuple

import numpy as np

from jaxmaml.data import cache as cache_lib
from jaxmaml.data import manifest as manifest_lib

SPLITS = ('train', 'val', 'test')
SOURCE_KINDS = ('folder', 'archive')
ARCHIVE = 'CUB_200_2011.tgz'
FOLDER = 'CUB_200_2011'
_CACHE_FORMAT = 1
_PURPOSE = 'Reading CUB-200-2011 images'


class CUBSplit(NamedTuple):
  """One split of CUB-200-2011.

  Attributes:
    images: uint8 ``[num_classes, max_count, image_size, image_size, 3]``,
      zero-padded after each class's ``counts[c]`` images (may be a read-only
      memory map).
    counts: int64 ``[num_classes]``, the images of each class.
    classes: the class folder names (``'001.Black_footed_Albatross'``, ...),
      in the order of ``images``.
  """

  images: np.ndarray
  counts: np.ndarray
  classes: tuple[str, ...]


def split_classes(split: str) -> tuple[str, ...]:
  """The classes of ``split`` in the manifest's order (no data needed)."""
  if split not in SPLITS:
    raise ValueError(f'split must be one of {SPLITS}, got {split!r}.')
  return tuple(manifest_lib.load('cub')['splits'][split])


def _parse_images_txt(text: str, where: str) -> dict[str, list[str]]:
  """``{class: [file name, ...]}`` from ``images.txt``, files sorted by name."""
  by_class: dict[str, list[str]] = collections.defaultdict(list)
  for line_number, line in enumerate(text.splitlines(), start=1):
    if not line.strip():
      continue
    parts = line.split()
    if len(parts) != 2 or parts[1].count('/') != 1:
      raise ValueError(
        f'{where}, line {line_number}: expected "<id> <class>/<file>", got {line!r}.'
      )
    klass, name = parts[1].split('/')
    by_class[klass].append(name)
  return {k: sorted(v) for k, v in by_class.items()}


def _listing(by_class: dict[str, list[str]], classes: tuple[str, ...], where: str):
  missing = [c for c in classes if c not in by_class]
  if missing:
    raise ValueError(
      f'{where} lists no images of {len(missing)} class(es) of the split, e.g. {missing[:3]}.'
    )
  return [by_class[c] for c in classes]


def _resolve(root: pathlib.Path, source_kind: str | None, entry: dict):
  folder = root if (root / 'images.txt').is_file() else root / FOLDER
  found = {'folder': (folder / 'images.txt').is_file(), 'archive': (root / ARCHIVE).is_file()}
  kind = source_kind or next((k for k in SOURCE_KINDS if found[k]), None)
  if kind is None:
    raise FileNotFoundError(
      f'CUB-200-2011: neither {root / FOLDER / "images.txt"} (the extracted folder) nor '
      f'{root / ARCHIVE} found. Get {ARCHIVE} from {manifest_lib.where_to_get(entry)} '
      '(see docs/datasets.md).'
    )
  if kind == 'archive':
    return kind, manifest_lib.require(root / ARCHIVE, entry, 'CUB-200-2011')
  if not (folder / 'images.txt').is_file():
    raise FileNotFoundError(
      f'CUB-200-2011: {folder / "images.txt"} not found (the folder {ARCHIVE} extracts to; '
      f'get it from {manifest_lib.where_to_get(entry)}).'
    )
  return kind, folder


def load_cub(
  root: str | os.PathLike,
  split: str,
  *,
  image_size: int = 84,
  source_kind: str | None = None,
  cache_dir: str | os.PathLike | None = None,
) -> CUBSplit:
  """Loads one split of CUB-200-2011 (100 / 50 / 50 classes) as a padded uint8 array.

  Args:
    root: the folder holding ``CUB_200_2011/`` or ``CUB_200_2011.tgz``.
    split: ``'train'``, ``'val'`` or ``'test'``.
    image_size: images are resized to ``image_size x image_size``.
    source_kind: ``'folder'``, ``'archive'``, or None for the first found.
    cache_dir: where the split and the checksum verification are cached
      (default ``$JAXMAML_CACHE`` or ``~/.cache/jaxmaml``).

  Returns:
    A ``CUBSplit``: ``images [classes, max_count, s, s, 3]``, ``counts [classes]``.

  Raises:
    ValueError, TypeError: for a bad ``split``, ``image_size`` or
      ``source_kind`` (before any work), an archive whose md5 is not the
      published one, an ``images.txt`` without the split's classes, or
      a cached split that does not match its checksum (naming its files;
      ``jaxmaml.data.cache``).
    FileNotFoundError: if ``root`` is not a directory, or the archive, the
      folder's ``images.txt`` or a listed image is missing (naming it and
      where to get the data), before anything is decoded.
    OSError: if the split must be built and ``cache_dir`` is not writable,
      before anything is hashed or decoded (a cached split is read from a
      read-only ``cache_dir``).
    ImportError: without Pillow (optional: ``pip install 'jaxmaml[data]'``).
  """
  root = manifest_lib.check_arguments(
    root,
    split,
    image_size,
    source_kind,
    dataset='CUB-200-2011',
    splits=SPLITS,
    kinds=SOURCE_KINDS,
  )
  spec = manifest_lib.load('cub')
  classes = tuple(spec['splits'][split])
  entry = manifest_lib.file_entry(spec, ARCHIVE)
  kind, path = _resolve(root, source_kind, entry)
  cache_dir = cache_lib.cache_dir_or_default(cache_dir)
  if kind == 'archive':
    source = entry.get('md5')
    listing = None
  else:
    listing = _listing(
      _parse_images_txt((path / 'images.txt').read_text(), str(path / 'images.txt')),
      classes,
      str(path / 'images.txt'),
    )
    files = [path / 'images' / c / n for c, names in zip(classes, listing) for n in names]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
      raise FileNotFoundError(
        f'CUB-200-2011: {len(missing)} image(s) listed in images.txt are missing, e.g. '
        f'{missing[:3]} (get the data from {manifest_lib.where_to_get(entry)}).'
      )
    source = [[str(f.relative_to(path)), f.stat().st_size] for f in files]

  key = manifest_lib.fingerprint(
    {
      'format': _CACHE_FORMAT,
      'kind': kind,
      'source': source,
      'classes': classes,
      'image_size': image_size,
    }
  )
  cache = cache_dir / f'cub-{split}-{image_size}px-{key}.npy'
  cached = manifest_lib.read_cached(cache)
  if cached is None:  # Before hashing the archive for nothing.
    cache_lib.check_writable(cache_dir, 'CUB-200-2011')
  if kind == 'archive':
    manifest_lib.verify(path, entry, cache_dir)
  if cached is None:
    if kind == 'archive':
      listing, data = _read_archive(path, classes)
      groups = [[data[(c, n)] for n in names] for c, names in zip(classes, listing)]
    else:  # Read one image at a time.
      assert listing is not None
      groups = [[path / 'images' / c / n for n in names] for c, names in zip(classes, listing)]
    counts = [len(names) for names in listing]
    decode = lambda item: manifest_lib.decode_image(
      item if isinstance(item, bytes) else item.read_bytes(), image_size, _PURPOSE
    )
    manifest_lib.write_class_blocks(
      cache,
      (len(classes), max(counts), image_size, image_size, 3),
      manifest_lib.padded_blocks(groups, max(counts), decode, (image_size, image_size, 3)),
      {'classes': list(classes), 'counts': counts},
    )
    cached = manifest_lib.read_cached(cache)
    assert cached is not None
  images, meta = cached
  return CUBSplit(images, np.asarray(meta['counts'], np.int64), tuple(meta['classes']))


def _read_archive(path: pathlib.Path, classes: tuple[str, ...]):
  """``(listing, {(class, file): bytes})`` of the split's images, in one pass over ``path``."""
  wanted = set(classes)
  images_txt, data = None, {}
  with tarfile.open(path, 'r:gz') as tar:
    for info in tar:
      if not info.isfile():
        continue
      parts = info.name.split('/')
      if parts == [FOLDER, 'images.txt']:
        f = tar.extractfile(info)
        assert f is not None
        images_txt = f.read().decode()
      elif len(parts) == 4 and parts[:2] == [FOLDER, 'images'] and parts[2] in wanted:
        f = tar.extractfile(info)
        assert f is not None
        data[(parts[2], parts[3])] = f.read()
  where = f'{path}:{FOLDER}/images.txt'
  if images_txt is None:
    raise ValueError(f'{path} holds no {FOLDER}/images.txt.')
  listing = _listing(_parse_images_txt(images_txt, where), classes, where)
  missing = [f'{c}/{n}' for c, names in zip(classes, listing) for n in names if (c, n) not in data]
  if missing:
    raise ValueError(
      f'{path}: {len(missing)} image(s) listed in images.txt are not in the archive, '
      f'e.g. {missing[:3]}.'
    )
  return listing, data
