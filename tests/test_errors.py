"""Bad input gets a clear error naming the argument, before any compute."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxmaml
from jaxmaml.data import sinusoid
from tests.utils import counting


@pytest.fixture
def counted(regression):
  """A loss function that records every call (trace), and its problem."""
  loss_fn, params, tasks = regression
  return (*counting(loss_fn), params, tasks)


@pytest.mark.parametrize(
  'num_steps, error',
  [(0, ValueError), (-1, ValueError), (1.5, TypeError), (True, TypeError), ('3', TypeError)],
)
def test_num_steps(num_steps, error):
  with pytest.raises(error, match='num_steps'):
    jaxmaml.maml(lambda p, b: 0.0, inner_lr=0.1, num_steps=num_steps)


@pytest.mark.parametrize(
  'inner_lr, error, match',
  [
    (float('nan'), ValueError, 'finite'),
    (float('inf'), ValueError, 'finite'),
    (np.array([0.1, np.nan]), ValueError, 'finite'),
    (np.array([0.1, 0.1, 0.1]), ValueError, r'\[num_steps\] = \[2\]'),
    (np.ones((2, 2)), ValueError, 'shape'),
    (lambda step: jnp.nan * step, ValueError, 'finite'),
    (None, TypeError, 'required'),
    ('fast', TypeError, 'numeric'),
  ],
)
def test_inner_lr(inner_lr, error, match):
  with pytest.raises(error, match=match) as info:
    jaxmaml.inner_sgd(inner_lr, num_steps=2)
  assert 'inner_lr' in str(info.value)
  with pytest.raises(error, match=match):
    jaxmaml.maml(lambda p, b: 0.0, inner_lr=inner_lr, num_steps=2)


@pytest.mark.parametrize('inner_optimizer', [0.1, None, optax.sgd])
def test_inner_optimizer(inner_optimizer):
  with pytest.raises(TypeError, match='inner_optimizer must be an optax.GradientTransformation'):
    jaxmaml.make_adapt(lambda p, b: 0.0, inner_optimizer, num_steps=2)


def test_per_parameter_inner_lr_must_match_params(counted):
  loss_fn, calls, params, tasks = counted
  support = jax.tree_util.tree_map(lambda x: x[0], tasks.support)
  wrong_structure = {'Dense_0': jax.tree_util.tree_map(lambda p: 0.1, params['Dense_0'])}
  with pytest.raises(ValueError, match='inner_lr .*structure'):
    jaxmaml.make_adapt(loss_fn, jaxmaml.inner_sgd(wrong_structure, 1), num_steps=1)(params, support)
  wrong_shape = jax.tree_util.tree_map(lambda p: jnp.full(p.shape + (2,), 0.1), params)
  with pytest.raises(ValueError, match=r"inner_lr\['Dense_0'\]\['bias'\] has shape"):
    jaxmaml.make_adapt(loss_fn, jaxmaml.inner_sgd(wrong_shape, 1), num_steps=1)(params, support)
  assert not calls


@pytest.mark.parametrize('unroll', [-1, 0, 'yes', 1.5])
def test_unroll(unroll):
  with pytest.raises(ValueError, match='unroll'):
    jaxmaml.make_adapt(lambda p, b: 0.0, optax.sgd(0.1), num_steps=2, unroll=unroll)


def test_unknown_options():
  with pytest.raises(TypeError, match='firstorder'):
    jaxmaml.maml(lambda p, b: 0.0, inner_lr=0.1, num_steps=1, firstorder=True)
  learner = jaxmaml.maml(lambda p, b: 0.0, inner_lr=0.1, num_steps=1)
  with pytest.raises(ValueError, match="task_map must be one of .*'pmap'"):
    jaxmaml.make_meta_step(learner, task_map='pmap')
  with pytest.raises(ValueError, match='batch_size'):
    jaxmaml.make_meta_step(learner, task_map='vmap', batch_size=4)
  with pytest.raises(ValueError, match='batch_size'):
    jaxmaml.make_meta_step(learner, task_map='map', batch_size=0)


def _bad_tasks(tasks):
  (xs, ys), (xq, yq) = tasks.support, tasks.query
  return {
    'not a Task': ((xs, ys), (xq, yq)),
    'structure': jaxmaml.Task(support=(xs, ys), query=(xq, yq, yq)),
    'no example axis': jaxmaml.Task(support=(xs[:, 0, 0], ys[:, 0, 0]), query=(xq, yq)),
    'num_tasks': jaxmaml.Task(support=(xs, ys[:2]), query=(xq, yq)),
    'num examples': jaxmaml.Task(support=(xs, ys[:, :3]), query=(xq, yq)),
    'feature shape': jaxmaml.Task(support=(xs, ys), query=(xq[..., None], yq)),
  }


MESSAGES = {
  'not a Task': 'tasks must be a jaxmaml.Task',
  'structure': 'tasks.support and tasks.query must have the same structure',
  'no example axis': r'tasks.support\[0\] must have shape \[num_tasks, num_examples',
  'num_tasks': r'tasks.support\[1\] has 2 tasks on axis 0',
  'num examples': r'tasks.support\[1\] has 3 examples on axis 1',
  'feature shape': r'tasks.support\[0\] has example shape \(1,\) but tasks.query\[0\] has \(1, 1\)',
}


@pytest.mark.parametrize('case', list(MESSAGES))
def test_malformed_tasks_in_meta_step_and_evaluate(counted, case):
  loss_fn, calls, params, tasks = counted
  optimizer = optax.sgd(0.1)
  learner = jaxmaml.maml(loss_fn, inner_lr=0.1, num_steps=1)
  step = jaxmaml.make_meta_step(learner, optimizer)
  state = jaxmaml.init_train_state(params, optimizer)
  bad = _bad_tasks(tasks)[case]
  error = TypeError if case == 'not a Task' else ValueError
  with pytest.raises(error, match=MESSAGES[case]):
    step(state, bad)
  with pytest.raises(error, match=MESSAGES[case]):
    jaxmaml.evaluate(learner.task_loss, params, bad)
  assert not calls  # Nothing was traced, let alone run.


@pytest.mark.parametrize(
  'kwargs, match',
  [
    ({'num_tasks': 0}, 'num_tasks'),
    ({'num_support': 0}, 'num_support'),
    ({'num_query': -2}, 'num_query'),
    ({'num_tasks': 2.5}, 'num_tasks'),
  ],
)
def test_sinusoid_sampler_arguments(kwargs, match):
  args = {'num_tasks': 2, 'num_support': 5, 'num_query': 5, **kwargs}
  with pytest.raises(ValueError, match=match):
    sinusoid.sample_tasks(jax.random.key(0), **args)


@pytest.mark.parametrize('remat', [-1, 'yes', 1.5])
def test_remat(remat):
  with pytest.raises(ValueError, match='remat'):
    jaxmaml.make_adapt(lambda p, b: 0.0, optax.sgd(0.1), num_steps=2, remat=remat)
