"""BatchNorm modes: which examples a batch is normalised with, chosen explicitly.

jaxmaml's BatchNorm has no running averages and no hidden state: it always
normalises with statistics computed in the forward pass. The mode says whose:

* ``'transductive'`` (alias ``'batch'``): the statistics of the batch given,
  so a query example's output depends on the other query examples. This is
  what the MAML code and its PyTorch ports do at meta-training and meta-test
  time, and what the papers' numbers were measured with.
* ``'inductive'``: a task's query examples are normalised with the statistics
  of that task's **support** set, passed through the adapted network, so a
  query's prediction depends only on the support set and itself. The support
  set is normalised with its own statistics (as in every mode).
* ``'none'``: no normalisation.

Models get the support set through their inputs: an inductive model takes
``Referenced(inputs, reference)`` and normalises ``inputs`` with the
statistics of ``reference`` at every BatchNorm layer (``reference=None``:
with those of ``inputs``). ``inductive_batch_norm(learner)`` feeds any
algorithm's tasks to the model that way, so no algorithm knows about modes.
MAML++'s per-step BatchNorm parameters compose with every mode: they are
parameters, and the mode only chooses the statistics.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxmaml import base

MODES = ('transductive', 'inductive', 'none')
ALIASES = {'batch': 'transductive'}  # The name of 'transductive' before the modes existed.
EPSILON = 1e-5


def check_mode(mode: str) -> str:
  """The canonical name of a BatchNorm mode; a ValueError for an unknown one."""
  if mode not in MODES and mode not in ALIASES:
    raise ValueError(f'batch_norm must be one of {MODES} (or {tuple(ALIASES)}), got {mode!r}.')
  return ALIASES.get(mode, mode)


class Referenced(NamedTuple):
  """Inputs to normalise with the BatchNorm statistics of other examples.

  Attributes:
    inputs: the examples to compute outputs for, ``[n, ...]``.
    reference: the examples whose statistics normalise ``inputs`` at every
      BatchNorm layer, ``[m, ...]`` (the task's support set); None: those of
      ``inputs`` themselves.
  """

  inputs: jax.Array
  reference: jax.Array | None = None


def streams(x, mode: str, model: str) -> tuple[jax.Array, jax.Array | None]:
  """``(inputs, reference)`` of a model's input for ``mode``.

  Transductive and unnormalised models ignore a reference; an inductive model
  refuses a plain array, whose query would otherwise be normalised with its
  own statistics without a word.
  """
  if isinstance(x, Referenced):
    return x.inputs, x.reference if mode == 'inductive' else None
  if mode == 'inductive':
    raise ValueError(
      f"{model}(batch_norm='inductive') takes jaxmaml.Referenced(inputs, reference) "
      'inputs, so that the query is normalised with the support statistics: wrap the '
      'learner in jaxmaml.inductive_batch_norm, or a task in jaxmaml.inductive_task.'
    )
  return x, None


def batch_norm(
  x: jax.Array, reference: jax.Array | None, mode: str
) -> tuple[jax.Array, jax.Array | None]:
  """Normalises ``x`` (and ``reference``) over all axes but the last, with no offset.

  Args:
    x: ``[n, ..., c]``.
    reference: ``[m, ..., c]`` whose statistics normalise both, or None for
      those of ``x``.
    mode: one of ``MODES``; ``'none'`` returns both unchanged.

  Returns:
    ``(x, reference)`` normalised, in their own dtype; the statistics are
    computed in float32 whatever the compute dtype (``jaxmaml.mixed_precision``).
  """
  if mode == 'none':
    return x, reference
  source = x if reference is None else reference
  dtype = source.dtype
  source = source.astype(jnp.promote_types(dtype, jnp.float32))
  axes = tuple(range(source.ndim - 1))
  mean = jnp.mean(source, axis=axes)
  scale = jax.lax.rsqrt(jnp.mean(jnp.square(source - mean), axis=axes) + EPSILON)
  norm = lambda y: ((y.astype(source.dtype) - mean) * scale).astype(dtype)
  return norm(x), None if reference is None else norm(reference)


def inductive_task(task: base.Task) -> base.Task:
  """One task's batches as an inductive model takes them.

  Args:
    task: a ``Task`` whose support and query are ``(inputs, targets)``.

  Returns:
    The task with support inputs ``Referenced(support_inputs)`` and query
    inputs ``Referenced(query_inputs, support_inputs)``.
  """
  (support_x, support_y), (query_x, query_y) = task.support, task.query
  return base.Task(
    support=(Referenced(support_x), support_y),
    query=(Referenced(query_x, support_x), query_y),
  )


def inductive_batch_norm(learner: base.MetaLearner) -> base.MetaLearner:
  """``learner`` with each task's query normalised by its support set's statistics.

  Every function of the record takes plain tasks (``(inputs, targets)``
  batches) and hands them to ``learner`` through ``inductive_task``, for a
  model built with ``batch_norm='inductive'``.

  Examples:
    >>> import jax, jax.numpy as jnp, jaxmaml
    >>> model = jaxmaml.Conv4(2, features=4, batch_norm='inductive')
    >>> loss = jaxmaml.cross_entropy_loss(jaxmaml.apply_fn(model))
    >>> learner = jaxmaml.inductive_batch_norm(
    ...     jaxmaml.maml(loss, inner_lr=0.1, num_steps=1, has_aux=True))
    >>> x = jax.random.normal(jax.random.key(0), (4, 14, 14, 1))
    >>> params = jax.jit(model.init)(jax.random.key(1), jaxmaml.Referenced(x))['params']
    >>> task = jaxmaml.Task((x[:2], jnp.array([0, 1])), (x[2:], jnp.array([0, 1])))
    >>> loss, metrics = jax.jit(learner.task_loss)(params, task)
    >>> loss.shape
    ()
  """
  support_only = lambda support: inductive_task(base.Task(support, support)).support

  def task_grad(params, task, iteration=None):
    return learner.task_grad(params, inductive_task(task), iteration)

  return base.MetaLearner(
    init=learner.init,
    adapt=lambda params, support: learner.adapt(params, support_only(support)),
    task_loss=lambda params, task: learner.task_loss(params, inductive_task(task)),
    task_grad=task_grad,
  )
