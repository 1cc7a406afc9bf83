"""Packaging: `import jaxmaml` needs only the core dependencies; optional ones fail clearly."""

import importlib.metadata
import pathlib
import site
import subprocess
import sys
import zipfile

import pytest

import jaxmaml
from jaxmaml.data import miniimagenet
from jaxmaml.data import omniglot

ROOT = pathlib.Path(__file__).resolve().parents[1]
CORE = {'jax', 'jaxlib', 'flax', 'optax', 'chex', 'numpy'}
# What the extras bring (pyproject.toml): none of it may be needed to import jaxmaml.
OPTIONAL_MODULES = (
  'tensorflow_datasets',
  'tensorflow',
  'PIL',
  'matplotlib',
  'tqdm',
  'torch',
  'orbax',
  'equinox',
  'tensorboardX',
  'tensorboard',
)

# A subprocess's first lines: importing any optional package fails.
_BLOCK_OPTIONAL = f"""
import importlib.abc
import sys

BLOCKED = {OPTIONAL_MODULES!r}


class Block(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path=None, target=None):
    if name.partition('.')[0] in BLOCKED:
      raise ModuleNotFoundError(f'No module named {{name!r}} (blocked by the test)', name=name)
    return None


sys.meta_path.insert(0, Block())
"""

_IMPORT_EVERYTHING = f"""
import importlib.abc
import pkgutil
import sys

{_BLOCK_OPTIONAL}sys.path.insert(0, {str(ROOT)!r})
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


def test_the_version_is_written_in_one_place():
  """pyproject.toml reads the version from ``jaxmaml.__version__``; the metadata agrees."""
  tomllib = pytest.importorskip('tomllib')  # Python >= 3.11.
  pyproject = tomllib.loads((ROOT / 'pyproject.toml').read_text())
  assert 'version' not in pyproject['project']
  assert pyproject['project']['dynamic'] == ['version']
  dynamic = pyproject['tool']['setuptools']['dynamic']
  assert dynamic['version'] == {'attr': 'jaxmaml.__version__'}
  assert importlib.metadata.version('jaxmaml') == jaxmaml.__version__
  # Nowhere else in the package: one assignment, in jaxmaml/__init__.py.
  assigned = [
    path.relative_to(ROOT).as_posix()
    for path in sorted((ROOT / 'jaxmaml').rglob('*.py'))
    for line in path.read_text().splitlines()
    if line.startswith('__version__')
  ]
  assert assigned == ['jaxmaml/__init__.py'], assigned


_IMPORT_INSTALLED = f"""
import importlib.abc
import importlib.metadata
import importlib.resources
import pathlib
import sys

{_BLOCK_OPTIONAL}import jaxmaml
import jaxmaml.data.omniglot

assert pathlib.Path(jaxmaml.__file__).is_relative_to(sys.prefix), (jaxmaml.__file__, sys.prefix)
assert jaxmaml.__version__ == importlib.metadata.version('jaxmaml')
manifests = importlib.resources.files('jaxmaml.data') / 'manifests'
names = sorted(p.name for p in manifests.iterdir()) if manifests.is_dir() else []
names = [name for name in names if name.endswith('.json')]
print(jaxmaml.__version__, *names)
"""


@pytest.mark.slow
def test_the_wheel_installs_and_imports(tmp_path):
  """``python -m build`` of a clean checkout (the sdist, then the wheel from it, each in
  its isolated build environment), installed into a fresh venv, imports.

  The venv reuses this interpreter's site-packages for the dependencies
  (``--system-site-packages``, and a ``.pth`` where this interpreter is itself a
  venv's; the wheel is installed ``--no-deps``) and the optional packages are
  blocked, so the import needs only the core ones.
  """
  pytest.importorskip('build')
  source = tmp_path / 'source'  # A clean checkout: the files git tracks, and those not ignored.
  listed = subprocess.run(
    ['git', 'ls-files', '--cached', '--others', '--exclude-standard', '-z'],
    cwd=ROOT,
    capture_output=True,
    check=True,
  ).stdout.decode()
  for name in filter(None, listed.split('\0')):
    if (ROOT / name).is_file():
      (source / name).parent.mkdir(parents=True, exist_ok=True)
      (source / name).write_bytes((ROOT / name).read_bytes())
  dist = tmp_path / 'dist'
  built = subprocess.run(
    [sys.executable, '-m', 'build', '--outdir', str(dist), str(source)],
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
  wheels = sorted(dist.glob('jaxmaml-*.whl'))
  sdists = sorted(dist.glob('jaxmaml-*.tar.gz'))
  assert len(wheels) == len(sdists) == 1, sorted(dist.iterdir())
  with zipfile.ZipFile(wheels[0]) as wheel:
    files = set(wheel.namelist())
  expected = {  # Every module, and the manifests (package data), of the checkout.
    path.relative_to(source).as_posix()
    for pattern in ('**/*.py', 'data/manifests/*.json')
    for path in (source / 'jaxmaml').glob(pattern)
  }
  assert expected <= files, sorted(expected - files)
  assert not {f for f in files if not f.startswith(('jaxmaml/', 'jaxmaml-'))}, sorted(files)

  venv = tmp_path / 'venv'
  subprocess.run(
    [sys.executable, '-m', 'venv', '--system-site-packages', str(venv)], check=True, timeout=300
  )
  python = venv / 'bin' / 'python'
  installed = subprocess.run(
    [python, '-m', 'pip', 'install', '--quiet', '--no-deps', '--no-index', str(wheels[0])],
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert installed.returncode == 0, installed.stderr
  # Run from a venv, --system-site-packages reaches the base interpreter's packages, not
  # this one's: those are added by a .pth, after the venv's own (so its jaxmaml wins).
  purelib = subprocess.run(
    [python, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
    capture_output=True,
    text=True,
    check=True,
  ).stdout.strip()
  (pathlib.Path(purelib) / 'reuse_site_packages.pth').write_text('\n'.join(site.getsitepackages()))
  result = subprocess.run(
    [python, '-c', _IMPORT_INSTALLED],
    cwd=tmp_path,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 0, result.stderr
  version, *manifests = result.stdout.split()
  assert version == jaxmaml.__version__
  committed = sorted(p.name for p in (source / 'jaxmaml' / 'data' / 'manifests').glob('*.json'))
  assert manifests == committed
