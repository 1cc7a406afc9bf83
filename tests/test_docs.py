"""The API site (docs/site, ``make docs``): it documents the whole public API and builds."""

import doctest
import html
import importlib
import pathlib
import pkgutil
import re
import subprocess
import sys

import pytest

import jaxmaml
import jaxmaml.data

ROOT = pathlib.Path(__file__).resolve().parents[1]
SITE = ROOT / 'docs' / 'site'
# The modules the API pages must document (jaxmaml.adapters once it exists).
REQUIRED_MODULES = {
  'jaxmaml',
  'jaxmaml.data',
  'jaxmaml.normalization',
  'jaxmaml.checkpoint',
  'jaxmaml.sharding',
  'jaxmaml.precision',
}


@pytest.fixture(scope='module')
def api():
  """The site's extension (``docs/site/_ext/jaxmaml_api.py``)."""
  pytest.importorskip('sphinx')
  sys.path.insert(0, str(SITE / '_ext'))
  try:
    yield importlib.import_module('jaxmaml_api')
  finally:
    sys.path.remove(str(SITE / '_ext'))


def _documented_modules(api) -> set[str]:
  """Every module an API page documents: ``automodule`` and ``jaxmaml-modules`` arguments."""
  found = set()
  for page in sorted((SITE / 'api').glob('*.rst')):
    text = page.read_text()
    found |= set(re.findall(r'^\.\. automodule:: (\S+)', text, flags=re.M))
    for line in re.findall(r'^\.\. jaxmaml-modules:: (.+)$', text, flags=re.M):
      listed = line.split()
      found |= {'listed:' + name for name in listed}
      found |= {module for name in listed for module in api.public_modules(name)}
  return found


def test_the_api_pages_cover_the_public_modules(api):
  documented = _documented_modules(api)
  assert REQUIRED_MODULES <= documented, REQUIRED_MODULES - documented
  assert 'listed:jaxmaml.adapters' in documented
  # Every module of jaxmaml.data is found, whatever loaders have been added.
  data = {m.name for m in pkgutil.walk_packages(jaxmaml.data.__path__, 'jaxmaml.data.')}
  public = {name for name in data if not name.rpartition('.')[2].startswith('_')}
  assert public and public <= documented, public - documented


def test_the_extension_examples_run(api):
  result = doctest.testmod(api)
  assert result.attempted > 0 and result.failed == 0, result


def test_every_exported_function_and_class_has_a_docstring():
  """autodoc lists every name of ``jaxmaml.__all__``; those it can describe have a docstring."""
  missing = []
  for name in jaxmaml.__all__:
    obj = getattr(jaxmaml, name)  # Every name of __all__ exists.
    if callable(obj) and getattr(obj, '__module__', '').startswith('jaxmaml'):
      if not (obj.__doc__ or '').strip():
        missing.append(name)
  assert not missing, missing


def test_every_note_of_docs_is_on_the_site():
  notes = {p.name for p in (ROOT / 'docs').glob('*.md')}
  pages = {p.name for p in (SITE / 'notes').glob('*.md')}
  assert notes == pages, (notes - pages, pages - notes)
  index = (SITE / 'index.md').read_text()
  assert all(f'notes/{p.removesuffix(".md")}\n' in index for p in pages)


def test_links_of_a_note_are_rewritten_for_the_site(api, tmp_path):
  docs, page_dir = tmp_path / 'docs', tmp_path / 'docs' / 'site' / 'notes'
  page_dir.mkdir(parents=True)
  (docs / 'data.json').write_text('{}')
  (docs / 'figure.png').write_bytes(b'')
  notes = {str(docs / 'other.md'): str(page_dir / 'other.md')}
  text = (
    'See [the other](other.md#a-heading), [`data`](data.json), ![a figure](figure.png),\n'
    '[the web](https://example.org) and [here](#here).\n'
    '```python\nx = [1](2)\n```\n'
  )
  assert api.rewrite_links(text, str(docs), str(page_dir), notes) == (
    'See [the other](other.md#a-heading), {download}`data <../../data.json>`, '
    '![a figure](../../figure.png),\n'
    '[the web](https://example.org) and [here](#here).\n'
    '```python\nx = [1](2)\n```\n'
  )


@pytest.mark.slow
def test_the_site_builds_and_its_code_runs(tmp_path):
  """``make docs``'s two builds, warnings as errors; every exported name has its entry."""
  pytest.importorskip('sphinx')
  pytest.importorskip('myst_parser')
  doctrees = tmp_path / 'doctrees'
  for builder in ('html', 'doctest'):
    result = subprocess.run(
      [sys.executable, '-m', 'sphinx', '-W', '--keep-going', '-q', '-b', builder]
      + ['-d', str(doctrees), str(SITE), str(tmp_path / builder)],
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=900,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
  page = html.unescape((tmp_path / 'html' / 'api' / 'jaxmaml.html').read_text())
  ids = set(re.findall(r'id="([^"]+)"', page))
  missing = [name for name in jaxmaml.__all__ if f'jaxmaml.{name}' not in ids]
  assert not missing, missing
  data = html.unescape((tmp_path / 'html' / 'api' / 'data.html').read_text())
  for module in ('sinusoid', 'omniglot', 'miniimagenet', 'episodes'):
    assert f'id="module-jaxmaml.data.{module}"' in data
