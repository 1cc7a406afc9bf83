"""What every algorithm of the family shares: small pure pieces to build records from."""

import jax

from jaxmaml import base


def identity(params: base.Params) -> base.Params:
  """``MetaLearner.init`` of algorithms whose meta-parameters are the model's."""
  return params


def split_aux(out, has_aux: bool) -> tuple[jax.Array, base.Metrics]:
  """A loss function's output as ``(loss, metrics)``; ``metrics`` is ``{}`` without aux."""
  return out if has_aux else (out, {})


def loss_only(loss_fn: base.LossFn, has_aux: bool) -> base.LossFn:
  """``loss_fn`` returning the loss alone, whether or not it has an aux output."""
  if not has_aux:
    return loss_fn
  return lambda params, batch: loss_fn(params, batch)[0]


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
