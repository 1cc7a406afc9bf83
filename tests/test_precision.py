"""Mixed precision: bfloat16 compute on float32 master parameters. (The
experiments' guard that stops a low-precision run at its first non-finite
meta-gradient: test_experiment_precision.)"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmaml
from jaxmaml.data import sinusoid
from tests.utils import rel_l2


def _learner(precision, first_order=False, dtypes=None):
  model = jaxmaml.MLP(features=(40, 40, 1))
  apply = jaxmaml.apply_fn(model)

  def recording(params, x):  # Records the dtypes the model computes in.
    if dtypes is not None:
      dtypes.update(leaf.dtype for leaf in jax.tree_util.tree_leaves((params, x)))
    return apply(params, x)

  loss = jaxmaml.mse_loss(jaxmaml.mixed_precision(recording, precision))
  params = model.init(jax.random.key(0), jnp.zeros([1, 1]))['params']
  return jaxmaml.maml(loss, inner_lr=0.01, num_steps=5, first_order=first_order), params


F32, BF16 = jnp.dtype('float32'), jnp.dtype('bfloat16')


@pytest.mark.parametrize(
  'first_order, tolerance',
  [pytest.param(*p, marks=pytest.mark.slow) for p in ((True, 0.1), (False, 0.3))],  # 10-16 s.
)
def test_bfloat16_meta_gradient_is_float32_and_close(first_order, tolerance):
  """The model runs in bfloat16, but the adapted parameters, the meta-gradient
  and its mean are float32, and close to the float32 ones: measured 3e-2
  (first order) and 1.1e-1 (second order) relative L2 on 25 sinusoid tasks,
  5 inner steps; a lost cast or a gradient of the wrong quantity gives ~1."""
  tasks = sinusoid.sample_tasks(jax.random.key(1), 25, 10, 10)
  grads, dtypes = {}, {}
  for precision in ('float32', 'bfloat16'):
    dtypes[precision] = set()
    learner, params = _learner(precision, first_order, dtypes[precision])
    fn = lambda p, t: jaxmaml.meta_gradient(learner, p, t)
    grads[precision], metrics = jax.jit(fn)(params, tasks)
    assert metrics['loss'].dtype == F32
    assert {g.dtype for g in jax.tree_util.tree_leaves(grads[precision])} == {F32}
    adapted, _ = learner.adapt(params, jax.tree_util.tree_map(lambda x: x[0], tasks.support))
    assert {p.dtype for p in jax.tree_util.tree_leaves(adapted)} == {F32}
  assert dtypes['float32'] == {F32} and dtypes['bfloat16'] == {BF16}
  assert 1e-3 < rel_l2(grads['bfloat16'], grads['float32']) < tolerance


def test_integer_leaves_pass_through_and_float32_is_unchanged():
  fn = lambda params, batch: (params * batch[0], batch[1])
  out, labels = jaxmaml.mixed_precision(fn)(jnp.float32(2.0), (jnp.ones(3), jnp.arange(3)))
  assert out.dtype == jnp.float32 and labels.dtype == jnp.int32
  assert jaxmaml.mixed_precision(fn, 'float32') is fn
  with pytest.raises(ValueError, match='compute_dtype must be one of'):
    jaxmaml.mixed_precision(fn, 'int8')


@pytest.mark.slow  # ~23 s; the default suite stays under 10 min (docs/testing.md).
def test_conv_net_batch_norm_statistics_in_float32():
  """Conv4 under bfloat16 returns bfloat16 features, with finite statistics of
  a 5-image batch, and is within bfloat16 rounding of float32."""
  model = jaxmaml.Conv4(5, features=8)
  x = jax.random.uniform(jax.random.key(0), (5, 28, 28, 1))
  params = model.init(jax.random.key(1), x)['params']
  low = jax.jit(jaxmaml.mixed_precision(jaxmaml.apply_fn(model)))(params, x)
  high = jax.jit(jaxmaml.apply_fn(model))(params, x)
  assert low.dtype == jnp.float32 and np.all(np.isfinite(low))
  assert rel_l2(low, high) < 5e-2
