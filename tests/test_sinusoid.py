"""The sinusoid task distribution (the MAML paper's)."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxmaml.data import sinusoid


def test_shapes_ranges_and_targets():
  tasks = sinusoid.sample_tasks(jax.random.key(0), 500, 5, 7)
  (xs, ys), (xq, yq) = tasks.support, tasks.query
  assert xs.shape == ys.shape == (500, 5, 1) and xq.shape == yq.shape == (500, 7, 1)
  x = jnp.concatenate([xs, xq], axis=1)
  assert float(x.min()) >= -5.0 and float(x.max()) <= 5.0
  waves = sinusoid.sample_sinusoids(jax.random.split(jax.random.key(0))[0], 500)
  assert 0.1 <= float(waves.amplitude.min()) and float(waves.amplitude.max()) <= 5.0
  assert 0.0 <= float(waves.phase.min()) and float(waves.phase.max()) <= np.pi
  np.testing.assert_allclose(jnp.concatenate([ys, yq], axis=1), waves(x), rtol=1e-6)


def test_same_key_same_tasks_and_different_keys_differ():
  a = sinusoid.sample_tasks(jax.random.key(3), 4, 5, 5)
  b = sinusoid.sample_tasks(jax.random.key(3), 4, 5, 5)
  c = sinusoid.sample_tasks(jax.random.key(4), 4, 5, 5)
  np.testing.assert_array_equal(a.support[0], b.support[0])
  np.testing.assert_array_equal(a.query[1], b.query[1])
  assert not np.allclose(a.support[0], c.support[0])


def test_sampling_under_jit_matches_eager():
  sample = jax.jit(sinusoid.sample_tasks, static_argnums=(1, 2, 3))
  a = sample(jax.random.key(5), 3, 4, 6)
  b = sinusoid.sample_tasks(jax.random.key(5), 3, 4, 6)
  np.testing.assert_allclose(a.query[1], b.query[1], rtol=1e-6)
