"""The few-shot problems the benchmarks run, on random data of the real shapes.

A ``Problem`` is one MAML setting (dataset, N-way K-shot, queries, meta-batch,
inner loop, order); ``SHAPES`` holds the settings of the shape table. Every
implementation (jaxmaml and its peers) gets the same Flax parameters and the
same meta-batch, flattened to numpy, and returns gradients in that layout.
"""

import dataclasses

import flax
import jax
import jax.numpy as jnp
import numpy as np

from experiments import cli
import jaxmaml

FlatParams = dict[str, np.ndarray]
"""Flax parameters flattened to ``{'ConvBlock_0/kernel': array, ...}``."""

IMAGE_SHAPES = {'omniglot': (28, 28, 1), 'miniimagenet': (84, 84, 3)}


@dataclasses.dataclass(frozen=True)
class Problem:
  """One MAML setting on random data.

  Attributes:
    dataset: ``'omniglot'`` (binary 28x28x1 images, Conv4 with 64 filters and
      stride-2 convolutions, mean-pooled head) or ``'miniimagenet'`` (uniform
      84x84x3 images, 32 filters, 2x2 max-pooling, flattened head).
    ways, shots, queries: N-way K-shot, query examples per class.
    meta_batch_size: tasks per meta-gradient.
    inner_steps, inner_lr: the inner loop in meta-training.
    eval_inner_steps: inner steps at meta-test (evaluation path).
    first_order: first-order MAML instead of second order.
    features: filters per conv layer; None is the dataset's (64 or 32).
    bn_scale: BatchNorm learns a scale as well as the offset.
    seed: parameters and tasks.
  """

  dataset: str = 'omniglot'
  ways: int = 5
  shots: int = 1
  queries: int = 1
  meta_batch_size: int = 32
  inner_steps: int = 1
  inner_lr: float = 0.4
  eval_inner_steps: int = 3
  first_order: bool = False
  features: int | None = None
  bn_scale: bool = False
  seed: int = 0

  def __post_init__(self):
    if self.dataset not in IMAGE_SHAPES:
      raise ValueError(f'dataset must be one of {tuple(IMAGE_SHAPES)}, got {self.dataset!r}.')
    cli.check_positive_ints(
      self, ('ways', 'shots', 'queries', 'meta_batch_size', 'inner_steps', 'eval_inner_steps')
    )

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return IMAGE_SHAPES[self.dataset]

  @property
  def num_features(self) -> int:
    return self.features or (64 if self.dataset == 'omniglot' else 32)


_OMNIGLOT = dict(
  dataset='omniglot', ways=5, shots=1, meta_batch_size=32, inner_lr=0.4, eval_inner_steps=3
)
_MINIIMAGENET = dict(
  dataset='miniimagenet', ways=5, queries=15, inner_steps=5, inner_lr=0.01, eval_inner_steps=10
)
SHAPES = {  # Second order; the table runs each first order too.
  'omniglot_5w1s_q1_1step': Problem(**_OMNIGLOT, queries=1, inner_steps=1),
  'omniglot_5w1s_q1_5step': Problem(**_OMNIGLOT, queries=1, inner_steps=5),
  'omniglot_5w1s_q15_1step': Problem(**_OMNIGLOT, queries=15, inner_steps=1),
  'omniglot_5w1s_q15_5step': Problem(**_OMNIGLOT, queries=15, inner_steps=5),
  # The MAML paper's 20-way 1-shot: 5 steps at 0.1, meta-batch 16, 5 steps at test.
  'omniglot_20w1s': Problem(
    **{**_OMNIGLOT, 'ways': 20, 'meta_batch_size': 16, 'inner_lr': 0.1, 'eval_inner_steps': 5},
    queries=1,
    inner_steps=5,
  ),
  # The MAML paper's miniImageNet: 15 queries, 5 steps at 0.01 (10 at test),
  # meta-batch 4 (1-shot) and 2 (5-shot).
  'miniimagenet_5w1s': Problem(**_MINIIMAGENET, shots=1, meta_batch_size=4),
  'miniimagenet_5w5s': Problem(**_MINIIMAGENET, shots=5, meta_batch_size=2),
}


def random_tasks(
  key: jax.Array,
  num_tasks: int,
  ways: int,
  shots: int,
  queries: int,
  image_shape: tuple[int, int, int] = (28, 28, 1),
  binary: bool = True,
) -> jaxmaml.Task:
  """A meta-batch of random images shaped like few-shot episodes.

  Returns:
    ``Task((x_s, y_s), (x_q, y_q))``: images ``[num_tasks, ways * shots, *image_shape]``
    (``ways * queries`` for the query), float32, in {0, 1} with ``binary``
    (Omniglot-like) or uniform in [0, 1); labels ``[num_tasks, n]`` int32,
    ``0 .. ways - 1`` each repeated ``shots`` (``queries``) times.
  """
  keys = jax.random.split(key, 2)

  def images(k, n):
    x = jax.random.uniform(k, (num_tasks, n, *image_shape))
    return (x > 0.8).astype(jnp.float32) if binary else x

  labels = lambda n: jnp.tile(jnp.repeat(jnp.arange(ways, dtype=jnp.int32), n), (num_tasks, 1))
  return jaxmaml.Task(
    (images(keys[0], ways * shots), labels(shots)),
    (images(keys[1], ways * queries), labels(queries)),
  )


def make_model(problem: Problem, conv: str = 'matmul') -> jaxmaml.Conv4:
  """jaxmaml's Conv4 for ``problem``'s dataset."""
  if problem.dataset == 'omniglot':
    return jaxmaml.Conv4(
      problem.ways, features=problem.num_features, bn_scale=problem.bn_scale, conv=conv
    )
  return jaxmaml.conv4_miniimagenet(
    problem.ways, features=problem.num_features, bn_scale=problem.bn_scale, conv=conv
  )


def make_tasks(problem: Problem, num_tasks: int | None = None, salt: int = 0) -> jaxmaml.Task:
  """``problem``'s meta-batch (or ``num_tasks`` tasks) as numpy; ``salt`` draws others."""
  key = jax.random.fold_in(jax.random.fold_in(jax.random.key(problem.seed), 0), salt)
  tasks = random_tasks(
    key,
    num_tasks or problem.meta_batch_size,
    problem.ways,
    problem.shots,
    problem.queries,
    problem.image_shape,
    binary=problem.dataset == 'omniglot',
  )
  return jax.tree_util.tree_map(np.asarray, tasks)


def init_params(problem: Problem) -> FlatParams:
  """Flax Conv4 parameters, flattened: ``'ConvBlock_i/kernel'`` ``[3, 3, c_in, c_out]``,
  ``'ConvBlock_i/bias'`` (and ``/scale``) ``[c_out]``, ``'Dense_0/kernel'``
  ``[dim, ways]``, ``'Dense_0/bias'`` ``[ways]``."""
  key = jax.random.fold_in(jax.random.key(problem.seed), 1)
  params = make_model(problem).init(key, jnp.zeros((1, *problem.image_shape)))['params']
  return {k: np.asarray(v) for k, v in flax.traverse_util.flatten_dict(params, sep='/').items()}


def flatten(params) -> FlatParams:
  """A Flax pytree as ``{'a/b': numpy array}``."""
  return {k: np.asarray(v) for k, v in flax.traverse_util.flatten_dict(params, sep='/').items()}


def unflatten(flat: FlatParams) -> dict:
  """``{'a/b': x}`` -> ``{'a': {'b': x}}``, the Flax pytree layout."""
  return flax.traverse_util.unflatten_dict(flat, sep='/')


def relative_l2(grads: FlatParams, reference: FlatParams) -> tuple[float, dict[str, float]]:
  """``|g - g_ref| / |g_ref|`` over all leaves together, and per leaf (float64)."""
  diff = {
    k: np.asarray(grads[k], np.float64) - np.asarray(reference[k], np.float64) for k in reference
  }
  ref = {k: np.asarray(v, np.float64) for k, v in reference.items()}
  norm = lambda tree: float(np.sqrt(sum(np.sum(np.square(v)) for v in tree.values())))
  per_leaf = {
    k: float(np.linalg.norm(diff[k]) / max(np.linalg.norm(ref[k]), 1e-300)) for k in reference
  }
  return norm(diff) / norm(ref), per_leaf
