"""Shared helpers for the tests: a relative L2 distance, tiny models and problems."""

import functools
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxmaml
from jaxmaml.data import sinusoid


def rel_l2(a, b) -> float:
  """``||a - b|| / ||b||`` over all leaves of two pytrees of the same structure."""
  flat_a = np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(a)])
  flat_b = np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(b)])
  return float(np.linalg.norm(flat_a - flat_b) / np.linalg.norm(flat_b))


def tiny_regression(
  key, *, num_tasks=4, num_support=5, num_query=7, width=8, activation=jnp.tanh, dtype=jnp.float32
):
  """A small smooth MLP regression problem: (loss_fn, params, tasks)."""
  model = jaxmaml.MLP(features=(width, width, 1), activation=activation)
  init_key, task_key = jax.random.split(key)
  params = model.init(init_key, jnp.zeros([1, 1]))['params']
  tasks = sinusoid.sample_tasks(task_key, num_tasks, num_support, num_query)
  cast = lambda tree: jax.tree_util.tree_map(lambda x: x.astype(dtype), tree)
  return jaxmaml.mse_loss(jaxmaml.apply_fn(model)), cast(params), cast(tasks)


def directional_derivatives(loss, grad, params, key, num_directions=3, eps=1e-6):
  """``(analytic, central differences)`` of ``loss`` along random unit directions.

  ``grad`` has the structure of ``params``; the directions are unit vectors
  over all leaves, so ``eps`` is the step's length (float64 expected).
  """
  leaves, treedef = jax.tree_util.tree_flatten(params)
  pairs = []
  for direction_key in jax.random.split(key, num_directions):
    keys = jax.random.split(direction_key, len(leaves))
    noise = [jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)]
    norm = jnp.sqrt(sum(jnp.sum(d**2) for d in noise))
    direction = jax.tree_util.tree_unflatten(treedef, [d / norm for d in noise])
    shifted = lambda s, d=direction: jax.tree_util.tree_map(lambda p, u: p + s * u, params, d)
    numeric = (loss(shifted(eps)) - loss(shifted(-eps))) / (2 * eps)
    analytic = sum(
      jnp.vdot(g, u)
      for g, u in zip(jax.tree_util.tree_leaves(grad), jax.tree_util.tree_leaves(direction))
    )
    pairs.append((float(analytic), float(numeric)))
  return pairs


def task(tasks, i):
  """Task ``i`` of a meta-batch."""
  return jax.tree_util.tree_map(lambda x: x[i], tasks)


def counting(loss_fn):
  """Wraps ``loss_fn`` to record each call (under jit: each trace).

  Returns:
    ``(counting_loss_fn, calls)``; ``len(calls)`` is the number of calls.
  """
  calls = []

  def counting_loss(params, batch):
    calls.append(1)
    return loss_fn(params, batch)

  return counting_loss, calls


def quadratic_task(key, dim=4):
  """Support/query losses 0.5 x^T A x - b^T x with SPD A: batch = (A, b)."""
  keys = jax.random.split(key, 4)

  def spd(k):
    m = jax.random.normal(k, (dim, dim))
    return m @ m.T / dim + jnp.eye(dim)

  return jaxmaml.Task(
    support=(spd(keys[0]), jax.random.normal(keys[1], (dim,))),
    query=(spd(keys[2]), jax.random.normal(keys[3], (dim,))),
  )


def quadratic_loss(theta, batch):
  a, b = batch
  return 0.5 * theta @ a @ theta - b @ theta


# name -> factory of the learner from a loss (from an embedding for ProtoNets):
# every algorithm of the family, as test_conformance and test_sharding run them.
LEARNERS = {
  'maml': lambda loss: jaxmaml.maml(loss, inner_lr=0.05, num_steps=2),
  'fomaml': lambda loss: jaxmaml.maml(loss, inner_lr=0.05, num_steps=2, first_order=True),
  'anil': lambda loss: jaxmaml.anil(loss, inner_lr=0.3, num_steps=2),
  'meta_sgd': lambda loss: jaxmaml.meta_sgd(loss, init_lr=0.05, num_steps=2),
  'maml_plus_plus': lambda loss: jaxmaml.maml_plus_plus(
    loss,
    inner_lr=0.05,
    num_steps=2,
    msl_iterations=20,
    learn_inner_lr=True,
    first_order_iterations=10,
  ),
  'reptile': lambda loss: jaxmaml.reptile(loss, inner_lr=0.05, num_steps=5),
  # 10 CG steps: with the default 5 the implicit gradient was too inexact on a
  # fresh machine for the toy sinusoid to train in 60 steps (loss x0.98, not x0.8).
  'imaml': lambda loss: jaxmaml.imaml(loss, inner_lr=0.05, num_steps=5, reg=4.0, cg_steps=10),
  'protonets': lambda embed: jaxmaml.protonets(embed, num_ways=2),
}


def sinusoid_problem():
  """Sinusoid regression, 8 tasks of 5 + 5 points: ``(loss_fn, params, sample)``,
  ``sample(key)`` a meta-batch."""
  model = jaxmaml.MLP(features=(16, 16, 1), activation=jnp.tanh)
  params = model.init(jax.random.key(0), jnp.zeros([1, 1]))['params']
  sample = lambda key: sinusoid.sample_tasks(key, 8, 5, 5)
  return jaxmaml.mse_loss(jaxmaml.apply_fn(model)), params, sample


def blobs_problem():
  """2-way tasks, two Gaussian blobs at random centers, labels in random order,
  8 tasks of 10 + 10 points: ``(embed_fn, params, sample)``."""
  model = jaxmaml.MLP(features=(16, 8), activation=jnp.tanh)
  params = model.init(jax.random.key(0), jnp.zeros([1, 2]))['params']

  def sample(key):
    centers_key, noise_key = jax.random.split(key)
    centers = 2.0 * jax.random.normal(centers_key, (8, 2, 2))
    labels = jnp.tile(jnp.arange(2), (8, 10))  # [8, 20]: 10 per class.
    x = centers[jnp.arange(8)[:, None], labels] + 0.7 * jax.random.normal(noise_key, (8, 20, 2))
    return jaxmaml.Task(support=(x[:, :10], labels[:, :10]), query=(x[:, 10:], labels[:, 10:]))

  return jaxmaml.apply_fn(model), params, sample


def learner_problem(name):
  """The problem ``LEARNERS[name]`` is tested on: blobs for ProtoNets (it takes
  an embedding), sinusoids for the rest."""
  return blobs_problem() if name == 'protonets' else sinusoid_problem()


def two_host_problem():
  """MAML on sampled sinusoid meta-batches of 8: ``(learner, optimizer, params,
  sample)``, for test_sharding's two-process test and its host script."""
  loss_fn, params, _ = sinusoid_problem()
  learner = jaxmaml.maml(loss_fn, inner_lr=0.01, num_steps=2)
  sample = functools.partial(sinusoid.sample_tasks, num_tasks=8, num_support=5, num_query=5)
  return learner, optax.sgd(0.01), params, sample


NUM_DEVICES = 8  # What the sharding tests split over: ``@pytest.mark.devices(NUM_DEVICES)``.


def run_on_simulated_devices(path, markers):
  """Runs the tests of the file ``path`` that ``-m markers`` selects in a
  subprocess with ``XLA_FLAGS=--xla_force_host_platform_device_count=8``; skips
  where there are that many devices already (the tests then run directly).

  The flag must be set before JAX starts, and the rest of the suite runs on one
  device.
  """
  if jax.device_count() >= NUM_DEVICES:
    pytest.skip('runs directly')
  env = {
    **os.environ,
    'XLA_FLAGS': (
      os.environ.get('XLA_FLAGS', '') + f' --xla_force_host_platform_device_count={NUM_DEVICES}'
    ),
  }
  result = subprocess.run(
    [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', '-m', markers, path],
    env=env,
    capture_output=True,
    text=True,
    cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
  )
  assert result.returncode == 0 and ' passed' in result.stdout, (
    result.stdout[-5000:] + result.stderr[-3000:]
  )


def make_miniimagenet(root, per_class=4, size=(100, 90), classes=None):
  """A tiny miniImageNet in the Ravi & Larochelle layout under ``root``.

  ``classes`` maps each split to its classes (default: train n02 and n01,
  val n03, test n03); class n0k's images are of one color (n01 red, n02
  green, n03 blue, n04 yellow, n05 magenta, n06 cyan), ``per_class`` PNG
  images of ``size`` (width, height) told apart by pixel (0, 0). Returns ``root``.
  """
  from PIL import Image  # pylint: disable=import-outside-toplevel

  colors = {
    'n01': (255, 0, 0),
    'n02': (0, 255, 0),
    'n03': (0, 0, 255),
    'n04': (255, 255, 0),
    'n05': (255, 0, 255),
    'n06': (0, 255, 255),
  }
  classes = classes or {'train': ['n02', 'n01'], 'val': ['n03'], 'test': ['n03']}
  (root / 'images').mkdir(parents=True)
  for split, wnids in classes.items():
    lines = ['filename,label']
    for wnid in wnids:
      for i in range(per_class):
        name = f'{wnid}{split}{i:04d}.png'
        pixels = np.zeros((size[1], size[0], 3), np.uint8) + np.array(colors[wnid], np.uint8)
        pixels[0, 0] = i  # Tell the images of a class apart.
        Image.fromarray(pixels).save(root / 'images' / name)
        lines.append(f'{name},{wnid}')
    (root / f'{split}.csv').write_text('\n'.join(lines) + '\n')
  return root


SYNTHETIC_MINIIMAGENET = dict(
  num_ways=1,
  num_queries=2,
  image_size=16,
  num_iterations=4,
  eval_every=4,
  num_val_tasks=4,
  num_test_tasks=4,
  train_inner_steps=2,
  eval_inner_steps=2,
)


def synthetic_config(**overrides):
  """The few-shot experiment's miniImageNet config, shrunk for ``make_miniimagenet`` data."""
  from experiments import cli  # Only the experiment tests import experiments.
  from experiments.fewshot import config as config_lib

  return cli.override(
    config_lib.CONFIGS['miniimagenet_5way1shot'], **{**SYNTHETIC_MINIIMAGENET, **overrides}
  )


def train_synthetic_miniimagenet(tmp_path, classes=None, **overrides):
  """The few-shot experiment trained and tested on a synthetic miniImageNet in ``tmp_path``."""
  from experiments.fewshot import train

  root = tmp_path / 'mini'
  if not root.exists():
    make_miniimagenet(root, per_class=6, size=(24, 24), classes=classes)
  return train.train_and_evaluate(
    synthetic_config(**overrides),
    str(tmp_path / 'run'),
    str(root),
    str(tmp_path / 'cache'),
    plots=False,
  )
