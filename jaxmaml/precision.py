"""Mixed precision: compute in bfloat16 on float32 master parameters.

``mixed_precision(apply)`` wraps a model's apply function (or a loss
function) so that its floating parameters and inputs are cast to a compute
dtype on entry and its floating outputs are cast back to float32. Everything
else stays float32: the parameters the inner loop updates (the gradient of the
cast is the cast back), the adapted parameters, the meta-gradient and its mean
over tasks, and the optimizer state. Wrap the apply function rather than the
loss so that the softmax and the loss are computed in float32.

Low precision and second-order gradients are a known bad pair (the Hessian-
vector products of a double backward overflow or lose all digits): guard the
outer update with ``optax.apply_if_finite``, which skips an update whose
gradient is not finite and counts it, so that a run can stop cleanly.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

COMPUTE_DTYPES = ('float32', 'bfloat16', 'float16')


def _cast_floats(tree: Any, dtype) -> Any:
  cast = lambda x: x.astype(dtype) if jnp.issubdtype(jnp.result_type(x), jnp.floating) else x
  return jax.tree_util.tree_map(cast, tree)


def mixed_precision(
  fn: Callable[..., Any], compute_dtype: str | jnp.dtype = 'bfloat16'
) -> Callable[..., Any]:
  """Wraps ``fn(params, *args)`` to compute in ``compute_dtype``.

  Args:
    fn: e.g. ``jaxmaml.apply_fn(model)``, ``(params, x [n, ...]) -> [n, ...]``.
    compute_dtype: ``'bfloat16'``, ``'float16'`` or ``'float32'`` (returns
      ``fn`` unchanged).

  Returns:
    ``wrapped(params, *args)``: ``fn`` on floating leaves cast to
    ``compute_dtype``, with floating outputs cast to float32. Integer leaves
    (labels) pass through.

  Examples:
    >>> import jax.numpy as jnp
    >>> from jaxmaml import mixed_precision
    >>> f = mixed_precision(lambda w, x: w * x)
    >>> f(jnp.float32(1 + 2**-10), jnp.ones(2))  # 2**-10 is lost in bfloat16.
    Array([1., 1.], dtype=float32)
  """
  if str(jnp.dtype(compute_dtype)) not in COMPUTE_DTYPES:
    raise ValueError(f'compute_dtype must be one of {COMPUTE_DTYPES}, got {compute_dtype!r}.')
  compute_dtype = jnp.dtype(compute_dtype)
  if compute_dtype == jnp.float32:
    return fn

  def wrapped(params, *args):
    out = fn(_cast_floats(params, compute_dtype), *_cast_floats(args, compute_dtype))
    return _cast_floats(out, jnp.float32)

  return wrapped
