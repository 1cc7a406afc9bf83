"""ANIL (Raghu et al., 2020): MAML whose inner loop adapts the head only.

ANIL is MAML over a parameter mask, not a copy of it: the body is shared by
every task and meta-learned; only the head moves in the inner loop.
"""

import jax

from jaxmaml import adapt as adapt_lib
from jaxmaml import base
from jaxmaml.maml import maml


def last_layer(params: base.Params):
  """The mask of the last top-level entry of ``params`` (the head of a Flax model).

  Flax keeps parameters in creation order, so for ``Conv4`` this is
  ``Dense_0`` and for ``MLP(features=(40, 40, 1))`` it is ``Dense_2``.

  Returns:
    A pytree of Python bools with the structure of ``params``.
  """
  if not isinstance(params, dict) or not params:
    raise TypeError(
      'last_layer needs params as a non-empty dict of layers (a Flax params '
      f'collection), got {type(params).__name__}; pass head= explicitly.'
    )
  head = list(params)[-1]
  return {
    name: jax.tree_util.tree_map(lambda _, is_head=name == head: is_head, layer)
    for name, layer in params.items()
  }


def anil(
  loss_fn: base.LossFn,
  *,
  inner_lr: adapt_lib.InnerLR,
  num_steps: int,
  head=last_layer,
  first_order: bool = False,
  remat: bool | int = False,
  unroll: int | bool | None = None,
  has_aux: bool = False,
  allow_negative_lr: bool = False,
) -> base.MetaLearner:
  """Almost No Inner Loop: MAML adapting only the ``head`` parameters.

  Args:
    loss_fn: ``loss_fn(params, batch) -> loss`` (or ``(loss, metrics)``).
    inner_lr: inner learning rate (see ``jaxmaml.adapt.InnerLR``).
    num_steps: inner steps per task.
    head: the parameters the inner loop adapts: a pytree of Python bools
      with the structure of ``params``, or ``params -> mask``; by default the
      last layer (``last_layer``).
    first_order, remat, unroll, has_aux, allow_negative_lr: as for
      ``jaxmaml.maml``.

  Returns:
    A ``MetaLearner``; the meta-gradient covers body and head (the body
    through the head's adaptation, second order unless ``first_order``).

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from jaxmaml import anil, Task
    >>> loss = lambda p, b: jnp.mean((b[0] * p['body']['w'] * p['head']['w'] - b[1]) ** 2)
    >>> params = {'body': {'w': 1.0}, 'head': {'w': 0.5}}
    >>> learner = anil(loss, inner_lr=0.1, num_steps=1)
    >>> task = Task(support=(jnp.ones(5), jnp.ones(5)), query=(jnp.ones(5), jnp.ones(5)))
    >>> adapted, _ = learner.adapt(params, task.support)
    >>> float(adapted['body']['w']), round(float(adapted['head']['w']), 2)
    (1.0, 0.6)
  """
  return maml(
    loss_fn,
    inner_lr=inner_lr,
    num_steps=num_steps,
    first_order=first_order,
    remat=remat,
    unroll=unroll,
    has_aux=has_aux,
    mask=head,
    allow_negative_lr=allow_negative_lr,
  )
