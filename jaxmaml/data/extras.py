"""The optional packages the image loaders need, imported only when used.

``import jaxmaml`` and ``import jaxmaml.data.omniglot`` need neither; decoding
images needs Pillow and the TFDS Omniglot source needs tensorflow-datasets,
both installed by ``pip install 'jaxmaml[data]'``.
"""

import importlib
import types

EXTRA = 'data'
_PACKAGES = {'PIL': 'pillow', 'tensorflow_datasets': 'tensorflow-datasets'}


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
    package = _PACKAGES.get(module.partition('.')[0], module)
    raise ImportError(
      f'{purpose} needs {package}, an optional dependency of jaxmaml: '
      f"pip install 'jaxmaml[{EXTRA}]' (or pip install {package})."
    ) from e
