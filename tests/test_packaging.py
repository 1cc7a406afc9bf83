"""Packaging: `import jaxmaml` needs only the core dependencies; optional ones fail clearly."""

import pathlib
import subprocess
import sys

import pytest

from jaxmaml.data import miniimagenet
from jaxmaml.data import omniglot

ROOT = pathlib.Path(__file__).resolve().parents[1]
CORE = {'jax', 'jaxlib', 'flax', 'optax', 'chex', 'numpy'}
# What the extras bring (pyproject.toml): none of it may be needed to import jaxmaml.
OPTIONAL_MODULES = ('tensorflow_datasets', 'tensorflow', 'PIL', 'matplotlib', 'tqdm', 'torch')

_IMPORT_EVERYTHING = f"""
import importlib.abc
import pkgutil
import sys

BLOCKED = {OPTIONAL_MODULES!r}


class Block(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path=None, target=None):
    if name.partition('.')[0] in BLOCKED:
      raise ModuleNotFoundError(f'No module named {{name!r}} (blocked by the test)', name=name)
    return None


sys.meta_path.insert(0, Block())
sys.path.insert(0, {str(ROOT)!r})
import jaxmaml
names = sorted(m.name for m in pkgutil.walk_packages(jaxmaml.__path__, 'jaxmaml.'))
for name in names:
  importlib.import_module(name)
loaded = sorted({{m.partition('.')[0] for m in sys.modules}} & set(BLOCKED))
assert not loaded, loaded
print(' '.join(names))
"""


def _requirement_name(requirement: str) -> str:
  for i, char in enumerate(requirement):
    if not (char.isalnum() or char in '-_.'):
      return requirement[:i]
  return requirement


def test_every_module_imports_without_the_optional_packages():
  result = subprocess.run(
    [sys.executable, '-c', _IMPORT_EVERYTHING],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 0, result.stderr
  imported = set(result.stdout.split())
  # The walk found the package's modules, data loaders included.
  assert {
    'jaxmaml.adapt',
    'jaxmaml.checkpoint',
    'jaxmaml.data.cache',
    'jaxmaml.data.omniglot',
    'jaxmaml.data.miniimagenet',
    'jaxmaml.data.episodes',
  } <= imported, imported


def test_core_dependencies_and_extras_are_declared():
  tomllib = pytest.importorskip('tomllib')  # Python >= 3.11.
  project = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']
  assert {_requirement_name(r) for r in project['dependencies']} == CORE
  extras = project['optional-dependencies']
  declared = {_requirement_name(r) for rs in extras.values() for r in rs}
  assert {'pillow', 'tensorflow-datasets', 'matplotlib', 'tqdm', 'pytest'} <= declared
  assert {'data', 'plots', 'experiments', 'test'} <= set(extras)
  assert project['license'] == 'Apache-2.0' and project['license-files'] == ['LICENSE']
  assert 'Apache License' in (ROOT / 'LICENSE').read_text()


def test_reading_images_without_pillow_names_the_extra(monkeypatch, tmp_path):
  for name in ('PIL', 'PIL.Image'):
    monkeypatch.setitem(sys.modules, name, None)  # An import of it now fails.
  for subset in ('images_background', 'images_evaluation'):
    (tmp_path / f'{subset}.zip').write_bytes(b'')
  with pytest.raises(ImportError, match=r'Reading Omniglot images needs pillow.*jaxmaml\[data\]'):
    omniglot.load_omniglot(tmp_path, cache_dir=tmp_path / 'cache')
  root = tmp_path / 'miniimagenet'
  (root / 'images').mkdir(parents=True)
  (root / 'images' / 'a.jpg').write_bytes(b'')
  (root / 'train.csv').write_text('filename,label\na.jpg,n01\n')
  with pytest.raises(ImportError, match=r'miniImageNet images needs pillow.*jaxmaml\[data\]'):
    miniimagenet.load_miniimagenet(root, 'train', cache_dir=tmp_path / 'cache')


def test_tfds_source_without_tensorflow_datasets_names_the_extra(monkeypatch, tmp_path):
  monkeypatch.setitem(sys.modules, 'tensorflow_datasets', None)
  version_dir = tmp_path / 'omniglot' / omniglot.TFDS_VERSION
  version_dir.mkdir(parents=True)
  for split in ('train', 'test'):
    (version_dir / f'omniglot-{split}.array_record-00000-of-00001').write_bytes(b'')
  with pytest.raises(
    ImportError, match=r'TFDS Omniglot source needs tensorflow-datasets.*jaxmaml\[data\]'
  ):
    omniglot.load_omniglot(tmp_path, cache_dir=tmp_path / 'cache')
