"""Omniglot loader: every source gives the same arrays; pixels, cache, splits, Lake runs, errors.

The data is read in place from ``../shared/data`` (relative to the repository
root); the tests that need it are skipped when it is not there.
"""

import hashlib
import io
import os
import pathlib
import shutil
import time
import zipfile

import numpy as np
from PIL import Image
import pytest

from jaxmaml.data import cache
from jaxmaml.data import omniglot

DATA = pathlib.Path(__file__).resolve().parents[1].parent / 'shared' / 'data'
ZIPS = DATA / 'omniglot'
TFDS = DATA / 'tfds'
LAKE = ZIPS / 'one-shot-classification' / 'all_runs.zip'

needs_zips = pytest.mark.skipif(
  not (ZIPS / 'images_evaluation.zip').is_file(), reason=f'Omniglot zips not in {ZIPS}'
)
needs_tfds = pytest.mark.skipif(
  not (TFDS / 'omniglot' / omniglot.TFDS_VERSION).is_dir(), reason=f'TFDS Omniglot not in {TFDS}'
)
needs_lake = pytest.mark.skipif(not LAKE.is_file(), reason=f'{LAKE} not found')


@pytest.fixture(scope='module')
def cache_dir(tmp_path_factory):
  return tmp_path_factory.mktemp('omniglot_cache')


@pytest.fixture(scope='module')
def from_zip(cache_dir):
  return omniglot.load_omniglot(ZIPS, cache_dir=cache_dir)


@pytest.fixture(scope='module')
def from_tfds(cache_dir):
  return omniglot.load_omniglot(TFDS, cache_dir=cache_dir)


def _reference_preprocess(png: bytes, size: int) -> np.ndarray:
  """An independent version of the MAML pixel convention: invert, then Lanczos."""
  gray = np.asarray(Image.open(io.BytesIO(png)).convert('L')).astype(np.int32)
  inverted = Image.fromarray((255 - gray).astype(np.uint8))
  return np.asarray(inverted.resize((size, size), Image.Resampling.LANCZOS))


# ----------------------------------------------------------------------------
# The data.


@needs_zips
def test_shapes_order_and_alphabets(from_zip):
  images, alphabets, character_ids = from_zip
  assert images.shape == (1623, 20, 28, 28) and images.dtype == np.uint8
  np.testing.assert_array_equal(character_ids, np.arange(1, 1624))
  assert alphabets.shape == (1623,) and len(set(alphabets)) == 50
  with zipfile.ZipFile(ZIPS / 'images_background.zip') as archive:
    background = {n.split('/')[1] for n in archive.namelist() if n.endswith('.png')}
  assert len(background) == 30
  # The first 964 characters (ids 1..964) are exactly the background set.
  assert np.isin(alphabets, list(background)).sum() == 964
  assert set(alphabets[:964]) == background
  assert alphabets[character_ids == 683][0] == 'Latin'  # Latin is ids 683..708.
  assert alphabets[-1] == 'ULOG'  # ULOG is ids 1598..1623.


@needs_zips
def test_pixels_are_stroke_images_with_ink_high(from_zip):
  images = from_zip.images
  assert images.min() == 0 and images.max() == 255
  ink = (images > 127).mean()
  assert 0.03 < ink < 0.15, ink  # Thin strokes on an empty background.
  corners = images[:, :, [0, 0, -1, -1], [0, -1, 0, -1]]
  assert (corners == 0).mean() > 0.99
  assert np.isin(images, [0, 255]).mean() > 0.7  # Binary but for antialiased edges.
  per_image_ink = (images > 127).mean(axis=(2, 3))
  assert per_image_ink.min() > 0  # Every drawing has some ink.


@needs_zips
@pytest.mark.parametrize('character_id,drawer', [(1, 1), (709, 2), (1000, 17), (1623, 20)])
def test_pixels_match_an_independent_preprocessing(from_zip, character_id, drawer):
  subset = 'images_background' if character_id <= 964 else 'images_evaluation'
  with zipfile.ZipFile(ZIPS / f'{subset}.zip') as archive:
    [name] = [n for n in archive.namelist() if n.endswith(f'/{character_id:04d}_{drawer:02d}.png')]
    want = _reference_preprocess(archive.read(name), 28)
  assert from_zip.alphabets[character_id - 1] == name.split('/')[1]
  np.testing.assert_array_equal(from_zip.images[character_id - 1, drawer - 1], want)


@pytest.mark.slow  # The default suite (~26 s) must stay under 10 min on 2 cores: docs/testing.md.
@needs_zips
@needs_tfds
def test_tfds_source_gives_identical_arrays(from_zip, from_tfds):
  # Same characters, same alphabets and, through the recovered drawer order,
  # the same images in the same places.
  np.testing.assert_array_equal(from_tfds.character_ids, from_zip.character_ids)
  np.testing.assert_array_equal(from_tfds.alphabets, from_zip.alphabets)
  assert from_tfds.images.dtype == np.uint8
  np.testing.assert_array_equal(from_tfds.images, from_zip.images)


@pytest.mark.slow  # The default suite (~28 s) must stay under 10 min on 2 cores: docs/testing.md.
@needs_zips
def test_folder_source_gives_identical_arrays(from_zip, tmp_path):
  source = tmp_path / 'extracted'
  for subset in ('images_background', 'images_evaluation'):
    with zipfile.ZipFile(ZIPS / f'{subset}.zip') as archive:
      archive.extractall(source)
  data = omniglot.load_omniglot(source, cache_dir=tmp_path / 'cache')
  for got, want in zip(data, from_zip):
    np.testing.assert_array_equal(got, want)


def _tfds_key_hash(split, key):
  """TFDS's shuffling hash (``tfds.core.hashing``), written out independently."""
  return int(hashlib.md5(split.encode() + key.encode()).hexdigest(), 16)


def test_tfds_drawers_follow_the_key_hash_order():
  # Two characters of one alphabet, written as TFDS does: sorted by key hash.
  records = [('Alpha', char, char + 1, drawer) for char in (0, 1) for drawer in range(1, 21)]
  by_hash = sorted(
    records, key=lambda r: _tfds_key_hash('train', f'{r[0]}_{r[1]}_{r[2]:04d}_{r[3]:02d}.png')
  )
  alphabets, char_ids, labels, drawers = zip(*by_hash)
  labels = [label - 1 for label in labels]
  got = omniglot._tfds_drawers('train', alphabets, char_ids, labels, 'here')
  assert got == list(drawers)
  # Another salt (split) or an unshuffled build (grouped by character) is detected.
  with pytest.raises(ValueError, match='not in TFDS key-hash order'):
    omniglot._tfds_drawers('test', alphabets, char_ids, labels, 'here')
  alphabets, char_ids, labels, _ = zip(*records)
  with pytest.raises(ValueError, match='not in TFDS key-hash order'):
    omniglot._tfds_drawers('train', alphabets, char_ids, [label - 1 for label in labels], 'here')
  with pytest.raises(ValueError, match='character 1 has 19 records'):
    omniglot._tfds_drawers(
      'train', alphabets[1:], char_ids[1:], [label - 1 for label in labels[1:]], 'here'
    )


# ----------------------------------------------------------------------------
# The cache.


@needs_zips
def test_cache_is_reused_and_fast(from_zip, cache_dir, monkeypatch):
  [cached] = cache_dir.glob('omniglot-zip-28px-*.npz')
  written = cached.stat().st_mtime_ns

  def no_preprocessing(*args):
    raise AssertionError('the cached load decoded an image')

  monkeypatch.setattr(omniglot, '_preprocess_png', no_preprocessing)
  start = time.perf_counter()
  again = omniglot.load_omniglot(ZIPS, cache_dir=cache_dir)
  elapsed = time.perf_counter() - start
  assert elapsed < 1.0, elapsed
  assert cached.stat().st_mtime_ns == written  # Read, not rewritten.
  for got, want in zip(again, from_zip):
    np.testing.assert_array_equal(got, want)
  assert again.alphabets.dtype.kind == 'U' and again.character_ids.dtype == np.int32
  # No temporary file was left behind by the writes; each entry has its checksum.
  names = {p.name for p in cache_dir.iterdir()}
  assert all(
    n.startswith('omniglot-') and n.endswith(('.npz', '.npz.checksum.json')) for n in names
  )
  assert {n for n in names if n.endswith('.npz')} == {
    n[: -len(cache.CHECKSUM_SUFFIX)] for n in names if n.endswith(cache.CHECKSUM_SUFFIX)
  }


def test_cache_dir_defaults_to_environment(monkeypatch, tmp_path):
  monkeypatch.setenv('JAXMAML_CACHE', str(tmp_path))
  assert cache.default_cache_dir() == tmp_path
  monkeypatch.delenv('JAXMAML_CACHE')
  assert cache.default_cache_dir() == pathlib.Path('~/.cache/jaxmaml').expanduser()


def _tiny_omniglot(size=2):
  return omniglot.Omniglot(
    images=np.full([omniglot.NUM_CHARACTERS, omniglot.NUM_DRAWERS, size, size], 7, np.uint8),
    alphabets=np.array(['a'] * omniglot.NUM_CHARACTERS),
    character_ids=np.arange(1, omniglot.NUM_CHARACTERS + 1, dtype=np.int32),
  )


def test_cache_write_is_atomic(tmp_path, monkeypatch):
  path = tmp_path / 'omniglot-test.npz'
  omniglot._save_cache(path, _tiny_omniglot())
  before = path.read_bytes()

  def crash_mid_write(file, **arrays):
    file.write(b'PK\x03\x04 half a file')
    raise KeyboardInterrupt

  monkeypatch.setattr(np, 'savez_compressed', crash_mid_write)
  with pytest.raises(KeyboardInterrupt):
    omniglot._save_cache(path, _tiny_omniglot())
  # No temporary file left ...
  assert sorted(os.listdir(tmp_path)) == [path.name, path.name + cache.CHECKSUM_SUFFIX]
  assert path.read_bytes() == before  # ... and the old cache intact.
  monkeypatch.undo()
  np.testing.assert_array_equal(omniglot._load_cache(path, 2).images, _tiny_omniglot().images)


def test_unreadable_cache_is_refused_and_left_as_it_is(tmp_path):
  # An entry is written atomically: one that does not read was damaged
  # afterwards, and is the user's to look at, not ours to overwrite.
  path = tmp_path / 'omniglot-test.npz'
  path.write_bytes(b'garbage')
  with pytest.raises(ValueError, match=rf'{path} is unreadable.*Delete {path}'):
    omniglot._load_cache(path, 2)
  assert path.read_bytes() == b'garbage'
  omniglot._save_cache(path, _tiny_omniglot(size=2))
  with pytest.raises(ValueError, match=r'shape \(1623, 20, 2, 2\), expected \(1623, 20, 3, 3\)'):
    omniglot._load_cache(path, 3)


def test_cache_content_is_checked(tmp_path):
  path = tmp_path / 'omniglot-test.npz'
  omniglot._save_cache(path, _tiny_omniglot())
  zeros = _tiny_omniglot()._replace(images=np.zeros_like(_tiny_omniglot().images))
  np.savez_compressed(path, **zeros._asdict())  # A valid file of the right shape.
  with pytest.raises(
    ValueError, match=rf"{path} does not match the checksum .*'images' has sha256 .*Delete {path}"
  ):
    omniglot._load_cache(path, 2)
  bad_order = _tiny_omniglot()._replace(character_ids=_tiny_omniglot().character_ids[::-1])
  np.savez_compressed(path, **bad_order._asdict())
  with pytest.raises(ValueError, match="'character_ids' has sha256"):
    omniglot._load_cache(path, 2)


@needs_zips
def test_real_cache_entry_checked_and_old_one_adopted(from_zip, cache_dir, tmp_path, monkeypatch):
  entry = next(cache_dir.glob('omniglot-zip-28px-*.npz'))
  mine = tmp_path / 'cache'
  mine.mkdir()
  shutil.copy(entry, mine / entry.name)  # Without its checksum: as jaxmaml wrote them before.
  monkeypatch.setattr(omniglot, '_preprocess_png', _no_preprocessing)
  with pytest.warns(UserWarning, match=rf'{entry.name} has no checksum.*recorded now'):
    adopted = omniglot.load_omniglot(ZIPS, cache_dir=mine)
  for got, want in zip(adopted, from_zip):
    np.testing.assert_array_equal(got, want)
  assert cache.checksum_path(mine / entry.name).read_bytes() == (
    cache.checksum_path(entry).read_bytes()
  )  # The same record as the one written with the entry.
  zeros = from_zip._replace(images=np.zeros_like(from_zip.images))
  np.savez_compressed(mine / entry.name, **zeros._asdict())
  with pytest.raises(ValueError, match=rf'{entry.name} does not match the checksum'):
    omniglot.load_omniglot(ZIPS, cache_dir=mine)


@needs_zips
def test_unwritable_cache_dir_is_refused_before_decoding(tmp_path, monkeypatch):
  (tmp_path / 'blocker').write_text('')  # Not a directory: unwritable even for root.
  monkeypatch.setattr(omniglot, '_preprocess_png', _no_preprocessing)
  start = time.perf_counter()
  with pytest.raises(OSError, match=r'Omniglot: the cache directory .*blocker.* is not writable'):
    omniglot.load_omniglot(ZIPS, cache_dir=tmp_path / 'blocker' / 'cache')
  assert time.perf_counter() - start < 5


def _no_preprocessing(*args):
  raise AssertionError('an image was decoded')


# ----------------------------------------------------------------------------
# Splits.


def test_split_sizes_disjoint_and_covering():
  splits = omniglot.split_characters()
  assert {k: v.shape for k, v in splits.items()} == {
    'train': (1100,),
    'val': (100,),
    'test': (423,),
  }
  everything = np.concatenate(list(splits.values()))
  np.testing.assert_array_equal(np.sort(everything), np.arange(1623))
  # Pinned: random.Random(1).shuffle over 0..1622, as MAML's random.seed(1).
  assert splits['train'][:5].tolist() == [713, 1081, 1577, 509, 665]
  assert splits['val'][:3].tolist() == [1552, 1219, 1082]


def test_split_is_deterministic_per_seed():
  first, again = omniglot.split_characters(), omniglot.split_characters(seed=1)
  other = omniglot.split_characters(seed=2)
  for name in ('train', 'val', 'test'):
    np.testing.assert_array_equal(first[name], again[name])
  assert not np.array_equal(first['train'], other['train'])
  assert set(first['test'].tolist()) != set(other['test'].tolist())


def test_split_custom_sizes():
  splits = omniglot.split_characters(10, num_train=5, num_val=5, seed=0)
  assert [len(v) for v in splits.values()] == [5, 5, 0]
  np.testing.assert_array_equal(np.sort(np.concatenate(list(splits.values()))), np.arange(10))


@pytest.mark.parametrize(
  'kwargs,match',
  [
    (dict(num_train=1600, num_val=100), 'exceeds num_characters'),
    (dict(num_characters=10), 'exceeds num_characters'),
    (dict(num_train=-1), 'num_train'),
    (dict(num_val=2.5), 'num_val'),
    (dict(num_characters=0), 'num_characters'),
    (dict(seed='1'), 'seed'),
  ],
)
def test_split_errors(kwargs, match):
  with pytest.raises(ValueError, match=match):
    omniglot.split_characters(**kwargs)


# ----------------------------------------------------------------------------
# Lake et al.'s one-shot runs.


@needs_lake
@needs_zips
def test_lake_runs(from_zip):
  runs = omniglot.load_lake_runs(LAKE)
  assert runs.train_images.shape == runs.test_images.shape == (20, 20, 28, 28)
  assert runs.train_images.dtype == runs.test_images.dtype == np.uint8
  assert runs.labels.shape == (20, 20)
  for row in runs.labels:
    assert sorted(row.tolist()) == list(range(20))
  # Every run image is an evaluation image; the labels pair test and training
  # images of the same character, and a run's 20 classes are distinct.
  character_of = {}
  for c in range(964, 1623):
    for image in from_zip.images[c]:
      character_of[image.tobytes()] = c
  for r in range(20):
    train = [character_of[image.tobytes()] for image in runs.train_images[r]]
    test = [character_of[image.tobytes()] for image in runs.test_images[r]]
    assert len(set(train)) == 20
    assert test == [train[k] for k in runs.labels[r]]
    assert not np.array_equal(runs.test_images[r, 0], runs.train_images[r, runs.labels[r, 0]])


@needs_lake
def test_lake_runs_at_full_size_are_binary():
  runs = omniglot.load_lake_runs(LAKE, image_size=105)
  assert runs.train_images.shape == (20, 20, 105, 105)
  assert set(np.unique(runs.test_images).tolist()) == {0, 255}
  with zipfile.ZipFile(LAKE) as archive:
    png = archive.read('run03/training/class07.png')
  original = np.asarray(Image.open(io.BytesIO(png)).convert('L'))
  np.testing.assert_array_equal(runs.train_images[2, 6], 255 - original)


# ----------------------------------------------------------------------------
# Errors.


def test_missing_source(tmp_path):
  with pytest.raises(FileNotFoundError, match='does not exist'):
    omniglot.load_omniglot(tmp_path / 'nowhere', cache_dir=tmp_path)
  (tmp_path / 'file').write_text('x')
  with pytest.raises(NotADirectoryError, match='not a directory'):
    omniglot.load_omniglot(tmp_path / 'file', cache_dir=tmp_path)


def test_source_without_data(tmp_path):
  (tmp_path / 'src').mkdir()
  with pytest.raises(FileNotFoundError, match='No Omniglot data.*images_background.zip'):
    omniglot.load_omniglot(tmp_path / 'src', cache_dir=tmp_path)
  (tmp_path / 'src' / 'images_background.zip').write_bytes(b'')
  with pytest.raises(FileNotFoundError, match='lacks .*images_evaluation.zip'):
    omniglot.load_omniglot(tmp_path / 'src', cache_dir=tmp_path)
  with pytest.raises(FileNotFoundError, match='lacks .*images_background/'):
    omniglot.load_omniglot(tmp_path / 'src', source_kind='folder', cache_dir=tmp_path)


@needs_zips
def test_parent_of_the_zips_gets_a_hint(tmp_path):
  with pytest.raises(FileNotFoundError, match='pass that directory'):
    omniglot.load_omniglot(DATA, source_kind=None, cache_dir=tmp_path)


@needs_zips
@pytest.mark.parametrize('damage', ['truncate', 'corrupt'])
def test_damaged_zip(tmp_path, damage):
  source = tmp_path / 'src'
  source.mkdir()
  for name in ('images_background.zip', 'images_evaluation.zip'):
    shutil.copy(ZIPS / name, source / name)
  broken = source / 'images_evaluation.zip'
  data = bytearray(broken.read_bytes())
  if damage == 'truncate':
    del data[len(data) // 2 :]
  else:  # Overwrite the compressed bytes of the first images; the index stays intact.
    data[2000:2600] = bytes(600)
  broken.write_bytes(bytes(data))
  start = time.perf_counter()
  with pytest.raises(ValueError, match='images_evaluation.zip is not a readable zip'):
    omniglot.load_omniglot(source, cache_dir=tmp_path / 'cache')
  assert time.perf_counter() - start < 5  # Found while reading, before decoding.
  assert not (tmp_path / 'cache').exists() or not list((tmp_path / 'cache').iterdir())


def test_tfds_wrong_version(tmp_path):
  (tmp_path / 'omniglot' / '9.9.9').mkdir(parents=True)
  with pytest.raises(FileNotFoundError, match=r"version 3\.0\.0.*found versions \['9\.9\.9'\]"):
    omniglot.load_omniglot(tmp_path, cache_dir=tmp_path)
  (tmp_path / 'omniglot' / '3.0.0').mkdir()
  (tmp_path / 'omniglot' / '3.0.0' / 'omniglot-train.tfrecord-00000-of-00001').write_bytes(b'')
  with pytest.raises(FileNotFoundError, match='array_record'):
    omniglot.load_omniglot(tmp_path, source_kind='tfds', cache_dir=tmp_path)


@pytest.mark.parametrize('image_size', [0, -28, 106, 28.0, True, '28', None])
def test_bad_image_size_is_rejected_first(tmp_path, image_size):
  # The source does not exist: the argument is checked before the source.
  with pytest.raises(ValueError, match=r'image_size must be an int in \[1, 105\]'):
    omniglot.load_omniglot(tmp_path / 'nowhere', image_size=image_size)
  with pytest.raises(ValueError, match='image_size'):
    omniglot.load_lake_runs(tmp_path / 'nowhere.zip', image_size=image_size)


def test_bad_source_kind_and_download(tmp_path):
  with pytest.raises(ValueError, match='source_kind must be one of'):
    omniglot.load_omniglot(tmp_path, source_kind='tar')
  with pytest.raises(ValueError, match="download=True only applies to source_kind='tfds'"):
    omniglot.load_omniglot(tmp_path, source_kind='zip', download=True)


def test_lake_runs_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match='all_runs.zip'):
    omniglot.load_lake_runs(tmp_path / 'all_runs.zip')
  (tmp_path / 'all_runs.zip').write_bytes(b'not a zip')
  with pytest.raises(ValueError, match='not a readable zip'):
    omniglot.load_lake_runs(tmp_path / 'all_runs.zip')
  with zipfile.ZipFile(tmp_path / 'empty.zip', 'w') as archive:
    archive.writestr('run01/class_labels.txt', '')
  with pytest.raises(ValueError, match='missing 800 images'):
    omniglot.load_lake_runs(tmp_path / 'empty.zip')
