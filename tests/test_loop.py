"""The experiments' training loop (``experiments.loop``) on sinusoid MAML: a run
resumed from its Orbax checkpoints (after a crash, from the msgpack files of
jaxmaml before Orbax, with async saves) is bit-identical to an uninterrupted
one, logs included; a corrupt checkpoint is reported and left as it is; a
diverging run stops before anything non-finite is written."""

import functools
import json
import os
import shutil

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import logs
from experiments import loop
import jaxmaml
from jaxmaml import checkpoint
from jaxmaml.data import sinusoid
from tests.utils import tensorboard_scalars

pytest.importorskip('orbax.checkpoint')

CADENCE = dict(log_every=2, checkpoint_every=2, eval_every=2)


@functools.cache
def _problem():
  """``(step, initial state, validate)``, jitted once for every run of the module."""
  model = jaxmaml.MLP((16, 16, 1))
  params = model.init(jax.random.key(0), jnp.zeros([1, 1]))['params']
  loss_fn = jaxmaml.mse_loss(jaxmaml.apply_fn(model))
  learner = jaxmaml.maml(loss_fn, inner_lr=0.01, num_steps=1)
  optimizer = optax.adam(1e-2)
  meta_step = loop.with_finite_flag(jaxmaml.make_meta_step(learner, optimizer))
  sample = jax.jit(
    functools.partial(sinusoid.sample_tasks, num_tasks=4, num_support=5, num_query=5)
  )
  key = jax.random.key(1)
  val_tasks = sinusoid.sample_tasks(jax.random.key(2), num_tasks=8, num_support=5, num_query=5)
  val_loss = jax.jit(lambda p: jnp.mean(jaxmaml.evaluate(learner.task_loss, p, val_tasks)['loss']))

  def validate(params):  # Higher is better, as the loop keeps the best "accuracy".
    return {'accuracy': 100 - float(val_loss(params)), 'ci95': 0.5, 'num_tasks': 8}

  step = lambda state, it: meta_step(state, sample(jax.random.fold_in(key, it)))
  return step, jaxmaml.init_train_state(params, optimizer), validate


def _checkpoints(workdir, **overrides) -> loop.Checkpoints:
  return loop.Checkpoints(
    path=os.path.join(workdir, 'state'),
    config={'lr': 0.01},
    best_path=os.path.join(workdir, 'best'),
    msgpack_path=os.path.join(workdir, 'state.ckpt'),
    msgpack_best_path=os.path.join(workdir, 'best.ckpt'),
    **overrides,
  )


def _run(workdir, num_iterations, step=None, cadence=None, **overrides) -> loop.Resumed:
  default_step, initial, validate = _problem()
  checkpoints = _checkpoints(str(workdir), **overrides)
  return loop.run(
    step or default_step,
    loop.resume(checkpoints, initial),
    checkpoints,
    loop.Cadence(num_iterations, **(cadence or CADENCE)),
    validate=validate,
    log_dir=str(workdir),
    log=('jsonl', 'tensorboard'),
  )


def _restored(workdir) -> loop.Resumed:
  return loop.resume(_checkpoints(str(workdir)), _problem()[1])


def _assert_bitwise_equal(a, b):
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    assert np.asarray(x).dtype == np.asarray(y).dtype
    np.testing.assert_array_equal(x, y)


def _logged(workdir):
  """log.jsonl without the wall times, and the TensorBoard scalars but the times."""
  with open(os.path.join(workdir, 'log.jsonl')) as f:
    rows = [{k: v for k, v in json.loads(line).items() if 'time' not in k} for line in f]
  scalars = tensorboard_scalars(os.path.join(workdir, 'tensorboard'))
  return rows, {tag: values for tag, values in scalars.items() if not tag.startswith('time/')}


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('once')
  _run(workdir, 8)
  return workdir, _restored(workdir)


def test_extended_run_is_bit_identical_logs_included(uninterrupted, tmp_path):
  workdir, once = uninterrupted
  assert int(once.state.step) == 8
  assert os.listdir(workdir / 'state') == ['8']
  assert os.listdir(workdir / 'best') == [str(once.progress['best_step'])]
  _run(tmp_path, 4)
  _run(tmp_path, 8)
  twice = _restored(tmp_path)
  _assert_bitwise_equal(twice.state, once.state)
  _assert_bitwise_equal(twice.best_params, once.best_params)
  assert twice.progress['best_val'] == once.progress['best_val']
  assert _logged(tmp_path) == _logged(workdir)
  rows, scalars = _logged(workdir)
  assert [s for s, _ in scalars['val/accuracy']] == [2, 4, 6, 8]
  val = [r for r in rows if 'val_accuracy' in r]
  assert [v for _, v in scalars['val/accuracy_ci_low']] == pytest.approx(
    [r['val_accuracy'] - 0.5 for r in val]
  )


class Crash(Exception):
  pass


def test_crash_then_resume_is_bit_identical(uninterrupted, tmp_path):
  """A run killed in iteration 7 (checkpointed at 4, logged and validated at
  6) resumes from 4 to the uninterrupted run's state, and its logs, log.jsonl
  and TensorBoard, show each step once, as the uninterrupted run's."""
  step = _problem()[0]

  def crashing(state, it):
    if it == 7:
      raise Crash
    return step(state, it)

  with pytest.raises(Crash):
    _run(tmp_path, 8, crashing, cadence=dict(CADENCE, checkpoint_every=4))
  assert os.listdir(tmp_path / 'state') == ['4']
  assert max(row['step'] for row in logs.read_log(tmp_path / 'log.jsonl')) == 6
  _run(tmp_path, 8)
  workdir, once = uninterrupted
  _assert_bitwise_equal(_restored(tmp_path).state, once.state)
  _assert_bitwise_equal(_restored(tmp_path).best_params, once.best_params)
  assert _logged(tmp_path) == _logged(workdir)


def test_async_saves_give_the_same_checkpoints(uninterrupted, tmp_path):
  _run(tmp_path, 4, async_save=True)
  _run(tmp_path, 8, async_save=True)
  _assert_bitwise_equal(_restored(tmp_path).state, uninterrupted[1].state)


def _save_msgpack(path, target, metadata):
  """A checkpoint file as jaxmaml wrote them before Orbax."""
  payload = {
    'state': flax.serialization.to_state_dict(jax.device_get(target)),
    'metadata': json.dumps(metadata),
  }
  with open(path, 'wb') as f:
    f.write(flax.serialization.msgpack_serialize(payload))


def test_a_run_checkpointed_before_orbax_resumes_bit_identically(uninterrupted, tmp_path):
  _run(tmp_path, 4)
  at_4 = _restored(tmp_path)
  _save_msgpack(
    tmp_path / 'state.ckpt', at_4.state, {'config': {'lr': 0.01}, 'progress': at_4.progress}
  )
  best = {'step': at_4.progress['best_step'], 'accuracy': at_4.progress['best_val']}
  _save_msgpack(tmp_path / 'best.ckpt', at_4.best_params, best)
  shutil.rmtree(tmp_path / 'state')
  shutil.rmtree(tmp_path / 'best')
  assert int(_restored(tmp_path).state.step) == 4
  _run(tmp_path, 8)
  resumed = _restored(tmp_path)
  _assert_bitwise_equal(resumed.state, uninterrupted[1].state)
  _assert_bitwise_equal(resumed.best_params, uninterrupted[1].best_params)
  with open(tmp_path / 'state.ckpt', 'rb') as f:  # Read, never rewritten.
    assert flax.serialization.msgpack_restore(f.read())['state']['step'] == 4


def test_a_corrupt_checkpoint_is_reported_and_left_as_it_is(tmp_path):
  _run(tmp_path, 2)
  files = [
    os.path.join(d, name)
    for d, _, names in os.walk(tmp_path / 'state' / '2')
    for name in names
    if name != '_CHECKPOINT_METADATA'
  ]
  for path in files:
    with open(path, 'wb') as f:
      f.write(b'\x00garbage')
  with pytest.raises(ValueError, match=f'{tmp_path}/state/2 is not a checkpoint'):
    _run(tmp_path, 4)
  assert os.listdir(tmp_path / 'state') == ['2']
  for path in files:
    with open(path, 'rb') as f:
      assert f.read() == b'\x00garbage'


def test_a_different_config_is_refused(tmp_path):
  _run(tmp_path, 2)
  _, initial, _ = _problem()
  checkpoints = _checkpoints(str(tmp_path))._replace(config={'lr': 0.02})
  with pytest.raises(ValueError, match='different training config'):
    loop.resume(checkpoints, initial)


def test_a_different_config_is_refused_naming_the_fields():
  with pytest.raises(ValueError, match=r'lr=0.01 \(now 0.02\), seed=None \(now 3\)\.'):
    loop.check_config({'lr': 0.01, 'steps': 1}, {'lr': 0.02, 'steps': 1, 'seed': 3}, 'dir')
  with pytest.raises(ValueError, match='resumes to that count only'):
    loop.check_config({'outer_schedule_iterations': 200}, {'outer_schedule_iterations': 400}, 'd')
  loop.check_config({'lr': 0.01, 'shape': [1, 2]}, {'lr': 0.01, 'shape': (1, 2)}, 'dir')


def test_the_finite_flag_covers_parameters_optimizer_state_and_loss():
  step, state, _ = _problem()
  assert bool(step(state, 0)[1][loop.FINITE])
  # Finite parameters, non-finite Adam moments: as a real diverged run left them.
  adam, *rest = state.opt_state
  nan_mu = adam._replace(mu=jax.tree.map(lambda m: m.at[..., 0].set(jnp.nan), adam.mu))
  assert not bool(step(state._replace(opt_state=(nan_mu, *rest)), 0)[1][loop.FINITE])
  nan_params = jax.tree.map(lambda p: p * jnp.inf, state.params)
  assert not bool(step(state._replace(params=nan_params), 0)[1][loop.FINITE])


@pytest.mark.parametrize('log_every', [1, 100])
def test_a_diverging_run_stops_before_writing_anything_non_finite(tmp_path, log_every):
  """Divergence at iteration 5, checkpoints every 2: the run stops at 5 (a log
  step) or 6 (the next checkpoint), states 2 and 4 on disk and finite."""
  step = _problem()[0]

  def diverging(state, it):
    if it == 4:
      state = state._replace(params=jax.tree.map(lambda p: p * jnp.nan, state.params))
    return step(state, it)

  _, initial, validate = _problem()
  checkpoints = _checkpoints(str(tmp_path))
  stop = 5 if log_every == 1 else 6
  with pytest.raises(FloatingPointError, match=f'iteration {stop};.*state/4 \\(iteration 4\\)'):
    loop.run(
      diverging,
      loop.resume(checkpoints, initial),
      checkpoints,
      loop.Cadence(10, log_every, checkpoint_every=2, eval_every=2),
      validate=validate,
      log_dir=str(tmp_path),
    )
  assert os.listdir(tmp_path / 'state') == ['4']
  resumed = loop.resume(checkpoints, initial)
  assert int(resumed.state.step) == 4 and resumed.progress['best_step'] in (2, 4)
  assert loop.all_finite((resumed.state, resumed.best_params))
  assert all(row['step'] <= 4 for row in logs.read_log(str(tmp_path / 'log.jsonl')))


def test_a_non_finite_checkpoint_is_refused(tmp_path):
  _, initial, _ = _problem()
  nan_state = initial._replace(params=jax.tree.map(lambda p: p * jnp.nan, initial.params))
  with checkpoint.checkpoint_manager(str(tmp_path / 'state')) as manager:
    checkpoint.save_checkpoint(manager, 3, nan_state, {'config': {'lr': 0.01}})
  with pytest.raises(ValueError, match='state holds non-finite values'):
    loop.resume(_checkpoints(str(tmp_path)), initial)


def test_resume_keeps_the_smoothed_loss(uninterrupted, tmp_path):
  once = _run(tmp_path, 8)
  assert once.smoothed is not None
  assert _run(tmp_path, 8).smoothed == once.smoothed  # Resumed at the end: nothing run.


def test_a_smaller_num_iterations_is_refused(tmp_path):
  _run(tmp_path, 4)
  with pytest.raises(ValueError, match='at iteration 4, past num_iterations=2'):
    _run(tmp_path, 2)
