"""ProtoNets against NumPy references, finite differences and a meta-step."""

import jax
import jax.numpy as jnp
from jax.test_util import check_grads
import numpy as np
import optax
import pytest

import jaxmaml
from jaxmaml.protonets import protonets
from jaxmaml.protonets import squared_euclidean_logits
from tests.utils import rel_l2

NUM_WAYS = 3


def _embedding(key, dim_in=2, dim_out=4, dtype=jnp.float32):
  """A tiny tanh MLP embedding: (embed_fn, params)."""
  model = jaxmaml.MLP(features=(8, dim_out), activation=jnp.tanh)
  params = model.init(key, jnp.zeros([1, dim_in]))['params']
  return jaxmaml.apply_fn(model), jax.tree_util.tree_map(lambda p: p.astype(dtype), params)


def _task(seed, num_support=7, num_query=6, dtype=np.float32):
  """One task with unequal, shuffled classes (every class has a support example).

  Drawn with a seeded NumPy generator: test data without a dispatch per op.
  """
  rng = np.random.default_rng(seed)
  centers = 2.0 * rng.normal(size=(NUM_WAYS, 2))
  support_labels = rng.permutation(
    np.concatenate([np.arange(NUM_WAYS), rng.integers(0, NUM_WAYS, num_support - NUM_WAYS)])
  )
  query_labels = rng.integers(0, NUM_WAYS, num_query)
  x = lambda labels: (centers[labels] + rng.normal(size=(len(labels), 2))).astype(dtype)
  return jaxmaml.Task(
    support=(x(support_labels), support_labels.astype(np.int32)),
    query=(x(query_labels), query_labels.astype(np.int32)),
  )


def _tasks(seeds, dtype=np.float32):
  """A meta-batch: leaves ``[len(seeds), n, ...]``."""
  return jax.tree_util.tree_map(lambda *x: np.stack(x), *[_task(s, dtype=dtype) for s in seeds])


def _numpy_reference(embed_fn, params, t):
  """Prototypes, query logits, loss and accuracy in NumPy (float64)."""
  (s_x, s_y), (q_x, q_y) = t.support, t.query
  s_emb = np.asarray(embed_fn(params, s_x), np.float64)
  q_emb = np.asarray(embed_fn(params, q_x), np.float64)
  s_y, q_y = np.asarray(s_y), np.asarray(q_y)
  prototypes = np.stack([s_emb[s_y == c].mean(axis=0) for c in range(NUM_WAYS)])
  logits = -np.array([[np.sum((q - p) ** 2) for p in prototypes] for q in q_emb])
  shifted = logits - logits.max(axis=1, keepdims=True)
  log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
  loss = -np.mean(log_probs[np.arange(len(q_y)), q_y])
  accuracy = np.mean(logits.argmax(axis=1) == q_y)
  return prototypes, q_emb, logits, loss, accuracy


def test_matches_numpy_reference(variant):
  """Prototypes are the per-class means; logits are minus squared distances;
  the loss is the log-softmax cross-entropy; accuracy is argmax agreement."""
  embed_fn, params = _embedding(jax.random.key(0))
  t = _task(1)
  learner = protonets(embed_fn, num_ways=NUM_WAYS)
  prototypes_ref, q_emb, logits_ref, loss_ref, accuracy_ref = _numpy_reference(embed_fn, params, t)

  prototypes, support_losses = variant(learner.adapt)(params, t.support)
  np.testing.assert_allclose(prototypes, prototypes_ref, rtol=1e-5, atol=1e-6)
  assert support_losses.shape == (0,)
  logits = variant(squared_euclidean_logits)(jnp.asarray(q_emb, jnp.float32), prototypes)
  np.testing.assert_allclose(logits, logits_ref, rtol=1e-5, atol=1e-5)
  loss, metrics = variant(learner.task_loss)(params, t)
  np.testing.assert_allclose(loss, loss_ref, rtol=1e-5)
  assert set(metrics) == {'loss', 'accuracy', 'support_losses'}
  np.testing.assert_allclose(metrics['loss'], loss_ref, rtol=1e-5)
  np.testing.assert_allclose(metrics['accuracy'], accuracy_ref)
  assert metrics['support_losses'].shape == (0,)


def test_meta_gradient_matches_finite_differences():
  """check_grads order 2, float64, over a meta-batch of two tasks."""
  with jax.enable_x64(True):
    embed_fn, params = _embedding(jax.random.key(2), dtype=jnp.float64)
    tasks = _tasks([2, 3], dtype=np.float64)
    learner = protonets(embed_fn, num_ways=NUM_WAYS)
    meta_loss = lambda p: jnp.mean(jax.vmap(lambda t: learner.task_loss(p, t)[0])(tasks))
    meta_loss = jax.jit(meta_loss)
    check_grads(meta_loss, (params,), order=2, modes=['rev'], eps=1e-4, atol=1e-5, rtol=1e-5)
    # The gradient that check_grads just validated is what task_grad returns.
    grads, _ = jax.jit(lambda p: jaxmaml.meta_gradient(learner, p, tasks))(params)
    assert rel_l2(grads, jax.grad(meta_loss)(params)) < 1e-12


def _meta_steps(jit, num_meta_steps=3):
  embed_fn, params = _embedding(jax.random.key(4))
  tasks = _tasks([4, 5, 6, 7])
  # SGD, not Adam: the output bias of the embedding shifts queries and
  # prototypes alike, so its gradient is 0 up to rounding, which Adam would
  # normalise into full-size steps that differ between jit and no jit.
  optimizer = optax.sgd(0.5)
  step = jaxmaml.make_meta_step(protonets(embed_fn, num_ways=NUM_WAYS), optimizer, jit=jit)
  state = jaxmaml.init_train_state(params, optimizer)
  losses = []
  for _ in range(num_meta_steps):
    state, metrics = step(state, tasks)
    losses.append(float(metrics['loss'].mean()))
  return state, losses, metrics


@pytest.mark.slow  # ~14 s; the default suite stays under 10 min (docs/testing.md).
def test_meta_step_lowers_loss_jit_equals_no_jit():
  """Meta-training the embedding on separable tasks lowers the query loss, the
  same with and without jit."""
  (s_jit, l_jit, metrics), (s_eager, l_eager, _) = _meta_steps(True), _meta_steps(False)
  assert rel_l2(s_jit.params, s_eager.params) < 1e-5
  np.testing.assert_allclose(l_jit, l_eager, rtol=1e-5)
  assert l_jit[-1] < 0.7 * l_jit[0], l_jit
  assert metrics['accuracy'].shape == (4,)
  assert metrics['support_losses'].shape == (4, 0)


def test_conv4_embedding():
  """Conv4 without its head embeds 28x28 images into 64 features: 2 ways, 1
  shot (shapes only, traced with eval_shape: no convolution is run)."""
  model = jaxmaml.Conv4(None)
  images = jnp.zeros((4, 28, 28, 1))
  params = jax.eval_shape(model.init, jax.random.key(7), images[:2])['params']
  labels = jnp.array([0, 1])
  t = jaxmaml.Task(support=(images[:2], labels), query=(images[2:], labels))
  learner = protonets(jaxmaml.apply_fn(model), num_ways=2)
  prototypes, _ = jax.eval_shape(learner.adapt, params, t.support)
  assert prototypes.shape == (2, 64)
  grads, metrics = jax.eval_shape(learner.task_grad, params, t)
  assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(params)
  assert metrics['loss'].shape == metrics['accuracy'].shape == ()


@pytest.mark.parametrize(
  'kwargs, error, match',
  [
    ({'num_ways': 0}, ValueError, 'num_ways'),
    ({'num_ways': -2}, ValueError, 'num_ways'),
    ({'num_ways': 2.5}, TypeError, 'num_ways'),
    ({'num_ways': True}, TypeError, 'num_ways'),
  ],
)
def test_bad_arguments(kwargs, error, match):
  with pytest.raises(error, match=match):
    protonets(lambda p, x: x, **kwargs)


def test_bad_inputs():
  """Float labels and embeddings that are not [n, dim] are named, when tracing."""
  t = _task(8)
  float_labels = t._replace(support=(t.support[0], t.support[1].astype(jnp.float32)))
  with pytest.raises(TypeError, match='support labels must be integers'):
    jax.eval_shape(protonets(lambda p, x: x, num_ways=NUM_WAYS).task_loss, None, float_labels)
  with pytest.raises(ValueError, match=r'embed_fn must return embeddings \[n, dim\]'):
    jax.eval_shape(protonets(lambda p, x: x[:, 0], num_ways=NUM_WAYS).task_loss, None, t)
