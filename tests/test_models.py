"""Conv4: the two convolution formulations agree, the reshape max-pool equals
``reduce_window``'s (values and derivatives, ties included), BatchNorm
semantics, and the vmapped meta-gradient equals a float64 per-task loop at
meta-batch 32."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmaml
from jaxmaml import models
from jaxmaml.models import Conv4
from jaxmaml.models import conv3x3
from jaxmaml.models import conv4_miniimagenet
from tests.utils import rel_l2
from tests.utils import task


def _count(params):
  return sum(x.size for x in jax.tree_util.tree_leaves(params))


@pytest.mark.parametrize('channels', [1, 3, 4])  # The images' layout (<= 3) and the rest.
@pytest.mark.parametrize('stride', [1, 2])
@pytest.mark.parametrize(
  'size',
  [28, 5, *(pytest.param(s, marks=pytest.mark.slow) for s in (7, 4))],  # ~4 s each.
)
def test_conv3x3_matmul_equals_xla(size, stride, channels):
  x = jax.random.normal(jax.random.key(0), (3, size, size, channels))
  kernel = jax.random.normal(jax.random.key(1), (3, 3, channels, 6))
  outs = {
    impl: jax.jit(conv3x3, static_argnums=(2, 3))(x, kernel, stride, impl)
    for impl in ('matmul', 'xla')
  }
  np.testing.assert_allclose(outs['matmul'], outs['xla'], rtol=1e-5, atol=1e-5)
  grads = {
    impl: jax.jit(
      jax.grad(lambda x, k: jnp.sum(jnp.sin(conv3x3(x, k, stride, impl))), argnums=(0, 1))
    )(x, kernel)
    for impl in ('matmul', 'xla')
  }
  assert rel_l2(grads['matmul'], grads['xla']) < 1e-5


def _reduce_window_pool(x):
  return nn.max_pool(x, (2, 2), strides=(2, 2), padding='VALID')


@pytest.mark.parametrize('vmapped', [False, True], ids=['batched', 'vmap'])
@pytest.mark.parametrize('shape', [(2, 8, 8, 3), (3, 7, 9, 2)])
def test_max_pool_2x2_equals_reduce_window_with_ties(shape, vmapped, variant):
  """Small integers make many exact ties; value, VJP and JVP are equal exactly
  (float64), with and without jit, on the batch and vmapped over its images."""
  with jax.enable_x64(True):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.integers(0, 3, shape), jnp.float64)
    tangent = jnp.asarray(rng.normal(size=shape))
    transform = lambda f: variant(jax.vmap(lambda y: f(y[None])[0]) if vmapped else f)
    new, old = transform(models.max_pool_2x2), transform(_reduce_window_pool)
    np.testing.assert_array_equal(new(x), old(x))
    cotangent = jnp.asarray(rng.normal(size=old(x).shape))
    np.testing.assert_array_equal(
      jax.vjp(new, x)[1](cotangent)[0], jax.vjp(old, x)[1](cotangent)[0]
    )
    np.testing.assert_array_equal(
      jax.jvp(new, (x,), (tangent,))[1], jax.jvp(old, (x,), (tangent,))[1]
    )


@pytest.mark.parametrize(
  'task_map, batch_size',
  [
    pytest.param('vmap', None, marks=pytest.mark.slow),  # 63-68 s on 2 shared cores (load ~8).
    pytest.param('map', 1, marks=pytest.mark.slow),  # ~50 s.
  ],
)
def test_miniimagenet_meta_gradient_unchanged_by_max_pool_formulation(
  monkeypatch, task_map, batch_size
):
  """Second-order meta-gradient of the miniImageNet Conv4 (4 filters, 20x20x3
  binary images: many ties in the pools) with the reshape max-pool and with
  ``reduce_window``: relative L2 below 1e-12 in float64 (measured ~1e-16)."""
  with jax.enable_x64(True):
    key = jax.random.key(0)
    images = lambda k, n: (jax.random.uniform(k, (2, n, 20, 20, 3)) > 0.7).astype(jnp.float64)
    labels = jnp.tile(jnp.arange(3), (2, 2))
    tasks = jaxmaml.Task((images(key, 6), labels), (images(jax.random.fold_in(key, 1), 6), labels))
    model = conv4_miniimagenet(3, features=4)
    params = jax.tree_util.tree_map(
      lambda x: x.astype(jnp.float64), model.init(jax.random.key(1), tasks.support[0][0])['params']
    )

    def meta_gradient():
      learner = jaxmaml.maml(
        jaxmaml.cross_entropy_loss(jaxmaml.apply_fn(model)), inner_lr=0.1, num_steps=2, has_aux=True
      )
      return jax.jit(
        lambda p, t: jaxmaml.meta_gradient(learner, p, t, task_map=task_map, batch_size=batch_size)[
          0
        ]
      )(params, tasks)

    new = meta_gradient()
    monkeypatch.setattr(models, 'max_pool_2x2', _reduce_window_pool)
    assert rel_l2(new, meta_gradient()) < 1e-12


def _shapes(model, input_shape, batch):
  """Parameters and output shape, traced abstractly (no compute)."""
  params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros([2, *input_shape]))['params']
  out = jax.eval_shape(model.apply, {'params': params}, jnp.zeros([batch, *input_shape]))
  return params, out.shape


def test_shapes_and_parameter_counts():
  params, out_shape = _shapes(Conv4(5), (28, 28, 1), 7)
  assert out_shape == (7, 5)
  # 3x3 convs 1->64, 3x 64->64 (no conv bias: BatchNorm's offset), 4 BN offsets, head 64->5.
  assert _count(params) == 9 * 64 + 3 * 9 * 64 * 64 + 4 * 64 + 64 * 5 + 5
  params, out_shape = _shapes(conv4_miniimagenet(5), (84, 84, 3), 3)
  assert out_shape == (3, 5)
  # 84 -> 42 -> 21 -> 10 -> 5 by max-pooling, flattened 5 * 5 * 32 = 800 features.
  assert _count(params) == 9 * 3 * 32 + 3 * 9 * 32 * 32 + 4 * 32 + 800 * 5 + 5


@pytest.mark.slow  # The default suite (~19 s) must stay under 10 min on 2 cores: docs/testing.md.
def test_batch_statistics_are_transductive():
  """With 'batch' (an alias of 'transductive') BatchNorm an example's logits
  depend on the rest of the batch, without BatchNorm they do not."""
  x = jax.random.uniform(jax.random.key(0), (6, 28, 28, 1))
  for batch_norm, depends in (('batch', True), ('none', False)):
    model = Conv4(5, features=8, batch_norm=batch_norm)
    params = jax.jit(model.init)(jax.random.key(1), x)['params']
    apply = jax.jit(model.apply)
    full = apply({'params': params}, x)[:3]
    half = apply({'params': params}, x[:3])
    assert (not np.allclose(full, half, atol=1e-5)) == depends
  with_scale = jax.eval_shape(Conv4(5, bn_scale=True).init, jax.random.key(1), x)['params']
  assert with_scale['ConvBlock_0']['scale'].shape == (64,)


def test_bad_options():
  with pytest.raises(ValueError, match='conv must be one of'):
    Conv4(5, conv='fft')
  with pytest.raises(ValueError, match='batch_norm must be one of'):
    Conv4(5, batch_norm='running')
  with pytest.raises(ValueError, match=r'inputs \[n, height, width, channels\]'):
    Conv4(5).init(jax.random.key(0), jnp.zeros([28, 28, 1]))


def _omniglot_like_tasks(num_tasks, ways=5, shots=1, queries=1, dtype=jnp.float32):
  xs = jax.random.uniform(jax.random.key(0), (num_tasks, ways * shots, 28, 28, 1)) > 0.8
  xq = jax.random.uniform(jax.random.key(1), (num_tasks, ways * queries, 28, 28, 1)) > 0.8
  ys = jnp.tile(jnp.repeat(jnp.arange(ways), shots), (num_tasks, 1))
  yq = jnp.tile(jnp.repeat(jnp.arange(ways), queries), (num_tasks, 1))
  return jaxmaml.Task((xs.astype(dtype), ys), (xq.astype(dtype), yq))


def _learner(conv):
  model = Conv4(5, conv=conv)
  loss_fn = jaxmaml.cross_entropy_loss(jaxmaml.apply_fn(model))
  return model, jaxmaml.maml(loss_fn, inner_lr=0.4, num_steps=1, has_aux=True)


@pytest.mark.slow  # The default suite (~33 s) must stay under 10 min on 2 cores: docs/testing.md.
def test_meta_gradient_matmul_equals_xla():
  tasks = _omniglot_like_tasks(2)
  grads = {}
  for conv in ('matmul', 'xla'):
    model, learner = _learner(conv)
    params = model.init(jax.random.key(2), tasks.support[0][0])['params']
    grads[conv] = jax.jit(learner.task_grad)(params, task(tasks, 0))[0]
  assert rel_l2(grads['matmul'], grads['xla']) < 1e-4


@pytest.mark.parametrize(
  'task_map, batch_size',
  [
    pytest.param('vmap', None, marks=pytest.mark.slow),  # ~19 s; the MLP tests cover vmap.
    pytest.param('map', 4, marks=pytest.mark.slow),  # ~32 s.
  ],
)  # The few-shot experiment's default.
def test_mapped_meta_gradient_at_meta_batch_32_matches_float64_loop(task_map, batch_size):
  """The trap seen with vmapped convolutions on XLA:CPU (a wrong meta-gradient
  at 32 tasks): the vmapped and the chunked (lax.map of vmaps of 4 tasks, the
  Omniglot experiment's default) meta-gradients, per parameter, against a
  float64 per-task loop. Batch-statistics BatchNorm on 5-example batches
  amplifies float32 rounding; the bound leaves room for it (measured here:
  about 1e-6 for vmap, 2e-4 for the float32 loop)."""
  tasks = _omniglot_like_tasks(32)
  model, learner = _learner('matmul')
  params = model.init(jax.random.key(2), tasks.support[0][0])['params']
  mapped = jax.jit(
    lambda p, t: jaxmaml.meta_gradient(learner, p, t, task_map=task_map, batch_size=batch_size)[0]
  )(params, tasks)
  with jax.enable_x64(True):
    to64 = lambda tree: jax.tree_util.tree_map(
      lambda x: x.astype(jnp.float64) if x.dtype == jnp.float32 else x, tree
    )
    task_grad = jax.jit(learner.task_grad)
    per_task = [task_grad(to64(params), to64(task(tasks, i)))[0] for i in range(32)]
    reference = jax.tree_util.tree_map(lambda *g: np.asarray(sum(g) / 32), *per_task)
  for (path, got), want in zip(
    jax.tree_util.tree_leaves_with_path(mapped), jax.tree_util.tree_leaves(reference)
  ):
    assert rel_l2(got, want) < 1e-3, jax.tree_util.keystr(path)
