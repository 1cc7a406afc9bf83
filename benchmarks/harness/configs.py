"""What the harness measures: the MAML variants, the family and the problem shapes."""

from typing import NamedTuple

from experiments import cli
from experiments.fewshot import config as config_lib

VARIANTS = {  # remat='sqrt': two-level checkpointing, segments of ~sqrt(inner steps).
  'second_order': dict(first_order=False, remat=False),
  'first_order': dict(first_order=True, remat=False),
  'second_order_remat': dict(first_order=False, remat=True),
  'second_order_remat_sqrt': dict(first_order=False, remat='sqrt'),
}


# The family: each algorithm's Omniglot 5-way 1-shot run, as overrides (the
# flat field names of ``experiments.cli.override``) of the MAML paper's config
# (``TRAINING_CONFIG``). Its meta-step measurement takes the algorithm fields
# and ``train_inner_steps`` and keeps the shape's meta-batch and inner rate.
TRAINING_CONFIG = 'omniglot_5way1shot'  # Of ``experiments.fewshot.config.CONFIGS``.


def _protocol(name: str, *fields: str) -> dict:
  """The algorithm fields that config ``name`` sets and its ``fields``, as overrides."""
  config, default = config_lib.CONFIGS[name], cli.flatten(config_lib.Config().algo)
  algo = {k: v for k, v in cli.flatten(config.algo).items() if v != default[k]}
  return {**algo, **{f: getattr(config, f) for f in fields}}


FAMILY = {
  'maml': {},
  'fomaml': dict(first_order=True),
  'anil': dict(algorithm='anil'),
  'meta_sgd': dict(algorithm='meta_sgd'),
  # The family's protocol configs (``experiments.fewshot.config``): their
  # algorithm fields and the fields named, on MAML's network (MAML++'s config
  # also max-pools and learns a BatchNorm scale, iMAML's learns the scale).
  'maml_plus_plus': _protocol('omniglot_5way1shot_maml_plus_plus', 'meta_batch_size'),
  # Reptile: 5 inner SGD steps at 0.1 (50 at test), meta-batch 5, outer step 1
  # annealed linearly to 0 (the paper's schedule; it uses inner Adam).
  'reptile': dict(
    algorithm='reptile',
    inner_lr=0.1,
    train_inner_steps=5,
    eval_inner_steps=50,
    meta_batch_size=5,
    outer_lr=1.0,
    outer_schedule='linear',
  ),
  'reptile_paper': _protocol('omniglot_5way1shot_reptile', 'meta_batch_size', 'train_shots'),
  # iMAML: 10 proximal steps at 0.1, lambda 2, 5 CG iterations.
  'imaml': dict(
    algorithm='imaml',
    inner_lr=0.1,
    train_inner_steps=10,
    eval_inner_steps=10,
    imaml_reg=2.0,
    cg_steps=5,
  ),
  'imaml_damped': _protocol('omniglot_5way1shot_imaml'),
  'protonets': dict(algorithm='protonets'),
}


class Shape(NamedTuple):
  """A problem: the model and the meta-batch it is trained on."""

  model: str  # 'mlp' (sinusoid), 'conv4' (Omniglot, 28x28x1) or 'resnet12'.
  ways: int
  shots: int
  queries: int
  meta_batch_size: int
  inner_lr: float
  inner_steps: int
  task_map: str
  batch_size: int | None = None
  image_size: int = 28  # Square images; 3 channels for ResNet-12, 1 for Conv4.
  widths: tuple[int, ...] | None = None  # ResNet-12's block widths; None: 64-160-320-640.


SHAPES = {  # Hyperparameters of the MAML paper; task mapping as in our configs.
  'sinusoid': Shape('mlp', 1, 10, 10, 25, 0.01, 1, 'vmap'),
  'omniglot_5way1shot': Shape('conv4', 5, 1, 1, 32, 0.4, 1, 'map', 4),
  'omniglot_20way1shot': Shape('conv4', 20, 1, 1, 16, 0.1, 5, 'map', 4),
  # ResNet-12 (64-160-320-640), 5-way 1-shot with 15 queries, 5 inner steps at
  # MAML's miniImageNet rate; meta-batch 4 mapped one task at a time, so that
  # the memory is one task's (tasks run one after another).
  'resnet12_32': Shape('resnet12', 5, 1, 15, 4, 0.01, 5, 'map', 1, 32),
  'resnet12_84': Shape('resnet12', 5, 1, 15, 4, 0.01, 5, 'map', 1, 84),
  'resnet12_tiny': Shape('resnet12', 5, 1, 2, 2, 0.01, 2, 'map', 1, 16, (4, 4, 8, 8)),  # Tests.
}

# The resnet12_memory section: the variants (iMAML: the family's, on the
# shape's inner rate) and the inner steps whose compiled memory is fitted.
MEMORY_VARIANTS = (*VARIANTS, 'imaml')
MEMORY_STEPS = (1, 3, 5)
MEMORY_BUDGETS_GIB = {'16 GiB (V100)': 16, '80 GiB (A100, H100)': 80}
