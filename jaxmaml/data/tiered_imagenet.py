"""tieredImageNet (Ren et al., 2018) in the layout its authors released.

tieredImageNet has 608 ILSVRC-2012 classes grouped in 34 superclasses (nodes
of the ImageNet hierarchy), split 20 / 6 / 8 superclasses, i.e. 351 / 97 / 160
classes, with 84x84 images and unequal numbers of images per class. The split
(the authors' ``tiered_imagenet_split/{train,val,test}.csv``: class synset,
superclass synset) and the archive's md5 ship as
``jaxmaml/data/manifests/tiered_imagenet.json``, citing their source
(``jaxmaml.data.manifest``).

The layout is the authors' release (renmengye/few-shot-ssl-public, its README
links ``tiered-imagenet.tar``, 12.9 GB), which torchmeta and learn2learn also
read: for each split,

- ``{split}_images_png.pkl``: a pickled list, one PNG-encoded 84x84 image per
  entry (a uint8 NumPy array of the PNG's bytes);
- ``{split}_labels.pkl``: a pickled dict with ``label_specific`` (the class
  index of each image), ``label_general`` (its superclass index),
  ``label_specific_str`` and ``label_general_str`` (the names of both).

``root`` holds one of (the first found is used, or the one ``source_kind``
names):

- ``'folder'``: those files in ``tiered-imagenet/`` (as the tar extracts) or
  in ``root`` itself. No checksums of them are published: they are checked
  for presence only;
- ``'archive'``: ``tiered-imagenet.tar``, whose md5 (as torchmeta publishes
  it) is checked once per file version; the split's two members are read
  from it without extracting.

The pickles are read with ``manifest.load_pickle`` (NumPy arrays and builtin
containers only). Reading a split holds its PNG pickle in memory (several GB
for train) while the array is written class by class to the cache.

``load_tiered_imagenet(root, split)`` returns a ``TieredImageNetSplit``. The
classes have unequal sizes, so ``images`` is padded: uint8 ``[num_classes,
max_count, s, s, 3]``, class ``c``'s images in ``images[c, :counts[c]]`` and
zeros after; nothing is truncated, and ``jaxmaml.data.episodes``' samplers
take ``counts=``. Classes are in label order (``label_specific`` 0, 1, ...),
their names ``label_specific_str`` as stored; a class's images in file order.
The PNGs are decoded with Pillow (RGB; the authors wrote them with OpenCV
from its BGR arrays, which stores RGB) and resized with Lanczos when
``image_size`` is not 84. The split must have the manifest's numbers of
classes and superclasses; where the class names are synsets (``n01530575``),
or ``root`` also holds the release's ``synsets.txt`` and ``class_names.txt``
(line i of one names line i of the other), the synsets are returned and
checked to be the manifest's.

Usage::

  from jaxmaml.data import tiered_imagenet
  train = tiered_imagenet.load_tiered_imagenet('DIR', 'train')
  train.images.shape, train.counts.shape  # (351, max_count, 84, 84, 3), (351,)
"""

import os
import pathlib
import re
import tarfile
from typing import IO, Any, NamedTuple

import numpy as np

from jaxmaml.data import cache as cache_lib
from jaxmaml.data import manifest as manifest_lib

SPLITS = ('train', 'val', 'test')
SOURCE_KINDS = ('folder', 'archive')
ARCHIVE = 'tiered-imagenet.tar'
FOLDER = 'tiered-imagenet'
_CACHE_FORMAT = 1
_PURPOSE = 'Decoding tieredImageNet images'
_SYNSET = re.compile(r'^n\d{8}$')


class TieredImageNetSplit(NamedTuple):
  """One split of tieredImageNet.

  Attributes:
    images: uint8 ``[num_classes, max_count, image_size, image_size, 3]``,
      zero-padded after each class's ``counts[c]`` images (may be a read-only
      memory map).
    counts: int64 ``[num_classes]``, the images of each class.
    classes: the class names (``label_specific_str``), in the order of ``images``.
    superclasses: each class's superclass name (``label_general_str``).
    synsets: each class's WordNet id where known (see the module docstring), else None.
  """

  images: np.ndarray
  counts: np.ndarray
  classes: tuple[str, ...]
  superclasses: tuple[str, ...]
  synsets: tuple[str, ...] | None


def _files(split: str) -> tuple[str, str]:
  return f'{split}_images_png.pkl', f'{split}_labels.pkl'


def _entry(spec: dict, name: str) -> dict:
  """A manifest-style entry for a member of the archive (no checksum is published)."""
  archive = manifest_lib.file_entry(spec, ARCHIVE)
  return {'name': f'{FOLDER}/{name}', 'url': f'{ARCHIVE} ({archive["url"]})'}


def _resolve(root: pathlib.Path, split: str, source_kind: str | None, spec: dict):
  names = _files(split)
  folder = root if (root / names[1]).is_file() else root / FOLDER
  found = {
    'folder': any((folder / n).is_file() for n in names),
    'archive': (root / ARCHIVE).is_file(),
  }
  kind = source_kind or next((k for k in SOURCE_KINDS if found[k]), None)
  entry = manifest_lib.file_entry(spec, ARCHIVE)
  if kind is None:
    raise FileNotFoundError(
      f'tieredImageNet: neither {folder / names[0]} and {folder / names[1]} (the extracted '
      f'release) nor {root / ARCHIVE} found. Get {ARCHIVE} from '
      f'{manifest_lib.where_to_get(entry)} (see docs/datasets.md).'
    )
  if kind == 'archive':
    return kind, manifest_lib.require(root / ARCHIVE, entry, 'tieredImageNet')
  for n in names:
    manifest_lib.require(folder / n, _entry(spec, n), 'tieredImageNet')
  return kind, folder


class _Opened:
  """The split's two pickles, from the folder or the (uncompressed) tar."""

  def __init__(self, kind: str, path: pathlib.Path):
    self.kind, self.path = kind, path
    self.tar = tarfile.open(path, 'r:') if kind == 'archive' else None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    if self.tar is not None:
      self.tar.close()

  def load(self, name: str) -> Any:
    if self.tar is None:
      with open(self.path / name, 'rb') as f:
        return manifest_lib.load_pickle(f, str(self.path / name))
    member = next(
      (m for m in self.tar.getmembers() if m.isfile() and m.name.split('/')[-1] == name), None
    )
    if member is None:
      raise ValueError(f'{self.path} holds no {FOLDER}/{name}.')
    f: IO[bytes] | None = self.tar.extractfile(member)
    assert f is not None
    return manifest_lib.load_pickle(f, f'{self.path}:{member.name}')


def _text(value: Any) -> str:
  return value.decode('latin1') if isinstance(value, bytes) else str(value)


def _synsets(root: pathlib.Path, names: list[str], allowed: set[str]) -> list[str] | None:
  """The synset of each class name, or None where they cannot all be found."""
  if all(_SYNSET.match(n) for n in names):
    return list(names)
  for folder in (root, root / FOLDER):
    synsets_txt, names_txt = folder / 'synsets.txt', folder / 'class_names.txt'
    if synsets_txt.is_file() and names_txt.is_file():
      synsets = synsets_txt.read_text().splitlines()
      words = names_txt.read_text().splitlines()
      by_name: dict[str, list[str]] = {}
      for synset, word in zip(synsets, words):
        if synset.strip() in allowed:
          by_name.setdefault(word.strip(), []).append(synset.strip())
      if all(len(by_name.get(n, [])) == 1 for n in names):
        return [by_name[n][0] for n in names]
      return None
  return None


def _check_labels(labels: dict, where: str) -> tuple[np.ndarray, np.ndarray, list, list]:
  labels = manifest_lib.as_str_keys(labels)
  keys = ('label_specific', 'label_general', 'label_specific_str', 'label_general_str')
  missing = [k for k in keys if k not in labels]
  if missing:
    raise ValueError(f'{where} has no {missing} (expected the keys {keys}).')
  specific = np.asarray(labels['label_specific']).astype(np.int64).ravel()
  general = np.asarray(labels['label_general']).astype(np.int64).ravel()
  names = [_text(n) for n in labels['label_specific_str']]
  general_names = [_text(n) for n in labels['label_general_str']]
  if specific.shape != general.shape:
    raise ValueError(f'{where}: label_specific and label_general differ in length.')
  if specific.size and (specific.min() < 0 or specific.max() >= len(names)):
    raise ValueError(f'{where}: label_specific outside 0..{len(names) - 1}.')
  return specific, general, names, general_names


def load_tiered_imagenet(
  root: str | os.PathLike,
  split: str,
  *,
  image_size: int = 84,
  source_kind: str | None = None,
  cache_dir: str | os.PathLike | None = None,
) -> TieredImageNetSplit:
  """Loads one split of tieredImageNet (351 / 97 / 160 classes) as a padded uint8 array.

  Args:
    root: the folder holding ``tiered-imagenet/`` (or the split's pickles
      directly) or ``tiered-imagenet.tar``.
    split: ``'train'``, ``'val'`` or ``'test'``.
    image_size: images are resized to ``image_size x image_size`` (84: as they are).
    source_kind: ``'folder'``, ``'archive'``, or None for the first found.
    cache_dir: where the split and the checksum verification are cached
      (default ``$JAXMAML_CACHE`` or ``~/.cache/jaxmaml``).

  Returns:
    A ``TieredImageNetSplit``: ``images [classes, max_count, s, s, 3]``,
    ``counts [classes]``.

  Raises:
    ValueError, TypeError: for a bad ``split``, ``image_size`` or
      ``source_kind`` (before any work), an archive whose md5 is not the
      published one, labels that do not match the images or the manifest's
      split, a pickle that holds anything but arrays and containers, or
      a cached split that does not match its checksum (naming its files;
      ``jaxmaml.data.cache``).
    FileNotFoundError: if ``root`` is not a directory or a file is missing
      (naming it and where to get it), before anything is decoded.
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
    dataset='tieredImageNet',
    splits=SPLITS,
    kinds=SOURCE_KINDS,
  )
  spec = manifest_lib.load('tiered_imagenet')
  expected = [tuple(pair) for pair in spec['splits'][split]]
  kind, path = _resolve(root, split, source_kind, spec)
  cache_dir = cache_lib.cache_dir_or_default(cache_dir)
  images_name, labels_name = _files(split)
  entry = manifest_lib.file_entry(spec, ARCHIVE)
  if kind == 'archive':
    source: Any = entry.get('md5')
  else:
    source = [
      [n, (path / n).stat().st_size, (path / n).stat().st_mtime_ns]
      for n in (images_name, labels_name)
    ]
  key = manifest_lib.fingerprint(
    {
      'format': _CACHE_FORMAT,
      'kind': kind,
      'source': source,
      'expected': expected,
      'image_size': image_size,
    }
  )
  cache = cache_dir / f'tiered_imagenet-{split}-{image_size}px-{key}.npy'
  cached = manifest_lib.read_cached(cache)
  if cached is None:  # Before hashing the archive for nothing.
    cache_lib.check_writable(cache_dir, 'tieredImageNet')
  if kind == 'archive':
    manifest_lib.verify(path, entry, cache_dir)
  if cached is None:
    _build(cache, kind, path, root, split, expected, image_size)
    cached = manifest_lib.read_cached(cache)
    assert cached is not None
  images, meta = cached
  return TieredImageNetSplit(
    images,
    np.asarray(meta['counts'], np.int64),
    tuple(meta['classes']),
    tuple(meta['superclasses']),
    None if meta['synsets'] is None else tuple(meta['synsets']),
  )


def _build(cache, kind, path, root, split, expected, image_size) -> None:
  images_name, labels_name = _files(split)
  where = f'{path}:{labels_name}' if kind == 'archive' else str(path / labels_name)
  with _Opened(kind, path) as opened:
    specific, general, names, general_names = _check_labels(opened.load(labels_name), where)
    num_superclasses = len({s for _, s in expected})
    if len(names) != len(expected) or len(set(general.tolist())) != num_superclasses:
      raise ValueError(
        f'{where}: {len(names)} classes in {len(set(general.tolist()))} superclasses, but '
        f'the {split} split has {len(expected)} in {num_superclasses} (manifest tiered_imagenet).'
      )
    members = [np.flatnonzero(specific == k) for k in range(len(names))]
    empty = [names[k] for k, m in enumerate(members) if not m.size]
    if empty:
      raise ValueError(f'{where}: no images of class(es) {empty[:3]}.')
    superclasses = []
    for k, m in enumerate(members):
      of_class = np.unique(general[m])
      if of_class.size != 1 or not 0 <= of_class[0] < len(general_names):
        raise ValueError(f'{where}: class {names[k]!r} has superclass labels {of_class.tolist()}.')
      superclasses.append(general_names[int(of_class[0])])
    synsets = _synsets(path if kind == 'folder' else root, names, {c for c, _ in expected})
    if synsets is not None and sorted(synsets) != sorted(c for c, _ in expected):
      raise ValueError(
        f'{where}: its classes are not the {split} split of the manifest tiered_imagenet, '
        f'e.g. {sorted(set(synsets) - {c for c, _ in expected})[:3]} are not in it.'
      )
    pngs = opened.load(images_name)
  if not isinstance(pngs, (list, tuple)) or len(pngs) != specific.size:
    count = len(pngs) if isinstance(pngs, (list, tuple)) else type(pngs).__name__
    raise ValueError(f'{path}: {images_name} holds {count} images, the labels {specific.size}.')
  counts = [int(m.size) for m in members]
  decode = lambda png: manifest_lib.decode_image(
    np.asarray(png, np.uint8).tobytes(), image_size, _PURPOSE
  )
  manifest_lib.write_class_blocks(
    cache,
    (len(names), max(counts), image_size, image_size, 3),
    manifest_lib.padded_blocks(
      ([pngs[i] for i in m] for m in members), max(counts), decode, (image_size, image_size, 3)
    ),
    {'classes': names, 'superclasses': superclasses, 'counts': counts, 'synsets': synsets},
  )


def split_classes(split: str) -> tuple[tuple[str, str], ...]:
  """The ``(class synset, superclass synset)`` pairs of ``split`` from the manifest."""
  if split not in SPLITS:
    raise ValueError(f'split must be one of {SPLITS}, got {split!r}.')
  return tuple((c, s) for c, s in manifest_lib.load('tiered_imagenet')['splits'][split])
