"""Reptile (Nichol et al., 2018): move the initialisation towards adapted parameters."""

import jax
import jax.numpy as jnp
import optax

from jaxmaml import adapt as adapt_lib
from jaxmaml import base
from jaxmaml import checks
from jaxmaml import kit


def reptile(
  loss_fn: base.LossFn,
  *,
  num_steps: int,
  inner_lr: adapt_lib.InnerLR | None = None,
  inner_optimizer: optax.GradientTransformation | None = None,
  inner_batch_size: int | None = None,
  unroll: int | bool | None = None,
  has_aux: bool = False,
  allow_negative_lr: bool = False,
) -> base.MetaLearner:
  """Reptile: the outer "gradient" of a task is ``params - adapted_params``.

  The inner loop trains on ``task.support`` for ``num_steps`` steps of
  gradient descent (``inner_lr``) or of ``inner_optimizer`` (the paper uses
  Adam with ``b1=0``); nothing is differentiated through it. With
  ``optax.sgd(epsilon)`` as the outer optimizer, a meta-step is the paper's
  ``params <- params + epsilon * (mean adapted params - params)``.
  ``task.query`` is only scored, for the metrics and for evaluation (put all
  of a task's training examples in the support, as the paper does).

  With ``inner_batch_size``, step ``i`` takes the next ``inner_batch_size``
  support examples in order, cycling through the support: with the paper's
  Omniglot settings (50 examples, batches of 10, 5 steps) one pass over a
  task. The support must be in random order for the batches to be random
  (``jaxmaml.data.episodes.sample_episodes(..., shuffle_support=True)``); the
  paper's code also reshuffles at each new pass, this does not.

  Args:
    loss_fn: ``loss_fn(params, batch) -> loss`` (or ``(loss, metrics)``).
    num_steps: inner steps per task (the paper: 5 for Omniglot training, 50
      at test; build a second learner for evaluation).
    inner_lr: inner SGD learning rate; or give ``inner_optimizer``.
    inner_optimizer: an Optax optimizer for the inner loop, fresh per task
      (the paper's code keeps Adam's state from task to task).
    inner_batch_size: examples per inner step; None uses the whole support
      at every step.
    unroll: ``lax.scan`` unroll of the inner loop (see ``make_adapt``).
    has_aux: whether ``loss_fn`` returns ``(loss, metrics)``.
    allow_negative_lr: accept a negative ``inner_lr`` (the inner loop then
      ascends the loss, for gradient-ascent experiments); otherwise a
      negative rate is a ValueError.

  Returns:
    A ``MetaLearner``. ``task_loss`` is the query loss after adaptation (as
    for MAML), used for evaluation; ``task_grad`` is the Reptile direction,
    with the metrics of the query after adaptation.

  Examples:
    >>> import jax.numpy as jnp
    >>> from jaxmaml import reptile, Task
    >>> loss = lambda w, batch: jnp.mean((batch[0] * w - batch[1]) ** 2)
    >>> learner = reptile(loss, inner_lr=0.25, num_steps=1)
    >>> task = Task(support=(jnp.ones(5), jnp.ones(5)), query=(jnp.ones(5), jnp.ones(5)))
    >>> direction, _ = learner.task_grad(jnp.array(0.0), task)
    >>> float(direction)
    -0.5
  """
  checks.optional_positive_int(inner_batch_size, 'inner_batch_size')
  adapt_batches = adapt_lib.make_adapt(
    loss_fn,
    adapt_lib.sgd_or(inner_optimizer, inner_lr, num_steps, allow_negative_lr=allow_negative_lr),
    num_steps=num_steps,
    first_order=True,
    unroll=unroll,
    has_aux=has_aux,
    per_step_support=inner_batch_size is not None,
  )

  def adapt(params: base.Params, support: base.Batch):
    if inner_batch_size is None:
      return adapt_batches(params, support)
    size = jax.tree_util.tree_leaves(support)[0].shape[0]
    index = jnp.arange(num_steps * inner_batch_size).reshape(num_steps, -1) % size
    return adapt_batches(params, jax.tree_util.tree_map(lambda x: x[index], support))

  task_loss = kit.task_loss_from_adapt(adapt, loss_fn, has_aux=has_aux)

  def task_grad(params: base.Params, task: base.Task, iteration=None):
    del iteration
    adapted, support_losses = adapt(params, task.support)
    loss, aux = kit.split_aux(loss_fn(adapted, task.query), has_aux)
    direction = jax.tree_util.tree_map(lambda p, a: p - a, params, adapted)
    return direction, {**aux, 'loss': loss, 'support_losses': support_losses}

  return base.MetaLearner(init=kit.identity, adapt=adapt, task_loss=task_loss, task_grad=task_grad)
