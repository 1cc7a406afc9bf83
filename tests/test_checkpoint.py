"""Atomic checkpoints round-trip a train state and reject mismatches."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxmaml
from jaxmaml.checkpoint import restore_checkpoint
from jaxmaml.checkpoint import save_checkpoint
from tests.utils import rel_l2


def test_round_trip_train_state(tmp_path, regression):
  _, params, _ = regression
  optimizer = optax.adam(1e-3)
  state = jaxmaml.init_train_state(params, optimizer)
  state = state._replace(
    step=jnp.asarray(7, jnp.int32), params=jax.tree_util.tree_map(lambda p: p + 1, state.params)
  )
  path = str(tmp_path / 'run' / 'state.ckpt')
  assert restore_checkpoint(path, state) is None
  save_checkpoint(path, state, {'note': 'hello'})
  assert os.listdir(tmp_path / 'run') == ['state.ckpt']  # No temporary file left.
  target = jaxmaml.init_train_state(params, optimizer)
  restored, metadata = restore_checkpoint(path, target)
  assert metadata == {'note': 'hello'}
  assert int(restored.step) == 7
  assert type(restored) is jaxmaml.MetaTrainState
  assert rel_l2(restored.params, state.params) == 0.0
  for got, want in zip(jax.tree_util.tree_leaves(restored), jax.tree_util.tree_leaves(state)):
    np.testing.assert_array_equal(got, want)


def test_mismatched_or_corrupt_checkpoint(tmp_path):
  path = str(tmp_path / 'state.ckpt')
  save_checkpoint(path, {'w': np.zeros(3)})
  with pytest.raises(ValueError, match='shape'):
    restore_checkpoint(path, {'w': np.zeros(4)})
  with pytest.raises(ValueError, match='not a checkpoint'):
    restore_checkpoint(path, {'v': np.zeros(3)})
  with open(path, 'wb') as f:
    f.write(b'\x00garbage')
  with pytest.raises(ValueError, match='not a checkpoint'):
    restore_checkpoint(path, {'w': np.zeros(3)})
