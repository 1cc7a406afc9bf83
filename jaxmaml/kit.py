"""What every algorithm of the family shares: small pure pieces to build records from."""

from collections.abc import Mapping

import jax
import numpy as np

from jaxmaml import base


def identity(params: base.Params) -> base.Params:
  """``MetaLearner.init`` of algorithms whose meta-parameters are the model's."""
  return params


def split_aux(out, has_aux: bool) -> tuple[jax.Array, base.Metrics]:
  """A loss function's output as ``(loss, metrics)``; ``metrics`` is ``{}`` without aux.

  Checks the output's form (when tracing: free under ``jit``).

  Raises:
    TypeError: naming ``has_aux``, when the output is not what ``has_aux``
      says (a ``(loss, metrics)`` pair, or a loss alone), or the loss is not
      a scalar.
  """
  if has_aux:
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
      raise TypeError(
        'with has_aux=True, loss_fn must return a (loss, metrics) pair, got '
        f'{_describe(out)}; pass has_aux=False for a loss_fn that returns the loss alone.'
      )
    loss, aux = out
  else:
    if isinstance(out, (tuple, list, dict)):
      raise TypeError(
        f'with has_aux=False, loss_fn must return a scalar loss, got {_describe(out)}; pass '
        'has_aux=True for a loss_fn that returns (loss, metrics), as '
        'jaxmaml.cross_entropy_loss does.'
      )
    loss, aux = out, {}
  if isinstance(loss, (tuple, list, dict)) or np.ndim(loss) != 0:
    raise TypeError(f'loss_fn must return a scalar loss, got {_describe(loss)}.')
  return loss, aux


def _describe(out) -> str:
  if isinstance(out, (tuple, list, dict)):
    return f'a {type(out).__name__} of {len(out)}'
  return f'an array of shape {np.shape(out)}'


def loss_only(loss_fn: base.LossFn, has_aux: bool) -> base.LossFn:
  """``loss_fn`` returning the loss alone, whether or not it has an aux output (checked)."""
  return lambda params, batch: split_aux(loss_fn(params, batch), has_aux)[0]


def params_and_rates(meta_params: base.Params, algorithm: str) -> tuple[base.Params, base.Params]:
  """``(meta_params['params'], meta_params['inner_lr'])``, the form ``init`` builds, checked.

  Raises:
    TypeError: naming ``meta_params``, for anything else (e.g. the model
      parameters, passed without ``learner.init``).
  """
  if not isinstance(meta_params, Mapping) or set(meta_params) != {'params', 'inner_lr'}:
    got = sorted(meta_params) if isinstance(meta_params, Mapping) else type(meta_params).__name__
    raise TypeError(
      f"{algorithm}'s meta_params must be {{'params': ..., 'inner_lr': ...}}, as "
      f'learner.init(model_params) builds them; got {got}. Pass learner.init(params), '
      'not the model parameters.'
    )
  return meta_params['params'], meta_params['inner_lr']


def task_loss_from_adapt(
  adapt: base.AdaptFn, loss_fn: base.LossFn, *, has_aux: bool = False
) -> base.TaskLossFn:
  """The MAML meta-objective of one task: adapt on support, score on query.

  Args:
    adapt: the inner loop, ``(params, support) -> (adapted, support_losses)``.
    loss_fn: the loss used on the query set (same contract as for ``adapt``).
    has_aux: whether ``loss_fn`` returns ``(loss, metrics_dict)``.

  Returns:
    ``task_loss(params, task) -> (query_loss, metrics)``; metrics hold
    ``loss`` (scalar), ``support_losses`` (``[num_steps]``) and the query
    metrics of ``loss_fn``.
  """

  def task_loss(params: base.Params, task: base.Task):
    adapted, support_losses = adapt(params, task.support)
    loss, aux = split_aux(loss_fn(adapted, task.query), has_aux)
    return loss, {**aux, 'loss': loss, 'support_losses': support_losses}

  return task_loss


def grad_of(task_loss: base.TaskLossFn) -> base.TaskGradFn:
  """``task_grad`` as the exact gradient of ``task_loss`` (``iteration`` unused)."""
  grad = jax.grad(task_loss, has_aux=True)

  def task_grad(params, task, iteration=None):
    del iteration
    return grad(params, task)

  return task_grad
