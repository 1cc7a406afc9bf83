"""Sphinx configuration of jaxmaml's API site: ``make docs``.

The API pages are generated from the docstrings (autodoc, napoleon for the
Google style); the tutorials are Markdown (MyST) whose code the doctest builder
runs (``sphinx-build -b doctest``); the notes of ``docs/*.md`` are included as
they are.
"""

import pathlib
import sys

SITE = pathlib.Path(__file__).resolve().parent
ROOT = SITE.parents[1]
# The checkout's jaxmaml, experiments/ and benchmarks/ (the tutorials run them).
sys.path[:0] = [str(ROOT), str(SITE / '_ext')]

import jaxmaml  # noqa: E402

project = 'jaxmaml'
author = 'the jaxmaml authors'
copyright = 'the jaxmaml authors, Apache 2.0'
version = release = jaxmaml.__version__

extensions = [
  'sphinx.ext.autodoc',
  'sphinx.ext.napoleon',
  'sphinx.ext.doctest',
  'myst_parser',
  'jaxmaml_api',  # _ext/: the module sections and the notes of docs/.
]
source_suffix = {'.rst': 'restructuredtext', '.md': 'markdown'}
exclude_patterns = ['_build', '_ext', '.*']
root_doc = 'index'

# autodoc: every member of a module, documented or not, in source order (the
# package's own page lists its __all__ with ``jaxmaml-exports``, from _ext/).
autodoc_default_options = {'members': True, 'undoc-members': True}
autodoc_member_order = 'bysource'
autodoc_typehints = 'signature'
autodoc_preserve_defaults = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True  # Attributes: as fields of the class (NamedTuple fields: skipped below).

# MyST: heading anchors as GitHub makes them, so the notes' `page.md#heading` links resolve.
myst_heading_anchors = 6

# doctest: the tutorials' ``{testcode}``/``{doctest}`` blocks. The docstrings'
# own ``>>>`` examples run under pytest's --doctest-modules (with their
# module's globals), so plain doctest blocks are not run again here.
doctest_test_doctest_blocks = ''
doctest_global_setup = f"""
import pathlib
ROOT = pathlib.Path({str(ROOT)!r})  # The repository.
"""

html_theme = 'alabaster'
html_title = f'jaxmaml {release}'
html_static_path = []


def _skip_namedtuple_fields(app, what, name, obj, skip, options):
  """NamedTuple fields: their ``Attributes:`` in the class docstring describe them."""
  if what == 'class' and (getattr(obj, '__doc__', None) or '').startswith('Alias for field number'):
    return True
  return None


def setup(app):
  app.connect('autodoc-skip-member', _skip_namedtuple_fields)
