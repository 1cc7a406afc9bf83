"""Models of Flax NNX and Equinox as the pure functions the core differentiates.

The core takes ``loss_fn(params, batch)`` with ``params`` a pytree; a linen
module gives it directly (``jaxmaml.apply_fn``). NNX and Equinox modules hold
their parameters, so they are split once into a parameter pytree and the
rest, and put back together inside the function:

- ``from_nnx(module)``: ``nnx.split`` into the ``nnx.Param`` variables (a
  plain nested dict) and the other state (e.g. BatchNorm's running averages,
  ``nnx.BatchStat``); ``nnx.merge`` inside ``apply``.
- ``from_equinox(model, state)``: ``eqx.partition`` on the inexact (floating)
  arrays, ``eqx.combine`` inside ``apply``; the model is per example and is
  vmapped over the batch; an ``eqx.nn.State`` (BatchNorm) is passed in and
  out explicitly.

Either returns a ``FunctionalModel``: ``apply(params, inputs)`` evaluates
with the state as it was split (updates to it are dropped, so the function
stays pure: what MAML's inner loop differentiates), and
``apply_with_state(params, state, inputs)`` returns the updated state too,
for callers that keep running statistics themselves. BatchNorm that
normalises with the batch's statistics (NNX ``use_running_average=False``,
Equinox ``BatchNorm(mode='batch')``) is jaxmaml's ``'transductive'`` mode.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

from flax import nnx
import jax

from jaxmaml import base
from jaxmaml.data import extras


class FunctionalModel(NamedTuple):
  """A model as pure functions of its parameters.

  Attributes:
    apply: ``(params, inputs [n, ...]) -> outputs [n, ...]``, with ``state``.
    params: the differentiable parameters, a pytree of arrays.
    state: everything else the model holds (running statistics, counters).
    apply_with_state: ``(params, state, inputs) -> (outputs, new_state)``.
  """

  apply: Callable[[base.Params, Any], Any]
  params: base.Params
  state: Any
  apply_with_state: Callable[[base.Params, Any, Any], tuple[Any, Any]]


def from_nnx(module: nnx.Module) -> FunctionalModel:
  """Splits a Flax NNX module into its ``nnx.Param`` values and a pure ``apply``.

  Args:
    module: an NNX module called as ``module(inputs)``.

  Returns:
    A ``FunctionalModel`` whose ``params`` are the ``nnx.Param`` values as a
    nested dict (``nnx.to_pure_dict``) and whose ``state`` holds the other
    variables. ``module`` itself is left unchanged.

  Examples:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> layer = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    >>> model = from_nnx(layer)
    >>> sorted(model.params)
    ['bias', 'kernel']
    >>> model.apply(model.params, jnp.ones([4, 2])).shape
    (4, 3)
  """
  if not isinstance(module, nnx.Module):
    raise TypeError(f'module must be a flax.nnx.Module, got {type(module).__name__}.')
  graphdef, params, state = nnx.split(module, nnx.Param, ...)

  def apply_with_state(values, state, inputs):
    flat = []
    for path, variable in nnx.to_flat_state(params):
      value = values
      for key in path:
        value = value[key]
      flat.append((path, variable.replace(value)))  # A new Variable: params stays as it is.
    # copy=True: the call's updates (e.g. running averages) go to copies of state.
    model = nnx.merge(graphdef, nnx.from_flat_state(flat), state, copy=True)
    outputs = model(inputs)
    return outputs, nnx.state(model, nnx.Not(nnx.Param))

  return FunctionalModel(
    apply=lambda params_dict, inputs: apply_with_state(params_dict, state, inputs)[0],
    params=nnx.to_pure_dict(params),
    state=state,
    apply_with_state=apply_with_state,
  )


def from_equinox(
  model: Any, state: Any = None, *, axis_name: str = 'batch', batched: bool = True
) -> FunctionalModel:
  """Splits an Equinox module into its floating arrays and a pure ``apply``.

  Args:
    model: an ``equinox.Module`` called as ``model(x)`` on one example, or as
      ``model(x, state) -> (y, state)`` when ``state`` is given.
    state: the ``eqx.nn.State`` of a stateful model (``eqx.nn.make_with_state``),
      e.g. with ``eqx.nn.BatchNorm``; None for a stateless model.
    axis_name: the batch axis name the model's BatchNorm layers were built
      with (``eqx.nn.BatchNorm(..., axis_name=...)``).
    batched: vmap the model over the leading axis of ``inputs`` (Equinox
      models are per example); False: ``apply`` calls it on ``inputs`` as given.

  Returns:
    A ``FunctionalModel`` whose ``params`` are the model's inexact arrays
    (``eqx.partition(model, eqx.is_inexact_array)``: the others are ``None``).
  """
  eqx = extras.import_optional('equinox', purpose='jaxmaml.adapters.from_equinox')
  if not isinstance(model, eqx.Module):
    raise TypeError(f'model must be an equinox.Module, got {type(model).__name__}.')
  params, static = eqx.partition(model, eqx.is_inexact_array)

  def apply_with_state(params, state, inputs):
    net = eqx.combine(params, static)
    if state is None:
      call = lambda x, s: (net(x), s)
    else:
      call = net
    if batched:
      call = jax.vmap(call, in_axes=(0, None), out_axes=(0, None), axis_name=axis_name)
    return call(inputs, state)

  return FunctionalModel(
    apply=lambda params, inputs: apply_with_state(params, state, inputs)[0],
    params=params,
    state=state,
    apply_with_state=apply_with_state,
  )
