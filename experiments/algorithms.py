"""The algorithm config both experiments nest, and what it builds.

``AlgorithmConfig`` holds the fields that pick and tune the algorithm of the
family and its outer optimizer; the sinusoid and few-shot configs nest one
(``config.algo``), and its fields are flags under their own names
(``--algorithm reptile --inner_lr 0.1``, ``experiments.cli``).
``make_learners(algo, apply_fn, loss, ...)`` builds its training and
evaluation learners at once, ``make_optimizer(algo, num_iterations)`` the
outer optimizer:

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

``outer_clip_norm`` clips the meta-gradient to that global L2 norm before the
outer optimizer (``optax.clip_by_global_norm``): with it, MAML++ with learned
rates no longer diverged on sinusoid (README); None (the default, and the
papers') does not clip.

``precision`` is the compute dtype of the model's forward and backward passes
in training (``jaxmaml.mixed_precision``); parameters, meta-gradients,
optimizer state and evaluation stay float32. In low precision the outer update
is guarded by ``optax.apply_if_finite`` and the run stops cleanly at the first
non-finite meta-gradient (``experiments.loop.check_finite_updates``).
"""

from collections.abc import Callable
import dataclasses
from typing import NamedTuple

import optax

from experiments import cli
import jaxmaml
from jaxmaml import checks

ALGORITHMS = ('maml', 'anil', 'meta_sgd', 'maml_plus_plus', 'reptile', 'imaml', 'protonets')
OUTER_SCHEDULES = ('constant', 'cosine', 'linear')
INNER_OPTIMIZERS = ('sgd', 'adam')
PRECISIONS = ('float32', 'bfloat16')


@dataclasses.dataclass(frozen=True)
class AlgorithmConfig:
  """The algorithm and its optimizers (defaults: MAML on Omniglot 5-way 1-shot).

  Attributes:
    algorithm: one of ``ALGORITHMS`` (see the module docstring for how each
      is built).
    first_order: first-order MAML (and ANIL, Meta-SGD).
    inner_lr: inner-loop step size, finite and > 0 (Meta-SGD: the rates'
      start; Reptile with inner Adam: Adam's step size).
    train_inner_steps, eval_inner_steps: inner steps in training and at test.
    msl_iterations: MAML++'s multi-step loss lasts this many iterations.
    imaml_reg, cg_steps: iMAML's proximal regularisation and CG iterations.
    cg_damping, reg_damping: iMAML's damped CG system (``jaxmaml.imaml``; the
      iMAML authors' code: 1 and 10); 0 and 0 give the exact implicit gradient.
    inner_optimizer: Reptile's inner optimizer, 'sgd' or 'adam' (with
      ``b1=0``, as the Reptile paper), at ``inner_lr``.
    inner_batch_size: Reptile's inner mini-batch (training only); None uses
      the whole support at every step.
    outer_lr: the outer learning rate, finite and > 0 (Adam; Reptile: plain
      SGD).
    outer_schedule: the outer learning rate over the run's iterations:
      'constant', 'cosine' (MAML++) or 'linear' to 0 (Reptile).
    outer_clip_norm: clip each meta-gradient to this global L2 norm before
      the outer optimizer; None: no clipping (the papers').
    precision: the model's compute dtype in training, 'float32' or
      'bfloat16' (float32 parameters, meta-gradients and optimizer state
      either way).
  """

  algorithm: str = 'maml'
  first_order: bool = False
  inner_lr: float = 0.4
  train_inner_steps: int = 1
  eval_inner_steps: int = 3
  msl_iterations: int = 0
  imaml_reg: float = 2.0
  cg_steps: int = 5
  cg_damping: float = 0.0
  reg_damping: float = 0.0
  inner_optimizer: str = 'sgd'
  inner_batch_size: int | None = None
  outer_lr: float = 1e-3
  outer_schedule: str = 'constant'
  outer_clip_norm: float | None = None
  precision: str = 'float32'

  def __post_init__(self):
    cli.check_choice(self.algorithm, 'algorithm', ALGORITHMS)
    cli.check_choice(self.outer_schedule, 'outer_schedule', OUTER_SCHEDULES)
    cli.check_choice(self.inner_optimizer, 'inner_optimizer', INNER_OPTIMIZERS)
    cli.check_choice(self.precision, 'precision', PRECISIONS)
    cli.check_bools(self, ('first_order',))
    # Non-positive rates run without a word (a negative inner rate ascends the
    # support loss; a zero outer rate divides by zero in the cosine schedule).
    cli.check_positive_reals(self, ('inner_lr', 'outer_lr'))
    cli.check_positive_ints(self, ('train_inner_steps', 'eval_inner_steps', 'cg_steps'))
    checks.int_at_least(self.msl_iterations, 'msl_iterations', 0)
    checks.optional_positive_int(self.inner_batch_size, 'inner_batch_size')
    checks.real_number(self.imaml_reg, 'imaml_reg', positive=True)
    for name in ('cg_damping', 'reg_damping'):
      checks.real_number(getattr(self, name), name, positive=False)
    if self.outer_clip_norm is not None:
      checks.real_number(self.outer_clip_norm, 'outer_clip_norm', positive=True)
    if self.algorithm != 'reptile' and (
      self.inner_optimizer != 'sgd' or self.inner_batch_size is not None
    ):
      raise ValueError(
        'inner_optimizer and inner_batch_size apply to algorithm reptile only, '
        f'not {self.algorithm!r}.'
      )
    if self.algorithm != 'imaml' and (self.cg_damping or self.reg_damping):
      raise ValueError(
        f'cg_damping and reg_damping apply to algorithm imaml only, not {self.algorithm!r}.'
      )


FIELDS = tuple(f.name for f in dataclasses.fields(AlgorithmConfig))
# The fields that change what training computes: every checkpoint records
# them (evaluation's steps may change between runs).
TRAINING_FIELDS = tuple(f for f in FIELDS if f != 'eval_inner_steps')
# The training fields added after the first checkpoints (the committed
# reproduction's) were written: a checkpoint without one was written with its
# default.
ADDED_FIELDS = tuple(
  f
  for f in TRAINING_FIELDS
  if f not in ('first_order', 'inner_lr', 'train_inner_steps', 'outer_lr')
)


class Learners(NamedTuple):
  """An algorithm's learners: the training one (in ``precision``) and the evaluation one."""

  training: jaxmaml.MetaLearner
  evaluation: jaxmaml.MetaLearner


def make_learners(
  algo: AlgorithmConfig,
  apply_fn,
  loss: Callable,
  *,
  has_aux: bool,
  per_step_bn=None,
  num_ways: int | None = None,
) -> Learners:
  """The training and evaluation learners of ``algo``.

  Args:
    algo: the algorithm.
    apply_fn: the model, ``(params, inputs) -> outputs``, in float32; the
      training learner computes it in ``algo.precision``. For ``protonets``
      the model without its head (the embedding ``[n, dim]``).
    loss: ``apply_fn -> loss_fn``, e.g. ``jaxmaml.cross_entropy_loss`` or
      ``jaxmaml.mse_loss``.
    has_aux: whether the losses ``loss`` makes return metrics.
    per_step_bn: MAML++'s per-step BatchNorm mask (None: the model has none).
    num_ways: the number of classes per task (classification; ProtoNets needs it).

  Returns:
    ``Learners(training, evaluation)``: Reptile trains on inner mini-batches
    and evaluates on the whole support; MAML++ evaluates as it trains (its
    rates are per step); the others evaluate with ``eval_inner_steps`` steps.
  """

  def build(apply, num_steps, training):
    name, loss_fn = algo.algorithm, loss(apply)
    common = dict(num_steps=num_steps, has_aux=has_aux)
    first_order = algo.first_order if training else False
    if name == 'protonets':
      if num_ways is None:
        raise ValueError('protonets needs a classification problem (an embedding).')
      return jaxmaml.protonets(apply, num_ways=num_ways)
    if name == 'maml_plus_plus':
      return jaxmaml.maml_plus_plus(
        loss_fn,
        inner_lr=algo.inner_lr,
        msl_iterations=algo.msl_iterations,
        learn_inner_lr=True,
        per_step_bn=per_step_bn,
        **common,
      )
    if name == 'maml':
      return jaxmaml.maml(loss_fn, inner_lr=algo.inner_lr, first_order=first_order, **common)
    if name == 'anil':
      return jaxmaml.anil(loss_fn, inner_lr=algo.inner_lr, first_order=first_order, **common)
    if name == 'meta_sgd':
      return jaxmaml.meta_sgd(loss_fn, init_lr=algo.inner_lr, first_order=first_order, **common)
    if name == 'reptile':
      inner = (
        {'inner_optimizer': optax.adam(algo.inner_lr, b1=0.0)}
        if algo.inner_optimizer == 'adam'
        else {'inner_lr': algo.inner_lr}
      )
      return jaxmaml.reptile(
        loss_fn, **inner, **common, inner_batch_size=algo.inner_batch_size if training else None
      )
    return jaxmaml.imaml(
      loss_fn,
      inner_lr=algo.inner_lr,
      reg=algo.imaml_reg,
      cg_steps=algo.cg_steps,
      cg_damping=algo.cg_damping,
      reg_damping=algo.reg_damping,
      **common,
    )

  # MAML++ learns a rate per step: it evaluates with the steps it trains with.
  eval_steps = (
    algo.train_inner_steps if algo.algorithm == 'maml_plus_plus' else algo.eval_inner_steps
  )
  return Learners(
    training=build(
      jaxmaml.mixed_precision(apply_fn, algo.precision), algo.train_inner_steps, training=True
    ),
    evaluation=build(apply_fn, eval_steps, training=False),
  )


def make_optimizer(algo: AlgorithmConfig, num_iterations: int) -> optax.GradientTransformation:
  """The outer optimizer: Adam (plain SGD for Reptile) at ``outer_lr``, scheduled
  over ``num_iterations``, clipped, and in low precision guarded against
  non-finite meta-gradients."""
  lr = {
    'constant': algo.outer_lr,
    # MAML++: cosine annealing to a minimum of 1e-5 (its code's min_learning_rate).
    'cosine': optax.cosine_decay_schedule(
      algo.outer_lr, num_iterations, alpha=min(1.0, 1e-5 / algo.outer_lr)
    ),
    'linear': optax.linear_schedule(algo.outer_lr, 0.0, num_iterations),
  }[algo.outer_schedule]
  optimizer = optax.sgd(lr) if algo.algorithm == 'reptile' else optax.adam(lr)
  if algo.outer_clip_norm is not None:
    optimizer = optax.chain(optax.clip_by_global_norm(algo.outer_clip_norm), optimizer)
  if algo.precision == 'float32':
    return optimizer
  # Skip (and count) updates whose meta-gradient is not finite; the training
  # loop stops at the first one. The count never reaches this limit.
  return optax.apply_if_finite(optimizer, max_consecutive_errors=2**30)


def schedule_iterations(algo: AlgorithmConfig, num_iterations: int) -> int | None:
  """The iterations the outer learning rate is scheduled over (None: constant).

  Checkpoints record it: a scheduled run resumes only to the count it started
  with, a constant one may be extended.
  """
  return None if algo.outer_schedule == 'constant' else num_iterations
