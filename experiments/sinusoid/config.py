"""Configuration of the sinusoid experiment (the MAML paper's protocol)."""

import dataclasses

from experiments import algorithms
from experiments import cli

PAPER_ITERATIONS = 70_000


@dataclasses.dataclass(frozen=True)
class Config:
  """Hyperparameters; the defaults are the paper's except ``num_iterations``.

  Attributes:
    shots: the K values to run; one model per K (support = K points).
    num_iterations: meta-training iterations (the paper: 70,000).
    meta_batch_size: tasks per meta-step.
    num_query: query points per task during meta-training (the original code
      uses K, the same as the support).
    hidden: widths of the hidden layers of the ReLU MLP.
    inner_lr: inner-loop step size, also the fine-tuning step size at test time.
    train_inner_steps: inner steps during meta-training.
    eval_inner_steps: the last inner step evaluated at test time (0..this).
    outer_lr: Adam learning rate for meta-training and for the baseline.
    first_order: meta-train with first-order MAML.
    algorithm: one of ``experiments.algorithms.ALGORITHMS`` (see there for
      how each is built): maml, anil, meta_sgd, maml_plus_plus, reptile,
      imaml (protonets is for classification only).
    msl_iterations: MAML++'s multi-step loss lasts this many iterations.
    imaml_reg, cg_steps: iMAML's proximal regularisation and CG iterations.
    cg_damping, reg_damping, inner_optimizer, inner_batch_size,
      outer_clip_norm: as in ``experiments.fewshot.config.Config``.
    outer_schedule: the outer learning rate over ``num_iterations``:
      'constant', 'cosine' (MAML++) or 'linear' to 0 (Reptile).
    precision: the MLP's compute dtype, 'float32' or 'bfloat16'.
    pretrained_lr_grid: the baseline's fine-tuning step sizes; the best one on
      validation tasks is used (the paper "automatically tuned" it).
    num_val_tasks: validation tasks for tuning the baseline's step size.
    num_test_tasks: held-out test tasks (the paper: 600).
    num_test_query: query points per test task: a dense, uniform sample of the
      input range so each task's MSE is a precise estimate.
    seed: one seed for initialisation, training tasks and test tasks.
    log_every: iterations between progress-bar updates of the running loss.
    checkpoint_every: iterations between checkpoints (training resumes from
      the last one).
  """

  shots: tuple[int, ...] = (5, 10)
  num_iterations: int = 10_000
  meta_batch_size: int = 25
  num_query: int | None = None
  hidden: tuple[int, ...] = (40, 40)
  inner_lr: float = 0.01
  train_inner_steps: int = 1
  eval_inner_steps: int = 10
  outer_lr: float = 1e-3
  first_order: bool = False
  algorithm: str = 'maml'
  msl_iterations: int = 0
  imaml_reg: float = 2.0
  cg_steps: int = 5
  cg_damping: float = 0.0
  reg_damping: float = 0.0
  inner_optimizer: str = 'sgd'
  inner_batch_size: int | None = None
  outer_schedule: str = 'constant'
  outer_clip_norm: float | None = None
  precision: str = 'float32'
  pretrained_lr_grid: tuple[float, ...] = (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1)
  num_val_tasks: int = 200
  num_test_tasks: int = 600
  num_test_query: int = 100
  seed: int = 0
  log_every: int = 200
  checkpoint_every: int = 5_000

  def __post_init__(self):
    cli.check_positive_ints(self, (
        'num_iterations', 'meta_batch_size', 'train_inner_steps', 'eval_inner_steps',
        'num_val_tasks', 'num_test_query', 'log_every', 'checkpoint_every'))
    if self.num_test_tasks < 2:
      raise ValueError(f'num_test_tasks must be >= 2, got {self.num_test_tasks}.')
    if not self.shots or any(k < 1 for k in self.shots):
      raise ValueError(f'shots must be positive ints, got {self.shots}.')
    if self.num_query is not None and self.num_query < 1:
      raise ValueError(f'num_query must be a positive int or None, got {self.num_query}.')
    if not self.pretrained_lr_grid:
      raise ValueError('pretrained_lr_grid must not be empty.')
    algorithms.check_fields(self)
    if self.algorithm == 'protonets':
      raise ValueError('algorithm protonets is for classification, not sinusoid regression.')
