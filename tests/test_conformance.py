"""What every algorithm of the family must do, on one toy problem each.

Each builds a ``MetaLearner``, meta-trains under ``jit`` with
``make_meta_step`` (compiling once), lowers the held-out meta-loss, and is
deterministic under a fixed key.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxmaml
from jaxmaml.data import sinusoid
from tests.utils import counting

# name -> (factory of the learner from a loss or embedding, problem)
LEARNERS = {
    'maml': lambda loss: jaxmaml.maml(loss, inner_lr=0.05, num_steps=2),
    'fomaml': lambda loss: jaxmaml.maml(loss, inner_lr=0.05, num_steps=2, first_order=True),
    'anil': lambda loss: jaxmaml.anil(loss, inner_lr=0.3, num_steps=2),
    'meta_sgd': lambda loss: jaxmaml.meta_sgd(loss, init_lr=0.05, num_steps=2),
    'maml_plus_plus': lambda loss: jaxmaml.maml_plus_plus(
        loss, inner_lr=0.05, num_steps=2, msl_iterations=20, learn_inner_lr=True,
        first_order_iterations=10),
    'reptile': lambda loss: jaxmaml.reptile(loss, inner_lr=0.05, num_steps=5),
    'imaml': lambda loss: jaxmaml.imaml(loss, inner_lr=0.05, num_steps=5, reg=4.0),
    'protonets': lambda embed: jaxmaml.protonets(embed, num_ways=2),
}


def _regression():
  model = jaxmaml.MLP(features=(16, 16, 1), activation=jnp.tanh)
  params = model.init(jax.random.key(0), jnp.zeros([1, 1]))['params']
  sample = lambda key: sinusoid.sample_tasks(key, 8, 5, 5)
  return jaxmaml.mse_loss(jaxmaml.apply_fn(model)), params, sample


def _classification():
  """2-way tasks: two Gaussian blobs at random centers, labels in random order."""
  model = jaxmaml.MLP(features=(16, 8), activation=jnp.tanh)
  params = model.init(jax.random.key(0), jnp.zeros([1, 2]))['params']

  def sample(key):
    centers_key, noise_key = jax.random.split(key)
    centers = 2.0 * jax.random.normal(centers_key, (8, 2, 2))
    labels = jnp.tile(jnp.arange(2), (8, 10))  # [8, 20]: 10 per class.
    x = centers[jnp.arange(8)[:, None], labels] + 0.7 * jax.random.normal(noise_key, (8, 20, 2))
    return jaxmaml.Task(support=(x[:, :10], labels[:, :10]), query=(x[:, 10:], labels[:, 10:]))

  return jaxmaml.apply_fn(model), params, sample


@pytest.mark.parametrize('name', sorted(LEARNERS))
def test_conformance(name):
  fn, params, sample = _classification() if name == 'protonets' else _regression()
  counted, traces = counting(fn)
  learner = LEARNERS[name](counted)
  optimizer = optax.sgd(0.5) if name == 'reptile' else optax.adam(1e-2)
  step = jaxmaml.make_meta_step(learner, optimizer)

  def train(num_iterations):
    state = jaxmaml.init_train_state(learner.init(params), optimizer)
    for i in range(num_iterations):
      state, _ = step(state, sample(jax.random.fold_in(jax.random.key(0), i)))
    return state

  state = train(1)
  compiled = len(traces)
  state = train(60)
  assert len(traces) == compiled > 0  # Compiled once: no retrace in 60 more steps.
  assert int(state.step) == 60
  held_out = sample(jax.random.key(123))
  meta_loss = lambda p: float(jnp.mean(jaxmaml.evaluate(learner.task_loss, p, held_out)['loss']))
  before, after = meta_loss(learner.init(params)), meta_loss(state.params)
  assert np.isfinite(after) and after < 0.8 * before, (before, after)
  # Deterministic: the same keys give bit-identical meta-parameters.
  for a, b in zip(jax.tree_util.tree_leaves(train(3).params),
                  jax.tree_util.tree_leaves(train(3).params)):
    np.testing.assert_array_equal(a, b)
