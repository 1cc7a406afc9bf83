"""The family by name, built the same way for every experiment.

``make_learners(config, loss_fn, ...)`` turns the ``algorithm`` fields that the
sinusoid and few-shot configs share into a training and an evaluation
learner, and ``make_optimizer(config)`` into the outer optimizer:

* ``maml`` (``first_order`` for FOMAML), ``anil`` (head: the last layer),
  ``meta_sgd`` (rates start at ``inner_lr``), ``imaml`` (``imaml_reg``,
  ``cg_steps``, ``cg_damping``, ``reg_damping``): evaluated with
  ``eval_inner_steps`` steps;
* ``maml_plus_plus``: LSLR on, per-step BatchNorm on for models with
  BatchNorm, MSL for ``msl_iterations``; the same steps at test (the rates are
  per step); use ``outer_schedule='cosine'`` as the paper does;
* ``reptile``: inner SGD at ``inner_lr`` (or ``inner_optimizer='adam'``: Adam
  with ``b1=0`` at ``inner_lr``, as the paper) on mini-batches of
  ``inner_batch_size`` support examples (None: the whole support; evaluation
  always uses the whole support), outer plain SGD with step ``outer_lr`` (the
  paper: 1.0 with ``outer_schedule='linear'`` to 0);
* ``protonets``: the model without its head as the embedding.

``outer_clip_norm`` (both configs) clips the meta-gradient to that global L2
norm before the outer optimizer (``optax.clip_by_global_norm``): with it,
MAML++ with learned rates no longer diverged on sinusoid (README); None (the
default, and the papers') does not clip.

``precision`` (a field of both configs) is the compute dtype of the model's
forward and backward passes (``jaxmaml.mixed_precision``); parameters,
meta-gradients and optimizer state stay float32. In low precision the outer
update is guarded by ``optax.apply_if_finite`` and the run stops cleanly at the
first non-finite meta-gradient (``experiments.cli.check_finite_updates``).
"""

import optax

import jaxmaml

ALGORITHMS = ('maml', 'anil', 'meta_sgd', 'maml_plus_plus', 'reptile', 'imaml', 'protonets')
OUTER_SCHEDULES = ('constant', 'cosine', 'linear')
INNER_OPTIMIZERS = ('sgd', 'adam')
PRECISIONS = ('float32', 'bfloat16')
# The fields both configs share that change what training computes: each
# experiment's checkpoints record them (a checkpoint written before a field
# existed was written with its default).
FIELDS = ('algorithm', 'msl_iterations', 'imaml_reg', 'cg_steps', 'cg_damping', 'reg_damping',
          'inner_optimizer', 'inner_batch_size', 'outer_schedule', 'outer_clip_norm',
          'precision')


def check_fields(config) -> None:
  """Raises a ValueError for a bad algorithm field of ``config``."""
  if config.algorithm not in ALGORITHMS:
    raise ValueError(f'algorithm must be one of {ALGORITHMS}, got {config.algorithm!r}.')
  if config.outer_schedule not in OUTER_SCHEDULES:
    raise ValueError(
        f'outer_schedule must be one of {OUTER_SCHEDULES}, got {config.outer_schedule!r}.')
  if isinstance(config.msl_iterations, bool) or config.msl_iterations < 0:
    raise ValueError(f'msl_iterations must be an int >= 0, got {config.msl_iterations!r}.')
  if not config.imaml_reg > 0:
    raise ValueError(f'imaml_reg must be positive, got {config.imaml_reg!r}.')
  if isinstance(config.cg_steps, bool) or config.cg_steps < 1:
    raise ValueError(f'cg_steps must be a positive int, got {config.cg_steps!r}.')
  if config.inner_optimizer not in INNER_OPTIMIZERS:
    raise ValueError(
        f'inner_optimizer must be one of {INNER_OPTIMIZERS}, got {config.inner_optimizer!r}.')
  if config.inner_batch_size is not None and (
      isinstance(config.inner_batch_size, bool) or config.inner_batch_size < 1):
    raise ValueError(
        f'inner_batch_size must be a positive int or None, got {config.inner_batch_size!r}.')
  if config.algorithm != 'reptile' and (
      config.inner_optimizer != 'sgd' or config.inner_batch_size is not None):
    raise ValueError('inner_optimizer and inner_batch_size apply to algorithm reptile only, '
                     f'not {config.algorithm!r}.')
  for name in ('cg_damping', 'reg_damping'):
    if not 0 <= getattr(config, name) < float('inf'):
      raise ValueError(f'{name} must be >= 0 and finite, got {getattr(config, name)!r}.')
  if config.algorithm != 'imaml' and (config.cg_damping or config.reg_damping):
    raise ValueError(
        f'cg_damping and reg_damping apply to algorithm imaml only, not {config.algorithm!r}.')
  if config.outer_clip_norm is not None and not 0 < config.outer_clip_norm < float('inf'):
    raise ValueError(
        f'outer_clip_norm must be positive and finite or None, got {config.outer_clip_norm!r}.')
  if config.precision not in PRECISIONS:
    raise ValueError(f'precision must be one of {PRECISIONS}, got {config.precision!r}.')


def make_learners(config, loss_fn, *, has_aux: bool, per_step_bn=None, embed_fn=None,
                  num_ways: int | None = None):
  """``(training learner, evaluation learner)`` for ``config.algorithm``.

  Args:
    config: a sinusoid or few-shot ``Config``.
    loss_fn: the model's loss, ``(params, batch) -> loss`` (or with metrics).
    has_aux: whether ``loss_fn`` returns metrics.
    per_step_bn: MAML++'s per-step BatchNorm mask (None: the model has none).
    embed_fn, num_ways: ProtoNets' embedding ``(params, inputs) -> [n, dim]``
      and the number of classes per task.
  """
  name = config.algorithm
  if name == 'protonets':
    if embed_fn is None:
      raise ValueError('protonets needs a classification problem (an embedding).')
    learner = jaxmaml.protonets(embed_fn, num_ways=num_ways)
    return learner, learner
  if name == 'maml_plus_plus':
    learner = jaxmaml.maml_plus_plus(
        loss_fn, inner_lr=config.inner_lr, num_steps=config.train_inner_steps,
        msl_iterations=config.msl_iterations, learn_inner_lr=True, per_step_bn=per_step_bn,
        has_aux=has_aux)
    return learner, learner

  def build(num_steps, first_order=False, training=False):
    common = dict(num_steps=num_steps, has_aux=has_aux)
    if name == 'maml':
      return jaxmaml.maml(loss_fn, inner_lr=config.inner_lr, first_order=first_order, **common)
    if name == 'anil':
      return jaxmaml.anil(loss_fn, inner_lr=config.inner_lr, first_order=first_order, **common)
    if name == 'meta_sgd':
      return jaxmaml.meta_sgd(loss_fn, init_lr=config.inner_lr, first_order=first_order,
                              **common)
    if name == 'reptile':
      inner = ({'inner_optimizer': optax.adam(config.inner_lr, b1=0.0)}
               if config.inner_optimizer == 'adam' else {'inner_lr': config.inner_lr})
      return jaxmaml.reptile(loss_fn, **inner, **common,
                             inner_batch_size=config.inner_batch_size if training else None)
    return jaxmaml.imaml(loss_fn, inner_lr=config.inner_lr, reg=config.imaml_reg,
                         cg_steps=config.cg_steps, cg_damping=config.cg_damping,
                         reg_damping=config.reg_damping, **common)

  return (build(config.train_inner_steps, config.first_order, training=True),
          build(config.eval_inner_steps))


def make_optimizer(config) -> optax.GradientTransformation:
  """The outer optimizer: Adam (plain SGD for Reptile) at ``outer_lr``, scheduled, clipped."""
  lr = {
      'constant': config.outer_lr,
      # MAML++: cosine annealing to a minimum of 1e-5 (its code's min_learning_rate).
      'cosine': optax.cosine_decay_schedule(
          config.outer_lr, config.num_iterations, alpha=min(1.0, 1e-5 / config.outer_lr)),
      'linear': optax.linear_schedule(config.outer_lr, 0.0, config.num_iterations),
  }[config.outer_schedule]
  optimizer = optax.sgd(lr) if config.algorithm == 'reptile' else optax.adam(lr)
  if config.outer_clip_norm is not None:
    optimizer = optax.chain(optax.clip_by_global_norm(config.outer_clip_norm), optimizer)
  if config.precision == 'float32':
    return optimizer
  # Skip (and count) updates whose meta-gradient is not finite; the training
  # loop stops at the first one. The count never reaches this limit.
  return optax.apply_if_finite(optimizer, max_consecutive_errors=2**30)
