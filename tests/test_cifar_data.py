"""CIFAR-FS and FC100 loaders, on a miniature CIFAR-100 in the python
version's layout (folder and archive) and through a mocked TFDS cifar100."""

import io
import os
import time
import types

import numpy as np
import pytest

from jaxmaml.data import cache as cache_lib
from jaxmaml.data import cifar
from jaxmaml.data import episodes
from jaxmaml.data import manifest
from tests.utils import MINI_CIFAR_CLASSES
from tests.utils import MINI_CIFAR_FS
from tests.utils import failing
from tests.utils import make_cifar100
from tests.utils import mini_cifar_pixel
from tests.utils import mini_cifar_records
from tests.utils import only_entry
from tests.utils import patch_cifar_manifests
from tests.utils import unwritable_dir
from tests.utils import zero_npy

FINE = sorted(MINI_CIFAR_CLASSES)


@pytest.fixture(params=['folder', 'archive'])
def mini(request, tmp_path, monkeypatch):
  """``(root, cache_dir)`` of a miniature CIFAR-100 with the manifests patched to it."""
  root = tmp_path / 'data'
  md5s = make_cifar100(root, layout=request.param)
  patch_cifar_manifests(monkeypatch, tmp_path / 'manifests', md5s)
  return root, tmp_path / 'cache'


def _expected(names):
  """``[classes, 4, 3]``: pixel (0, 0) of each image of each named class."""
  return np.array([[mini_cifar_pixel(FINE.index(n), j) for j in range(4)] for n in names])


def test_cifar_fs_shapes_order_pixels_and_cache(mini):
  root, cache = mini
  split = cifar.load_cifar_fs(root, 'train', cache_dir=cache)
  assert split.images.shape == (2, 4, 32, 32, 3) and split.images.dtype == np.uint8
  assert isinstance(split.images, np.memmap)
  assert split.classes == ('shark', 'dolphin')  # The manifest's order.
  assert split.superclasses == ('fish', 'aquatic_mammals')
  np.testing.assert_array_equal(split.images[:, :, 0, 0], _expected(split.classes))
  assert (split.images[:, :, 1:, 1:, 1] == 7).all()  # HWC, not CHW.
  files = sorted(f for f in os.listdir(cache) if f.endswith('.npy'))
  assert len(files) == 1 and files[0].startswith('cifar_fs-train-32px-')
  start = time.perf_counter()
  again = cifar.load_cifar_fs(root, 'train', cache_dir=cache)
  assert time.perf_counter() - start < 1.0
  np.testing.assert_array_equal(again.images, split.images)
  assert sorted(f for f in os.listdir(cache) if f.endswith('.npy')) == files
  test = cifar.load_cifar_fs(root, 'test', cache_dir=cache)
  assert test.classes == ('seal', 'aquarium_fish')
  tasks = next(
    episodes.host_episodes(0, test.images, 2, num_ways=2, num_shots=1, num_queries=3, rotate=False)
  )
  assert tasks.support[0].shape == (2, 2, 32, 32, 3)


def test_fc100_orders_superclasses_then_fine_labels(mini):
  root, cache = mini
  split = cifar.load_fc100(root, 'train', cache_dir=cache)
  # large_carnivores (bear < lion), then fish (aquarium_fish < shark).
  assert split.classes == ('bear', 'lion', 'aquarium_fish', 'shark')
  assert split.superclasses == ('large_carnivores',) * 2 + ('fish',) * 2
  np.testing.assert_array_equal(split.images[:, :, 0, 0], _expected(split.classes))
  assert cifar.load_fc100(root, 'val', cache_dir=cache).classes == ('dolphin', 'seal')


def test_resized_images(mini):
  root, cache = mini
  split = cifar.load_cifar_fs(root, 'val', image_size=12, cache_dir=cache)
  assert split.images.shape == (2, 4, 12, 12, 3)
  assert split.classes == ('lion', 'bear')


def test_checksum_mismatch_names_the_file_and_nothing_is_decoded(mini, monkeypatch, tmp_path):
  root, cache = mini
  name = 'cifar-100-python.tar.gz' if (root / 'cifar-100-python.tar.gz').exists() else None
  name = name or 'cifar-100-python/train'

  def corrupt(data):
    data['files'][name]['md5'] = 'f' * 32

  from tests.utils import patch_manifests

  patch_manifests(monkeypatch, tmp_path / 'manifests', cifar100=corrupt)
  with pytest.raises(ValueError, match=rf'{name.split("/")[-1]}: md5 .* does not match'):
    cifar.load_cifar_fs(root, 'train', cache_dir=cache)
  assert not list(cache.glob('*.npy'))  # Nothing was decoded.


def test_archive_checksum_verified_once(tmp_path, monkeypatch):
  root = tmp_path / 'data'
  patch_cifar_manifests(monkeypatch, tmp_path / 'm', make_cifar100(root, layout='archive'))
  calls = []
  original = manifest.hash_file
  monkeypatch.setattr(manifest, 'hash_file', lambda p, a: calls.append(p) or original(p, a))
  for split in ('train', 'val', 'test'):
    cifar.load_cifar_fs(root, split, cache_dir=tmp_path / 'cache')
  cifar.load_fc100(root, 'train', cache_dir=tmp_path / 'cache')
  assert len(calls) == 1


def test_cached_split_is_checked_and_a_bad_entry_left_as_it_is(mini, monkeypatch):
  root, cache = mini
  cifar.load_cifar_fs(root, 'train', cache_dir=cache)
  entry = only_entry(cache)
  zero_npy(entry)
  monkeypatch.setattr(cifar, '_read_folder', failing('reading the pickles'))
  monkeypatch.setattr(cifar, '_read_archive', failing('reading the archive'))
  with pytest.raises(
    ValueError,
    match=rf"{entry.name} does not match the checksum recorded in .*: 'array' has sha256.*Delete",
  ):
    cifar.load_cifar_fs(root, 'train', cache_dir=cache)
  assert not np.load(entry).any()  # Left as it was, for the user to look at.
  cache_lib.checksum_path(entry).write_text('{"format": 1, "arr')
  with pytest.raises(ValueError, match=rf'checksum .*{entry.name}.checksum.json .* is unreadable'):
    cifar.load_cifar_fs(root, 'train', cache_dir=cache)


def test_unwritable_cache_dir_is_refused_before_hashing_or_decoding(mini, monkeypatch, tmp_path):
  root, _ = mini
  cache = unwritable_dir(tmp_path)
  monkeypatch.setattr(manifest, 'hash_file', failing('hashing the source'))
  monkeypatch.setattr(cifar, '_read_folder', failing('reading the pickles'))
  monkeypatch.setattr(cifar, '_read_archive', failing('reading the archive'))
  with pytest.raises(OSError, match=rf'CIFAR-100: the cache directory {cache} is not writable'):
    cifar.load_fc100(root, 'train', cache_dir=cache)


def test_missing_files_and_argument_errors(tmp_path, monkeypatch):
  root = tmp_path / 'data'
  md5s = make_cifar100(root)
  patch_cifar_manifests(monkeypatch, tmp_path / 'm', md5s)
  cache = tmp_path / 'cache'
  with pytest.raises(ValueError, match='split must be one of'):
    cifar.load_cifar_fs(root, 'validation', cache_dir=cache)
  with pytest.raises(ValueError, match='image_size'):
    cifar.load_fc100(root, 'train', image_size=0, cache_dir=cache)
  with pytest.raises(ValueError, match='source_kind'):
    cifar.load_fc100(root, 'train', source_kind='zip', cache_dir=cache)
  with pytest.raises(FileNotFoundError, match='not a directory'):
    cifar.load_cifar_fs(tmp_path / 'nowhere', 'train', cache_dir=cache)
  with pytest.raises(
    FileNotFoundError, match=r'cifar-100-python\.tar\.gz not found.*www\.cs\.toronto\.edu'
  ):
    cifar.load_cifar_fs(root, 'train', source_kind='archive', cache_dir=cache)
  os.remove(root / 'cifar-100-python' / 'test')
  with pytest.raises(FileNotFoundError, match=r'cifar-100-python/test not found'):
    cifar.load_cifar_fs(root, 'train', cache_dir=cache)
  with pytest.raises(FileNotFoundError, match=r'none of .* found.*cifar-100-python\.tar\.gz'):
    cifar.load_cifar_fs(tmp_path, 'train', cache_dir=cache)
  assert not cache.exists()  # Nothing was decoded or written.


def test_data_without_the_manifests_classes(tmp_path, monkeypatch):
  root = tmp_path / 'data'
  md5s = make_cifar100(root)
  patch_cifar_manifests(monkeypatch, tmp_path / 'm', md5s)
  from tests.utils import patch_manifests

  patch_manifests(
    monkeypatch,
    tmp_path / 'm',
    cifar_fs=lambda d: d['splits'].update(train=[['fish', 'dolphin']]),
    fc100=lambda d: d['splits'].update(train=['people']),
  )
  with pytest.raises(ValueError, match="class 'dolphin' is not in superclass 'fish'"):
    cifar.load_cifar_fs(root, 'train', cache_dir=tmp_path / 'cache')
  with pytest.raises(ValueError, match="no superclass 'people'"):
    cifar.load_fc100(root, 'train', cache_dir=tmp_path / 'cache')


def test_shipped_splits_without_data():
  assert len(cifar.cifar_fs_classes('train')) == 64
  assert cifar.fc100_superclasses('val') == (
    'large_carnivores',
    'large_omnivores_and_herbivores',
    'non-insect_invertebrates',
    'small_mammals',
  )


def _png(image):
  from PIL import Image

  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format='PNG')
  return buffer.getvalue()


class _Source(list):
  """What ``tfds.data_source`` returns, as far as the loader uses it."""

  def __init__(self, records, fine, coarse):
    super().__init__(records)
    features = {
      'label': types.SimpleNamespace(names=fine),
      'coarse_label': types.SimpleNamespace(names=coarse),
    }
    self.dataset_info = types.SimpleNamespace(features=features)


def _tfds_root(tmp_path):
  version_dir = tmp_path / 'tfds' / 'cifar100' / '3.0.2'
  version_dir.mkdir(parents=True)
  (version_dir / 'dataset_info.json').write_text('{}')
  for split in ('train', 'test'):
    (version_dir / f'cifar100-{split}.array_record-00000-of-00001').write_bytes(b'')
  return tmp_path / 'tfds'


def test_tfds_cifar100_gives_the_pickles_arrays(tmp_path, monkeypatch):
  """TFDS cifar100 records (mocked with tfds.testing.mock_data; shuffled, as
  TFDS stores them) give the same arrays as the python version's pickles."""
  tfds = pytest.importorskip('tensorflow_datasets')
  fine, coarse, files = mini_cifar_records()
  root = tmp_path / 'data'
  patch_cifar_manifests(monkeypatch, tmp_path / 'm', make_cifar100(root))
  calls = []

  def as_data_source(self, split, decoders=None, **kwargs):
    assert self.name == 'cifar100' and 'image' in decoders
    calls.append(split)
    records = [
      {'id': f'{split}_{i:05d}', 'image': _png(image), 'label': f, 'coarse_label': c}
      for i, (image, f, c) in enumerate(files[split])
    ]
    order = np.random.default_rng(0).permutation(len(records))
    return _Source([records[i] for i in order], fine, coarse)

  tfds_root = _tfds_root(tmp_path)
  with tfds.testing.mock_data(
    policy=tfds.testing.MockPolicy.USE_CODE, as_data_source_fn=as_data_source
  ):
    for load, split in ((cifar.load_cifar_fs, 'train'), (cifar.load_fc100, 'train')):
      got = load(tfds_root, split, cache_dir=tmp_path / 'cache')
      want = load(root, split, cache_dir=tmp_path / 'cache')
      assert got.classes == want.classes and got.superclasses == want.superclasses
      np.testing.assert_array_equal(got.images, want.images)
    assert calls == ['train', 'test', 'train', 'test']
    cifar.load_cifar_fs(tfds_root, 'train', cache_dir=tmp_path / 'cache')
    assert len(calls) == 4  # Cached.

    def unnamed(self, split, **kwargs):
      numbers = [str(i) for i in range(len(fine))]
      return _Source([], numbers, numbers)

  with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE, as_data_source_fn=unnamed):
    with pytest.raises(ValueError, match='no label names'):
      cifar.load_cifar_fs(tfds_root, 'val', cache_dir=tmp_path / 'cache')


def test_tfds_missing_records(tmp_path):
  tfds_root = _tfds_root(tmp_path)
  os.remove(tfds_root / 'cifar100' / '3.0.2' / 'cifar100-test.array_record-00000-of-00001')
  with pytest.raises(FileNotFoundError, match=r'no cifar100-test\.array_record-\* file'):
    cifar.load_cifar_fs(tfds_root, 'train', cache_dir=tmp_path / 'cache')


def test_mini_split_is_the_manifests(mini):
  assert [c for _, c in MINI_CIFAR_FS['train']] == list(
    cifar.load_cifar_fs(mini[0], 'train', cache_dir=mini[1]).classes
  )


def test_tfds_source_without_tensorflow_datasets_names_the_extra(tmp_path, monkeypatch):
  import sys

  monkeypatch.setitem(sys.modules, 'tensorflow_datasets', None)
  with pytest.raises(ImportError, match=r'TFDS CIFAR-100 source needs tensorflow-datasets'):
    cifar.load_cifar_fs(_tfds_root(tmp_path), 'train', cache_dir=tmp_path / 'cache')
