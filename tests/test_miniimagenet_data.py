"""miniImageNet loader, on a small synthetic dataset in the Ravi & Larochelle layout."""

import os
import time

import numpy as np
import pytest

from jaxmaml.data import episodes
from jaxmaml.data import miniimagenet
from tests.utils import make_miniimagenet


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
  files = os.listdir(cache)
  assert len(files) == 1 and files[0].endswith('.npy')  # No temporary file left.
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
