"""tieredImageNet loader on a miniature in the authors' layout (the extracted
pickles and the tar): padded classes with counts, label order, exact pixels,
the cache, the manifest checks and the errors."""

import json
import os
import pickle
import time

import numpy as np
import pytest

from jaxmaml.data import cache as cache_lib
from jaxmaml.data import manifest
from jaxmaml.data import tiered_imagenet
from tests.utils import MINI_TIERED
from tests.utils import MINI_TIERED_COUNTS
from tests.utils import failing
from tests.utils import make_tiered_imagenet
from tests.utils import mini_tiered_image
from tests.utils import only_entry
from tests.utils import patch_tiered_manifest
from tests.utils import unwritable_dir
from tests.utils import zero_npy


@pytest.fixture(params=['folder', 'archive'])
def mini(request, tmp_path, monkeypatch):
  root = tmp_path / 'data'
  md5 = make_tiered_imagenet(root, layout=request.param)
  patch_tiered_manifest(monkeypatch, tmp_path / 'manifests', md5)
  return root, tmp_path / 'cache'


def test_shapes_label_order_pixels_padding_and_cache(mini):
  root, cache = mini
  split = tiered_imagenet.load_tiered_imagenet(root, 'train', image_size=8, cache_dir=cache)
  counts = MINI_TIERED_COUNTS['train']
  assert split.images.shape == (3, 4, 8, 8, 3) and split.images.dtype == np.uint8
  assert isinstance(split.images, np.memmap)
  assert split.counts.tolist() == counts
  synsets = tuple(c for c, _ in MINI_TIERED['train'])
  assert split.classes == synsets and split.synsets == synsets
  assert split.superclasses == tuple(f'superclass {s}' for _, s in MINI_TIERED['train'])
  for k, count in enumerate(counts):
    for j in range(count):  # Stored interleaved; returned class by class, in file order.
      np.testing.assert_array_equal(split.images[k, j], mini_tiered_image('train', k, j))
    assert not split.images[k, count:].any()
  files = sorted(f for f in os.listdir(cache) if f.endswith('.npy'))
  assert len(files) == 1 and files[0].startswith('tiered_imagenet-train-8px-')
  start = time.perf_counter()
  again = tiered_imagenet.load_tiered_imagenet(root, 'train', image_size=8, cache_dir=cache)
  assert time.perf_counter() - start < 1.0
  np.testing.assert_array_equal(again.images, split.images)
  assert again.classes == split.classes and again.counts.tolist() == counts
  assert sorted(f for f in os.listdir(cache) if f.endswith('.npy')) == files
  val = tiered_imagenet.load_tiered_imagenet(root, 'val', cache_dir=cache)
  assert val.images.shape == (2, 3, 84, 84, 3)  # Resized from 8 to the default 84.


def test_word_names_mapped_to_synsets(tmp_path, monkeypatch):
  """Class names that are words are mapped to synsets through the release's
  synsets.txt and class_names.txt, and checked against the manifest."""
  root = tmp_path / 'data'
  make_tiered_imagenet(root, names='words')
  patch_tiered_manifest(monkeypatch, tmp_path / 'manifests')
  split = tiered_imagenet.load_tiered_imagenet(root, 'test', image_size=8, cache_dir=tmp_path / 'c')
  assert split.classes == tuple(f'class {c}' for c, _ in MINI_TIERED['test'])
  assert split.synsets == tuple(c for c, _ in MINI_TIERED['test'])
  os.remove(root / 'tiered-imagenet' / 'synsets.txt')
  unknown = tiered_imagenet.load_tiered_imagenet(
    root, 'val', image_size=8, cache_dir=tmp_path / 'c'
  )
  assert unknown.synsets is None and unknown.counts.tolist() == MINI_TIERED_COUNTS['val']


def test_labels_that_are_not_the_manifests_split(tmp_path, monkeypatch):
  root = tmp_path / 'data'
  make_tiered_imagenet(root)
  swapped = {**MINI_TIERED, 'val': [['n02099267', 'n02098550'], ['n99999999', 'n03257877']]}

  def edit(data):
    data['splits'] = swapped

  from tests.utils import patch_manifests

  patch_manifests(monkeypatch, tmp_path / 'manifests', tiered_imagenet=edit)
  with pytest.raises(ValueError, match=r'not the val split.*n03207941'):
    tiered_imagenet.load_tiered_imagenet(root, 'val', image_size=8, cache_dir=tmp_path / 'c')
  swapped['val'] = MINI_TIERED['val'][:1]
  patch_manifests(monkeypatch, tmp_path / 'manifests', tiered_imagenet=edit)
  with pytest.raises(ValueError, match=r'2 classes in 2 superclasses, but the val split has 1'):
    tiered_imagenet.load_tiered_imagenet(root, 'val', image_size=8, cache_dir=tmp_path / 'c')


def test_archive_checksum_once_mismatch_and_missing(tmp_path, monkeypatch):
  root = tmp_path / 'data'
  md5 = make_tiered_imagenet(root, layout='archive')
  patch_tiered_manifest(monkeypatch, tmp_path / 'manifests', md5)
  calls = []
  original = manifest.hash_file
  monkeypatch.setattr(manifest, 'hash_file', lambda p, a: calls.append(p) or original(p, a))
  for split in ('train', 'val', 'test'):
    tiered_imagenet.load_tiered_imagenet(root, split, image_size=8, cache_dir=tmp_path / 'c')
  assert len(calls) == 1
  patch_tiered_manifest(monkeypatch, tmp_path / 'manifests', '0' * 32)
  with pytest.raises(ValueError, match=r'tiered-imagenet\.tar: md5 .* does not match'):
    tiered_imagenet.load_tiered_imagenet(root, 'train', image_size=9, cache_dir=tmp_path / 'c')
  assert not list((tmp_path / 'c').glob('tiered_imagenet-train-9px-*'))
  os.remove(root / 'tiered-imagenet.tar')
  with pytest.raises(FileNotFoundError, match=r'tiered-imagenet\.tar found.*Google Drive'):
    tiered_imagenet.load_tiered_imagenet(root, 'train', cache_dir=tmp_path / 'c')


def test_missing_files_bad_pickles_and_arguments(tmp_path, monkeypatch):
  root = tmp_path / 'data'
  make_tiered_imagenet(root)
  patch_tiered_manifest(monkeypatch, tmp_path / 'manifests')
  cache = tmp_path / 'cache'
  with pytest.raises(ValueError, match='split must be one of'):
    tiered_imagenet.load_tiered_imagenet(root, 'trainval', cache_dir=cache)
  with pytest.raises(TypeError, match='image_size'):
    tiered_imagenet.load_tiered_imagenet(root, 'train', image_size='84', cache_dir=cache)
  with pytest.raises(FileNotFoundError, match='not a directory'):
    tiered_imagenet.load_tiered_imagenet(root / 'x', 'train', cache_dir=cache)
  folder = root / 'tiered-imagenet'
  os.remove(folder / 'test_images_png.pkl')
  with pytest.raises(FileNotFoundError, match=r'test_images_png\.pkl not found.*tiered-imagenet'):
    tiered_imagenet.load_tiered_imagenet(root, 'test', cache_dir=cache)
  assert not cache.exists()  # Nothing was decoded or written.
  labels = pickle.loads((folder / 'val_labels.pkl').read_bytes())
  (folder / 'val_labels.pkl').write_bytes(
    pickle.dumps({'label_specific': labels['label_specific']})
  )
  with pytest.raises(ValueError, match=r"has no \['label_general'"):
    tiered_imagenet.load_tiered_imagenet(root, 'val', cache_dir=cache)
  pngs = pickle.loads((folder / 'train_images_png.pkl').read_bytes())
  (folder / 'train_images_png.pkl').write_bytes(pickle.dumps(pngs[:-1]))
  with pytest.raises(ValueError, match='holds 8 images, the labels 9'):
    tiered_imagenet.load_tiered_imagenet(root, 'train', cache_dir=cache)
  (folder / 'train_images_png.pkl').write_bytes(pickle.dumps(json.dumps))  # A function.
  with pytest.raises(ValueError, match='not a readable pickle'):
    tiered_imagenet.load_tiered_imagenet(root, 'train', cache_dir=cache)


def test_extracted_files_directly_in_root(tmp_path, monkeypatch):
  make_tiered_imagenet(tmp_path / 'data', splits=('val',))
  patch_tiered_manifest(monkeypatch, tmp_path / 'manifests')
  folder = tmp_path / 'data' / 'tiered-imagenet'
  split = tiered_imagenet.load_tiered_imagenet(
    folder, 'val', image_size=8, cache_dir=tmp_path / 'c'
  )
  assert split.counts.tolist() == MINI_TIERED_COUNTS['val']
  with pytest.raises(
    FileNotFoundError, match=r'train_images_png\.pkl .* nor .*tiered-imagenet\.tar'
  ):
    tiered_imagenet.load_tiered_imagenet(folder, 'train', cache_dir=tmp_path / 'c')


def test_shipped_split_without_data():
  pairs = tiered_imagenet.split_classes('val')
  assert len(pairs) == 97 and pairs[0] == ('n02099267', 'n02098550')


def test_entry_from_before_checksums_is_accepted_once_then_checked(mini, monkeypatch):
  root, cache = mini
  split = tiered_imagenet.load_tiered_imagenet(root, 'val', image_size=8, cache_dir=cache)
  images = np.array(split.images)
  entry = only_entry(cache)
  cache_lib.checksum_path(entry).unlink()  # As jaxmaml wrote entries before checksums.
  monkeypatch.setattr(manifest, 'decode_image', failing('decoding'))
  with pytest.warns(UserWarning, match=rf'{entry} has no checksum.*recorded now'):
    again = tiered_imagenet.load_tiered_imagenet(root, 'val', image_size=8, cache_dir=cache)
  np.testing.assert_array_equal(again.images, images)
  assert again.counts.tolist() == MINI_TIERED_COUNTS['val']
  recorded = json.loads(cache_lib.checksum_path(entry).read_text())
  assert recorded['arrays']['array']['shape'] == list(images.shape)
  assert recorded['arrays']['array']['dtype'] == '|u1' and 'meta_sha256' in recorded
  zero_npy(entry)
  with pytest.raises(ValueError, match=rf'{entry.name} does not match the checksum'):
    tiered_imagenet.load_tiered_imagenet(root, 'val', image_size=8, cache_dir=cache)


def test_unwritable_cache_dir_is_refused_before_hashing_or_decoding(mini, monkeypatch, tmp_path):
  root, _ = mini
  cache = unwritable_dir(tmp_path)
  monkeypatch.setattr(manifest, 'hash_file', failing('hashing the archive'))
  monkeypatch.setattr(manifest, 'load_pickle', failing('reading the pickles'))
  with pytest.raises(
    OSError, match=rf'tieredImageNet: the cache directory {cache} is not writable'
  ):
    tiered_imagenet.load_tiered_imagenet(root, 'val', image_size=8, cache_dir=cache)
