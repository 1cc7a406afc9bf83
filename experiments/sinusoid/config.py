"""Configuration of the sinusoid experiment (the MAML paper's protocol)."""

import dataclasses

from experiments import algorithms
from experiments import cli
from jaxmaml import checks

PAPER_ITERATIONS = 70_000


@dataclasses.dataclass(frozen=True)
class Config:
  """Hyperparameters; the defaults are the paper's except ``num_iterations``.

  Attributes:
    shots: the K values to run, each once; one model per K (support = K
      points).
    num_iterations: meta-training iterations (the paper: 70,000).
    meta_batch_size: tasks per meta-step.
    num_query: query points per task during meta-training (the original code
      uses K, the same as the support).
    hidden: widths of the hidden layers of the ReLU MLP (empty: a linear
      model).
    algo: the algorithm and its optimizers
      (``experiments.algorithms.AlgorithmConfig``; protonets is for
      classification only). Its ``inner_lr`` is also the fine-tuning step
      size at test time, its ``eval_inner_steps`` the last inner step
      evaluated at test time (0..this); ``outer_lr`` is also the baseline's
      Adam learning rate; ``precision`` is the MLP's compute dtype.
    pretrained_lr_grid: the baseline's fine-tuning step sizes (finite, > 0);
      the best one on validation tasks is used (the paper "automatically
      tuned" it).
    num_val_tasks: validation tasks for tuning the baseline's step size.
    num_test_tasks: held-out test tasks (the paper: 600; at least 2).
    num_test_query: query points per test task: a dense, uniform sample of the
      input range so each task's MSE is a precise estimate.
    seed: one seed for initialisation, training tasks and test tasks, in
      ``[0, 2**32 - 1]``.
    log_every: iterations between progress-bar updates of the running loss.
    checkpoint_every: iterations between checkpoints (training resumes from
      the last one).
  """

  shots: tuple[int, ...] = (5, 10)
  num_iterations: int = 10_000
  meta_batch_size: int = 25
  num_query: int | None = None
  hidden: tuple[int, ...] = (40, 40)
  algo: algorithms.AlgorithmConfig = algorithms.AlgorithmConfig(inner_lr=0.01, eval_inner_steps=10)
  pretrained_lr_grid: tuple[float, ...] = (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1)
  num_val_tasks: int = 200
  num_test_tasks: int = 600
  num_test_query: int = 100
  seed: int = 0
  log_every: int = 200
  checkpoint_every: int = 5_000

  def __post_init__(self):
    cli.check_positive_ints(
      self,
      (
        'num_iterations',
        'meta_batch_size',
        'num_val_tasks',
        'num_test_query',
        'log_every',
        'checkpoint_every',
      ),
    )
    # A confidence interval needs 2.
    checks.int_at_least(self.num_test_tasks, 'num_test_tasks', 2)
    # One model per K: a repeated K would train twice and report once.
    cli.check_tuple(self.shots, 'shots', checks.positive_int, unique=True)
    checks.optional_positive_int(self.num_query, 'num_query')
    cli.check_tuple(self.hidden, 'hidden', checks.positive_int, empty=True)
    cli.check_tuple(
      self.pretrained_lr_grid,
      'pretrained_lr_grid',
      lambda lr, name: checks.real_number(lr, name, positive=True),
    )
    cli.check_seeds(self, ('seed',))
    if self.algo.algorithm == 'protonets':
      raise ValueError('algorithm protonets is for classification, not sinusoid regression.')
