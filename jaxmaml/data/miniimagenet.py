"""miniImageNet (Vinyals et al., 2016; the split of Ravi & Larochelle, 2017).

The layout the MAML code and most libraries start from: a folder ``ROOT`` with
``images/`` (the 60,000 JPEGs) and ``train.csv``, ``val.csv``, ``test.csv``
(header ``filename,label``; 64 / 16 / 20 classes of 600 images). The data is
not redistributable and is not downloaded here: users bring it.

``load_miniimagenet(root, split)`` returns the split as one uint8 array
``[num_classes, 600, 84, 84, 3]`` (resized with PIL's Lanczos filter, as the
MAML code's ``proc_images.py``), classes in order of first appearance in the
CSV. The array is cached as a ``.npy`` file keyed by the CSV, the image files'
sizes and the options, written atomically with a checksum sidecar, and loaded
memory-mapped (a whole split is 0.8 GB for train), so
``jaxmaml.data.episodes.host_episodes`` can draw tasks from it without holding
it in memory. Each load checks the file against its checksum
(``jaxmaml.data.cache``: hashing the 0.8 GB train split takes about 0.5 s).
"""

import csv
import hashlib
import json
import os
import pathlib
from typing import NamedTuple

import numpy as np

from jaxmaml import checks
from jaxmaml.data import cache as cache_lib
from jaxmaml.data import extras

SPLITS = ('train', 'val', 'test')
_CACHE_FORMAT = 1


class MiniImageNetSplit(NamedTuple):
  """One split.

  Attributes:
    images: uint8 ``[num_classes, images_per_class, size, size, 3]`` (may be a
      read-only memory map).
    classes: the class labels (WordNet ids) in the order of ``images``.
  """

  images: np.ndarray
  classes: tuple[str, ...]


def _read_csv(root: pathlib.Path, split: str) -> dict[str, list[str]]:
  path = root / f'{split}.csv'
  if not path.is_file():
    raise FileNotFoundError(
      f'{path} not found: miniImageNet needs {", ".join(s + ".csv" for s in SPLITS)} '
      'and images/ in root (the Ravi & Larochelle layout).'
    )
  with open(path, newline='') as f:
    rows = list(csv.reader(f))
  if not rows or [c.strip() for c in rows[0]] != ['filename', 'label']:
    raise ValueError(f'{path} must start with the header "filename,label", got {rows[:1]}.')
  by_class: dict[str, list[str]] = {}
  for line, row in enumerate(rows[1:], start=2):
    if len(row) != 2:
      raise ValueError(f'{path}, line {line}: expected "filename,label", got {row}.')
    by_class.setdefault(row[1], []).append(row[0])
  if not by_class:
    raise ValueError(f'{path} lists no images.')
  counts = {len(files) for files in by_class.values()}
  if len(counts) != 1:
    raise ValueError(
      f'{path}: every class needs the same number of images, got counts {sorted(counts)}.'
    )
  return by_class


def _load_image(path: pathlib.Path, image_size: int) -> np.ndarray:
  pil_image = extras.import_optional('PIL.Image', purpose='Reading miniImageNet images')
  with pil_image.open(path) as image:
    image = image.convert('RGB')
    if image.size != (image_size, image_size):
      image = image.resize((image_size, image_size), resample=pil_image.LANCZOS)
    return np.asarray(image, dtype=np.uint8)


def load_miniimagenet(
  root: str | os.PathLike,
  split: str,
  *,
  image_size: int = 84,
  cache_dir: str | os.PathLike | None = None,
) -> MiniImageNetSplit:
  """Loads one split of miniImageNet as a uint8 array (cached).

  Args:
    root: the folder with ``images/`` and ``{train,val,test}.csv``.
    split: ``'train'``, ``'val'`` or ``'test'``.
    image_size: images are resized to ``image_size x image_size``.
    cache_dir: where the preprocessed split is cached (default
      ``$JAXMAML_CACHE`` or ``~/.cache/jaxmaml``); it must be writable when
      the split is not cached yet.

  Returns:
    A ``MiniImageNetSplit`` with ``images [classes, per_class, s, s, 3]``.

  Raises:
    FileNotFoundError, ValueError: for a missing folder, CSV or image, a
      malformed CSV, unequal class sizes, or a bad ``split``/``image_size``,
      naming what was expected, before any image is decoded; a cached split
      that does not match its checksum (``jaxmaml.data.cache.check_entry``).
    OSError: if the split must be preprocessed and ``cache_dir`` is not
      writable, before any image is decoded.
    ImportError: without Pillow, when images must be decoded (optional:
      ``pip install 'jaxmaml[data]'``).
  """
  if split not in SPLITS:
    raise ValueError(f'split must be one of {SPLITS}, got {split!r}.')
  checks.positive_int(image_size, 'image_size')
  root = pathlib.Path(root).expanduser()
  if not root.is_dir():
    raise FileNotFoundError(f'miniImageNet root {root} is not a directory.')
  by_class = _read_csv(root, split)
  paths = [root / 'images' / name for files in by_class.values() for name in files]
  missing = [str(p) for p in paths if not p.is_file()]
  if missing:
    raise FileNotFoundError(
      f'{len(missing)} image(s) listed in {split}.csv are missing, e.g. {missing[:3]}.'
    )

  fingerprint = hashlib.sha256(
    json.dumps(
      {
        'format': _CACHE_FORMAT,
        'image_size': image_size,
        'classes': by_class,
        'sizes': [p.stat().st_size for p in paths],
      }
    ).encode()
  ).hexdigest()[:24]
  cache_dir = cache_lib.cache_dir_or_default(cache_dir)
  cache = cache_dir / f'miniimagenet-{split}-{image_size}px-{fingerprint}.npy'
  classes = tuple(by_class)
  images = cache_lib.read_npy(cache)
  if images is None:
    cache_lib.check_writable(cache_dir, 'miniImageNet')
    per_class = len(next(iter(by_class.values())))
    blocks = (
      np.stack([_load_image(root / 'images' / name, image_size) for name in files])
      for files in by_class.values()
    )
    cache_lib.write_npy(cache, (len(classes), per_class, image_size, image_size, 3), blocks)
    images = cache_lib.read_npy(cache)
    assert images is not None
  return MiniImageNetSplit(images, classes)
