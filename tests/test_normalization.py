"""BatchNorm modes: inductive models leak nothing between query examples (exactly,
under jit, for every model and through every learner), transductive ones do;
meta-gradients of every mode against finite differences and a Python-loop MAML."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxmaml
from jaxmaml import normalization
from tests.utils import directional_derivatives
from tests.utils import rel_l2

MODELS = {
  'conv4': (lambda mode: jaxmaml.Conv4(5, batch_norm=mode), (28, 28, 1)),
  'conv4_miniimagenet': (lambda mode: jaxmaml.conv4_miniimagenet(5, batch_norm=mode), (84, 84, 3)),
  'resnet12': (lambda mode: jaxmaml.ResNet12(5, batch_norm=mode), (32, 32, 3)),
}


def _images(key, n, shape, dtype=jnp.float32):
  return jax.random.normal(key, (n, *shape), dtype)


def _init(model, x):
  """Parameters with random BatchNorm offsets and scales (the initial ones are 0 and 1)."""
  params = jax.jit(model.init)(jax.random.key(1), normalization.Referenced(x))['params']
  mask = jaxmaml.batch_norm_params(params)
  noise = lambda m, p, k: p + 0.3 * jax.random.normal(k, p.shape, p.dtype) if m else p
  keys = jax.random.split(jax.random.key(2), len(jax.tree_util.tree_leaves(params)))
  treedef = jax.tree_util.tree_structure(params)
  return jax.tree_util.tree_map(noise, mask, params, jax.tree_util.tree_unflatten(treedef, keys))


@pytest.mark.parametrize(
  'name',
  [
    'conv4',
    pytest.param('conv4_miniimagenet', marks=pytest.mark.slow),  # ~20 s
    pytest.param('resnet12', marks=pytest.mark.slow),  # ~50 s
  ],
)
def test_inductive_query_logits_ignore_other_queries(name):
  """A query's logits: bitwise equal under jit when the other queries are
  replaced; when they are removed, the compiled program changes shape (XLA
  picks other matmul kernels), so equal to float32 rounding; transductive
  logits change by far more in both cases."""
  make, shape = MODELS[name]
  keys = jax.random.split(jax.random.key(0), 3)
  support, query, others = (_images(k, n, shape) for k, n in zip(keys, (5, 6, 6)))
  replaced = query.at[1:].set(others[1:])
  for mode in ('inductive', 'transductive'):
    model = make(mode)
    params = _init(model, support)
    logits = jax.jit(
      lambda p, q, s, m=model: m.apply({'params': p}, normalization.Referenced(q, s))
    )
    full = logits(params, query, support)
    assert full.shape == (6, 5) and np.all(np.isfinite(full))
    after_replace, after_remove = (
      logits(params, replaced, support),
      logits(params, query[:1], support),
    )
    if mode == 'inductive':
      np.testing.assert_array_equal(after_replace[0], full[0])
      np.testing.assert_allclose(after_remove[0], full[0], rtol=1e-5, atol=1e-5)
    else:
      assert np.max(np.abs(after_replace[0] - full[0])) > 1e-2
      assert np.max(np.abs(after_remove[0] - full[0])) > 1e-2


@pytest.mark.slow  # ~20 s
def test_inductive_removal_agrees_in_float64():
  with jax.enable_x64(True):
    model = jaxmaml.Conv4(5, features=8, batch_norm='inductive')
    support, query = (
      _images(jax.random.key(0), 5, (28, 28, 1), jnp.float64),
      _images(jax.random.key(1), 6, (28, 28, 1), jnp.float64),
    )
    params = jax.tree_util.tree_map(lambda x: x.astype(jnp.float64), _init(model, support))
    logits = jax.jit(lambda p, q: model.apply({'params': p}, normalization.Referenced(q, support)))
    np.testing.assert_allclose(logits(params, query[:1])[0], logits(params, query)[0], rtol=1e-12)


def _logits_loss(apply):
  """Cross-entropy reporting the logits, so that a learner's query outputs can be seen."""

  def loss_fn(params, batch):
    inputs, labels = batch
    logits = apply(params, inputs)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), {
      'logits': logits
    }

  return loss_fn


def _learners(model):
  apply = jaxmaml.apply_fn(model)
  loss = _logits_loss(apply)
  return {
    'maml': jaxmaml.maml(loss, inner_lr=0.4, num_steps=2, has_aux=True),
    'anil': jaxmaml.anil(loss, inner_lr=0.4, num_steps=2, has_aux=True),
    'meta_sgd': jaxmaml.meta_sgd(loss, init_lr=0.4, num_steps=2, has_aux=True),
    'maml++_per_step_bn': jaxmaml.maml_plus_plus(
      loss, inner_lr=0.4, num_steps=2, per_step_bn=jaxmaml.batch_norm_params, has_aux=True
    ),
  }


@pytest.mark.slow  # ~110 s: ten learners compiled.
def test_inductive_learners_query_outputs_ignore_other_queries():
  """Through adaptation (MAML, ANIL, Meta-SGD, MAML++ with per-step BatchNorm)
  and ProtoNets' embeddings: replacing the other queries of a task leaves a
  query's adapted logits bitwise unchanged under jit with
  ``inductive_batch_norm``; with transductive statistics they change."""
  keys = jax.random.split(jax.random.key(0), 3)
  support, query, others = (_images(k, 5, (28, 28, 1)) for k in keys)
  labels = jnp.arange(5)
  replaced = query.at[1:].set(others[1:])
  for mode in ('inductive', 'transductive'):
    model = jaxmaml.Conv4(5, features=16, batch_norm=mode)
    wrap = jaxmaml.inductive_batch_norm if mode == 'inductive' else (lambda learner: learner)
    params = _init(model, support)
    for name, learner in _learners(model).items():
      learner = wrap(learner)
      meta_params = learner.init(params)
      logits = jax.jit(
        lambda p, q, learner=learner: learner.task_loss(
          p, jaxmaml.Task((support, labels), (q, labels))
        )[1]['logits']
      )
      before, after = logits(meta_params, query), logits(meta_params, replaced)
      if mode == 'inductive':
        np.testing.assert_array_equal(after[0], before[0], err_msg=name)
      else:
        assert np.max(np.abs(after[0] - before[0])) > 1e-3, name
    # ProtoNets: the task's loss is the mean of its queries' losses scored one
    # query at a time only if no query's embedding depends on the others.
    embed = jaxmaml.Conv4(None, features=16, batch_norm=mode)
    protonets = wrap(jaxmaml.protonets(jaxmaml.apply_fn(embed), num_ways=5))
    embed_params = {k: v for k, v in params.items() if k != 'Dense_0'}
    loss = jax.jit(
      lambda q, y: protonets.task_loss(embed_params, jaxmaml.Task((support, labels), (q, y)))[0]
    )
    one_at_a_time = np.mean([loss(query[i : i + 1], labels[i : i + 1]) for i in range(5)])
    if mode == 'inductive':
      np.testing.assert_allclose(one_at_a_time, loss(query, labels), rtol=1e-5)
    else:
      assert abs(one_at_a_time - loss(query, labels)) > 1e-3


@pytest.mark.slow  # ~40 s
def test_inductive_support_statistics_are_the_support_sets():
  """The support set is normalised with its own statistics in both modes (same
  support loss); the query is not (different query loss)."""
  support, query = (
    _images(jax.random.key(0), 5, (28, 28, 1)),
    _images(jax.random.key(1), 5, (28, 28, 1)),
  )
  task = jaxmaml.Task((support, jnp.arange(5)), (query, jnp.arange(5)))
  losses = {}
  for mode in ('transductive', 'inductive'):
    model = jaxmaml.Conv4(5, features=8, batch_norm=mode)
    learner = jaxmaml.maml(
      jaxmaml.cross_entropy_loss(jaxmaml.apply_fn(model)), inner_lr=0.4, num_steps=1, has_aux=True
    )
    if mode == 'inductive':
      learner = jaxmaml.inductive_batch_norm(learner)
    losses[mode] = jax.jit(learner.task_loss)(_init(model, support), task)
  np.testing.assert_allclose(
    losses['inductive'][1]['support_losses'], losses['transductive'][1]['support_losses'], rtol=1e-6
  )
  assert abs(float(losses['inductive'][0]) - float(losses['transductive'][0])) > 1e-3


def _tiny_float64(mode, num_classes=2):
  model = jaxmaml.Conv4(num_classes, features=3, batch_norm=mode, bn_scale=True)
  keys = jax.random.split(jax.random.key(3), 4)
  tasks = jaxmaml.Task(
    (
      _images(keys[0], 3 * 4, (16, 16, 1), jnp.float64).reshape(3, 4, 16, 16, 1),
      jnp.tile(jnp.arange(4) % 2, (3, 1)),
    ),
    (
      _images(keys[1], 3 * 6, (16, 16, 1), jnp.float64).reshape(3, 6, 16, 16, 1),
      jnp.tile(jnp.arange(6) % 2, (3, 1)),
    ),
  )
  params = _init(model, tasks.support[0][0])
  params = jax.tree_util.tree_map(lambda x: x.astype(jnp.float64), params)
  return model, params, tasks


def _learner(model, mode, kind):
  loss = jaxmaml.cross_entropy_loss(jaxmaml.apply_fn(model))
  if kind == 'maml':
    learner = jaxmaml.maml(loss, inner_lr=0.3, num_steps=2, has_aux=True)
  else:
    learner = jaxmaml.maml_plus_plus(
      loss,
      inner_lr=0.3,
      num_steps=2,
      per_step_bn=jaxmaml.batch_norm_params,
      learn_inner_lr=True,  # Every meta-parameter differentiated, rates included.
      has_aux=True,
    )
  return jaxmaml.inductive_batch_norm(learner) if mode == 'inductive' else learner


@pytest.mark.parametrize(
  'mode, kind',
  [
    # ~30-60 s each: the default suite has the Python-loop oracle instead.
    pytest.param(mode, kind, marks=pytest.mark.slow)
    for mode in normalization.MODES
    for kind in ('maml', 'maml++_per_step_bn')
  ],
)
def test_meta_gradient_matches_finite_differences(mode, kind):
  """Second-order meta-gradient over 3 tasks, float64: the directional
  derivative along 3 random unit directions against central differences
  (eps 1e-6), relative error below 1e-6."""
  with jax.enable_x64(True):
    model, params, tasks = _tiny_float64(mode)
    learner = _learner(model, mode, kind)
    meta_params = learner.init(params)
    grad = jax.jit(lambda p: jaxmaml.meta_gradient(learner, p, tasks)[0])(meta_params)
    loss = jax.jit(lambda p: jnp.mean(jax.vmap(lambda t: learner.task_loss(p, t)[0])(tasks)))
    for analytic, numeric in directional_derivatives(loss, grad, meta_params, jax.random.key(10)):
      assert abs(analytic - numeric) <= 1e-6 * abs(numeric), (analytic, numeric)


@pytest.mark.parametrize(
  'mode',
  [
    pytest.param(m, marks=pytest.mark.slow) for m in ('inductive', 'transductive', 'none')
  ],  # ~60 s each.
)
def test_meta_gradient_matches_python_loop_maml(mode):
  """``meta_gradient`` (vmapped over tasks, the scan inner loop,
  ``inductive_batch_norm``) against MAML written as a Python loop over tasks
  and inner steps that builds the ``Referenced`` inputs itself: relative L2
  below 1e-10 in float64."""
  with jax.enable_x64(True):
    model, params, tasks = _tiny_float64(mode)
    got = jax.jit(lambda p: jaxmaml.meta_gradient(_learner(model, mode, 'maml'), p, tasks)[0])(
      params
    )

    def ce(p, inputs, labels):
      logits = model.apply({'params': p}, inputs)
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    def task_loss(p, xs, ys, xq, yq):
      support_in = normalization.Referenced(xs) if mode == 'inductive' else xs
      query_in = normalization.Referenced(xq, xs) if mode == 'inductive' else xq
      for _ in range(2):
        g = jax.grad(ce)(p, support_in, ys)
        p = jax.tree_util.tree_map(lambda w, d: w - 0.3 * d, p, g)
      return ce(p, query_in, yq)

    task_grad = jax.jit(jax.grad(task_loss))
    grads = [
      task_grad(
        params, tasks.support[0][i], tasks.support[1][i], tasks.query[0][i], tasks.query[1][i]
      )
      for i in range(3)
    ]
    want = jax.tree_util.tree_map(lambda *g: sum(g) / 3, *grads)
    assert rel_l2(got, want) < 1e-10


def test_modes_and_errors():
  assert jaxmaml.Conv4(5, batch_norm='batch').batch_norm == 'transductive'
  with pytest.raises(ValueError, match='batch_norm must be one of'):
    jaxmaml.ResNet12(5, batch_norm='running')
  x = jnp.zeros([2, 28, 28, 1])
  with pytest.raises(ValueError, match='inductive_batch_norm'):
    jax.eval_shape(jaxmaml.Conv4(5, batch_norm='inductive').init, jax.random.key(0), x)
  with pytest.raises(ValueError, match='reference examples'):
    jax.eval_shape(
      jaxmaml.Conv4(5, batch_norm='inductive').init,
      jax.random.key(0),
      normalization.Referenced(x, jnp.zeros([2, 14, 14, 1])),
    )
  # Without normalisation the reference is ignored: outputs are the inputs' own.
  model = jaxmaml.Conv4(5, features=4, batch_norm='none')
  params = jax.jit(model.init)(jax.random.key(0), x)['params']
  y = jax.random.normal(jax.random.key(1), (3, 28, 28, 1))
  np.testing.assert_array_equal(
    model.apply({'params': params}, normalization.Referenced(y, x)),
    model.apply({'params': params}, y),
  )


def test_statistics_in_float32_for_bfloat16_inputs():
  x = (jax.random.normal(jax.random.key(0), (8, 4)) * 100 + 1000).astype(jnp.bfloat16)
  out, _ = normalization.batch_norm(x, None, 'transductive')
  assert out.dtype == jnp.bfloat16
  expected = (x.astype(jnp.float32) - x.astype(jnp.float32).mean(0)) / jnp.sqrt(
    x.astype(jnp.float32).var(0) + normalization.EPSILON
  )
  np.testing.assert_allclose(out.astype(jnp.float32), expected, atol=2e-2)
