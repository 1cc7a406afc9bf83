"""A sweep of bad inputs: nothing lost, nothing silent (issue 18).

Every case is a row of a table: ``Case(id, build, error, match)``. ``build()``
makes the call; the test expects ``error`` with a message matching ``match``
(a regex), or with ``error=None`` that ``build()`` returns (it asserts what
"handled" means itself). Where the library cannot read a wrong value (labels
traced under ``jit``), the case ends with ``checks.finite_leaves``, the
finite check a training loop runs on the loss or the parameters: it passes
when the wrong value came out NaN rather than finite.

Sections, one table and one test each:

* ``LIBRARY_CASES``: the ``jaxmaml`` package (labels, empty meta-batches,
  negative rates, episodes, checkpoints, meshes, errors that used to surface
  from JAX, Flax or Optax).
* ``CONFIG_CASES``: every rate and size of the experiments' configs and
  command lines (the table of ``tests/test_config_validation.py``).
* ``FILE_CASES``: damaged cache entries, unwritable cache directories,
  damaged logs (``tests/sweep_files.py``).
* ``RUN_CASES``: divergence and resume in the training loop, on the sinusoid
  problem of ``tests/test_loop.py`` (the experiments' own cases, slower, are
  in ``test_sinusoid_experiment.py`` and ``test_fewshot_experiment.py``).

Append a section as another ``*_CASES`` list and a test over it (see the
end of the module). Every case is fast: tiny MLPs, a few examples.
"""

from collections.abc import Callable
import functools
import re
import tempfile
from typing import NamedTuple

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import cli
from experiments import loop
import jaxmaml
from jaxmaml import checkpoint
from jaxmaml import checks
from jaxmaml.data import episodes
from tests import sweep_files
from tests import test_config_validation as config_validation
from tests import test_loop


class Case(NamedTuple):
  """One row: ``build()`` raises ``error`` matching ``match`` (or returns, for None)."""

  id: str
  build: Callable[[], object]
  error: type[BaseException] | None
  match: str = ''


def run_case(case: Case) -> None:
  """Runs one row of a table."""
  if case.error is None:
    case.build()
    return
  with pytest.raises(case.error, match=case.match):
    case.build()


# A tiny 5-way classification problem: MLP 4 -> 8 -> 5, 2 tasks of 5 examples.
WAYS, FEATURES, NUM_TASKS, EXAMPLES = 5, 4, 2, 5


@functools.cache
def _classifier(ways=WAYS):
  """``(loss_fn, params)``: cross-entropy of an MLP with ``ways`` outputs."""
  model = jaxmaml.MLP(features=(8, ways))
  params = model.init(jax.random.key(0), jnp.zeros([1, FEATURES]))['params']
  return jaxmaml.cross_entropy_loss(jaxmaml.apply_fn(model)), params


def _tasks(support_labels=None, query_labels=None, num_tasks=NUM_TASKS, examples=EXAMPLES):
  """A meta-batch of ``num_tasks`` tasks with labels ``0..4`` unless given ``[tasks, n]``."""
  x = np.random.default_rng(0).normal(size=(num_tasks, examples, FEATURES)).astype(np.float32)
  labels = np.tile(np.arange(examples) % WAYS, (num_tasks, 1)).astype(np.int32)
  s = labels if support_labels is None else np.asarray(support_labels)
  q = labels if query_labels is None else np.asarray(query_labels)
  return jaxmaml.Task(support=(x, s), query=(x, q))


def _with_label(value, task=0, example=0):
  """Labels ``0..4`` of the meta-batch with one entry replaced by ``value``."""
  labels = np.tile(np.arange(EXAMPLES) % WAYS, (NUM_TASKS, 1)).astype(np.int32)
  labels[task, example] = value
  return labels


def _one(tasks, i=0):
  return jax.tree_util.tree_map(lambda x: x[i], tasks)


def _maml(ways=WAYS, **kwargs):
  """MAML, one inner step, on ``_classifier(ways)``'s loss."""
  loss_fn, _ = _classifier(ways)
  return jaxmaml.maml(loss_fn, inner_lr=0.1, num_steps=1, has_aux=True, **kwargs)


def _meta_step_params(tasks):
  """The parameters after one jitted MAML meta-step on ``tasks``."""
  _, params = _classifier()
  optimizer = optax.sgd(0.1)
  step = jaxmaml.make_meta_step(_maml(), optimizer)
  state, _ = step(jaxmaml.init_train_state(params, optimizer), tasks)
  return state.params


def _jit_meta_gradient(learner, params, tasks):
  """``(grads, metrics)`` of ``meta_gradient`` under ``jit`` (the labels are traced)."""
  return jax.jit(lambda p, t: jaxmaml.meta_gradient(learner, p, t))(params, tasks)


def _label_7_meta_step():
  checks.finite_leaves(_meta_step_params(_tasks(query_labels=_with_label(7))), 'params')


def _label_minus_1_loss():
  _, metrics = _jit_meta_gradient(_maml(), _classifier()[1], _tasks(_with_label(-1)))
  checks.finite_leaves(metrics['loss'], 'loss')


def _narrow_head_gradient():
  """A 3-way head on 5-way labels, jitted: the gradient is NaN, not finite and wrong."""
  grads, _ = _jit_meta_gradient(_maml(ways=3), _classifier(3)[1], _tasks())
  checks.finite_leaves(grads, 'grads')


def _narrow_head_eager():
  _maml(ways=3).task_grad(_classifier(3)[1], _one(_tasks()))


def _protonets():
  """``(learner, params)``: 5-way ProtoNets on a 3-d MLP embedding."""
  model = jaxmaml.MLP(features=(8, 3))
  params = model.init(jax.random.key(0), jnp.zeros([1, FEATURES]))['params']
  return jaxmaml.protonets(jaxmaml.apply_fn(model), num_ways=WAYS), params


def _protonets_query_7_gradient():
  learner, params = _protonets()
  grads, _ = _jit_meta_gradient(learner, params, _tasks(query_labels=_with_label(7)))
  checks.finite_leaves(grads, 'grads')


def _protonets_support_7_loss():
  learner, params = _protonets()
  _, metrics = _jit_meta_gradient(learner, params, _tasks(support_labels=_with_label(7)))
  checks.finite_leaves(metrics['loss'], 'loss')


def _protonets_query_7_eager():
  learner, params = _protonets()
  learner.task_loss(params, _one(_tasks(query_labels=_with_label(7))))


def _protonets_empty_support():
  learner, params = _protonets()
  task = _one(_tasks())
  learner.adapt(params, jax.tree_util.tree_map(lambda x: x[:0], task.support))


def _empty(tasks, part=None):
  """``tasks`` with no tasks (``part=None``) or no examples in ``part``."""
  if part is None:
    return jax.tree_util.tree_map(lambda x: x[:0], tasks)
  emptied = jax.tree_util.tree_map(lambda x: x[:, :0], getattr(tasks, part))
  return tasks._replace(**{part: emptied})


def _empty_meta_step():
  _meta_step_params(_empty(_tasks()))


def _empty_meta_gradient():
  jaxmaml.meta_gradient(_maml(), _classifier()[1], _empty(_tasks()))


def _empty_evaluate():
  jaxmaml.evaluate(_maml().task_loss, _classifier()[1], _empty(_tasks()))


def _loss():
  return _classifier()[0]


NEGATIVE_RATES = {
  'maml': lambda: jaxmaml.maml(_loss(), inner_lr=-0.1, num_steps=1, has_aux=True),
  'anil': lambda: jaxmaml.anil(_loss(), inner_lr=-0.1, num_steps=1, has_aux=True),
  'meta_sgd': lambda: jaxmaml.meta_sgd(_loss(), init_lr=-0.1, has_aux=True),
  'reptile': lambda: jaxmaml.reptile(_loss(), inner_lr=-0.1, num_steps=1, has_aux=True),
  'imaml': lambda: jaxmaml.imaml(_loss(), inner_lr=-0.1, num_steps=1, reg=1.0, has_aux=True),
  'maml_plus_plus': lambda: jaxmaml.maml_plus_plus(
    _loss(), inner_lr=-0.1, num_steps=1, has_aux=True
  ),
  'inner_sgd': lambda: jaxmaml.inner_sgd(-0.1, 1),
  'inner_sgd schedule': lambda: jaxmaml.inner_sgd(np.array([0.1, -0.1]), 2),
  'inner_sgd callable': lambda: jaxmaml.inner_sgd(lambda step: 0.1 - 0.2 * step, 2),
  'inner_sgd per-parameter': lambda: jaxmaml.inner_sgd({'w': -1.0, 'b': 0.1}, 1),
  'adaptation_curve': lambda: jaxmaml.adaptation_curve(
    _loss(), _classifier()[1], _tasks(), inner_lr=-0.1, num_steps=1, has_aux=True
  ),
}


def _gradient_ascent_opt_in():
  """With ``allow_negative_lr=True`` a negative rate is accepted, and ascends the loss."""
  loss_fn, params = _classifier()
  support = _one(_tasks()).support
  learner = jaxmaml.maml(loss_fn, inner_lr=-0.5, num_steps=1, has_aux=True, allow_negative_lr=True)
  adapted, before = learner.adapt(params, support)
  after, _ = loss_fn(adapted, support)
  assert float(after) > float(before[0])
  jaxmaml.meta_sgd(loss_fn, init_lr=-0.1, allow_negative_lr=True)
  jaxmaml.reptile(loss_fn, inner_lr=-0.1, num_steps=1, allow_negative_lr=True)
  jaxmaml.inner_sgd(-0.1, 1, allow_negative_lr=True)


# Images already in [0, 1] as float32: constant 0.5.
FLOAT_IMAGES = np.full((6, 4, 4, 4), 0.5, np.float32)
EPISODE = dict(num_ways=2, num_shots=1, num_queries=1)


def _float_images_device():
  tasks = episodes.sample_episodes(jax.random.key(0), jnp.asarray(FLOAT_IMAGES), 1, **EPISODE)
  np.testing.assert_array_equal(tasks.support[0], 0.5)


def _float_images_host():
  tasks = next(episodes.host_episodes(0, FLOAT_IMAGES, 1, **EPISODE))
  np.testing.assert_array_equal(tasks.support[0], 0.5)
  assert tasks.support[0].dtype == np.float32


def _restore(saved, target):
  """Saves ``saved`` with Orbax and restores it into ``target``."""
  pytest.importorskip('orbax.checkpoint')
  from jaxmaml import checkpoint

  with tempfile.TemporaryDirectory() as directory:
    with checkpoint.checkpoint_manager(directory) as manager:
      checkpoint.save_checkpoint(manager, 1, saved)
      return checkpoint.restore_checkpoint(manager, target)


def _restore_msgpack(saved, target):
  """Writes ``saved`` as a pre-Orbax msgpack checkpoint and restores it into ``target``."""
  from jaxmaml import checkpoint

  payload = {'state': flax.serialization.to_state_dict(saved), 'metadata': '{}'}
  with tempfile.TemporaryDirectory() as directory:
    path = f'{directory}/state.msgpack'
    with open(path, 'wb') as f:
      f.write(flax.serialization.msgpack_serialize(payload))
    return checkpoint.restore_msgpack(path, target)


INT_STATE = {'params': {'w': np.arange(3, dtype=np.int32)}}
FLOAT_TARGET = {'params': {'w': np.zeros(3, np.float32)}}


def _scalar_loss_with_aux():
  loss = lambda p, batch: jnp.sum(p['Dense_0']['bias'])
  learner = jaxmaml.maml(loss, inner_lr=0.1, num_steps=1, has_aux=True)
  learner.task_grad(_classifier()[1], _one(_tasks()))


def _pair_loss_without_aux():
  learner = jaxmaml.maml(_loss(), inner_lr=0.1, num_steps=1)
  learner.task_grad(_classifier()[1], _one(_tasks()))


def _wrong_input_shape():
  tasks = _tasks()
  narrow = lambda batch: (batch[0][..., :3], batch[1])
  jaxmaml.meta_gradient(
    _maml(),
    _classifier()[1],
    tasks._replace(support=narrow(tasks.support), query=narrow(tasks.query)),
  )


LIBRARY_CASES = [
  # Labels outside [0, num_classes): an error where concrete, NaN (never a
  # finite, wrong update) where traced.
  Case(
    'labels: 7 in a 5-way task, jitted meta-step -> NaN update',
    _label_7_meta_step,
    ValueError,
    'params must be finite',
  ),
  Case(
    'labels: -1 under jit -> NaN loss, not class 4',
    _label_minus_1_loss,
    ValueError,
    'loss must be finite',
  ),
  Case(
    'labels: 3-way head on 5-way labels, jit -> NaN gradient',
    _narrow_head_gradient,
    ValueError,
    'grads must be finite',
  ),
  Case(
    'labels: 3-way head on 5-way labels, eager -> error',
    _narrow_head_eager,
    ValueError,
    r'labels must be in \[0, 3\) \(3 classes\), got \[3, 4\]',
  ),
  Case(
    'labels: 7, eager task_grad -> error',
    lambda: _maml().task_grad(_classifier()[1], _one(_tasks(_with_label(7)))),
    ValueError,
    r'labels must be in \[0, 5\).*\[7\]',
  ),
  Case(
    'labels: -1, eager loss -> error',
    lambda: _loss()(_classifier()[1], _one(_tasks(_with_label(-1))).support),
    ValueError,
    r'labels must be in \[0, 5\).*\[-1\]',
  ),
  Case(
    'labels: check_tasks(num_classes=5) on host data',
    lambda: jaxmaml.check_tasks(_tasks(query_labels=_with_label(7)), num_classes=5),
    ValueError,
    r'tasks.query labels must be in \[0, 5\)',
  ),
  Case(
    'labels: float labels',
    lambda: _maml().task_grad(_classifier()[1], _one(_tasks(_with_label(0).astype(float)))),
    TypeError,
    r'labels must be integers in \[0, 5\), got dtype float64',
  ),
  Case(
    'labels: float labels, check_tasks(num_classes=5)',
    lambda: jaxmaml.check_tasks(_tasks(_with_label(0).astype(np.float32)), num_classes=5),
    TypeError,
    'tasks.support labels must be integers',
  ),
  Case(
    'labels: a label per example',
    lambda: _loss()(_classifier()[1], (_one(_tasks()).support[0], np.zeros(4, np.int32))),
    ValueError,
    r'labels must have shape \(5,\)',
  ),
  Case(
    'protonets: query label 7, jit -> NaN gradient',
    _protonets_query_7_gradient,
    ValueError,
    'grads must be finite',
  ),
  Case(
    'protonets: support label 7, jit -> NaN loss',
    _protonets_support_7_loss,
    ValueError,
    'loss must be finite',
  ),
  Case(
    'protonets: query label 7, eager -> error',
    _protonets_query_7_eager,
    ValueError,
    r'query labels must be in \[0, 5\)',
  ),
  # Empty meta-batches and support sets.
  Case('empty: 0 tasks, make_meta_step', _empty_meta_step, ValueError, 'tasks has 0 tasks'),
  Case('empty: 0 tasks, meta_gradient', _empty_meta_gradient, ValueError, 'tasks has 0 tasks'),
  Case('empty: 0 tasks, evaluate', _empty_evaluate, ValueError, 'tasks has 0 tasks'),
  Case(
    'empty: 0 support examples',
    lambda: _meta_step_params(_empty(_tasks(), 'support')),
    ValueError,
    'tasks.support has 0 examples',
  ),
  Case(
    'empty: 0 query examples',
    lambda: _meta_step_params(_empty(_tasks(), 'query')),
    ValueError,
    'tasks.query has 0 examples',
  ),
  Case(
    'empty: protonets adapt on no support',
    _protonets_empty_support,
    ValueError,
    'support has no examples',
  ),
  # Negative rates: refused unless allow_negative_lr=True.
  *[
    Case(
      f'negative rate: {name}',
      build,
      ValueError,
      r'(inner_lr|init_lr) must be >= 0 .*allow_negative_lr=True',
    )
    for name, build in NEGATIVE_RATES.items()
  ],
  Case('negative rate: allowed with allow_negative_lr=True', _gradient_ascent_opt_in, None),
  # Episodes.
  Case(
    'episodes: float images in [0, 1], device sampler, not divided again',
    _float_images_device,
    None,
  ),
  Case(
    'episodes: float images in [0, 1], host sampler, not divided again', _float_images_host, None
  ),
  Case(
    'episodes: int32 images refused',
    lambda: episodes.host_episodes(0, FLOAT_IMAGES.astype(np.int32), 1, **EPISODE),
    TypeError,
    'images must be uint8',
  ),
  Case(
    'episodes: NumPy images on the device sampler',
    lambda: episodes.sample_episodes(jax.random.key(0), FLOAT_IMAGES, 1, **EPISODE),
    TypeError,
    'images must be on the device',
  ),
  Case(
    'episodes: host_episodes checks when called, not at next()',
    lambda: episodes.host_episodes(0, FLOAT_IMAGES, 1, num_ways=7, num_shots=1, num_queries=1),
    ValueError,
    'num_ways=7 needs 7 classes',
  ),
  Case(
    'episodes: host_episodes, rotate needs square images',
    lambda: episodes.host_episodes(0, FLOAT_IMAGES[:, :, :3], 1, **EPISODE),
    ValueError,
    'rotate=True needs square images',
  ),
  # Checkpoints: dtypes and shapes checked on restore, naming the leaf.
  Case(
    'checkpoint: Orbax int32 into a float32 target',
    lambda: _restore(INT_STATE, FLOAT_TARGET),
    ValueError,
    r"leaf \['params'\]\['w'\] holds int32 where the target has float32",
  ),
  Case(
    'checkpoint: msgpack int32 into a float32 target',
    lambda: _restore_msgpack(INT_STATE, FLOAT_TARGET),
    ValueError,
    r"leaf \['params'\]\['w'\] holds int32 where the target has float32",
  ),
  Case(
    'checkpoint: Orbax shape names the leaf',
    lambda: _restore(FLOAT_TARGET, {'params': {'w': np.zeros(4, np.float32)}}),
    ValueError,
    r"leaf \['params'\]\['w'\] holds an array of shape \(3,\)",
  ),
  Case(
    'checkpoint: msgpack shape names the leaf',
    lambda: _restore_msgpack(FLOAT_TARGET, {'params': {'w': np.zeros(4, np.float32)}}),
    ValueError,
    r"leaf \['params'\]\['w'\] holds an array of shape \(3,\)",
  ),
  # task_mesh arguments.
  Case(
    'task_mesh: a list of strings is not devices',
    lambda: jaxmaml.task_mesh(['2']),
    TypeError,
    'devices must be jax.Device objects',
  ),
  Case(
    'task_mesh: a repeated device',
    lambda: jaxmaml.task_mesh(jax.devices()[:1] * 2),
    ValueError,
    'devices must be distinct',
  ),
  Case('task_mesh: a NumPy count', lambda: jaxmaml.task_mesh(np.int64(1)), None),
  # Errors that surfaced from JAX, Flax or Optax internals.
  Case(
    'internal: has_aux=True, loss returns a scalar (was IndexError)',
    _scalar_loss_with_aux,
    TypeError,
    r'with has_aux=True, loss_fn must return a \(loss, metrics\) pair',
  ),
  Case(
    'internal: has_aux=False, loss returns (loss, aux)',
    _pair_loss_without_aux,
    TypeError,
    'with has_aux=False, loss_fn must return a scalar loss',
  ),
  Case(
    'internal: inputs of the wrong shape (was ScopeParamShapeError)',
    _wrong_input_shape,
    ValueError,
    r'inputs of shape \(5, 3\) do not fit the MLP params',
  ),
  Case(
    'internal: Meta-SGD without init() (was KeyError)',
    lambda: jaxmaml.meta_sgd(_loss(), init_lr=0.1, has_aux=True).task_grad(
      _classifier()[1], _one(_tasks())
    ),
    TypeError,
    r"meta_sgd's meta_params must be \{'params': ..., 'inner_lr': ...\}",
  ),
  Case(
    'internal: MAML++ without init()',
    lambda: jaxmaml.maml_plus_plus(_loss(), inner_lr=0.1, num_steps=1, has_aux=True).task_grad(
      _classifier()[1], _one(_tasks())
    ),
    TypeError,
    r"maml_plus_plus's meta_params must be",
  ),
  Case(
    'internal: make_meta_step with optimizer a string (was AttributeError)',
    lambda: jaxmaml.make_meta_step(_maml(), 'adam'),
    TypeError,
    'optimizer must be an optax.GradientTransformation',
  ),
  Case(
    'internal: init_train_state with optimizer a string',
    lambda: jaxmaml.init_train_state(_classifier()[1], 'adam'),
    TypeError,
    'optimizer must be an optax.GradientTransformation',
  ),
  Case(
    'internal: make_meta_step of a string',
    lambda: jaxmaml.make_meta_step('maml'),
    TypeError,
    'learner must be a jaxmaml.MetaLearner',
  ),
  # Already refused before issue 18 (kept so that they stay so).
  Case(
    'before: num_steps=0',
    lambda: jaxmaml.maml(_loss(), inner_lr=0.1, num_steps=0),
    ValueError,
    'num_steps must be a positive int',
  ),
  Case(
    'before: NaN inner_lr',
    lambda: jaxmaml.maml(_loss(), inner_lr=float('nan'), num_steps=1),
    ValueError,
    'inner_lr must be finite',
  ),
  Case(
    'before: NaN init_lr',
    lambda: jaxmaml.meta_sgd(_loss(), init_lr=float('nan')),
    ValueError,
    'init_lr must be a finite scalar',
  ),
  Case(
    'before: task_mesh of a string',
    lambda: jaxmaml.task_mesh('2'),
    TypeError,
    'devices must be an int, a sequence of devices or None',
  ),
  Case(
    'before: task_mesh(0)',
    lambda: jaxmaml.task_mesh(0),
    ValueError,
    'devices must be between 1 and',
  ),
  Case(
    'before: support and query with different task counts',
    lambda: jaxmaml.check_tasks(_tasks()._replace(query=_tasks(num_tasks=3).query)),
    ValueError,
    r'tasks.query\[0\] has 3 tasks on axis 0',
  ),
  Case(
    'before: protonets float labels',
    lambda: _protonets()[0].task_loss(
      _protonets()[1], _one(_tasks(_with_label(0).astype(np.float32)))
    ),
    TypeError,
    'support labels must be integers',
  ),
  Case(
    'before: more ways than classes',
    lambda: episodes.sample_episodes(
      jax.random.key(0), jnp.asarray(FLOAT_IMAGES), 1, num_ways=7, num_shots=1, num_queries=1
    ),
    ValueError,
    'num_ways=7 needs 7 classes',
  ),
]


@pytest.mark.parametrize('case', LIBRARY_CASES, ids=lambda case: case.id)
def test_library(case):
  run_case(case)


def test_in_range_labels_are_unchanged():
  """The NaN guard leaves valid labels' loss and gradient as optax computes them."""
  loss_fn, params = _classifier()
  inputs, labels = _one(_tasks()).support
  apply = jaxmaml.apply_fn(jaxmaml.MLP(features=(8, WAYS)))

  def plain(p):
    return optax.softmax_cross_entropy_with_integer_labels(apply(p, inputs), labels).mean()

  got = jax.jit(jax.value_and_grad(lambda p, y: loss_fn(p, (inputs, y))[0]))(params, labels)
  want = jax.jit(jax.value_and_grad(plain))(params)
  for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
    np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------
# The experiments' configs and command lines.

CONFIG_CASES = config_validation.TABLE


@pytest.mark.parametrize('target, overrides, error, match', CONFIG_CASES)
def test_config(target, overrides, error, match, capsys):
  if isinstance(target, str):  # A command line: argparse's usage error, the message on stderr.
    with pytest.raises(SystemExit) as raised:
      config_validation.PARSERS[target](overrides)
    assert raised.value.code == 2
    assert re.search(match, capsys.readouterr().err)
  else:
    with pytest.raises(error, match=match):
      cli.override(target(), **overrides)


# ----------------------------------------------------------------------------
# Files: the cache and the logs.

FILE_CASES = sweep_files.CASES


@pytest.mark.parametrize('case', FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_files(case, tmp_path):
  sweep_files.check(case, tmp_path)


# ----------------------------------------------------------------------------
# Divergence and resume in the training loop: ``build(workdir)``.


def _nan(tree):
  """``tree`` with NaN in every floating-point leaf (counts stay integers)."""
  return jax.tree.map(lambda x: x * jnp.nan if jnp.issubdtype(x.dtype, jnp.inexact) else x, tree)


def _diverging_between_log_steps(workdir):
  """NaN from iteration 5, logged every 100, checkpointed every 2: stops at 6,
  nothing written for it, the state of 4 on disk and finite."""
  step, initial, validate = test_loop._problem()
  diverging = lambda state, it: step(
    state._replace(params=_nan(state.params)) if it == 4 else state, it
  )
  checkpoints = test_loop._checkpoints(str(workdir))
  with pytest.raises(FloatingPointError, match=r'iteration 6;.*state/4 \(iteration 4\), is finite'):
    loop.run(
      diverging,
      loop.resume(checkpoints, initial),
      checkpoints,
      loop.Cadence(10, 100, checkpoint_every=2, eval_every=2),
      validate=validate,
    )
  resumed = loop.resume(checkpoints, initial)
  assert int(resumed.state.step) == 4 and loop.all_finite((resumed.state, resumed.best_params))


def _non_finite_checkpoint(workdir):
  _, initial, _ = test_loop._problem()
  with checkpoint.checkpoint_manager(str(workdir / 'state')) as manager:
    checkpoint.save_checkpoint(
      manager, 2, initial._replace(opt_state=_nan(initial.opt_state)), {'config': {'lr': 0.01}}
    )
  loop.resume(test_loop._checkpoints(str(workdir)), initial)


def _scheduled_run_extended(workdir):
  _, initial, _ = test_loop._problem()
  with checkpoint.checkpoint_manager(str(workdir / 'state')) as manager:
    checkpoint.save_checkpoint(
      manager, 2, initial, {'config': {'lr': 0.01, 'outer_schedule_iterations': 4}}
    )
  checkpoints = test_loop._checkpoints(str(workdir))._replace(
    config={'lr': 0.01, 'outer_schedule_iterations': 8}
  )
  loop.resume(checkpoints, initial)


def _smaller_num_iterations(workdir):
  test_loop._run(workdir, 4)
  test_loop._run(workdir, 2)


def _smoothed_loss_after_resume(workdir):
  once = test_loop._run(workdir, 4)
  assert once.smoothed is not None and test_loop._run(workdir, 4).smoothed == once.smoothed


RUN_CASES = [
  Case(
    'diverged between log steps: stopped before the checkpoint', _diverging_between_log_steps, None
  ),
  Case('non-finite Adam state in a checkpoint', _non_finite_checkpoint, ValueError, 'non-finite'),
  Case(
    'scheduled run extended',
    _scheduled_run_extended,
    ValueError,
    r'outer_schedule_iterations=4 \(now 8\).*resumes to that count only',
  ),
  Case('smaller num_iterations', _smaller_num_iterations, ValueError, 'past num_iterations=2'),
  Case('smoothed loss after a resume', _smoothed_loss_after_resume, None),
]


@pytest.mark.parametrize('case', RUN_CASES, ids=lambda case: case.id)
def test_runs(case, tmp_path):
  run_case(case._replace(build=functools.partial(case.build, tmp_path)))


# More sections go below: a ``*_CASES`` table and ``test_<section>(case)`` over it.
