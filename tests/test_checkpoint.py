"""Orbax checkpoints round-trip a train state bit for bit, keep a complete
checkpoint through a crash, report corrupt or mismatched ones, and the
msgpack files of jaxmaml before Orbax still restore."""

import json
import os
import shutil

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxmaml
from jaxmaml import checkpoint

pytest.importorskip('orbax.checkpoint')


def _state(params, shift=1.0):
  state = jaxmaml.init_train_state(params, optax.adam(1e-3))
  return state._replace(
    step=jnp.asarray(7, jnp.int32),
    params=jax.tree_util.tree_map(lambda p: p + shift, state.params),
  )


def _assert_same(got, want):
  assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
  for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
    assert np.asarray(a).dtype == np.asarray(b).dtype
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize('async_save', [False, True])
def test_round_trip_train_state(tmp_path, regression, async_save):
  _, params, _ = regression
  state = _state(params)
  target = jaxmaml.init_train_state(params, optax.adam(1e-3))
  with checkpoint.checkpoint_manager(tmp_path / 'run', async_save=async_save) as manager:
    assert checkpoint.restore_checkpoint(manager, target) is None
    checkpoint.save_checkpoint(manager, 7, state, {'note': 'hello'})
    later = _state(params, shift=2.0)
    checkpoint.save_checkpoint(manager, 9, later, {'note': 'later'})
  assert os.listdir(tmp_path / 'run') == ['9']  # The latest step only, no temporary left.
  with checkpoint.checkpoint_manager(tmp_path / 'run') as manager:
    restored, metadata = checkpoint.restore_checkpoint(manager, target)
  assert metadata == {'note': 'later'}
  assert type(restored) is jaxmaml.MetaTrainState
  _assert_same(restored, later)


def test_an_interrupted_save_leaves_the_last_complete_checkpoint(tmp_path):
  state = {'w': np.arange(3.0)}
  with checkpoint.checkpoint_manager(tmp_path) as manager:
    checkpoint.save_checkpoint(manager, 1, state)
  # What a crash mid-write leaves: a step directory under Orbax's temporary name.
  shutil.copytree(tmp_path / '1', tmp_path / '2.orbax-checkpoint-tmp-123')
  with checkpoint.checkpoint_manager(tmp_path) as manager:
    restored, _ = checkpoint.restore_checkpoint(manager, {'w': np.zeros(3)})
  np.testing.assert_array_equal(restored['w'], state['w'])
  assert sorted(os.listdir(tmp_path)) == ['1']  # The incomplete one is cleaned up.


def _files(directory):
  return [os.path.join(d, f) for d, _, fs in os.walk(directory) for f in fs]


def test_mismatched_or_corrupt_checkpoint(tmp_path):
  with checkpoint.checkpoint_manager(tmp_path) as manager:
    checkpoint.save_checkpoint(manager, 3, {'w': np.zeros(3)})
    with pytest.raises(ValueError, match='shape'):
      checkpoint.restore_checkpoint(manager, {'w': np.zeros(4)})
    with pytest.raises(ValueError, match='not a checkpoint matching'):
      checkpoint.restore_checkpoint(manager, {'v': np.zeros(3)})
  for path in _files(tmp_path / '3'):  # Every data file truncated to garbage.
    if os.path.getsize(path) > 0 and not path.endswith('_CHECKPOINT_METADATA'):
      with open(path, 'wb') as f:
        f.write(b'\x00garbage')
  with checkpoint.checkpoint_manager(tmp_path) as manager:
    with pytest.raises(ValueError, match=f'{tmp_path}/3 is not a checkpoint'):
      checkpoint.restore_checkpoint(manager, {'w': np.zeros(3)})


def _save_msgpack(path, target, metadata):
  """A checkpoint file as jaxmaml wrote them before Orbax."""
  state = flax.serialization.to_state_dict(jax.device_get(target))
  with open(path, 'wb') as f:
    f.write(
      flax.serialization.msgpack_serialize({'state': state, 'metadata': json.dumps(metadata)})
    )


def test_msgpack_checkpoints_still_restore(tmp_path, regression):
  _, params, _ = regression
  state = _state(params)
  path = str(tmp_path / 'state.ckpt')
  _save_msgpack(path, state, {'step': 7})
  target = jaxmaml.init_train_state(params, optax.adam(1e-3))
  restored, metadata = checkpoint.restore_msgpack(path, target)
  assert metadata == {'step': 7}
  _assert_same(restored, state)
  assert checkpoint.restore_msgpack(str(tmp_path / 'none.ckpt'), target) is None
  with open(path, 'wb') as f:
    f.write(b'\x00garbage')
  with pytest.raises(ValueError, match='not a checkpoint'):
    checkpoint.restore_msgpack(path, target)
