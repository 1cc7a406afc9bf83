"""The file cases of issue 18 ("nothing lost, nothing silent") as a table, for a sweep test.

``CASES`` is a list of ``(id, make, expected, regex)``: ``make(tmp_path)``
builds a damaged cache entry, an unwritable cache directory or a damaged
``log.jsonl`` in the empty directory ``tmp_path`` and runs the code that meets
it; ``expected`` is the exception it must raise, or the warning it must give
(a ``Warning`` subclass: the call then succeeds), with a message matching
``regex``. ``check(case, tmp_path)`` runs one. Every case is synthetic and
takes milliseconds; each is also covered in place by the tests named in its
comment.

Usage, in a sweep module::

  @pytest.mark.parametrize('case', sweep_files.CASES, ids=[c[0] for c in sweep_files.CASES])
  def test_files(case, tmp_path):
    sweep_files.check(case, tmp_path)
"""

from collections.abc import Callable
import json
import pathlib

import numpy as np
import pytest

from experiments import logs
from jaxmaml.data import cache
from jaxmaml.data import manifest
from jaxmaml.data import miniimagenet
from jaxmaml.data import omniglot
from tests.utils import failing
from tests.utils import make_miniimagenet
from tests.utils import unwritable_dir
from tests.utils import zero_npy

Case = tuple[str, Callable[[pathlib.Path], object], type, str]


def _entry(tmp_path: pathlib.Path) -> pathlib.Path:
  """A written ``.npy`` entry with a JSON sidecar, as the manifest loaders write them."""
  path = tmp_path / 'x.npy'
  blocks = [np.full((2, 3), k + 1, np.uint8) for k in range(4)]
  manifest.write_class_blocks(path, (4, 2, 3), iter(blocks), {'counts': [2, 2, 1, 2]})
  return path


def _zeroed(tmp_path):  # test_{miniimagenet,cifar,tiered_imagenet}_data: ... is checked
  path = _entry(tmp_path)
  zero_npy(path)
  return manifest.read_cached(path)


def _meta_edited(tmp_path):  # test_cub_data: test_cached_counts_are_checked
  path = _entry(tmp_path)
  path.with_suffix('.json').write_text(json.dumps({'counts': [2, 2, 2, 2]}))
  return manifest.read_cached(path)


def _meta_missing(tmp_path):  # test_cub_data: test_cached_counts_are_checked
  path = _entry(tmp_path)
  path.with_suffix('.json').unlink()
  return manifest.read_cached(path)


def _checksum_unreadable(tmp_path):  # test_cifar_data: test_cached_split_is_checked_...
  path = _entry(tmp_path)
  cache.checksum_path(path).write_text('{"format": 1, "arr')
  return manifest.read_cached(path)


def _npy_unreadable(tmp_path):
  path = _entry(tmp_path)
  path.write_bytes(b'not an npy file')
  return manifest.read_cached(path)


def _no_checksum(tmp_path):  # test_{miniimagenet,tiered_imagenet}_data: ..._accepted_once_...
  path = _entry(tmp_path)
  cache.checksum_path(path).unlink()
  return manifest.read_cached(path)


def _tiny_omniglot(images=7):
  return omniglot.Omniglot(
    images=np.full([omniglot.NUM_CHARACTERS, omniglot.NUM_DRAWERS, 2, 2], images, np.uint8),
    alphabets=np.array(['a'] * omniglot.NUM_CHARACTERS),
    character_ids=np.arange(1, omniglot.NUM_CHARACTERS + 1, dtype=np.int32),
  )


def _omniglot_zeroed(tmp_path):  # test_omniglot_data: test_cache_content_is_checked
  path = tmp_path / 'omniglot-test.npz'
  omniglot._save_cache(path, _tiny_omniglot())
  np.savez_compressed(path, **_tiny_omniglot(images=0)._asdict())
  return omniglot._load_cache(path, 2)


def _omniglot_unreadable(tmp_path):  # test_omniglot_data: test_unreadable_cache_is_refused_...
  path = tmp_path / 'omniglot-test.npz'
  path.write_bytes(b'garbage')
  return omniglot._load_cache(path, 2)


def _cache_dir_unwritable(tmp_path):  # test_*_data: test_unwritable_cache_dir_is_refused_...
  return cache.check_writable(unwritable_dir(tmp_path), 'D')


def _miniimagenet_cache_dir_unwritable(tmp_path):
  root = make_miniimagenet(tmp_path / 'mini')
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(miniimagenet, '_load_image', failing('decoding'))
    return miniimagenet.load_miniimagenet(root, 'train', cache_dir=unwritable_dir(tmp_path))


def _log(tmp_path, text):
  (tmp_path / 'log.jsonl').write_text(text)
  return tmp_path / 'log.jsonl'


def _log_corrupt_middle(tmp_path):  # test_logs: test_read_log_refuses_corruption_...
  return logs.read_log(_log(tmp_path, '{"step": 1}\n{"step": 2, "tr\n{"step": 3}\n'))


def _log_partial_last(tmp_path):  # test_logs: test_read_log_ignores_a_bad_last_line_...
  return logs.read_log(_log(tmp_path, '{"step": 1}\n{"step": 2, "tr'))


def _log_resumed_after_partial(tmp_path):  # test_logs: test_resumed_writer_drops_...
  _log(tmp_path, '{"step": 1}\n{"step": 2, "tr')
  logs.open_writer(str(tmp_path), ('jsonl',), start_step=1).close()


def _log_resumed_after_corruption(tmp_path):  # test_logs: test_read_log_refuses_corruption_...
  _log(tmp_path, '{"step": 1}\ngarbage\n{"step": 3}\n')
  logs.open_writer(str(tmp_path), ('jsonl',), start_step=1).close()


_MISMATCH = r'does not match the checksum recorded in .*\.checksum\.json: '
CASES: list[Case] = [
  ('cache-npy-zeroed', _zeroed, ValueError, _MISMATCH + r"'array' has sha256 .*Delete .*x\.npy"),
  ('cache-meta-edited', _meta_edited, ValueError, _MISMATCH + 'its JSON sidecar has sha256'),
  ('cache-meta-missing', _meta_missing, ValueError, r'x\.npy is unreadable.*Delete'),
  ('cache-checksum-unreadable', _checksum_unreadable, ValueError, r'checksum .* is unreadable'),
  ('cache-npy-unreadable', _npy_unreadable, ValueError, r'x\.npy is unreadable.*Delete'),
  ('cache-no-checksum', _no_checksum, UserWarning, r'has no checksum.*recorded now'),
  ('omniglot-cache-zeroed', _omniglot_zeroed, ValueError, _MISMATCH + "'images' has sha256"),
  ('omniglot-cache-unreadable', _omniglot_unreadable, ValueError, r'npz is unreadable.*Delete'),
  ('cache-dir-unwritable', _cache_dir_unwritable, OSError, r'cache directory .* is not writable'),
  (
    'miniimagenet-cache-dir-unwritable',
    _miniimagenet_cache_dir_unwritable,
    OSError,
    r'miniImageNet: the cache directory .* is not writable.*nothing was preprocessed',
  ),
  ('log-corrupt-middle-line', _log_corrupt_middle, ValueError, r'log\.jsonl, line 2: not a JSON'),
  ('log-partial-last-line', _log_partial_last, UserWarning, r'Ignoring the partial last line'),
  (
    'log-resumed-after-partial-line',
    _log_resumed_after_partial,
    UserWarning,
    r'Dropping the partial last line .*\(line 2',
  ),
  (
    'log-resumed-after-corruption',
    _log_resumed_after_corruption,
    ValueError,
    r'log\.jsonl, line 2: not a JSON object',
  ),
]


def check(case: Case, tmp_path: pathlib.Path) -> None:
  """Runs ``case`` in the empty directory ``tmp_path``: it must raise (or warn) as listed."""
  _, make, expected, regex = case
  if issubclass(expected, Warning):
    with pytest.warns(expected, match=regex):
      make(tmp_path)
  else:
    with pytest.raises(expected, match=regex):
      make(tmp_path)
