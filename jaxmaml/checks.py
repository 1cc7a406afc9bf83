"""Argument checks shared by the library, named for what they check.

Each raises before any compute, naming the argument and what it expects.
"""

import numbers

import jax
from jax import core
import numpy as np


class NotAnIntError(TypeError, ValueError):
  """A count that is not an int: a wrong type, and so an invalid value."""


def positive_int(value, name: str) -> int:
  """``value`` as an int, or a TypeError/ValueError naming ``name`` unless an int >= 1."""
  return int_at_least(value, name, 1)


def int_at_least(value, name: str, minimum: int) -> int:
  """``value`` as an int, or an error naming ``name`` unless an int >= ``minimum``."""
  expected = 'a positive int' if minimum == 1 else f'an int >= {minimum}'
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise NotAnIntError(f'{name} must be {expected}, got {value!r}.')
  if value < minimum:
    raise ValueError(f'{name} must be {expected}, got {value}.')
  return int(value)


def optional_positive_int(value, name: str) -> int | None:
  """``value`` as an int or None, or an error naming ``name``."""
  if value is None:
    return None
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
    raise ValueError(f'{name} must be a positive int or None, got {value!r}.')
  return int(value)


def finite_scalar(value, name: str) -> None:
  """Raises a ValueError naming ``name`` unless ``value`` is a finite real scalar."""
  if (
    isinstance(value, bool)
    or np.ndim(value) != 0
    or not np.issubdtype(np.asarray(value).dtype, np.number)
    or not np.isfinite(value)
  ):
    raise ValueError(f'{name} must be a finite scalar, got {value!r}.')


NEGATIVE_LR_HINT = (
  'a negative rate ascends the loss; pass allow_negative_lr=True for gradient-ascent experiments'
)


def rate(value, name: str, *, allow_negative: bool) -> None:
  """Raises unless every concrete leaf of ``value`` is finite, and >= 0 unless ``allow_negative``.

  A learning rate (a scalar, a schedule's values or a per-parameter pytree).
  Zero is allowed (no adaptation); traced leaves (learned rates) pass.
  """
  finite_leaves(value, name)
  if allow_negative:
    return
  for leaf in jax.tree_util.tree_leaves(value):
    if not isinstance(leaf, core.Tracer) and np.any(np.asarray(leaf) < 0):
      raise ValueError(f'{name} must be >= 0 ({NEGATIVE_LR_HINT}), got {leaf!r}.')


def class_labels(labels, num_classes: int, name: str = 'labels') -> None:
  """Raises unless ``labels`` are integers, and concrete ones in ``[0, num_classes)``.

  The dtype is checked always (it is known when tracing); the values only
  where they are concrete (host data, calls outside ``jit``/``vmap``): traced
  values cannot be read without a host round-trip. The library's losses make
  an out-of-range traced label give NaN instead (``jaxmaml.losses``).

  Raises:
    TypeError: naming ``name``, for labels that are not integers.
    ValueError: naming ``name``, for concrete labels outside ``[0, num_classes)``.
  """
  dtype = labels.dtype if hasattr(labels, 'dtype') else np.asarray(labels).dtype
  if not np.issubdtype(dtype, np.integer):
    raise TypeError(f'{name} must be integers in [0, {num_classes}), got dtype {dtype}.')
  if isinstance(labels, core.Tracer):
    return
  values = np.asarray(labels)
  outside = values[(values < 0) | (values >= num_classes)]
  if outside.size:
    shown = sorted(set(outside.tolist()))
    raise ValueError(
      f'{name} must be in [0, {num_classes}) ({num_classes} classes), got '
      f'{shown[:5]}{" ..." if len(shown) > 5 else ""}.'
    )


def gradient_transformation(value, name: str) -> None:
  """Raises a TypeError naming ``name`` unless ``value`` has ``init`` and ``update`` (Optax)."""
  if not (callable(getattr(value, 'init', None)) and callable(getattr(value, 'update', None))):
    raise TypeError(
      f'{name} must be an optax.GradientTransformation (e.g. optax.adam(1e-3)), got {value!r}.'
    )


def real_number(value, name: str, *, positive: bool) -> float:
  """``value`` as a float, or an error naming ``name`` unless finite and > 0 (>= 0)."""
  kind = 'positive' if positive else 'non-negative'
  if isinstance(value, bool) or not isinstance(value, (numbers.Real, np.ndarray, jax.Array)):
    raise TypeError(f'{name} must be a {kind} real number, got {value!r}.')
  if isinstance(value, core.Tracer) or getattr(value, 'ndim', 0) != 0:
    raise TypeError(f'{name} must be a concrete scalar, got {value!r}.')
  result = float(value)
  if not np.isfinite(result) or result < 0 or (positive and result == 0):
    raise ValueError(f'{name} must be {kind} and finite, got {value!r}.')
  return result


def finite_leaves(value, name: str) -> None:
  """Raises unless every concrete leaf of ``value`` is numeric and finite (tracers pass)."""
  for leaf in jax.tree_util.tree_leaves(value):
    if isinstance(leaf, core.Tracer):
      continue  # Learned values (Meta-SGD's rates) are traced: nothing to check.
    array = np.asarray(leaf)
    if not np.issubdtype(array.dtype, np.number):
      raise TypeError(f'{name} must be numeric, got {leaf!r}.')
    if not np.all(np.isfinite(array)):
      raise ValueError(f'{name} must be finite, got {leaf!r}.')


def bool_mask(mask, params, name: str = 'mask') -> list[bool]:
  """The flattened ``mask`` (a bool pytree, or ``params -> bool pytree``), checked."""
  if callable(mask):
    mask = mask(params)
  mask_def = jax.tree_util.tree_structure(mask)
  params_def = jax.tree_util.tree_structure(params)
  if mask_def != params_def:
    raise ValueError(
      f'{name} must have the structure of params; got {mask_def}, expected {params_def}.'
    )
  flags = jax.tree_util.tree_leaves(mask)
  if not all(isinstance(m, (bool, np.bool_)) for m in flags):
    raise TypeError(f'{name} leaves must be Python bools, got {flags}.')
  if not any(flags):
    raise ValueError(f'{name} selects no parameter.')
  return [bool(m) for m in flags]
