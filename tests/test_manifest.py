"""The shipped manifests (the published splits, internally consistent) and the
shared file checks: missing files, checksums verified once, safe pickles, the
streamed cache."""

import json
import os
import pickle
import re

import numpy as np
import pytest

from jaxmaml.data import manifest
from tests.utils import md5_of

SHIPPED = ('cifar100', 'cifar_fs', 'fc100', 'cub', 'tiered_imagenet')


@pytest.mark.parametrize('name', SHIPPED)
def test_every_manifest_cites_its_source_and_where_to_get_its_files(name):
  data = manifest.load(name)
  assert data['name'] == name and data['source'] and data['description']
  for file_name, entry in data.get('files', {}).items():
    assert entry['url'], file_name
    for algorithm, length in (('md5', 32), ('sha256', 64)):
      if algorithm in entry:
        assert re.fullmatch(f'[0-9a-f]{{{length}}}', entry[algorithm]), (file_name, entry)
  assert 'splits' in data or 'files' in data


def test_cifar_fs_split_is_a_partition_of_cifar100():
  splits = manifest.load('cifar_fs')['splits']
  assert [len(splits[s]) for s in ('train', 'val', 'test')] == [64, 16, 20]
  pairs = [tuple(p) for s in splits.values() for p in s]
  assert len({c for _, c in pairs}) == 100  # Disjoint, all of CIFAR-100.
  superclasses = {}
  for superclass, name in pairs:
    superclasses.setdefault(superclass, []).append(name)
  assert len(superclasses) == 20 and {len(v) for v in superclasses.values()} == {5}


def test_fc100_split_is_a_partition_of_the_superclasses():
  splits = manifest.load('fc100')['splits']
  assert [len(splits[s]) for s in ('train', 'val', 'test')] == [12, 4, 4]
  everything = [s for split in splits.values() for s in split]
  cifar_fs = {s for split in manifest.load('cifar_fs')['splits'].values() for s, _ in split}
  assert len(set(everything)) == 20 and set(everything) == cifar_fs


def test_cub_split_follows_the_closer_look_rule():
  """Chen et al.'s write_CUB_filelist.py: classes in sorted order, 0-based
  index i: train if i % 2 == 0, val if i % 4 == 1, test if i % 4 == 3."""
  splits = manifest.load('cub')['splits']
  assert [len(splits[s]) for s in ('train', 'val', 'test')] == [100, 50, 50]
  everything = sorted(c for split in splits.values() for c in split)
  assert [int(c[:3]) for c in everything] == list(range(1, 201))
  rule = {'train': lambda i: i % 2 == 0, 'val': lambda i: i % 4 == 1, 'test': lambda i: i % 4 == 3}
  for split, classes in splits.items():
    assert classes == sorted(classes)
    assert all(rule[split](int(c[:3]) - 1) for c in classes), split


def test_tiered_imagenet_split_has_the_papers_sizes():
  splits = manifest.load('tiered_imagenet')['splits']
  sizes = {s: (len(p), len({sup for _, sup in p})) for s, p in splits.items()}
  assert sizes == {'train': (351, 20), 'val': (97, 6), 'test': (160, 8)}
  classes = [c for p in splits.values() for c, _ in p]
  supers = [s for p in splits.values() for _, s in p]
  assert len(set(classes)) == 608 and len(set(supers)) == 34
  assert all(re.fullmatch(r'n\d{8}', w) for w in classes + supers)
  by_split = [{s for _, s in p} for p in splits.values()]
  assert sum(map(len, by_split)) == 34  # No superclass in two splits.


def test_load_names_the_shipped_manifests_when_one_is_unknown():
  with pytest.raises(FileNotFoundError, match=r"No manifest 'nope'.*'cub'"):
    manifest.load('nope')


def test_require_names_the_file_and_where_to_get_it(tmp_path):
  entry = {'name': 'a.tgz', 'url': 'https://example.org/a.tgz'}
  with pytest.raises(FileNotFoundError, match=r'Data: .*a\.tgz not found.*https://example\.org'):
    manifest.require(tmp_path / 'a.tgz', entry, 'Data')
  (tmp_path / 'a.tgz').write_bytes(b'x')
  assert manifest.require(tmp_path / 'a.tgz', entry, 'Data') == tmp_path / 'a.tgz'


@pytest.fixture
def counted_hashes(monkeypatch):
  calls = []
  original = manifest.hash_file

  def counting(path, algorithms):
    calls.append(os.path.basename(path))
    return original(path, algorithms)

  monkeypatch.setattr(manifest, 'hash_file', counting)
  return calls


def test_verify_hashes_once_per_file_version(tmp_path, counted_hashes):
  path = tmp_path / 'big.bin'
  path.write_bytes(b'0123456789' * 1000)
  entry = {'name': 'big.bin', 'md5': md5_of(path), 'size': 10_000, 'url': 'u'}
  cache = tmp_path / 'cache'
  assert manifest.verify(path, entry, cache) is True
  assert manifest.verify(path, entry, cache) is False  # Recorded: not hashed again.
  assert counted_hashes == ['big.bin']
  assert len(os.listdir(cache / 'verified')) == 1
  stat = path.stat()
  os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # A new version.
  assert manifest.verify(path, entry, cache) is True
  assert counted_hashes == ['big.bin', 'big.bin']


def test_verify_sha256_and_nothing_published(tmp_path, counted_hashes):
  import hashlib

  path = tmp_path / 'f'
  path.write_bytes(b'abc')
  entry = {'name': 'f', 'sha256': hashlib.sha256(b'abc').hexdigest()}
  assert manifest.verify(path, entry, tmp_path / 'cache')
  assert not manifest.verify(path, {'name': 'f', 'url': 'u'}, tmp_path / 'cache')
  assert counted_hashes == ['f']


def test_verify_mismatches_name_the_file(tmp_path, counted_hashes):
  path = tmp_path / 'archive.tgz'
  path.write_bytes(b'not the official bytes')
  cache = tmp_path / 'cache'
  wrong_md5 = {'name': 'archive.tgz', 'md5': '0' * 32, 'url': 'https://example.org'}
  with pytest.raises(ValueError, match=r'archive\.tgz: md5 [0-9a-f]{32} does not match .*0{32}'):
    manifest.verify(path, wrong_md5, cache)
  with pytest.raises(ValueError, match=r'archive\.tgz has 22 bytes, but .* has 5'):
    manifest.verify(path, {'name': 'archive.tgz', 'size': 5, 'md5': '0' * 32}, cache)
  assert counted_hashes == ['archive.tgz']  # The size is checked before hashing.
  with pytest.raises(ValueError, match='does not match'):  # A failure is not recorded.
    manifest.verify(path, wrong_md5, cache)
  assert not (cache / 'verified').exists()


def test_load_pickle_reads_arrays_and_refuses_other_globals(tmp_path):
  import collections

  data = {'a': np.arange(6, dtype=np.uint8).reshape(2, 3), 'names': ['x', 'y'], 'n': 3}
  for protocol in (2, 4, 5):
    got = manifest.load_pickle(_bytes_io(pickle.dumps(data, protocol=protocol)), 'here')
    np.testing.assert_array_equal(got['a'], data['a'])
    assert got['names'] == ['x', 'y'] and got['n'] == 3
  with pytest.raises(ValueError, match=r'here is not a readable pickle.*collections\.OrderedDict'):
    manifest.load_pickle(_bytes_io(pickle.dumps(collections.OrderedDict(a=1))), 'here')
  with pytest.raises(ValueError, match=r'posix\.system|os\.system'):
    manifest.load_pickle(_bytes_io(pickle.dumps(_Exploit())), 'here')
  with pytest.raises(ValueError, match='not a readable pickle'):
    manifest.load_pickle(_bytes_io(b'garbage'), 'here')


class _Exploit:
  def __reduce__(self):
    return (os.system, ('true',))


def _bytes_io(data):
  import io

  return io.BytesIO(data)


def test_write_class_blocks_streams_an_npy_and_its_sidecar(tmp_path):
  path = tmp_path / 'cache' / 'x.npy'
  blocks = [np.full((2, 3), k, np.uint8) for k in range(4)]
  manifest.write_class_blocks(path, (4, 2, 3), iter(blocks), {'classes': list('abcd')})
  images, meta = manifest.read_cached(path)
  assert isinstance(images, np.memmap) and images.shape == (4, 2, 3)
  np.testing.assert_array_equal(images, np.stack(blocks))
  assert meta == {'classes': list('abcd')}
  # No temporary file left; the checksum sidecar beside the data.
  assert sorted(os.listdir(path.parent)) == ['x.json', 'x.npy', 'x.npy.checksum.json']
  with pytest.raises(ValueError, match='3 blocks written, expected 4'):
    manifest.write_class_blocks(tmp_path / 'y.npy', (4, 2, 3), iter(blocks[:3]), {})
  with pytest.raises(ValueError, match=r'block 0 has shape \(2, 2\)'):
    manifest.write_class_blocks(tmp_path / 'z.npy', (4, 2, 3), iter([np.zeros((2, 2))]), {})
  assert not (tmp_path / 'y.npy').exists() and not (tmp_path / 'z.npy').exists()
  assert manifest.read_cached(tmp_path / 'y.npy') is None
  assert json.loads((tmp_path / 'y.json').read_text()) == {}  # The sidecar comes first.


def test_check_arguments_name_the_argument(tmp_path):
  common = dict(dataset='D', splits=('train', 'val', 'test'), kinds=('folder',))
  assert manifest.check_arguments(tmp_path, 'val', 8, None, **common) == tmp_path
  with pytest.raises(ValueError, match='split must be one of'):
    manifest.check_arguments(tmp_path, 'validation', 8, None, **common)
  with pytest.raises(ValueError, match='image_size'):
    manifest.check_arguments(tmp_path, 'val', 0, None, **common)
  with pytest.raises(TypeError, match='image_size'):
    manifest.check_arguments(tmp_path, 'val', 8.0, None, **common)
  with pytest.raises(ValueError, match='source_kind must be None or one of'):
    manifest.check_arguments(tmp_path, 'val', 8, 'zip', **common)
  with pytest.raises(FileNotFoundError, match=r'D root .* is not a directory \(argument root\)'):
    manifest.check_arguments(tmp_path / 'nowhere', 'val', 8, None, **common)
