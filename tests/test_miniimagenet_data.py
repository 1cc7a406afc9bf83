"""miniImageNet loader, on a small synthetic dataset in the Ravi & Larochelle layout."""

import os
import time

import numpy as np
import pytest

from jaxmaml.data import cache as cache_lib
from jaxmaml.data import episodes
from jaxmaml.data import miniimagenet
from tests.utils import failing
from tests.utils import make_miniimagenet
from tests.utils import only_entry
from tests.utils import unwritable_dir
from tests.utils import zero_npy


@pytest.fixture
def root(tmp_path):
  return make_miniimagenet(tmp_path / 'mini')


def test_shapes_order_colors_and_cache(root, tmp_path):
  cache = tmp_path / 'cache'
  split = miniimagenet.load_miniimagenet(root, 'train', image_size=12, cache_dir=cache)
  assert split.images.shape == (2, 4, 12, 12, 3) and split.images.dtype == np.uint8
  assert split.classes == ('n02', 'n01')  # Order of first appearance in the CSV.
  # Away from the marked corner, a constant image stays constant when resized.
  np.testing.assert_array_equal(split.images[0, :, 6, 6], [[0, 255, 0]] * 4)
  np.testing.assert_array_equal(split.images[1, :, 6, 6], [[255, 0, 0]] * 4)
  files = sorted(os.listdir(cache))  # The entry and its checksum; no temporary file left.
  assert len(files) == 2 and files[0].endswith('.npy') and files[1] == files[0] + '.checksum.json'
  start = time.perf_counter()
  again = miniimagenet.load_miniimagenet(root, 'train', image_size=12, cache_dir=cache)
  assert time.perf_counter() - start < 1.0
  np.testing.assert_array_equal(again.images, split.images)
  assert os.listdir(cache) == files  # Served from the cache.
  tasks = next(
    episodes.host_episodes(0, again.images, 2, num_ways=2, num_shots=1, num_queries=2, rotate=False)
  )
  assert tasks.support[0].shape == (2, 2, 12, 12, 3)


def test_errors(root, tmp_path):
  cache = tmp_path / 'cache'
  with pytest.raises(FileNotFoundError, match='not a directory'):
    miniimagenet.load_miniimagenet(tmp_path / 'nowhere', 'train', cache_dir=cache)
  with pytest.raises(ValueError, match='split must be one of'):
    miniimagenet.load_miniimagenet(root, 'validation', cache_dir=cache)
  with pytest.raises(ValueError, match='image_size'):
    miniimagenet.load_miniimagenet(root, 'train', image_size=0, cache_dir=cache)
  os.remove(root / 'images' / 'n01train0002.png')
  with pytest.raises(FileNotFoundError, match=r'1 image\(s\) listed in train.csv are missing'):
    miniimagenet.load_miniimagenet(root, 'train', cache_dir=cache)
  (root / 'val.csv').write_text('file,class\nx.png,n03\n')
  with pytest.raises(ValueError, match='header "filename,label"'):
    miniimagenet.load_miniimagenet(root, 'val', cache_dir=cache)
  (root / 'val.csv').write_text(
    'filename,label\nn03val0000.png,n03\nn01train0000.png,n01\nn01train0001.png,n01\n'
  )
  with pytest.raises(ValueError, match='same number of images'):
    miniimagenet.load_miniimagenet(root, 'val', cache_dir=cache)
  os.remove(root / 'test.csv')
  with pytest.raises(FileNotFoundError, match='test.csv not found'):
    miniimagenet.load_miniimagenet(root, 'test', cache_dir=cache)
  assert not cache.exists()  # Nothing was decoded or written.


def test_cache_content_is_checked_and_a_bad_entry_left_as_it_is(root, tmp_path, monkeypatch):
  cache = tmp_path / 'cache'
  images = np.array(
    miniimagenet.load_miniimagenet(root, 'train', image_size=12, cache_dir=cache).images
  )
  entry = only_entry(cache)
  zero_npy(entry)  # Of the right shape, with the wrong content.
  written = entry.stat().st_mtime_ns
  monkeypatch.setattr(miniimagenet, '_load_image', failing('decoding'))
  with pytest.raises(
    ValueError, match=rf'{entry.name} does not match the checksum.*Delete {entry}'
  ):
    miniimagenet.load_miniimagenet(root, 'train', image_size=12, cache_dir=cache)
  assert entry.stat().st_mtime_ns == written and not np.load(entry).any()  # Not overwritten.
  monkeypatch.undo()
  entry.unlink()  # As the error says: the next load rebuilds it.
  cache_lib.checksum_path(entry).unlink()
  again = miniimagenet.load_miniimagenet(root, 'train', image_size=12, cache_dir=cache)
  np.testing.assert_array_equal(again.images, images)


def test_entry_without_a_checksum_is_accepted_once_with_a_warning(root, tmp_path):
  cache = tmp_path / 'cache'
  split = miniimagenet.load_miniimagenet(root, 'train', image_size=12, cache_dir=cache)
  entry = only_entry(cache)
  cache_lib.checksum_path(entry).unlink()  # As jaxmaml wrote entries before checksums.
  with pytest.warns(UserWarning, match=rf'{entry} has no checksum.*recorded now'):
    again = miniimagenet.load_miniimagenet(root, 'train', image_size=12, cache_dir=cache)
  np.testing.assert_array_equal(again.images, split.images)
  assert cache_lib.checksum_path(entry).is_file()
  zero_npy(entry)  # From now on the entry is checked.
  with pytest.raises(ValueError, match='does not match the checksum'):
    miniimagenet.load_miniimagenet(root, 'train', image_size=12, cache_dir=cache)


def test_unwritable_cache_dir_is_refused_before_decoding(root, tmp_path, monkeypatch):
  cache = unwritable_dir(tmp_path)
  monkeypatch.setattr(miniimagenet, '_load_image', failing('decoding'))
  with pytest.raises(OSError, match=rf'miniImageNet: the cache directory {cache} is not writable'):
    miniimagenet.load_miniimagenet(root, 'train', image_size=12, cache_dir=cache)
