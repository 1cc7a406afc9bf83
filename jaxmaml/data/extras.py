"""The optional packages jaxmaml uses, imported only when used.

``import jaxmaml`` and every module under it need none of them: decoding
images needs Pillow and the TFDS sources need tensorflow-datasets (both
``pip install 'jaxmaml[data]'``), ``jaxmaml.checkpoint`` needs Orbax
(``jaxmaml[checkpoint]``), ``jaxmaml.adapters.from_equinox`` Equinox
(``jaxmaml[equinox]``).
"""

import importlib
import types

_PACKAGES = {  # Import name: (pip package, the jaxmaml extra that installs it).
  'PIL': ('pillow', 'data'),
  'tensorflow_datasets': ('tensorflow-datasets', 'data'),
  'orbax': ('orbax-checkpoint', 'checkpoint'),
  'equinox': ('equinox', 'equinox'),
  'tensorboardX': ('tensorboardX', 'experiments'),
}


def import_optional(module: str, *, purpose: str) -> types.ModuleType:
  """Imports ``module``, or raises an ImportError that says what to install.

  Args:
    module: the module's import name, e.g. ``'PIL.Image'``.
    purpose: what needs it, the start of the message, e.g. ``'Decoding Omniglot images'``.

  Returns:
    The module.

  Raises:
    ImportError: if it is not installed, naming the pip package and the extra.
  """
  try:
    return importlib.import_module(module)
  except ImportError as e:
    package, extra = _PACKAGES[module.partition('.')[0]]
    raise ImportError(
      f'{purpose} needs {package}, an optional dependency of jaxmaml: '
      f"pip install 'jaxmaml[{extra}]' (or pip install {package})."
    ) from e
