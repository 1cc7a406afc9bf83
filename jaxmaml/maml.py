"""MAML (Finn et al., 2017) and first-order MAML as a ``MetaLearner`` record."""

from jaxmaml import adapt as adapt_lib
from jaxmaml import base
from jaxmaml import kit


def maml(
  loss_fn: base.LossFn,
  *,
  inner_lr: adapt_lib.InnerLR,
  num_steps: int,
  first_order: bool = False,
  remat: bool | int = False,
  unroll: int | bool | None = None,
  has_aux: bool = False,
  mask=None,
  allow_negative_lr: bool = False,
) -> base.MetaLearner:
  """Model-Agnostic Meta-Learning.

  The outer gradient of a task is the exact gradient of its query loss after
  ``num_steps`` inner gradient steps, differentiated through the inner loop
  (second order), or with the inner gradients treated as constants
  (``first_order=True``, FOMAML).

  Args:
    loss_fn: ``loss_fn(params, batch) -> loss`` (or ``(loss, metrics)`` with
      ``has_aux=True``), used for both support and query.
    inner_lr: inner learning rate (scalar, schedule or per-parameter pytree,
      see ``jaxmaml.adapt.InnerLR``).
    num_steps: inner gradient steps per task, a positive int.
    first_order: drop the second-order terms (FOMAML).
    remat: checkpoint each inner step (``True``) or segments of that many
      steps and each step within them (an int > 1) to trade compute for
      second-order memory (see ``make_adapt``).
    unroll: ``lax.scan`` unroll of the inner loop (see ``make_adapt``).
    has_aux: whether ``loss_fn`` returns ``(loss, metrics)``.
    mask: adapt only these parameters in the inner loop (a bool pytree or
      ``params -> mask``, see ``make_adapt``); the others are meta-learned
      only. ``jaxmaml.anil`` is MAML with a head-only mask.
    allow_negative_lr: accept a negative ``inner_lr`` (the inner loop then
      ascends the loss, for gradient-ascent experiments); otherwise a
      negative rate is a ValueError.

  Returns:
    A ``MetaLearner`` whose functions act on one task.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from jaxmaml import maml, Task
    >>> loss = lambda w, batch: jnp.mean((batch[0] * w - batch[1]) ** 2)
    >>> learner = maml(loss, inner_lr=0.1, num_steps=1)
    >>> task = Task(support=(jnp.ones(5), jnp.ones(5)),
    ...             query=(jnp.ones(5), jnp.ones(5)))
    >>> grad, metrics = learner.task_grad(jnp.array(0.0), task)
    >>> print(f"{float(grad):.2f}")
    -1.28
  """
  adapt = adapt_lib.make_adapt(
    loss_fn,
    adapt_lib.inner_sgd(inner_lr, num_steps, allow_negative_lr=allow_negative_lr),
    num_steps=num_steps,
    first_order=first_order,
    remat=remat,
    unroll=unroll,
    has_aux=has_aux,
    mask=mask,
  )
  task_loss = kit.task_loss_from_adapt(adapt, loss_fn, has_aux=has_aux)
  return base.MetaLearner(
    init=kit.identity,
    adapt=adapt,
    task_loss=task_loss,
    task_grad=kit.grad_of(task_loss),
  )
