"""Core types: a task, the loss function contract, and the meta-learner record.

A meta-learner is a record of pure functions built by a factory, in the way
``optax.adam(...)`` returns a ``GradientTransformation``. Every algorithm of the
family (MAML, first-order MAML, Reptile, ANIL, Meta-SGD, MAML++, iMAML, and
the ProtoNets baseline) returns the same record; what differs between them is
how the fields are built, never a subclass.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax

Params = Any
"""A pytree of parameters, e.g. the ``params`` collection of a Flax model."""

Batch = Any
"""A pytree of arrays whose leaves share a leading example axis ``[n, ...]``.

The library's own losses use ``(inputs, targets)`` tuples; any pytree works
with a loss function that understands it.
"""

Metrics = dict[str, jax.Array]

LossFn = Callable[[Params, Batch], Any]
"""``loss_fn(params, batch) -> loss`` or, with ``has_aux=True``, ``(loss, metrics)``.

``loss`` is a scalar; ``metrics`` a dict of scalars (for example accuracy).
"""


class Task(NamedTuple):
  """One few-shot task, or a meta-batch of them.

  For one task, ``support`` and ``query`` are batches with leaves shaped
  ``[n_support, ...]`` and ``[n_query, ...]``. For a meta-batch every leaf has
  an extra leading task axis: ``[num_tasks, n, ...]``.

  Attributes:
    support: the batch the inner loop adapts on.
    query: the batch the adapted parameters are scored on.
  """

  support: Batch
  query: Batch


AdaptFn = Callable[[Params, Batch], tuple[Params, jax.Array]]
"""``adapt(params, support) -> (adapted_params, support_losses[num_steps])``."""

TaskLossFn = Callable[[Params, Task], tuple[jax.Array, Metrics]]
"""``task_loss(params, task) -> (query_loss, metrics)`` for one task."""

TaskGradFn = Callable[..., tuple[Params, Metrics]]
"""``task_grad(params, task, iteration=None) -> (outer_gradient, metrics)`` for one task.

``iteration`` is the meta-iteration (an int32 scalar, ``MetaTrainState.step``):
algorithms that anneal something over meta-training (MAML++) read it; the
others ignore it. ``None`` means "after any annealing".
"""


class MetaLearner(NamedTuple):
  """A gradient-based meta-learning algorithm as a record of pure functions.

  All functions are written for a single task; ``jaxmaml.make_meta_step``
  maps them over a meta-batch and jits them. They take the *meta-parameters*:
  the model parameters for MAML, or the model parameters together with what
  else is meta-learned (Meta-SGD's inner learning rates, MAML++'s per-step
  rates and BatchNorm parameters), as built by ``init``.

  Attributes:
    init: ``model_params -> meta_params``; the identity for MAML.
    adapt: ``(params, support) -> (adapted_params, support_losses)``, the inner
      loop; ``support_losses`` has shape ``[num_steps]`` and holds the support
      loss before each inner step.
    task_loss: ``(params, task) -> (query_loss, metrics)``, the meta-objective
      of one task: adapt on ``task.support``, score on ``task.query``. Metrics
      hold ``loss``, ``support_losses`` and whatever the loss function reports
      (e.g. ``accuracy``).
    task_grad: ``(params, task, iteration=None) -> (outer_gradient,
      metrics)``, the outer gradient of one task (see ``TaskGradFn``). For
      MAML this is the gradient of ``task_loss``; algorithms such as Reptile or
      iMAML replace only this field.
  """

  init: Callable[[Params], Params]
  adapt: AdaptFn
  task_loss: TaskLossFn
  task_grad: TaskGradFn
