"""The README and docs/: examples run as written, links resolve, numbers have a source."""

import pathlib
import re

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = [ROOT / 'README.md', *sorted((ROOT / 'docs').glob('*.md'))]
_LINK = re.compile(r'!?\[[^\]]*\]\(([^)\s]+)\)')


def _python_block(page: str, index: int = 0) -> str:
  blocks = re.findall(r'```python\n(.*?)```', (ROOT / page).read_text(), flags=re.S)
  assert len(blocks) > index, f'{page} has no python example {index}'
  return blocks[index]


def _run(page: str, index: int = 0) -> dict:
  scope = {}
  exec(compile(_python_block(page, index), page, 'exec'), scope)
  return scope


def test_readme_library_example_runs():
  scope = _run('README.md')
  assert scope['support_losses'].shape == (5,)
  assert scope['metrics']['loss'].shape == (25,)
  assert scope['curve']['loss'].shape == (600, 11)
  assert np.isfinite(scope['mean']) and scope['ci95'] > 0


def test_readme_nnx_and_equinox_example_runs():
  pytest.importorskip('equinox')
  metrics = _run('README.md', 1)['metrics']
  assert set(metrics) == {'nnx', 'equinox'}
  for m in metrics.values():
    assert m['loss'].shape == (25,) and np.all(np.isfinite(m['loss']))


@pytest.mark.slow  # ~24 s; the default suite stays under 10 min (docs/testing.md).
def test_readme_family_example_runs():
  scope = _run('docs/family.md')
  assert set(scope['metrics']) == {'maml', 'anil', 'meta_sgd', 'maml_plus_plus', 'reptile', 'imaml'}
  for metrics in scope['metrics'].values():
    assert metrics['loss'].shape == (25,) and np.all(np.isfinite(metrics['loss']))


def test_readme_scaling_example_runs():
  scope = _run('docs/scaling.md')
  loss = scope['metrics']['loss']
  assert loss.shape == (24,) and np.all(np.isfinite(loss))
  assert len(loss.addressable_shards) == len(scope['mesh'].devices.flat)


def _anchors(page: pathlib.Path) -> set[str]:
  """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
  text = re.sub(r'```.*?```', '', page.read_text(), flags=re.S)
  headings = re.findall(r'^#{1,6} (.+)$', text, flags=re.M)
  return {re.sub(r'[^\w\- ]', '', h.strip().lower()).replace(' ', '-') for h in headings}


@pytest.mark.parametrize('page', PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
  text = re.sub(r'```.*?```', '', page.read_text(), flags=re.S)
  broken = []
  for target in _LINK.findall(text):
    if re.match(r'[a-z]+:', target):  # http:, https:, mailto:
      continue
    path, _, anchor = target.partition('#')
    resolved = (page.parent / path).resolve() if path else page
    if not resolved.exists():
      broken.append(f'{target} (no {resolved.relative_to(ROOT)})')
    elif anchor and resolved.suffix == '.md' and anchor not in _anchors(resolved):
      broken.append(f'{target} (no heading #{anchor})')
  assert not broken, f'{page.name}: {broken}'


def test_the_pages_link_what_they_need():
  readme = (ROOT / 'README.md').read_text()
  docs = {p.name for p in (ROOT / 'docs').glob('*.md')}
  linked = {pathlib.Path(t.partition('#')[0]).name for t in _LINK.findall(readme)}
  assert docs <= linked, f'docs pages the README does not link: {docs - linked}'


def _numbers(line: str) -> set[str]:
  return set(re.findall(r'\d[\d,.]*(?:e-\d+)?', line))


def test_readme_numbers_come_from_the_docs():
  """Every row of a measured table in the README is a view of one row of a docs page's table."""
  readme = (ROOT / 'README.md').read_text()
  measured = readme[readme.index('## Measured') : readme.index('## Layout')]
  source_rows = [
    _numbers(line)
    for page in (ROOT / 'docs').glob('*.md')
    for line in page.read_text().splitlines()
    if line.startswith('|')
  ]
  rows = [line for line in measured.splitlines() if line.startswith('|') and _numbers(line)]
  assert len(rows) > 30
  orphans = [row for row in rows if not any(_numbers(row) <= source for source in source_rows)]
  assert not orphans, f'README table rows with no matching docs/*.md row: {orphans}'
