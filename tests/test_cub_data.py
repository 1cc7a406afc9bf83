"""CUB-200-2011 loader on a miniature in the real layout (folder and archive),
and the samplers' ``counts``: classes of unequal size are padded, and tasks
are drawn only within each class's images."""

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmaml.data import cache as cache_lib
from jaxmaml.data import cub
from jaxmaml.data import episodes
from jaxmaml.data import manifest
from tests.utils import MINI_CUB
from tests.utils import MINI_CUB_COUNTS
from tests.utils import failing
from tests.utils import make_cub
from tests.utils import mini_cub_color
from tests.utils import only_entry
from tests.utils import patch_cub_manifest
from tests.utils import unwritable_dir


@pytest.fixture(params=['folder', 'archive'])
def mini(request, tmp_path, monkeypatch):
  root = tmp_path / 'data'
  md5 = make_cub(root, layout=request.param)
  patch_cub_manifest(monkeypatch, tmp_path / 'manifests', md5)
  return root, tmp_path / 'cache'


def test_shapes_order_padding_pixels_and_cache(mini):
  root, cache = mini
  split = cub.load_cub(root, 'train', image_size=10, cache_dir=cache)
  assert split.classes == tuple(MINI_CUB['train'])  # The manifest's order.
  counts = [MINI_CUB_COUNTS[c] for c in split.classes]
  assert split.counts.tolist() == counts and split.counts.dtype == np.int64
  assert split.images.shape == (2, max(counts), 10, 10, 3) and split.images.dtype == np.uint8
  assert isinstance(split.images, np.memmap)
  for c, klass in enumerate(split.classes):
    for k in range(counts[c]):  # File-name order, not images.txt's.
      np.testing.assert_allclose(split.images[c, k, 5, 5], mini_cub_color(klass, k), atol=4)
    assert not split.images[c, counts[c] :].any()  # Zero padding.
  files = sorted(f for f in os.listdir(cache) if f.endswith('.npy'))
  assert len(files) == 1 and files[0].startswith('cub-train-10px-')
  start = time.perf_counter()
  again = cub.load_cub(root, 'train', image_size=10, cache_dir=cache)
  assert time.perf_counter() - start < 1.0
  np.testing.assert_array_equal(again.images, split.images)
  np.testing.assert_array_equal(again.counts, split.counts)
  assert sorted(f for f in os.listdir(cache) if f.endswith('.npy')) == files
  assert cub.load_cub(root, 'test', image_size=10, cache_dir=cache).counts.tolist() == [3, 2]


def test_default_size_and_the_extracted_folder_as_root(tmp_path, monkeypatch):
  make_cub(tmp_path / 'data')
  patch_cub_manifest(monkeypatch, tmp_path / 'manifests')
  split = cub.load_cub(tmp_path / 'data' / 'CUB_200_2011', 'val', cache_dir=tmp_path / 'cache')
  assert split.images.shape == (2, 4, 84, 84, 3) and split.counts.tolist() == [2, 4]


def test_archive_errors_and_verification_once(tmp_path, monkeypatch):
  root = tmp_path / 'data'
  md5 = make_cub(root, layout='archive')
  patch_cub_manifest(monkeypatch, tmp_path / 'manifests', md5)
  calls = []
  original = manifest.hash_file
  monkeypatch.setattr(manifest, 'hash_file', lambda p, a: calls.append(p) or original(p, a))
  for split in ('train', 'val', 'test'):
    cub.load_cub(root, split, image_size=8, cache_dir=tmp_path / 'cache')
  assert len(calls) == 1  # The archive is hashed once, not once per split.
  patch_cub_manifest(monkeypatch, tmp_path / 'manifests', 'e' * 32)
  with pytest.raises(ValueError, match=r'CUB_200_2011\.tgz: md5 [0-9a-f]+ does not match'):
    cub.load_cub(root, 'train', image_size=9, cache_dir=tmp_path / 'cache')
  assert not list((tmp_path / 'cache').glob('cub-train-9px-*'))  # Nothing decoded.
  os.remove(root / 'CUB_200_2011.tgz')
  with pytest.raises(FileNotFoundError, match=r'CUB_200_2011\.tgz found.*vision\.caltech\.edu'):
    cub.load_cub(root, 'train', cache_dir=tmp_path / 'cache')


def test_cached_counts_are_checked(mini, monkeypatch):
  # The JSON sidecar's counts say which images are real: a changed count is
  # caught like changed pixels.
  root, cache = mini
  cub.load_cub(root, 'train', image_size=10, cache_dir=cache)
  sidecar = only_entry(cache).with_suffix('.json')
  meta = json.loads(sidecar.read_text())
  sidecar.write_text(json.dumps({**meta, 'counts': [c + 1 for c in meta['counts']]}))
  monkeypatch.setattr(manifest, 'decode_image', failing('decoding'))
  with pytest.raises(
    ValueError,
    match=r'does not match the checksum recorded in .*: its JSON sidecar has sha256.*\.json and',
  ):
    cub.load_cub(root, 'train', image_size=10, cache_dir=cache)
  sidecar.unlink()  # A sidecar missing is refused too: the entry is not rebuilt over.
  with pytest.raises(ValueError, match=r'cub-train-10px-.*\.npy is unreadable'):
    cub.load_cub(root, 'train', image_size=10, cache_dir=cache)
  assert only_entry(cache).is_file() and cache_lib.checksum_path(only_entry(cache)).is_file()


def test_unwritable_cache_dir_is_refused_before_hashing_or_decoding(mini, monkeypatch, tmp_path):
  root, _ = mini
  cache = unwritable_dir(tmp_path)
  monkeypatch.setattr(manifest, 'hash_file', failing('hashing the archive'))
  monkeypatch.setattr(manifest, 'decode_image', failing('decoding'))
  with pytest.raises(OSError, match=rf'CUB-200-2011: the cache directory {cache} is not writable'):
    cub.load_cub(root, 'train', image_size=10, cache_dir=cache)


def test_folder_and_argument_errors(tmp_path, monkeypatch):
  root = tmp_path / 'data'
  make_cub(root)
  patch_cub_manifest(monkeypatch, tmp_path / 'manifests')
  cache = tmp_path / 'cache'
  with pytest.raises(ValueError, match='split must be one of'):
    cub.load_cub(root, 'novel', cache_dir=cache)
  with pytest.raises(ValueError, match='image_size'):
    cub.load_cub(root, 'train', image_size=-1, cache_dir=cache)
  with pytest.raises(FileNotFoundError, match='not a directory'):
    cub.load_cub(root / 'nowhere', 'train', cache_dir=cache)
  with pytest.raises(FileNotFoundError, match=r'CUB_200_2011\.tgz not found'):
    cub.load_cub(root, 'train', source_kind='archive', cache_dir=cache)
  klass = MINI_CUB['train'][0]
  first = sorted(os.listdir(root / 'CUB_200_2011' / 'images' / klass))[0]
  os.remove(root / 'CUB_200_2011' / 'images' / klass / first)
  with pytest.raises(FileNotFoundError, match=r'1 image\(s\) listed in images\.txt are missing'):
    cub.load_cub(root, 'train', cache_dir=cache)
  patch_cub_manifest(monkeypatch, tmp_path / 'manifests')
  path = tmp_path / 'manifests' / 'cub.json'
  data = json.loads(path.read_text())
  data['splits']['val'] = ['005.Crested_Auklet']
  path.write_text(json.dumps(data))
  with pytest.raises(ValueError, match=r'lists no images of 1 class.*005\.Crested_Auklet'):
    cub.load_cub(root, 'val', cache_dir=cache)
  os.remove(root / 'CUB_200_2011' / 'images.txt')
  with pytest.raises(FileNotFoundError, match=r'neither .*images\.txt .* nor .*CUB_200_2011\.tgz'):
    cub.load_cub(root, 'val', cache_dir=cache)
  assert not cache.exists()  # Nothing was decoded or written.


def test_shipped_split_without_data():
  assert len(cub.split_classes('train')) == 100
  assert cub.split_classes('test')[:2] == ('004.Groove_billed_Ani', '008.Rhinoceros_Auklet')


# The samplers with counts: a padded dataset whose padding is marked 255 and
# whose real images carry their (class, index) in pixel (0, 0).
COUNTS = np.array([2, 5, 3, 4])


def _padded():
  images = np.full((4, 5, 4, 4, 3), 255, np.uint8)
  for c, count in enumerate(COUNTS):
    for k in range(count):
      images[c, k] = 0
      images[c, k, 0, 0, :2] = (c, k)
  return images


def _drawn(x):
  """``(class, index)`` of each example of ``x [..., 4, 4, 3]`` in [0, 1]."""
  pixel = np.rint(np.asarray(x)[..., 0, 0, :] * 255).astype(int)
  assert (pixel[..., 2] == 0).all(), 'a padded slot was drawn'
  return pixel[..., :2]


@pytest.mark.parametrize('sampler', ['device', 'host'])
def test_samplers_draw_only_within_counts(sampler):
  images = _padded()
  kwargs = dict(num_ways=3, num_shots=1, num_queries=1, rotate=False, counts=COUNTS)
  if sampler == 'host':
    tasks = next(episodes.host_episodes(0, images, 200, **kwargs))
  else:
    # Jitted, counts traced (eagerly, the sampler runs op by op: slow).
    sample = jax.jit(episodes.sample_episodes, static_argnums=2, static_argnames=tuple(kwargs)[:-1])
    tasks = sample(jax.random.key(0), jnp.asarray(images), 200, **kwargs)
  support, query = _drawn(tasks.support[0]), _drawn(tasks.query[0])  # [200, 3, 2]
  assert (support[..., 1] < COUNTS[support[..., 0]]).all()
  assert (query[..., 1] < COUNTS[query[..., 0]]).all()
  assert (support[..., 0] == query[..., 0]).all()  # Same class, per label.
  assert (support[..., 1] != query[..., 1]).all()  # Distinct examples.
  # Every image of every class is drawn at some point (the draws are uniform).
  seen = {tuple(p) for p in np.concatenate([support, query], 1).reshape(-1, 2)}
  assert seen == {(c, k) for c, n in enumerate(COUNTS) for k in range(n)}


def test_sampler_counts_errors():
  images = _padded()
  with pytest.raises(ValueError, match='smallest class of the dataset has only 2'):
    episodes.sample_episodes(
      jax.random.key(0), images, 2, num_ways=2, num_shots=2, num_queries=1, counts=COUNTS
    )
  with pytest.raises(ValueError, match=r'counts must have shape \[num_classes\]'):
    next(episodes.host_episodes(0, images, 2, num_ways=2, num_shots=1, num_queries=1, counts=[2]))
  with pytest.raises(ValueError, match=r'counts must be in 1\.\.5'):
    episodes.check_episode_request(images.shape, 2, 1, 1, counts=np.array([2, 6, 3, 4]))


def test_without_pillow_names_the_extra(tmp_path, monkeypatch):
  import sys

  make_cub(tmp_path / 'data')
  patch_cub_manifest(monkeypatch, tmp_path / 'manifests')
  for name in ('PIL', 'PIL.Image'):
    monkeypatch.setitem(sys.modules, name, None)  # An import of it now fails.
  with pytest.raises(ImportError, match=r'CUB-200-2011 images needs pillow.*jaxmaml\[data\]'):
    cub.load_cub(tmp_path / 'data', 'train', cache_dir=tmp_path / 'cache')
