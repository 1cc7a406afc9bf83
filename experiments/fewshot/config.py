"""Configurations of the few-shot experiment: the MAML paper's Omniglot and
miniImageNet settings, and the miniImageNet settings on CIFAR-FS, FC100,
CUB-200-2011 and tieredImageNet (docs/datasets.md)."""

import dataclasses
import os

from experiments import algorithms
from experiments import cli
from experiments import logs
import jaxmaml
from jaxmaml import checks

# Where `make`/CI find Omniglot: ../shared/data beside the repository.
DEFAULT_DATA_DIRS = {
  'omniglot': os.environ.get(
    'JAXMAML_OMNIGLOT',
    os.path.join(os.path.dirname(__file__), '..', '..', '..', 'shared', 'data', 'omniglot'),
  ),
  'miniimagenet': os.environ.get('JAXMAML_MINIIMAGENET', 'data/miniimagenet'),
  # CIFAR-FS and FC100 read the same CIFAR-100 files.
  'cifar_fs': os.environ.get('JAXMAML_CIFAR100', 'data/cifar100'),
  'fc100': os.environ.get('JAXMAML_CIFAR100', 'data/cifar100'),
  'cub': os.environ.get('JAXMAML_CUB', 'data/cub'),
  'tiered_imagenet': os.environ.get('JAXMAML_TIERED_IMAGENET', 'data/tiered_imagenet'),
}
DATASETS = tuple(DEFAULT_DATA_DIRS)
# The smallest image the miniImageNet Conv4 (every dataset but Omniglot) takes.
MIN_POOLED_IMAGE_SIZE = 16
# Classification needs two classes a task; the command line refuses fewer.
# (A config of one way, every query of its one class, serves the tests'
# one-class synthetic splits.)
MIN_WAYS = 2


@dataclasses.dataclass(frozen=True)
class Config:
  """Hyperparameters (defaults: Omniglot 5-way 1-shot as in the paper).

  Attributes:
    dataset: 'omniglot' (Conv4 with stride-2 convolutions, 64 filters,
      28x28 grayscale), or with MAML's miniImageNet network
      (``jaxmaml.conv4_miniimagenet``: max-pooling, 32 filters, flattened
      head) at the dataset's size: 'miniimagenet', 'cub' and
      'tiered_imagenet' (84x84 color), 'cifar_fs' and 'fc100' (32x32 color).
    num_ways, num_shots: N-way K-shot (the command line takes N >=
      ``MIN_WAYS``).
    num_queries: query examples per class; None means K (the original code).
    train_shots: support examples per class in meta-training tasks; None
      means ``num_shots`` (Reptile's paper trains 1-shot models on 10 shots).
    meta_batch_size: tasks per meta-step (paper: 32 for 5-way, 16 for 20-way).
    num_iterations: meta-training iterations (paper: 60,000).
    time_budget_s: if set, training also stops once this many seconds of
      meta-training (validation excluded) have been spent, e.g. to compare
      variants at equal wall-clock budget.
    algo: the algorithm and its optimizers
      (``experiments.algorithms.AlgorithmConfig``; the paper's ``inner_lr``:
      0.4 for 5-way, 0.1 for 20-way).
    num_devices: split each meta-batch over this many devices (the first
      ones of ``jax.devices()``); None means all of them, on every host after
      ``jax.distributed.initialize()`` (``--distributed``).
      ``meta_batch_size`` must be divisible by it (checked against the
      devices there are by the command line, ``main.check_devices``, and by
      ``train.train_and_evaluate``, both before loading data).
    rotate: rotations by 90/180/270 degrees make new classes (train and test,
      as the original code).
    pooling: Conv4's down-sampling, 'stride' (stride-2 convolutions) or 'max'
      (2x2 max-pooling, as MAML++'s Omniglot network); None: the dataset's
      network ('stride' for Omniglot, 'max' for the others).
    conv: Conv4's convolution, 'matmul' (fast on CPU) or 'xla'.
    batch_norm: BatchNorm statistics (``jaxmaml.normalization``):
      'transductive' (the batch given, query included: the papers' setting),
      'inductive' (a task's query is normalised with its support set's
      statistics) or 'none'.
    bn_scale: learn a BatchNorm scale too (the original code has offsets only).
    task_map: how tasks are mapped in the meta-step and in evaluation:
      'auto' (``jaxmaml.default_task_map``: the mapping measured fastest for
      the meta-batch's shapes on this backend, see docs/benchmarks/peers_cpu.md),
      'vmap', 'map' or 'loop'.
    task_batch_size: tasks vmapped per iteration with task_map='map' (only).
    image_size: images are resized to image_size x image_size (at least
      ``MIN_POOLED_IMAGE_SIZE`` but for Omniglot).
    seed: initialisation and task sampling, in ``[0, 2**32 - 1]``.
    split_seed: the character split (1100 train / 100 val / 423 test), in
      ``[0, 2**32 - 1]``.
    num_val_tasks, num_test_tasks: tasks for validation and the final test
      (at least 2: their 95% confidence intervals).
    eval_batch_size: tasks evaluated at once.
    eval_every, log_every, checkpoint_every: in iterations.
    log: where the metrics are logged, a comma-separated subset of
      ``experiments.logs.LOGS``: 'jsonl' (``log.jsonl``, read by the plots)
      and 'tensorboard' (event files in ``tensorboard/``).
    async_checkpoints: write checkpoints in the background (Orbax).
  """

  dataset: str = 'omniglot'
  num_ways: int = 5
  num_shots: int = 1
  num_queries: int | None = None
  train_shots: int | None = None
  meta_batch_size: int = 32
  num_iterations: int = 60_000
  time_budget_s: float | None = None
  algo: algorithms.AlgorithmConfig = algorithms.AlgorithmConfig()
  num_devices: int | None = None
  rotate: bool = True
  pooling: str | None = None
  conv: str = 'matmul'
  batch_norm: str = 'transductive'
  bn_scale: bool = False
  task_map: str = 'auto'
  task_batch_size: int | None = None
  image_size: int = 28
  seed: int = 0
  split_seed: int = 1
  num_val_tasks: int = 320
  num_test_tasks: int = 600
  eval_batch_size: int = 32
  eval_every: int = 1000
  log_every: int = 50
  checkpoint_every: int = 500
  log: str = 'jsonl,tensorboard'
  async_checkpoints: bool = False

  def __post_init__(self):
    cli.check_choice(self.dataset, 'dataset', DATASETS)
    cli.check_positive_ints(
      self,
      (
        'num_ways',
        'num_shots',
        'meta_batch_size',
        'num_iterations',
        'image_size',
        'eval_batch_size',
        'eval_every',
        'log_every',
        'checkpoint_every',
      ),
    )
    for name in ('num_val_tasks', 'num_test_tasks'):  # A confidence interval needs 2.
      checks.int_at_least(getattr(self, name), name, 2)
    for name in ('num_devices', 'train_shots', 'num_queries', 'task_batch_size'):
      checks.optional_positive_int(getattr(self, name), name)
    cli.check_seeds(self, ('seed', 'split_seed'))
    cli.check_bools(self, ('rotate', 'bn_scale', 'async_checkpoints'))
    if self.time_budget_s is not None:
      checks.real_number(self.time_budget_s, 'time_budget_s', positive=True)
    # The miniImageNet Conv4 halves the image with each of its four max-pools.
    if self.dataset != 'omniglot' and self.image_size < MIN_POOLED_IMAGE_SIZE:
      raise ValueError(
        f'image_size must be >= {MIN_POOLED_IMAGE_SIZE} for dataset {self.dataset!r} '
        f'(four 2x2 max-pools), got {self.image_size}.'
      )
    cli.check_choice(self.conv, 'conv', jaxmaml.models.CONV_IMPLS)
    if self.pooling is not None:
      cli.check_choice(self.pooling, 'pooling', jaxmaml.models.POOLINGS)
    cli.check_choice(self.batch_norm, 'batch_norm', jaxmaml.normalization.MODES)
    logs.parse_logs(self.log)
    cli.check_choice(self.task_map, 'task_map', ('auto',) + jaxmaml.tasks.TASK_MAPS)
    if self.task_batch_size is not None and self.task_map != 'map':
      raise ValueError(f"task_batch_size applies to task_map 'map' only, not {self.task_map!r}.")

  @property
  def queries(self) -> int:
    return self.num_shots if self.num_queries is None else self.num_queries

  @property
  def training_shots(self) -> int:
    return self.num_shots if self.train_shots is None else self.train_shots


_MINIIMAGENET = dict(
  dataset='miniimagenet',
  image_size=84,
  rotate=False,
  num_queries=15,
  algo=algorithms.AlgorithmConfig(inner_lr=0.01, train_inner_steps=5, eval_inner_steps=10),
)
_20WAY = algorithms.AlgorithmConfig(inner_lr=0.1, train_inner_steps=5, eval_inner_steps=5)
CONFIGS = {
  'omniglot_5way1shot': Config(),
  'omniglot_5way5shot': Config(num_shots=5),
  'omniglot_20way1shot': Config(num_ways=20, meta_batch_size=16, algo=_20WAY),
  'omniglot_20way5shot': Config(num_ways=20, num_shots=5, meta_batch_size=16, algo=_20WAY),
  'miniimagenet_5way1shot': Config(**_MINIIMAGENET, meta_batch_size=4),
  'miniimagenet_5way5shot': Config(**_MINIIMAGENET, num_shots=5, meta_batch_size=2),
}
# The other few-shot benchmarks with MAML's miniImageNet settings (model,
# inner loop, 15 queries, meta-batches of 4 / 2 tasks), at each dataset's size.
for _name, _size in (('cifar_fs', 32), ('fc100', 32), ('cub', 84), ('tiered_imagenet', 84)):
  _settings = dict(_MINIIMAGENET, dataset=_name, image_size=_size)
  CONFIGS[f'{_name}_5way1shot'] = Config(**_settings, meta_batch_size=4)
  CONFIGS[f'{_name}_5way5shot'] = Config(**_settings, num_shots=5, meta_batch_size=2)
del _name, _size, _settings

# The family at its papers' Omniglot protocols (issue 17); what still differs
# from each paper's code is listed in docs/family.md.
# MAML++ (Antoniou et al. 2019), its code's omniglot_1_8_0.1_64_{5,20}_0
# configs: 5 steps at 0.1 learned per layer and step (LSLR), per-step
# BatchNorm with a learned scale, max-pooling, meta-batch 8, one query per
# class, the multi-step loss over the first 10 epochs of 500 iterations, Adam
# 1e-3 cosine-annealed to 1e-5 over 100 epochs, second order throughout.
_MAML_PLUS_PLUS = dict(
  meta_batch_size=8,
  num_queries=1,
  num_iterations=50_000,
  pooling='max',
  bn_scale=True,
  algo=algorithms.AlgorithmConfig(
    algorithm='maml_plus_plus',
    inner_lr=0.1,
    train_inner_steps=5,
    eval_inner_steps=5,
    msl_iterations=5_000,
    outer_schedule='cosine',
  ),
)
CONFIGS['omniglot_5way1shot_maml_plus_plus'] = Config(**_MAML_PLUS_PLUS)
CONFIGS['omniglot_20way1shot_maml_plus_plus'] = Config(**_MAML_PLUS_PLUS, num_ways=20)
# Reptile (Nichol et al. 2018), its Omniglot 5-way 1-shot hyperparameters
# (transductive): 10 training shots per class in shuffled batches of 10, 5
# inner Adam (b1=0) steps at 0.001, meta-batch 5, the outer step 1 annealed
# linearly to 0 over 100,000 iterations, 50 steps at test on the 1-shot support.
CONFIGS['omniglot_5way1shot_reptile'] = Config(
  meta_batch_size=5,
  train_shots=10,
  num_iterations=100_000,
  algo=algorithms.AlgorithmConfig(
    algorithm='reptile',
    inner_optimizer='adam',
    inner_lr=0.001,
    inner_batch_size=10,
    train_inner_steps=5,
    eval_inner_steps=50,
    outer_lr=1.0,
    outer_schedule='linear',
  ),
)
# iMAML (Rajeswaran et al. 2019), its authors' Omniglot 5-way 1-shot command
# (imaml_dev's examples/README.md): 16 steps at 0.1, lambda 2, 5 CG steps on
# their damped system, meta-batch 32, Adam 1e-3, 20,000 meta-steps, BatchNorm
# with a scale (PyTorch's affine default).
CONFIGS['omniglot_5way1shot_imaml'] = Config(
  num_iterations=20_000,
  bn_scale=True,
  algo=algorithms.AlgorithmConfig(
    algorithm='imaml',
    inner_lr=0.1,
    train_inner_steps=16,
    eval_inner_steps=16,
    imaml_reg=2.0,
    cg_steps=5,
    cg_damping=1.0,
    reg_damping=10.0,
  ),
)
# The configs of MAML itself (what experiments.fewshot.table runs).
MAML_CONFIGS = tuple(name for name, c in CONFIGS.items() if c.algo.algorithm == 'maml')

# Each config's paper figure, (mean, 95% CI or None), percent.
PAPER_ACCURACY = {  # MAML paper, Tables 1 and 2 (second order).
  'omniglot_5way1shot': (98.7, 0.4),
  'omniglot_5way5shot': (99.9, 0.1),
  'omniglot_20way1shot': (95.8, 0.3),
  'omniglot_20way5shot': (98.9, 0.2),
  'miniimagenet_5way1shot': (48.70, 1.84),
  'miniimagenet_5way5shot': (63.11, 0.92),
  # MAML with a 32-32-32-32 Conv4, as quoted by Lee et al. 2019 (MetaOptNet),
  # Table 2 (CIFAR-FS, from Bertinetto et al. 2019) and Table 1
  # (tieredImageNet). No MAML figure was found for FC100 or CUB.
  'cifar_fs_5way1shot': (58.9, 1.9),
  'cifar_fs_5way5shot': (71.5, 1.0),
  'tiered_imagenet_5way1shot': (51.67, 1.81),
  'tiered_imagenet_5way5shot': (70.30, 1.75),
  # The family's configs, each its own paper's Omniglot figure: MAML++ (no
  # interval quoted), Reptile (transductive), iMAML (iMAML-GD).
  'omniglot_5way1shot_maml_plus_plus': (99.47, None),
  'omniglot_20way1shot_maml_plus_plus': (97.65, None),
  'omniglot_5way1shot_reptile': (97.68, 0.04),
  'omniglot_5way1shot_imaml': (99.16, 0.35),
}
# MAML's first-order approximation (FOMAML), as reported by the MAML paper
# (Finn, Abbeel & Levine 2017): Table 1 ("MAML + first-order approx.",
# Omniglot) and Table 2 ("MAML, first order approx.", miniImageNet), percent.
PAPER_ACCURACY_FIRST_ORDER = {
  'omniglot_5way1shot': (98.3, 0.5),
  'omniglot_5way5shot': (99.2, 0.2),
  'omniglot_20way1shot': (89.4, 0.5),
  'omniglot_20way5shot': (97.9, 0.1),
  'miniimagenet_5way1shot': (48.07, 1.75),
  'miniimagenet_5way5shot': (63.15, 0.91),
}
