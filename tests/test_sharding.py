"""Data parallelism over tasks: a meta-step split over 1, 2, 4 and 8 devices
equals the single-device step up to float reassociation.

The tests need 8 devices (``@pytest.mark.devices``). On CPU,
``test_on_simulated_devices`` runs this file again in a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (the flag must be set
before JAX starts, and the rest of the suite runs on one device); on a machine
with 8 devices the tests run directly.
"""

import functools
import json
import math
import os
import re
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxmaml
from jaxmaml.data import episodes
from jaxmaml.data import sinusoid
from tests.utils import LEARNERS
from tests.utils import NUM_DEVICES
from tests.utils import counting
from tests.utils import learner_problem
from tests.utils import rel_l2
from tests.utils import run_on_simulated_devices
from tests.utils import sinusoid_problem
from tests.utils import two_host_problem

# Float reassociation of the mean over tasks (one sum per device, then a sum
# over devices): measured about 1e-7 relative L2 in float32.
RTOL = 1e-5


@pytest.mark.parametrize(
  'markers',
  [
    pytest.param('not slow', id='default', marks=pytest.mark.slow),  # ~48 s.
    pytest.param('slow', id='slow', marks=pytest.mark.slow),
  ],
)
def test_on_simulated_devices(markers):
  run_on_simulated_devices(__file__, markers)


def _train(step, state, num_steps, *data):
  metrics = []
  for i in range(num_steps):
    state, m = step(state, jax.random.fold_in(jax.random.key(7), i), *data)
    metrics.append(m)
  return state, metrics


@functools.cache
def _sampled_problem():
  loss_fn, params, _ = sinusoid_problem()
  counted, traces = counting(loss_fn)
  learner = jaxmaml.maml(counted, inner_lr=0.05, num_steps=2)
  sample = functools.partial(sinusoid.sample_tasks, num_tasks=16, num_support=5, num_query=5)
  return learner, optax.sgd(0.05), params, sample, traces


@functools.cache
def _one_device_reference():
  learner, optimizer, params, sample, _ = _sampled_problem()
  return _train(
    jaxmaml.make_meta_step(learner, optimizer, sampler=sample),
    jaxmaml.init_train_state(params, optimizer),
    3,
  )


@pytest.mark.devices(NUM_DEVICES)
@pytest.mark.parametrize('num_devices', [1, 2, 4, 8])
def test_sampled_meta_steps_match_one_device(num_devices):
  """Tasks drawn inside the step: same tasks, losses and parameters as on one
  device, one compilation, and the tasks really are split over the devices."""
  learner, optimizer, params, sample, traces = _sampled_problem()
  reference, ref_metrics = _one_device_reference()
  mesh = jaxmaml.task_mesh(num_devices)
  step = jaxmaml.make_meta_step(learner, optimizer, sampler=sample, mesh=mesh)
  state = jaxmaml.replicate(jaxmaml.init_train_state(params, optimizer), mesh)
  del traces[:]
  state, metrics = _train(step, state, 3)
  assert len(traces) > 0 and step._cache_size() == 1  # Compiled once for 3 steps.
  assert rel_l2(state.params, reference.params) < RTOL
  for m, ref in zip(metrics, ref_metrics):
    assert rel_l2(m['loss'], ref['loss']) < RTOL
  loss = metrics[-1]['loss']
  shards = loss.addressable_shards
  assert len({s.device for s in shards}) == num_devices
  assert all(s.data.shape == (16 // num_devices,) for s in shards)
  assert all(leaf.sharding.is_fully_replicated for leaf in jax.tree_util.tree_leaves(state))


@pytest.mark.devices(NUM_DEVICES)
@pytest.mark.parametrize(
  'name, task_map',
  [
    ('maml', 'vmap'),
    ('maml', 'map'),
    ('imaml', 'vmap'),
    *(
      pytest.param(name, 'vmap', marks=pytest.mark.slow)
      for name in sorted(LEARNERS)
      if name not in ('maml', 'imaml')
    ),
    pytest.param('maml', 'loop', marks=pytest.mark.slow),
  ],
)
def test_every_algorithm_meta_gradient_on_four_devices(name, task_map):
  fn, params, sample = learner_problem(name)
  learner = LEARNERS[name](fn)
  params = learner.init(params)
  tasks = sample(jax.random.key(3))
  kwargs = {'task_map': task_map, 'batch_size': 1 if task_map == 'map' else None}
  expected, expected_metrics = jax.jit(functools.partial(jaxmaml.meta_gradient, learner, **kwargs))(
    params, tasks
  )
  mesh = jaxmaml.task_mesh(4)
  grads, metrics = jax.jit(functools.partial(jaxmaml.meta_gradient, learner, mesh=mesh, **kwargs))(
    params, jaxmaml.shard_tasks(tasks, mesh)
  )
  # iMAML's conjugate gradient amplifies reassociation (measured 2e-5).
  rtol = 1e-4 if name == 'imaml' else RTOL
  assert rel_l2(grads, expected) < rtol
  assert rel_l2(metrics['loss'], expected_metrics['loss']) < rtol


@pytest.mark.slow  # 72 s on 2 shared CPU cores (load ~8).
@pytest.mark.devices(NUM_DEVICES)
def test_omniglot_conv_net_on_eight_devices():
  """The Omniglot Conv4 (matmul convolutions, batch-statistics BatchNorm),
  episodes drawn on the devices, tasks mapped two at a time."""
  model = jaxmaml.Conv4(5, features=8)
  params = model.init(jax.random.key(0), jnp.zeros([1, 28, 28, 1]))['params']
  learner = jaxmaml.maml(
    jaxmaml.cross_entropy_loss(jaxmaml.apply_fn(model)), inner_lr=0.4, num_steps=1, has_aux=True
  )
  images = jax.random.randint(jax.random.key(1), (30, 20, 28, 28), 0, 256).astype(jnp.uint8)
  sample = functools.partial(
    episodes.sample_episodes, num_tasks=8, num_ways=5, num_shots=1, num_queries=1, rotate=False
  )
  optimizer = optax.sgd(0.1)
  reference, _ = _train(
    jaxmaml.make_meta_step(learner, optimizer, sampler=sample, task_map='map', batch_size=2),
    jaxmaml.init_train_state(params, optimizer),
    1,
    images,
  )
  mesh = jaxmaml.task_mesh(8)
  step = jaxmaml.make_meta_step(
    learner, optimizer, sampler=sample, task_map='map', batch_size=2, mesh=mesh
  )
  state = jaxmaml.replicate(jaxmaml.init_train_state(params, optimizer), mesh)
  images = jaxmaml.replicate(images, mesh)
  key = jax.random.fold_in(jax.random.key(7), 0)
  compiled = step.lower(state, key, images).compile()
  # Each device gathers the images of its own task only (5 ways x (1 shot +
  # 1 query) = 10 images), never the whole meta-batch's 80.
  shapes = re.findall(r'u8\[([\d,]+),28,28\]', compiled.as_text())
  gathered = {math.prod(map(int, s.split(','))) for s in shapes if s != '30,20'}
  assert gathered == {10}, shapes
  state, _ = compiled(state, key, images)
  # BatchNorm on 5-image batches amplifies reassociation (see README).
  assert (
    rel_l2(
      jax.tree_util.tree_map(lambda a, b: a - b, state.params, params),
      jax.tree_util.tree_map(lambda a, b: a - b, reference.params, params),
    )
    < 1e-3
  )


@pytest.mark.devices(NUM_DEVICES)
def test_indivisible_meta_batch_is_an_error_before_compute():
  loss_fn, params, sample = sinusoid_problem()  # 8 tasks per meta-batch.
  learner = jaxmaml.maml(loss_fn, inner_lr=0.05, num_steps=1)
  mesh = jaxmaml.task_mesh(NUM_DEVICES)
  state = jaxmaml.init_train_state(params, optax.sgd(0.1))
  tasks = jax.tree_util.tree_map(lambda x: x[:6], sample(jax.random.key(0)))
  with pytest.raises(
    ValueError,
    match=r'num_tasks \(6 tasks\) must be divisible by the number '
    r'of devices \(8\)',
  ):
    jaxmaml.make_meta_step(learner, optax.sgd(0.1), mesh=mesh)(state, tasks)
  with pytest.raises(ValueError, match='must be divisible'):
    jaxmaml.shard_tasks(tasks, mesh)
  sample6 = functools.partial(sinusoid.sample_tasks, num_tasks=6, num_support=5, num_query=5)
  step = jaxmaml.make_meta_step(learner, optax.sgd(0.1), sampler=sample6, mesh=mesh)
  with pytest.raises(ValueError, match=r'the sampled meta-batch \(6 tasks\) must be divisible'):
    step(state, jax.random.key(0))


def test_task_mesh_errors():
  with pytest.raises(ValueError, match='devices must be between 1 and the'):
    jaxmaml.task_mesh(0)
  with pytest.raises(ValueError, match='xla_force_host_platform_device_count'):
    jaxmaml.task_mesh(jax.device_count() + 1)
  assert jaxmaml.task_mesh().shape == {'tasks': jax.device_count()}
  with pytest.raises(ValueError, match="mesh must have an axis named 'tasks'"):
    jaxmaml.shard_tasks(np.zeros([4, 2]), jax.make_mesh((1,), ('batch',)))


_HOST = """
import functools, json, os, sys
os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=2'
import jax
jax.config.update('jax_cpu_collectives_implementation', 'gloo')
jax.distributed.initialize(coordinator_address=sys.argv[2], num_processes=2,
                           process_id=int(sys.argv[1]))
import numpy as np, optax, jaxmaml
from tests.utils import two_host_problem
learner, optimizer, params, sample = two_host_problem()
mesh = jaxmaml.task_mesh()  # Both hosts' devices.
step = jaxmaml.make_meta_step(learner, optimizer, sampler=sample, mesh=mesh)
state = jaxmaml.replicate(jaxmaml.init_train_state(params, optimizer), mesh)
for i in range(3):
  state, metrics = step(state, jax.random.fold_in(jax.random.key(7), i))
local = [(s.index[0].start or 0, s.data.shape[0]) for s in metrics['loss'].addressable_shards]
leaves = jax.tree_util.tree_leaves(jax.device_get(state.params))
flat = np.concatenate([np.ravel(x) for x in leaves])
print('RESULT' + json.dumps([jax.device_count(), local, flat.tolist()]))
"""


@pytest.mark.slow  # ~20 s: two processes with jax.distributed.
def test_two_hosts_split_the_meta_batch():
  """Two processes (jax.distributed over localhost, two CPU devices each):
  each host computes only its own half of the sampled meta-batch, and both end
  with the parameters of one device."""
  with socket.socket() as s:
    s.bind(('localhost', 0))
    address = f'localhost:{s.getsockname()[1]}'
  root = os.path.dirname(os.path.dirname(__file__))
  hosts = [
    subprocess.Popen(
      [sys.executable, '-c', _HOST, str(i), address],
      cwd=root,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(2)
  ]
  outputs = [host.communicate(timeout=300) for host in hosts]
  learner, optimizer, params, sample = two_host_problem()
  step = jaxmaml.make_meta_step(learner, optimizer, sampler=sample)
  state = jaxmaml.init_train_state(params, optimizer)
  for i in range(3):
    state, _ = step(state, jax.random.fold_in(jax.random.key(7), i))
  expected = np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(state.params)])
  shards = []
  for host, (out, err) in zip(hosts, outputs):
    assert host.returncode == 0, err[-3000:]
    devices, local, got = json.loads(out.split('RESULT')[-1])
    assert devices == 4
    shards += map(tuple, local)
    assert np.linalg.norm(np.asarray(got) - expected) < RTOL * np.linalg.norm(expected)
  assert sorted(shards) == [(0, 2), (2, 2), (4, 2), (6, 2)]  # Every task once.
