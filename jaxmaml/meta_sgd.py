"""Meta-SGD (Li et al., 2017): MAML with learned per-parameter inner learning rates."""

import jax
import jax.numpy as jnp

from jaxmaml import adapt as adapt_lib
from jaxmaml import base
from jaxmaml import checks
from jaxmaml import kit


def meta_sgd(
  loss_fn: base.LossFn,
  *,
  init_lr: float,
  num_steps: int = 1,
  first_order: bool = False,
  remat: bool | int = False,
  unroll: int | bool | None = None,
  has_aux: bool = False,
  allow_negative_lr: bool = False,
) -> base.MetaLearner:
  """Meta-SGD: the inner step ``params - inner_lr * grad``, ``inner_lr`` meta-learned.

  The meta-parameters are ``{'params': model_params, 'inner_lr': rates}``,
  where ``rates`` has the structure and shapes of ``model_params`` (one rate
  per scalar parameter), built by ``init`` with every rate ``init_lr``. The
  rates are ordinary meta-parameters: the meta-gradient reaches them and the
  outer optimizer updates them (a peer implementation once left them frozen;
  our tests check they move).

  Args:
    loss_fn: ``loss_fn(params, batch) -> loss`` (or ``(loss, metrics)``).
    init_lr: the initial value of every rate (the paper draws them from
      [0.005, 0.1]; a constant makes Meta-SGD start exactly at MAML).
    num_steps: inner steps (the paper uses 1).
    first_order, remat, unroll, has_aux: as for ``jaxmaml.maml``.
    allow_negative_lr: accept a negative ``init_lr`` (gradient-ascent
      experiments); otherwise a negative one is a ValueError. The learned
      rates themselves are unconstrained: training may make them negative.

  Returns:
    A ``MetaLearner`` on ``{'params', 'inner_lr'}`` meta-parameters.

  Examples:
    >>> import jax.numpy as jnp
    >>> from jaxmaml import meta_sgd, Task
    >>> loss = lambda w, batch: jnp.mean((batch[0] * w - batch[1]) ** 2)
    >>> learner = meta_sgd(loss, init_lr=0.1)
    >>> meta_params = learner.init(jnp.array(0.0))
    >>> task = Task(support=(jnp.ones(5), jnp.ones(5)), query=(jnp.ones(5), jnp.ones(5)))
    >>> grad, _ = learner.task_grad(meta_params, task)
    >>> print(f"{float(grad['params']):.2f} {float(grad['inner_lr']):.2f}")
    -1.28 -3.20
  """
  checks.positive_int(num_steps, 'num_steps')
  checks.finite_scalar(init_lr, 'init_lr')
  checks.rate(init_lr, 'init_lr', allow_negative=allow_negative_lr)

  def init(params: base.Params) -> base.Params:
    rates = jax.tree_util.tree_map(
      lambda p: jnp.full(jnp.shape(p), init_lr, jnp.result_type(p)), params
    )
    return {'params': params, 'inner_lr': rates}

  def adapt(meta_params: base.Params, support: base.Batch):
    params, rates = kit.params_and_rates(meta_params, 'meta_sgd')
    inner = adapt_lib.make_adapt(
      loss_fn,
      adapt_lib.scale_by_rates(rates),
      num_steps=num_steps,
      first_order=first_order,
      remat=remat,
      unroll=unroll,
      has_aux=has_aux,
    )
    return inner(params, support)

  task_loss = kit.task_loss_from_adapt(adapt, loss_fn, has_aux=has_aux)
  return base.MetaLearner(
    init=init, adapt=adapt, task_loss=task_loss, task_grad=kit.grad_of(task_loss)
  )
