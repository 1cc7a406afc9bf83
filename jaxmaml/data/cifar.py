"""CIFAR-FS and FC100, the few-shot benchmarks built from CIFAR-100.

CIFAR-100 (Krizhevsky, 2009) has 100 classes in 20 superclasses, 600 colour
images of 32x32 per class (500 in its train file, 100 in its test file). The
benchmarks use all 600 of a class and split the classes:

- CIFAR-FS (Bertinetto et al., 2019): 64 / 16 / 20 classes drawn at random;
- FC100 (Oreshkin et al., 2018): 12 / 4 / 4 superclasses, i.e. 60 / 20 / 20
  classes, so that the splits share no superclass.

The splits ship as ``jaxmaml/data/manifests/cifar_fs.json`` and ``fc100.json``
and the files' checksums as ``cifar100.json``, each citing its source
(``jaxmaml.data.manifest``). ``root`` holds one of (the first found is used,
or the one ``source_kind`` names):

- ``'folder'``: ``cifar-100-python/`` with the ``train``, ``test`` and
  ``meta`` pickles (or ``root`` is that folder): each file's published md5 is
  checked;
- ``'archive'``: ``cifar-100-python.tar.gz`` (the official python version,
  https://www.cs.toronto.edu/~kriz/cifar.html): its md5 is checked, and the
  pickles are read from it without extracting;
- ``'tfds'``: a TensorFlow Datasets ``data_dir`` with ``cifar100/3.0.2/``
  prepared in ``array_record`` format (read with ``tensorflow-datasets``,
  without TensorFlow). TFDS publishes no checksums of its prepared files:
  they are checked for presence only.

Checksums are verified once per file version (``manifest.verify``). The
pickles are read with ``manifest.load_pickle``, which rebuilds NumPy arrays
and nothing else, after their checksum passed.

``load_cifar_fs(root, split)`` and ``load_fc100(root, split)`` return a
``CIFARSplit``: ``images`` uint8 ``[num_classes, 600, s, s, 3]`` (``s =
image_size``, 32 unless resized with PIL's Lanczos filter), cached as a
``.npy`` file with a checksum (``jaxmaml.data.cache``) and loaded
memory-mapped. Classes are in the manifest's order
for CIFAR-FS; for FC100, superclass by superclass in the manifest's order,
and within a superclass by CIFAR-100 fine label. A class's images are its
train-file images in file order, then its test-file ones; from TFDS, records
in order of their ``id`` (``train_00000``, ...), the record's index in the
archive TFDS prepared them from.

Usage::

  from jaxmaml.data import cifar
  train = cifar.load_cifar_fs('DIR', 'train')  # images [64, 600, 32, 32, 3] uint8
  test = cifar.load_fc100('DIR', 'test')       # images [20, 600, 32, 32, 3] uint8
"""

import os
import pathlib
import tarfile
from typing import Any, NamedTuple

import numpy as np

from jaxmaml.data import cache as cache_lib
from jaxmaml.data import extras
from jaxmaml.data import manifest as manifest_lib

SPLITS = ('train', 'val', 'test')
SOURCE_KINDS = ('folder', 'archive', 'tfds')
BENCHMARKS = ('cifar_fs', 'fc100')
ARCHIVE = 'cifar-100-python.tar.gz'
FOLDER = 'cifar-100-python'
_MEMBERS = ('train', 'test', 'meta')
_CACHE_FORMAT = 1
_PURPOSE = 'Resizing CIFAR-100 images'


class CIFARSplit(NamedTuple):
  """One split of CIFAR-FS or FC100.

  Attributes:
    images: uint8 ``[num_classes, 600, image_size, image_size, 3]`` (may be a
      read-only memory map).
    classes: the CIFAR-100 fine label names, in the order of ``images``.
    superclasses: each class's CIFAR-100 superclass (coarse label name).
  """

  images: np.ndarray
  classes: tuple[str, ...]
  superclasses: tuple[str, ...]


class _Cifar100(NamedTuple):
  """The whole of CIFAR-100: train file then test file."""

  images: np.ndarray  # uint8 [60000, 32, 32, 3]
  fine: np.ndarray  # [60000] fine label indices
  coarse: np.ndarray  # [60000] coarse label indices
  fine_names: list[str]
  coarse_names: list[str]


def load_cifar_fs(
  root: str | os.PathLike,
  split: str,
  *,
  image_size: int = 32,
  source_kind: str | None = None,
  cache_dir: str | os.PathLike | None = None,
) -> CIFARSplit:
  """Loads one split of CIFAR-FS (64 / 16 / 20 classes) as uint8 arrays (cached).

  Args:
    root: the folder holding ``cifar-100-python/``, ``cifar-100-python.tar.gz``
      or a TFDS ``cifar100/3.0.2/`` (see the module docstring).
    split: ``'train'``, ``'val'`` or ``'test'``.
    image_size: images are resized to ``image_size x image_size`` (32: as they are).
    source_kind: ``'folder'``, ``'archive'``, ``'tfds'``, or None for the first found.
    cache_dir: where the split and the checksum verifications are cached
      (default ``$JAXMAML_CACHE`` or ``~/.cache/jaxmaml``).

  Returns:
    A ``CIFARSplit``, ``images [num_classes, 600, image_size, image_size, 3]``.

  Raises:
    ValueError, TypeError: for a bad ``split``, ``image_size`` or
      ``source_kind`` (before any work), a checksum that does not match the
      published one (naming the file), data that do not hold the
      manifest's classes, or a cached split that does not match its checksum
      (naming its files; ``jaxmaml.data.cache``).
    FileNotFoundError: if ``root`` is not a directory, or a file is missing
      (naming it and where to get it), before anything is decoded.
    OSError: if the split must be built and ``cache_dir`` is not writable,
      before anything is hashed or decoded (a cached split is read from a
      read-only ``cache_dir``).
    ImportError: without tensorflow-datasets for the TFDS source, or Pillow to
      resize (optional: ``pip install 'jaxmaml[data]'``).
  """
  return _load('cifar_fs', root, split, image_size, source_kind, cache_dir)


def load_fc100(
  root: str | os.PathLike,
  split: str,
  *,
  image_size: int = 32,
  source_kind: str | None = None,
  cache_dir: str | os.PathLike | None = None,
) -> CIFARSplit:
  """Loads one split of FC100 (12 / 4 / 4 superclasses, 60 / 20 / 20 classes), cached.

  Arguments, return value and errors: as ``load_cifar_fs``.
  """
  return _load('fc100', root, split, image_size, source_kind, cache_dir)


def _tfds_dir(root: pathlib.Path, files: dict) -> pathlib.Path:
  return root / files['tfds']['name'] / files['tfds']['version']


def _resolve(root: pathlib.Path, source_kind: str | None, files: dict):
  """``(kind, {member: path})`` of the source to read, every required file present."""
  folder = root if all((root / m).is_file() for m in _MEMBERS) else root / FOLDER
  found = {
    'folder': folder.is_dir() and any((folder / m).exists() for m in _MEMBERS),
    'archive': (root / ARCHIVE).is_file(),
    'tfds': _tfds_dir(root, files).is_dir(),
  }
  kind = source_kind or next((k for k in SOURCE_KINDS if found[k]), None)
  if kind is None:
    entry = manifest_lib.file_entry(files, ARCHIVE)
    raise FileNotFoundError(
      f'CIFAR-100: none of {root / FOLDER}/{{train,test,meta}}, {root / ARCHIVE} or a TFDS '
      f'{_tfds_dir(root, files)} found. Get {ARCHIVE} from {manifest_lib.where_to_get(entry)} '
      '(see docs/datasets.md).'
    )
  if kind == 'folder':
    return kind, {
      m: manifest_lib.require(
        folder / m, manifest_lib.file_entry(files, f'{FOLDER}/{m}'), 'CIFAR-100'
      )
      for m in _MEMBERS
    }
  if kind == 'archive':
    entry = manifest_lib.file_entry(files, ARCHIVE)
    return kind, {ARCHIVE: manifest_lib.require(root / ARCHIVE, entry, 'CIFAR-100')}
  version_dir = _tfds_dir(root, files)
  how = files['tfds']['url']
  if not (version_dir / 'dataset_info.json').is_file():
    raise FileNotFoundError(
      f'CIFAR-100 (TFDS): {version_dir / "dataset_info.json"} not found; {how}.'
    )
  paths = {}
  for split in ('train', 'test'):
    shards = sorted(version_dir.glob(f'{files["tfds"]["name"]}-{split}.array_record*'))
    if not shards:
      raise FileNotFoundError(
        f'CIFAR-100 (TFDS): no {files["tfds"]["name"]}-{split}.array_record-* file in '
        f'{version_dir} (the array_record format is needed); {how}.'
      )
    paths.update({p.name: p for p in shards})
  return kind, paths


def _split_classes(benchmark: str, split: str) -> list:
  spec = manifest_lib.load(benchmark)
  return spec['splits'][split]


def _select(data: _Cifar100, benchmark: str, wanted: list, where: str) -> list[tuple[str, str]]:
  """The split's ``(superclass, class)`` pairs, checked against the data's hierarchy."""
  fine_of = {name: i for i, name in enumerate(data.fine_names)}
  coarse_of = {name: i for i, name in enumerate(data.coarse_names)}
  if benchmark == 'fc100':
    pairs = []
    for superclass in wanted:
      if superclass not in coarse_of:
        raise ValueError(f'{where}: no superclass {superclass!r} (the FC100 manifest names it).')
      members = np.unique(data.fine[data.coarse == coarse_of[superclass]])
      pairs += [(superclass, data.fine_names[int(i)]) for i in members]
    return pairs
  for superclass, name in wanted:
    if name not in fine_of:
      raise ValueError(f'{where}: no class {name!r} (the CIFAR-FS manifest names it).')
    coarse = np.unique(data.coarse[data.fine == fine_of[name]])
    if [data.coarse_names[int(c)] for c in coarse] != [superclass]:
      raise ValueError(
        f'{where}: class {name!r} is not in superclass {superclass!r} alone, as the '
        'CIFAR-FS manifest says.'
      )
  return [(s, n) for s, n in wanted]


def _from_pickles(train: dict, test: dict, meta: dict) -> _Cifar100:
  train, test, meta = map(manifest_lib.as_str_keys, (train, test, meta))
  names = lambda key: [n.decode() if isinstance(n, bytes) else str(n) for n in meta[key]]
  images = np.concatenate([np.asarray(d['data'], np.uint8) for d in (train, test)])
  return _Cifar100(
    images=images.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1),
    fine=np.concatenate([np.asarray(d['fine_labels']) for d in (train, test)]),
    coarse=np.concatenate([np.asarray(d['coarse_labels']) for d in (train, test)]),
    fine_names=names('fine_label_names'),
    coarse_names=names('coarse_label_names'),
  )


def _read_folder(paths: dict) -> _Cifar100:
  loaded = {}
  for member, path in paths.items():
    with open(path, 'rb') as f:
      loaded[member] = manifest_lib.load_pickle(f, str(path))
  return _from_pickles(loaded['train'], loaded['test'], loaded['meta'])


def _read_archive(path: pathlib.Path) -> _Cifar100:
  loaded = {}
  with tarfile.open(path, 'r:gz') as tar:
    for info in tar:
      parts = info.name.split('/')
      if info.isfile() and len(parts) == 2 and parts[0] == FOLDER and parts[1] in _MEMBERS:
        f = tar.extractfile(info)
        assert f is not None
        loaded[parts[1]] = manifest_lib.load_pickle(f, f'{path}:{info.name}')
  missing = [m for m in _MEMBERS if m not in loaded]
  if missing:
    raise ValueError(f'{path} holds no {", ".join(f"{FOLDER}/{m}" for m in missing)}.')
  return _from_pickles(loaded['train'], loaded['test'], loaded['meta'])


def _text(value: Any) -> str:
  value = value.item() if isinstance(value, np.ndarray) else value
  return value.decode() if isinstance(value, bytes) else str(value)


def _read_tfds(root: pathlib.Path, files: dict) -> _Cifar100:
  tfds = extras.import_optional('tensorflow_datasets', purpose='The TFDS CIFAR-100 source')
  name = f'{files["tfds"]["name"]}:{files["tfds"]["version"]}'
  images, fine, coarse, fine_names, coarse_names = [], [], [], None, None
  for split in ('train', 'test'):
    source = tfds.data_source(
      name,
      data_dir=str(root),
      split=split,
      download=False,
      decoders={'image': tfds.decode.SkipDecoding()},
    )
    features = source.dataset_info.features
    fine_names = list(features['label'].names)
    coarse_names = list(features['coarse_label'].names)
    if fine_names == [str(i) for i in range(len(fine_names))]:
      raise ValueError(
        f'TFDS {name} in {root} has no label names in its dataset_info (numbers only), '
        'so its classes cannot be matched to the split.'
      )
    getitems = getattr(source, '__getitems__', None)
    indices = list(range(len(source)))
    records = getitems(indices) if getitems else [source[i] for i in indices]
    records = sorted(records, key=lambda r: _text(r['id']))
    for r in records:
      images.append(manifest_lib.decode_image(bytes(r['image']), 32, 'Decoding TFDS CIFAR-100'))
      fine.append(int(r['label']))
      coarse.append(int(r['coarse_label']))
  assert fine_names is not None and coarse_names is not None
  return _Cifar100(np.stack(images), np.asarray(fine), np.asarray(coarse), fine_names, coarse_names)


def _source_id(kind: str, paths: dict, files: dict) -> Any:
  """What identifies the source's content in the cache key."""
  if kind == 'archive':
    return files['files'][ARCHIVE]['md5']
  if kind == 'folder':
    return [files['files'][f'{FOLDER}/{m}']['md5'] for m in _MEMBERS]
  return [files['tfds']['version']] + [[n, p.stat().st_size] for n, p in sorted(paths.items())]


def _load(benchmark, root, split, image_size, source_kind, cache_dir) -> CIFARSplit:
  root = manifest_lib.check_arguments(
    root,
    split,
    image_size,
    source_kind,
    dataset='CIFAR-100',
    splits=SPLITS,
    kinds=SOURCE_KINDS,
  )
  files = manifest_lib.load('cifar100')
  wanted = _split_classes(benchmark, split)
  kind, paths = _resolve(root, source_kind, files)
  cache_dir = cache_lib.cache_dir_or_default(cache_dir)
  per_class = int(files['images_per_class'])
  key = manifest_lib.fingerprint(
    {
      'format': _CACHE_FORMAT,
      'kind': kind,
      'source': _source_id(kind, paths, files),
      'classes': wanted,
      'per_class': per_class,
      'image_size': image_size,
    }
  )
  cache = cache_dir / f'{benchmark}-{split}-{image_size}px-{key}.npy'
  cached = manifest_lib.read_cached(cache)
  if cached is None:  # Before hashing an archive for nothing.
    cache_lib.check_writable(cache_dir, 'CIFAR-100')
  if kind == 'folder':
    for member, path in paths.items():
      manifest_lib.verify(path, manifest_lib.file_entry(files, f'{FOLDER}/{member}'), cache_dir)
  elif kind == 'archive':
    manifest_lib.verify(paths[ARCHIVE], manifest_lib.file_entry(files, ARCHIVE), cache_dir)
  if cached is not None:
    images, meta = cached
    return CIFARSplit(images, tuple(meta['classes']), tuple(meta['superclasses']))

  if kind == 'folder':
    data = _read_folder(paths)
  elif kind == 'archive':
    data = _read_archive(paths[ARCHIVE])
  else:
    data = _read_tfds(root, files)
  where = f'CIFAR-100 ({kind}) in {root}'
  pairs = _select(data, benchmark, wanted, where)
  fine_of = {name: i for i, name in enumerate(data.fine_names)}
  members = [np.flatnonzero(data.fine == fine_of[name]) for _, name in pairs]
  wrong = {name: len(m) for (_, name), m in zip(pairs, members) if len(m) != per_class}
  if wrong:
    raise ValueError(f'{where}: every class needs {per_class} images, got {wrong}.')

  def blocks():
    for indices in members:
      yield np.stack([manifest_lib.resize(data.images[i], image_size, _PURPOSE) for i in indices])

  manifest_lib.write_class_blocks(
    cache,
    (len(pairs), per_class, image_size, image_size, 3),
    blocks(),
    {'classes': [n for _, n in pairs], 'superclasses': [s for s, _ in pairs]},
  )
  cached = manifest_lib.read_cached(cache)
  assert cached is not None
  images, meta = cached
  return CIFARSplit(images, tuple(meta['classes']), tuple(meta['superclasses']))


def cifar_fs_classes(split: str) -> tuple[str, ...]:
  """The CIFAR-FS classes of ``split`` in the manifest's order (no data needed)."""
  if split not in SPLITS:
    raise ValueError(f'split must be one of {SPLITS}, got {split!r}.')
  return tuple(name for _, name in _split_classes('cifar_fs', split))


def fc100_superclasses(split: str) -> tuple[str, ...]:
  """The FC100 superclasses of ``split`` in the manifest's order (no data needed)."""
  if split not in SPLITS:
    raise ValueError(f'split must be one of {SPLITS}, got {split!r}.')
  return tuple(_split_classes('fc100', split))
