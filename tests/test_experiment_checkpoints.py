"""The committed reproductions restore: the finished one, checkpointed before
Orbax (msgpack), and the runs in progress (Orbax)."""

import os

import jax
import numpy as np
import pytest

from experiments import algorithms
from experiments import loop
from experiments.fewshot import config as config_lib
from experiments.fewshot import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_committed_msgpack_reproduction_restores():
  """The finished Omniglot 5-way 1-shot reproduction, checkpointed before Orbax."""
  committed = os.path.join(ROOT, 'reproduction', 'omniglot_5way1shot')
  config = config_lib.CONFIGS['omniglot_5way1shot']
  model, learners = train.model_and_learners(config)
  optimizer = algorithms.make_optimizer(config.algo, config.num_iterations)
  target = train.create_train_state(
    config, model, learners.training, optimizer, jax.random.key(0), 1
  )
  resumed = loop.resume(train.make_checkpoints(config, committed), target)
  assert int(resumed.state.step) == 60_000
  assert resumed.progress['best_step'] == 52_000
  assert resumed.progress['best_val'] == pytest.approx(99.44, abs=0.005)
  leaves = jax.tree_util.tree_leaves(resumed.best_params)
  assert all(np.all(np.isfinite(x)) for x in leaves)


def test_the_committed_runs_in_progress_restore():
  """The runs resumed across sessions (Orbax) restore with today's config
  fields, those added since they started taking their defaults."""
  for name in ('omniglot_5way5shot', 'omniglot_5way1shot_reptile'):
    committed = os.path.join(ROOT, 'reproduction', name)
    config = config_lib.CONFIGS[name]
    model, learners = train.model_and_learners(config)
    optimizer = algorithms.make_optimizer(config.algo, config.num_iterations)
    target = train.create_train_state(
      config, model, learners.training, optimizer, jax.random.key(0), 1
    )
    resumed = loop.resume(train.make_checkpoints(config, committed), target)
    step = int(resumed.state.step)
    assert 0 < step < config.num_iterations and step % config.checkpoint_every == 0
    assert 0 < resumed.progress['best_step'] <= step
