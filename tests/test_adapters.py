"""NNX and Equinox models through ``jaxmaml.adapters``: the same MAML meta-gradient
as the linen model on shared weights (an MLP on sinusoid tasks, Conv4 with
BatchNorm on image tasks), in float64; the split state stays untouched."""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmaml
from jaxmaml import adapters
from jaxmaml.data import sinusoid
from tests.utils import rel_l2

eqx = pytest.importorskip('equinox')

WIDTHS = (1, 40, 40, 1)
FEATURES = 4  # Conv4 filters, small for speed.
SIZE = 14  # Conv4 input pixels, small for speed.
# XLA's 'SAME' padding of a stride-2 3x3 convolution on 14, 7, 4 and 2 pixels.
SAME_PADS = ((0, 1), (1, 1), (0, 1), (0, 1))


class NnxMLP(nnx.Module):
  def __init__(self, *, rngs: nnx.Rngs):
    self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(WIDTHS[:-1], WIDTHS[1:])])

  def __call__(self, x):
    for layer in self.layers[:-1]:
      x = nnx.relu(layer(x))
    return self.layers[-1](x)


class NnxConv4(nnx.Module):
  def __init__(self, num_classes: int, *, rngs: nnx.Rngs):
    channels = (1,) + (FEATURES,) * 4
    self.convs = nnx.List(
      [
        nnx.Conv(a, b, (3, 3), strides=2, padding='SAME', use_bias=False, rngs=rngs)
        for a, b in zip(channels[:-1], channels[1:])
      ]
    )
    # Batch statistics (jaxmaml's 'transductive'), scale and offset.
    self.norms = nnx.List(
      [
        nnx.BatchNorm(FEATURES, use_running_average=False, epsilon=1e-5, rngs=rngs)
        for _ in range(4)
      ]
    )
    self.head = nnx.Linear(FEATURES, num_classes, rngs=rngs)

  def __call__(self, x):
    for conv, norm in zip(self.convs, self.norms):
      x = nnx.relu(norm(conv(x)))
    return self.head(jnp.mean(x, axis=(1, 2)))


class EqxConv4(eqx.Module):
  convs: tuple
  norms: tuple
  head: eqx.nn.Linear

  def __init__(self, num_classes: int, *, key):
    keys = jax.random.split(key, 5)
    channels = (1,) + (FEATURES,) * 4
    self.convs = tuple(
      eqx.nn.Conv2d(a, b, 3, stride=2, padding=(pad, pad), use_bias=False, key=k)
      for a, b, pad, k in zip(channels[:-1], channels[1:], SAME_PADS, keys)
    )
    self.norms = tuple(
      eqx.nn.BatchNorm(FEATURES, axis_name='batch', eps=1e-5, mode='batch') for _ in range(4)
    )
    self.head = eqx.nn.Linear(FEATURES, num_classes, key=keys[4])

  def __call__(self, x, state):  # One example, [h, w, c].
    x = jnp.moveaxis(x, -1, 0)
    for conv, norm in zip(self.convs, self.norms):
      x, state = norm(conv(x), state)
      x = jax.nn.relu(x)
    return self.head(jnp.mean(x, axis=(1, 2))), state


def _sinusoid_tasks():
  return jax.tree_util.tree_map(
    lambda x: x.astype(jnp.float64),
    sinusoid.sample_tasks(jax.random.key(1), num_tasks=4, num_support=10, num_query=10),
  )


def _image_tasks(num_tasks=2, ways=3, shots=1):
  x = jax.random.normal(
    jax.random.key(2), (num_tasks, 2 * ways * shots, SIZE, SIZE, 1), jnp.float64
  )
  y = jnp.tile(jnp.repeat(jnp.arange(ways), shots), (num_tasks, 2))
  half = ways * shots
  return jaxmaml.Task(support=(x[:, :half], y[:, :half]), query=(x[:, half:], y[:, half:]))


def _meta_gradient(apply, params, tasks, loss, has_aux=False, num_steps=2):
  learner = jaxmaml.maml(loss(apply), inner_lr=0.1, num_steps=num_steps, has_aux=has_aux)
  return jax.jit(lambda p: jaxmaml.meta_gradient(learner, p, tasks)[0])(params)


def _float64(tree):
  return jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float64), tree)


def test_mlp_meta_gradient_is_the_same_from_linen_nnx_and_equinox():
  with jax.enable_x64(True):
    tasks = _sinusoid_tasks()
    linen = jaxmaml.MLP(features=WIDTHS[1:])
    params = _float64(linen.init(jax.random.key(0), jnp.zeros([1, 1]))['params'])
    want = _meta_gradient(jaxmaml.apply_fn(linen), params, tasks, jaxmaml.mse_loss)
    dense = [params[f'Dense_{i}'] for i in range(3)]

    nnx_model = adapters.from_nnx(NnxMLP(rngs=nnx.Rngs(0)))
    nnx_params = {'layers': {i: dict(d) for i, d in enumerate(dense)}}
    got = _meta_gradient(nnx_model.apply, nnx_params, tasks, jaxmaml.mse_loss)
    assert rel_l2(got, {'layers': {i: want[f'Dense_{i}'] for i in range(3)}}) < 1e-12

    mlp = eqx.nn.MLP(1, 1, 40, 2, activation=jax.nn.relu, key=jax.random.key(0))
    mlp = eqx.tree_at(
      lambda m: [leaf for layer in m.layers for leaf in (layer.weight, layer.bias)],
      mlp,
      [leaf for d in dense for leaf in (d['kernel'].T, d['bias'])],
    )
    eqx_model = adapters.from_equinox(mlp)
    grads = _meta_gradient(eqx_model.apply, eqx_model.params, tasks, jaxmaml.mse_loss)
    for i, layer in enumerate(grads.layers):
      want_i = want[f'Dense_{i}']
      assert rel_l2(layer.weight.T, want_i['kernel']) < 1e-12
      assert rel_l2(layer.bias, want_i['bias']) < 1e-12


def test_conv4_meta_gradient_is_the_same_from_linen_nnx_and_equinox():
  with jax.enable_x64(True):
    tasks = _image_tasks()
    linen = jaxmaml.Conv4(3, features=FEATURES, bn_scale=True, conv='xla')
    params = _float64(linen.init(jax.random.key(0), jnp.zeros([1, SIZE, SIZE, 1]))['params'])
    # Non-trivial BatchNorm scales and offsets, so that their gradients are tested.
    keys = iter(jax.random.split(jax.random.key(3), 8))
    for i in range(4):
      block = params[f'ConvBlock_{i}']
      block['scale'] = 1 + 0.1 * jax.random.normal(next(keys), (FEATURES,), jnp.float64)
      block['bias'] = 0.1 * jax.random.normal(next(keys), (FEATURES,), jnp.float64)
    loss = jaxmaml.cross_entropy_loss
    want = _meta_gradient(jaxmaml.apply_fn(linen), params, tasks, loss, True, 1)
    blocks = [params[f'ConvBlock_{i}'] for i in range(4)]
    want_blocks = [want[f'ConvBlock_{i}'] for i in range(4)]

    nnx_conv4 = NnxConv4(3, rngs=nnx.Rngs(0))
    for norm in nnx_conv4.norms:  # nnx.BatchNorm makes its running statistics float32.
      norm.mean = nnx.BatchStat(norm.mean[...].astype(jnp.float64))
      norm.var = nnx.BatchStat(norm.var[...].astype(jnp.float64))
    nnx_model = adapters.from_nnx(nnx_conv4)
    nnx_params = {
      'convs': {i: {'kernel': b['kernel']} for i, b in enumerate(blocks)},
      'norms': {i: {'scale': b['scale'], 'bias': b['bias']} for i, b in enumerate(blocks)},
      'head': dict(params['Dense_0']),
    }
    got = _meta_gradient(nnx_model.apply, nnx_params, tasks, loss, True, 1)
    assert (
      rel_l2(
        got,
        {
          'convs': {i: {'kernel': b['kernel']} for i, b in enumerate(want_blocks)},
          'norms': {i: {'scale': b['scale'], 'bias': b['bias']} for i, b in enumerate(want_blocks)},
          'head': want['Dense_0'],
        },
      )
      < 1e-10
    )

    net, state = eqx.nn.make_with_state(EqxConv4)(3, key=jax.random.key(0))
    net = eqx.tree_at(
      lambda m: (
        [c.weight for c in m.convs]
        + [n.weight for n in m.norms]
        + [n.bias for n in m.norms]
        + [m.head.weight, m.head.bias]
      ),
      net,
      [jnp.transpose(b['kernel'], (3, 2, 0, 1)) for b in blocks]
      + [b['scale'] for b in blocks]
      + [b['bias'] for b in blocks]
      + [params['Dense_0']['kernel'].T, params['Dense_0']['bias']],
    )
    eqx_model = adapters.from_equinox(net, state)
    grads = _meta_gradient(eqx_model.apply, eqx_model.params, tasks, loss, True, 1)
    for conv, norm, w in zip(grads.convs, grads.norms, want_blocks):
      assert rel_l2(conv.weight, jnp.transpose(w['kernel'], (3, 2, 0, 1))) < 1e-10
      assert rel_l2(norm.weight, w['scale']) < 1e-10
      assert rel_l2(norm.bias, w['bias']) < 1e-10
    assert rel_l2(grads.head.weight.T, want['Dense_0']['kernel']) < 1e-10


def test_nnx_state_is_explicit_and_the_module_is_unchanged():
  module = nnx.Sequential(
    nnx.Linear(3, 4, rngs=nnx.Rngs(0)),
    nnx.BatchNorm(4, momentum=0.5, use_running_average=True, rngs=nnx.Rngs(0)),
  )
  x = jax.random.normal(jax.random.key(0), (8, 3))
  features = x @ module.layers[0].kernel[...]
  model = adapters.from_nnx(module)
  # Inference mode: the running averages (zero mean, unit variance) normalise.
  np.testing.assert_allclose(jax.jit(model.apply)(model.params, x), features, rtol=1e-4)
  module.train()  # Batch statistics, and the running averages move.
  before = jax.tree_util.tree_map(np.array, nnx.state(module))
  model = adapters.from_nnx(module)
  out, new_state = jax.jit(model.apply_with_state)(model.params, model.state, x)
  normalized = (features - features.mean(0)) / jnp.sqrt(features.var(0) + 1e-5)
  np.testing.assert_allclose(out, normalized, rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(jax.jit(model.apply)(model.params, x), out)
  mean = nnx.to_pure_dict(new_state)['layers'][1]['mean']
  np.testing.assert_allclose(mean, 0.5 * features.mean(0), rtol=1e-5)
  # The module and the split state are as they were: the updates went to copies.
  jax.tree_util.tree_map(np.testing.assert_array_equal, nnx.state(module), before)
  np.testing.assert_array_equal(nnx.to_pure_dict(model.state)['layers'][1]['mean'], 0.0)


def test_adapters_refuse_other_objects():
  with pytest.raises(TypeError, match='flax.nnx.Module'):
    adapters.from_nnx(jaxmaml.MLP((3,)))
  with pytest.raises(TypeError, match='equinox.Module'):
    adapters.from_equinox(NnxMLP(rngs=nnx.Rngs(0)))
