"""N-way K-shot episodes: on-device and host samplers, same task semantics."""

import jax
import numpy as np
import optax
import pytest

import jaxmaml
from jaxmaml.data import episodes

NUM_CLASSES, PER_CLASS, SIZE = 12, 6, 5
IMAGES = np.random.default_rng(0).integers(
  0, 256, (NUM_CLASSES, PER_CLASS, SIZE, SIZE), dtype=np.uint8
)
# Every rotation of every image, to identify where a sampled image came from.
CATALOGUE = {
  np.rot90(IMAGES[c, e], k).tobytes(): (c, e, k)
  for c in range(NUM_CLASSES)
  for e in range(PER_CLASS)
  for k in range(4)
}


def _identify(task_x):
  """``[n, h, w, 1]`` floats -> list of (class, example, rotation)."""
  raw = np.rint(np.asarray(task_x)[..., 0] * 255).astype(np.uint8)
  return [CATALOGUE[img.tobytes()] for img in raw]


def _check_semantics(tasks, ways, shots, queries, rotate):
  (xs, ys), (xq, yq) = tasks.support, tasks.query
  assert xs.shape == (len(xs), ways * shots, SIZE, SIZE, 1) and xs.dtype == np.float32
  assert xq.shape == (len(xs), ways * queries, SIZE, SIZE, 1)
  np.testing.assert_array_equal(ys[0], np.repeat(np.arange(ways), shots))
  np.testing.assert_array_equal(yq[0], np.repeat(np.arange(ways), queries))
  rotations = set()
  for t in range(len(xs)):
    support, query = _identify(xs[t]), _identify(xq[t])
    for label in range(ways):
      members = [support[i] for i in np.flatnonzero(np.asarray(ys[t]) == label)] + [
        query[i] for i in np.flatnonzero(np.asarray(yq[t]) == label)
      ]
      # One class and one rotation per label; distinct examples, so the
      # support and query sets never share an image.
      assert len({(c, k) for c, _, k in members}) == 1
      assert len({e for _, e, _ in members}) == shots + queries
      rotations |= {k for _, _, k in members}
    classes = [
      support[int(np.flatnonzero(np.asarray(ys[t]) == label)[0])][0] for label in range(ways)
    ]
    assert len(set(classes)) == ways  # N distinct classes per task.
  assert rotations == ({0, 1, 2, 3} if rotate else {0})


@pytest.mark.parametrize('rotate', [False, True])
def test_device_sampler_semantics(rotate, variant):
  sample = variant(
    lambda key: episodes.sample_episodes(
      key, jax.numpy.asarray(IMAGES), 16, num_ways=5, num_shots=2, num_queries=3, rotate=rotate
    )
  )
  tasks = sample(jax.random.key(0))
  _check_semantics(tasks, 5, 2, 3, rotate)
  again = sample(jax.random.key(0))
  np.testing.assert_array_equal(tasks.support[0], again.support[0])
  other = sample(jax.random.key(1))
  assert not np.array_equal(tasks.support[0], other.support[0])


@pytest.mark.parametrize('rotate', [False, True])
def test_host_sampler_semantics(rotate):
  stream = episodes.host_episodes(
    0, IMAGES, 16, num_ways=5, num_shots=2, num_queries=3, rotate=rotate
  )
  first, second = next(stream), next(stream)
  _check_semantics(first, 5, 2, 3, rotate)
  assert not np.array_equal(first.support[0], second.support[0])
  replay = episodes.host_episodes(
    0, IMAGES, 16, num_ways=5, num_shots=2, num_queries=3, rotate=rotate
  )
  np.testing.assert_array_equal(next(replay).query[0], first.query[0])


@pytest.mark.parametrize('host', [pytest.param(False, marks=pytest.mark.slow), True])  # ~10 s.
def test_shuffle_support(host):
  """shuffle_support reorders each task's support set, pairs kept; the query
  and (on the device, for the same key) the drawn tasks are unchanged."""
  args = dict(num_ways=5, num_shots=2, num_queries=1, rotate=True)
  if host:
    plain = next(episodes.host_episodes(0, IMAGES, 16, **args))
    shuffled = next(episodes.host_episodes(0, IMAGES, 16, shuffle_support=True, **args))
  else:
    sample = jax.jit(
      episodes.sample_episodes,
      static_argnums=2,
      static_argnames=('num_ways', 'num_shots', 'num_queries', 'rotate', 'shuffle_support'),
    )
    plain = sample(jax.random.key(0), jax.numpy.asarray(IMAGES), 16, **args)
    shuffled = sample(
      jax.random.key(0), jax.numpy.asarray(IMAGES), 16, shuffle_support=True, **args
    )
    np.testing.assert_array_equal(shuffled.query[0], plain.query[0])
  moved = 0
  for t in range(16):
    before = sorted(zip(_identify(plain.support[0][t]), np.asarray(plain.support[1][t])))
    after = list(zip(_identify(shuffled.support[0][t]), np.asarray(shuffled.support[1][t])))
    assert sorted(after) == before  # The same (image, label) pairs, reordered.
    moved += not np.array_equal(shuffled.support[1][t], plain.support[1][t])
  assert moved >= 12  # A random order of 10 labels rarely keeps them sorted.


@pytest.mark.parametrize(
  'kwargs, match',
  [
    ({'num_ways': 13}, 'only 12'),
    ({'num_shots': 4, 'num_queries': 3}, 'only 6 per class'),
    ({'num_shots': 0}, 'num_shots'),
  ],
)
def test_requests_that_cannot_be_met(kwargs, match):
  args = {'num_ways': 5, 'num_shots': 1, 'num_queries': 1, **kwargs}
  with pytest.raises(ValueError, match=match):
    episodes.sample_episodes(jax.random.key(0), IMAGES, 4, **args)
  with pytest.raises(ValueError, match=match):
    next(episodes.host_episodes(0, IMAGES, 4, **args))
  with pytest.raises(ValueError, match='square'):
    episodes.sample_episodes(
      jax.random.key(0), IMAGES[:, :, :4], 4, num_ways=2, num_shots=1, num_queries=1
    )


def test_meta_step_with_on_device_sampler():
  """Tasks drawn inside the compiled step: compiles once, deterministic in the key."""
  model = jaxmaml.MLP(features=(16, 3))
  apply = lambda p, x: model.apply({'params': p}, x.reshape(x.shape[0], -1))
  loss_fn = jaxmaml.cross_entropy_loss(apply)
  learner = jaxmaml.maml(loss_fn, inner_lr=0.1, num_steps=1, has_aux=True)
  images = jax.numpy.asarray(IMAGES)
  traces = []

  def sampler(key, images):
    traces.append(1)
    return episodes.sample_episodes(key, images, 4, num_ways=3, num_shots=1, num_queries=2)

  optimizer = optax.adam(1e-3)
  step = jaxmaml.make_meta_step(learner, optimizer, sampler=sampler)
  params = model.init(jax.random.key(0), np.zeros([1, SIZE * SIZE]))['params']
  states = []
  for _ in range(2):
    state = jaxmaml.init_train_state(params, optimizer)
    for i in range(3):
      state, metrics = step(state, jax.random.key(i), images)
    states.append(state)
  assert len(traces) == 1
  assert metrics['accuracy'].shape == (4,)
  assert int(states[0].step) == 3
  np.testing.assert_array_equal(
    states[0].params['Dense_0']['kernel'], states[1].params['Dense_0']['kernel']
  )


@pytest.mark.parametrize('host', [pytest.param(False, marks=pytest.mark.slow), True])  # ~8 s.
def test_color_images_keep_their_channels(host):
  color = np.random.default_rng(1).integers(0, 256, (6, 4, SIZE, SIZE, 3), dtype=np.uint8)
  catalogue = {
    np.rot90(color[c, e], k, axes=(0, 1)).tobytes()
    for c in range(6)
    for e in range(4)
    for k in range(4)
  }
  args = dict(num_ways=3, num_shots=1, num_queries=2, rotate=True)
  tasks = (
    next(episodes.host_episodes(0, color, 5, **args))
    if host
    else episodes.sample_episodes(jax.random.key(0), jax.numpy.asarray(color), 5, **args)
  )
  assert tasks.support[0].shape == (5, 3, SIZE, SIZE, 3)
  assert tasks.query[0].shape == (5, 6, SIZE, SIZE, 3)
  for x in np.concatenate([tasks.support[0], tasks.query[0]], axis=1).reshape(-1, SIZE, SIZE, 3):
    assert np.rint(x * 255).astype(np.uint8).tobytes() in catalogue
