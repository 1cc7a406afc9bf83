"""ResNet-12: shapes and parameter count at 84x84 and 32x32, the second-order
meta-gradient against finite differences and a per-task loop (float64, tiny
widths), vmap/map/loop agreement, and DropBlock."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmaml
from jaxmaml import models
from tests.utils import directional_derivatives
from tests.utils import rel_l2
from tests.utils import task

TINY = (2, 3, 3, 4)  # Channels small enough for float64 finite differences.


def _count(params):
  return sum(x.size for x in jax.tree_util.tree_leaves(params))


@pytest.mark.parametrize('size, spatial', [(84, 5), (32, 2)])
def test_shapes_and_parameter_count(size, spatial):
  model = jaxmaml.ResNet12(5)
  x = jnp.zeros([7, size, size, 3])
  params = jax.eval_shape(model.init, jax.random.key(0), x)['params']
  assert jax.eval_shape(model.apply, {'params': params}, x).shape == (7, 5)
  # Per block: a 1x1 shortcut, three 3x3 convs (no conv bias), four BatchNorms
  # (scale and offset); then a 640 -> 5 head.
  widths = (3, 64, 160, 320, 640)
  expected = sum(
    cin * cout + 9 * cin * cout + 2 * 9 * cout * cout + 4 * 2 * cout
    for cin, cout in zip(widths, widths[1:])
  )
  assert _count(params) == expected + 640 * 5 + 5 == 12_427_525
  # The blocks halve the resolution: the last block's feature map.
  features = jax.eval_shape(
    lambda p, x: jaxmaml.ResNet12(None).apply({'params': p}, x, capture_intermediates=True),
    {k: v for k, v in params.items() if k != 'Dense_0'},
    x,
  )[1]['intermediates']['ResidualBlock_3']['__call__'][0][0]
  assert features.shape == (7, spatial, spatial, 640)
  assert sum(jax.tree_util.tree_leaves(models.batch_norm_params(params))) == 4 * 4 * 2


def _tiny_problem(num_tasks=4):
  """Float64 ResNet-12 of widths ``TINY`` on 16x16x3 images, 2-way 2-shot, 3 queries."""
  model = jaxmaml.ResNet12(2, channels=TINY)
  keys = jax.random.split(jax.random.key(0), 3)
  images = lambda k, n: jax.random.normal(k, (num_tasks, n, 16, 16, 3), jnp.float64)
  labels = lambda n: jnp.tile(jnp.arange(n) % 2, (num_tasks, 1))
  tasks = jaxmaml.Task((images(keys[0], 4), labels(4)), (images(keys[1], 6), labels(6)))
  params = model.init(keys[2], tasks.support[0][0])['params']
  params = jax.tree_util.tree_map(lambda x: x.astype(jnp.float64), params)
  loss = jaxmaml.cross_entropy_loss(jaxmaml.apply_fn(model))
  return jaxmaml.maml(loss, inner_lr=0.1, num_steps=2, has_aux=True), params, tasks


@pytest.mark.slow  # ~100 s: second-order ResNet-12 compiles slowly even this narrow.
def test_meta_gradient_matches_finite_differences():
  """Second-order MAML through ResNet-12, float64: directional derivatives
  along 3 random unit directions against central differences (eps 1e-6),
  relative error below 1e-6."""
  with jax.enable_x64(True):
    learner, params, tasks = _tiny_problem()
    grad = jax.jit(lambda p: jaxmaml.meta_gradient(learner, p, tasks)[0])(params)
    loss = jax.jit(lambda p: jnp.mean(jax.vmap(lambda t: learner.task_loss(p, t)[0])(tasks)))
    for analytic, numeric in directional_derivatives(loss, grad, params, jax.random.key(1)):
      assert abs(analytic - numeric) <= 1e-6 * abs(numeric), (analytic, numeric)


@pytest.mark.slow  # ~150 s
def test_vmap_map_and_loop_agree():
  """The vmapped and the chunked (lax.map of vmaps of 2) meta-gradients against
  a Python loop over tasks: relative L2 below 1e-10 in float64."""
  with jax.enable_x64(True):
    learner, params, tasks = _tiny_problem()
    task_grad = jax.jit(learner.task_grad)
    loop = jax.tree_util.tree_map(
      lambda *g: sum(g) / 4, *[task_grad(params, task(tasks, i))[0] for i in range(4)]
    )
    for task_map, batch_size in (('vmap', None), ('map', 2)):
      got = jax.jit(
        lambda p, t, m=task_map, b=batch_size: jaxmaml.meta_gradient(
          learner, p, t, task_map=m, batch_size=b
        )[0]
      )(params, tasks)
      assert rel_l2(got, loop) < 1e-10, task_map


def test_drop_block():
  x = jnp.ones([4, 20, 20, 32])
  out = models.drop_block(x, jax.random.key(0), 0.1, 5)
  dropped = np.asarray(out == 0)
  assert 0.07 < dropped.mean() < 0.13  # About the rate.
  # Kept units are rescaled so that the mean activation is unchanged.
  np.testing.assert_allclose(out.mean(), 1.0, rtol=1e-5)
  # Every dropped unit lies in a fully dropped 5x5 square.
  fully = jax.lax.reduce_window(
    dropped.astype(jnp.float32), 1.0, jax.lax.min, (1, 5, 5, 1), (1,) * 4, 'VALID'
  )
  covered = jax.lax.reduce_window(
    jnp.pad(fully, ((0, 0), (4, 4), (4, 4), (0, 0))),
    0.0,
    jax.lax.max,
    (1, 5, 5, 1),
    (1,) * 4,
    'VALID',
  )
  np.testing.assert_array_equal(np.asarray(covered) == 1, dropped)
  # The same key gives the same blocks; another key others.
  np.testing.assert_array_equal(models.drop_block(x, jax.random.key(0), 0.1, 5), out)
  assert not np.array_equal(models.drop_block(x, jax.random.key(1), 0.1, 5), out)
  # A block larger than the feature map is clipped to it.
  small = models.drop_block(jnp.ones([64, 2, 2, 8]), jax.random.key(0), 0.3, 5)
  assert set(np.unique(small)) <= {0.0, float(small.max())}


@pytest.mark.slow  # ~25 s: three ResNet-12 compiles.
def test_drop_block_in_the_last_two_blocks_only():
  x = jax.random.normal(jax.random.key(0), (5, 16, 16, 3))
  model = jaxmaml.ResNet12(5, channels=(4, 4, 4, 4), drop_rate=0.3)
  params = jax.jit(model.init)(jax.random.key(1), x)['params']
  train = model.clone(deterministic=False)
  apply = lambda m, rng: jax.jit(
    lambda p, k: m.apply({'params': p}, x, rngs={'dropout': k}, capture_intermediates=True)
  )(params, jax.random.key(rng))
  (out, state), (test_out, test_state) = apply(train, 2), apply(model, 2)
  blocks = lambda s, i: s['intermediates'][f'ResidualBlock_{i}']['__call__'][0][0]
  for i in (0, 1):
    np.testing.assert_array_equal(blocks(state, i), blocks(test_state, i))
  assert not np.allclose(out, test_out)
  assert not np.allclose(apply(train, 3)[0], out)
  with pytest.raises(Exception, match='dropout'):
    train.apply({'params': params}, x)


def test_bad_options():
  with pytest.raises(ValueError, match=r'drop_rate must be in \[0, 1\)'):
    jaxmaml.ResNet12(5, drop_rate=1.0)
  with pytest.raises(ValueError, match='conv must be one of'):
    jaxmaml.ResNet12(5, conv='fft')
  with pytest.raises(ValueError, match=r'inputs \[n, height, width, channels\]'):
    jaxmaml.ResNet12(5).init(jax.random.key(0), jnp.zeros([32, 32, 3]))
