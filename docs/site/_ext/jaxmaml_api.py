"""The site's Sphinx extension: API sections found at build time, and the notes of docs/.

``.. jaxmaml-exports:: MODULE`` documents every name of ``MODULE.__all__``, in
its order, each with the autodoc directive for what it is (``autoclass``,
``autofunction``, ``autodata`` for type aliases): what ``import MODULE``
exports, re-exports included, without a list to keep in step.

``.. jaxmaml-modules:: NAME [NAME ...]`` writes one section per module: ``NAME``
and, for a package, every public submodule found on disk when the page is
read, each through ``automodule`` (its members with their docstrings). A new
module (a data loader, ``jaxmaml.adapters``) appears without editing a page; a
name that is not in this checkout gets one line saying so, not an error. The
pages that use it are read again on every build, so that a module added since
the last build is picked up.

``.. jaxmaml-note:: PATH`` (in Markdown: a ``{jaxmaml-note}`` fence) includes a
Markdown page of ``docs/`` (PATH relative to the page that includes it) with
its relative links rewritten for the site: a link to another note that the
site includes stays a page link (anchors too); a link to any other file of the
repository becomes a download of that file; images resolve from the note's
own folder. The note itself is not edited.
"""

import importlib
import importlib.util
import inspect
import os
import pathlib
import posixpath
import re
import sys
import typing

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.pycode import ModuleAnalyzer
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

# A Markdown link or image: ``[text](target)`` / ``![alt](target)``, target without spaces.
_LINK = re.compile(r'(!?)\[([^\]]*)\]\(([^)\s]+)\)')
_FENCE = re.compile(r'^(```|~~~).*?^\1', flags=re.S | re.M)


def public_modules(name: str) -> list[str]:
  """``name`` and, for a package, its public submodules (recursively), sorted.

  Found from the files on disk without importing the submodules; ``[]`` when
  ``name`` is not importable from this checkout.

  Examples:
    >>> modules = public_modules('jaxmaml.data')
    >>> modules[0], 'jaxmaml.data.sinusoid' in modules
    ('jaxmaml.data', True)
    >>> public_modules('jaxmaml.no_such_module')
    []
  """
  try:
    spec = importlib.util.find_spec(name)
  except ModuleNotFoundError:  # A parent package is missing.
    return []
  if spec is None:
    return []
  names = [name]
  for location in spec.submodule_search_locations or ():
    children = set()
    for entry in pathlib.Path(location).iterdir():
      stem = entry.name.removesuffix('.py')
      if stem.startswith('_') or not stem.isidentifier():
        continue
      if (entry.is_file() and entry.suffix == '.py') or (entry / '__init__.py').is_file():
        children.add(stem)
    for child in sorted(children):
      names += public_modules(f'{name}.{child}')
  return names


def _is_alias(obj) -> bool:
  return typing.get_origin(obj) is not None or obj is typing.Any


def alias_doc(package: str, name: str, obj) -> list[str]:
  """The docstring of the type alias ``name`` (a string after its assignment),
  from the module of ``package`` that assigns it; ``[]`` if none has one."""
  for module_name, module in sorted(sys.modules.items()):
    if module_name.partition('.')[0] != package or getattr(module, name, None) is not obj:
      continue
    try:
      docs = ModuleAnalyzer.for_module(module_name).find_attr_docs()
    except Exception:  # No source (a compiled or namespace module).
      continue
    if ('', name) in docs:
      return list(docs[('', name)])
  return []


def export_directives(module_name: str) -> list[str]:
  """The autodoc directives of every name of ``module_name.__all__``, in its order.

  A type alias gets the docstring written after its assignment in the module
  that defines it, as the directive's content.

  Examples:
    >>> directives = export_directives('jaxmaml')
    >>> '.. autofunction:: jaxmaml.maml' in directives, '.. autoclass:: jaxmaml.Task' in directives
    (True, True)
  """
  module = importlib.import_module(module_name)
  lines = []
  for name in module.__all__:
    obj = getattr(module, name)
    if _is_alias(obj) or not callable(obj):
      lines.append(f'.. autodata:: {module_name}.{name}')  # A type alias or a constant.
      doc = alias_doc(module_name.partition('.')[0], name, obj) if _is_alias(obj) else []
      lines += [''] + [f'   {line}' if line else '' for line in doc]
    elif inspect.isclass(obj):
      lines.append(f'.. autoclass:: {module_name}.{name}')
    else:
      lines.append(f'.. autofunction:: {module_name}.{name}')  # Jitted or wrapped ones too.
    lines.append('')
  return lines


def _no_builtin_docs(app, what, name, obj, options, lines) -> None:
  """A type alias such as ``dict[str, Array]`` or ``Any`` is not described by the
  docstring of ``dict`` or ``Any``: that is dropped, the alias's own is kept."""
  source = typing.get_origin(obj) or (obj if obj is typing.Any else None)
  if what not in ('data', 'attribute') or source is None:
    return
  builtin = [line.strip() for line in (inspect.getdoc(source) or '').splitlines()]
  if builtin and [line.strip() for line in lines[: len(builtin)]] == builtin:
    del lines[: len(builtin)]
    while lines and not lines[0].strip():
      del lines[0]


class ExportsDirective(SphinxDirective):
  """``.. jaxmaml-exports:: MODULE``: every name of ``MODULE.__all__``."""

  required_arguments = 1
  has_content = False

  def run(self) -> list[nodes.Node]:
    _module_pages(self.env).add(self.env.docname)
    lines = export_directives(self.arguments[0])
    container = nodes.section()
    container.document = self.state.document
    nested_parse_with_titles(self.state, StringList(lines, source=self.env.docname), container)
    return container.children


class ModulesDirective(SphinxDirective):
  """``.. jaxmaml-modules:: NAME [NAME ...]``: a section per module found."""

  required_arguments = 1
  optional_arguments = 100
  has_content = False

  def run(self) -> list[nodes.Node]:
    _module_pages(self.env).add(self.env.docname)
    lines = []
    for name in self.arguments:
      found = public_modules(name)
      if not found:
        title = f'``{name}``'
        lines += [title, '-' * len(title), '', f'``{name}`` is not in this checkout.', '']
      for module in found:
        title = f'``{module}``'
        lines += [title, '-' * len(title), '', f'.. automodule:: {module}', '']
    container = nodes.section()
    container.document = self.state.document
    nested_parse_with_titles(self.state, StringList(lines, source=self.env.docname), container)
    return container.children


def _module_pages(env) -> set[str]:
  if not hasattr(env, 'jaxmaml_module_pages'):
    env.jaxmaml_module_pages = set()
  return env.jaxmaml_module_pages


def _reread_module_pages(app, env, added, changed, removed) -> list[str]:
  """The pages of ``jaxmaml-modules`` and ``jaxmaml-exports``: always read again
  (modules and exports may have appeared)."""
  return sorted(_module_pages(env) - set(removed))


def _purge(app, env, docname) -> None:
  _module_pages(env).discard(docname)


def _merge(app, env, docnames, other) -> None:
  _module_pages(env).update(_module_pages(other) & set(docnames))


def rewrite_links(text: str, note_dir: str, page_dir: str, notes: dict[str, str]) -> str:
  """``text`` (a note of ``note_dir``) with its relative links made to work from ``page_dir``.

  Args:
    text: the note's Markdown.
    note_dir: the folder of the note (absolute).
    page_dir: the folder of the page that includes it (absolute).
    notes: ``{note: page}``, the absolute paths of the notes the site
      includes and of the page that includes each.

  Returns:
    The Markdown, with links outside code blocks rewritten: to an included
    note, a link to its page; to another file, a ``{download}`` role; images,
    a path from ``page_dir``. Links with a scheme (``https:``) and anchors
    alone (``#x``) are kept.
  """

  def one(match: re.Match) -> str:
    bang, label, target = match.groups()
    if re.match(r'[a-zA-Z][a-zA-Z0-9+.-]*:', target) or target.startswith('#'):
      return match.group(0)
    path, hash_, anchor = target.partition('#')
    resolved = os.path.normpath(os.path.join(note_dir, path))
    relative = posixpath.join(*pathlib.Path(os.path.relpath(resolved, page_dir)).parts)
    if bang:
      return f'![{label}]({relative})'
    if resolved in notes:
      page = posixpath.join(*pathlib.Path(os.path.relpath(notes[resolved], page_dir)).parts)
      return f'[{label}]({page}{hash_}{anchor})'
    if not os.path.exists(resolved):
      return match.group(0)  # Left as it is: the build reports it.
    text = label.replace('`', '') or os.path.basename(resolved)
    return f'{{download}}`{text} <{relative}>`'

  pieces, last = [], 0
  for fence in _FENCE.finditer(text):
    pieces += [_LINK.sub(one, text[last : fence.start()]), fence.group(0)]
    last = fence.end()
  pieces.append(_LINK.sub(one, text[last:]))
  return ''.join(pieces)


class NoteDirective(SphinxDirective):
  """``.. jaxmaml-note:: PATH``: a Markdown note of docs/, its links rewritten."""

  required_arguments = 1
  has_content = False

  def run(self) -> list[nodes.Node]:
    page = pathlib.Path(self.env.doc2path(self.env.docname))
    note = (page.parent / self.arguments[0]).resolve()
    self.env.note_dependency(str(note))
    text = rewrite_links(
      note.read_text(), str(note.parent), str(page.parent), _included_notes(self.env)
    )
    # Parsed into the page as MyST parses an ``{include}``: its headings are the page's sections.
    block = StringList(text.splitlines(), source=str(note))
    self.state.nested_parse(block, 0, self.state_machine.node, match_titles=True)
    return []


def _included_notes(env) -> dict[str, str]:
  """``{note: page}``: every note of docs/ that a page of the site includes, as absolute paths."""
  found = {}
  for page in pathlib.Path(env.srcdir).rglob('*.md'):
    if page.name.startswith('.'):
      continue
    for target in re.findall(r'^```\{jaxmaml-note\}\s+(\S+)', page.read_text(), flags=re.M):
      found[str((page.parent / target).resolve())] = str(page.with_suffix('.md'))
  return found


def setup(app) -> dict:
  app.add_directive('jaxmaml-exports', ExportsDirective)
  app.add_directive('jaxmaml-modules', ModulesDirective)
  app.add_directive('jaxmaml-note', NoteDirective)
  app.connect('autodoc-process-docstring', _no_builtin_docs)
  app.connect('env-get-outdated', _reread_module_pages)
  app.connect('env-purge-doc', _purge)
  app.connect('env-merge-info', _merge)
  return {'version': '1', 'parallel_read_safe': True, 'parallel_write_safe': True}
