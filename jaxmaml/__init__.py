"""jaxmaml: gradient-based meta-learning in JAX.

The public API: the inner loop (``make_adapt`` and its ``make_trajectory``
form, with an Optax update rule: ``inner_sgd``, ``scale_by_rates``), the
pieces algorithms share (``kit``), algorithms as records of pure
functions (``maml``, ``anil``, ``meta_sgd``, ``maml_plus_plus``, ``reptile``,
``imaml``, ``protonets``), the meta-training step (``make_meta_step``), and
evaluation (``evaluate``, ``mean_confidence_interval``), and data parallelism
over tasks (``task_mesh``, ``replicate``, ``shard_tasks``), mixed precision
(``mixed_precision``), models (``Conv4``, ``ResNet12``, ``MLP``) and their
BatchNorm modes (``inductive_batch_norm``, ``jaxmaml.normalization``), and
Flax NNX and Equinox models as pure functions (``from_nnx``, ``from_equinox``).
"""

from jaxmaml.adapt import InnerLR
from jaxmaml.adapt import inner_sgd
from jaxmaml.adapt import make_adapt
from jaxmaml.adapt import make_trajectory
from jaxmaml.adapt import scale_by_rates
from jaxmaml.adapters import FunctionalModel
from jaxmaml.adapters import from_equinox
from jaxmaml.adapters import from_nnx
from jaxmaml.anil import anil
from jaxmaml.anil import last_layer
from jaxmaml.base import AdaptFn
from jaxmaml.base import Batch
from jaxmaml.base import LossFn
from jaxmaml.base import MetaLearner
from jaxmaml.base import Metrics
from jaxmaml.base import Params
from jaxmaml.base import Task
from jaxmaml.base import TaskGradFn
from jaxmaml.base import TaskLossFn
from jaxmaml.evaluation import adaptation_curve
from jaxmaml.evaluation import evaluate
from jaxmaml.evaluation import mean_confidence_interval
from jaxmaml.imaml import imaml
from jaxmaml.kit import grad_of
from jaxmaml.kit import identity
from jaxmaml.kit import task_loss_from_adapt
from jaxmaml.losses import cross_entropy_loss
from jaxmaml.losses import mse_loss
from jaxmaml.maml import maml
from jaxmaml.maml_plus_plus import maml_plus_plus
from jaxmaml.meta_sgd import meta_sgd
from jaxmaml.models import MLP
from jaxmaml.models import Conv4
from jaxmaml.models import ResNet12
from jaxmaml.models import apply_fn
from jaxmaml.models import batch_norm_params
from jaxmaml.models import conv4_miniimagenet
from jaxmaml.normalization import Referenced
from jaxmaml.normalization import inductive_batch_norm
from jaxmaml.normalization import inductive_task
from jaxmaml.precision import mixed_precision
from jaxmaml.protonets import protonets
from jaxmaml.reptile import reptile
from jaxmaml.sharding import replicate
from jaxmaml.sharding import shard_tasks
from jaxmaml.sharding import task_mesh
from jaxmaml.tasks import check_tasks
from jaxmaml.tasks import default_task_map
from jaxmaml.tasks import map_tasks
from jaxmaml.training import MetaTrainState
from jaxmaml.training import init_train_state
from jaxmaml.training import make_meta_step
from jaxmaml.training import meta_gradient

__version__ = '0.1.0'

__all__ = (
  'AdaptFn',
  'Conv4',
  'FunctionalModel',
  'Batch',
  'InnerLR',
  'LossFn',
  'MLP',
  'MetaLearner',
  'MetaTrainState',
  'Metrics',
  'Params',
  'Referenced',
  'ResNet12',
  'Task',
  'TaskGradFn',
  'TaskLossFn',
  'adaptation_curve',
  'anil',
  'apply_fn',
  'batch_norm_params',
  'check_tasks',
  'default_task_map',
  'conv4_miniimagenet',
  'cross_entropy_loss',
  'evaluate',
  'from_equinox',
  'from_nnx',
  'grad_of',
  'identity',
  'imaml',
  'inductive_batch_norm',
  'inductive_task',
  'init_train_state',
  'inner_sgd',
  'last_layer',
  'make_adapt',
  'make_trajectory',
  'make_meta_step',
  'map_tasks',
  'maml',
  'maml_plus_plus',
  'mean_confidence_interval',
  'mixed_precision',
  'meta_gradient',
  'meta_sgd',
  'mse_loss',
  'protonets',
  'replicate',
  'reptile',
  'scale_by_rates',
  'shard_tasks',
  'task_loss_from_adapt',
  'task_mesh',
)
