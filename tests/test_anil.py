"""ANIL: MAML over a head mask, against a hand-written head-only MAML."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmaml
from tests.utils import rel_l2


def test_body_is_not_adapted_and_meta_gradient_matches_head_only_maml(regression_task, variant):
  alpha = 0.1
  loss_fn, params, t = regression_task
  learner = jaxmaml.anil(loss_fn, inner_lr=alpha, num_steps=1)
  adapted, _ = variant(learner.adapt)(params, t.support)
  for name in ('Dense_0', 'Dense_1'):  # The body: unchanged by the inner loop.
    for leaf, ref in zip(
      jax.tree_util.tree_leaves(adapted[name]), jax.tree_util.tree_leaves(params[name])
    ):
      np.testing.assert_array_equal(leaf, ref)
  assert rel_l2(adapted['Dense_2'], params['Dense_2']) > 1e-4  # The head moved.

  def head_only_maml(params):  # Written out: one step on the head, body fixed.
    with_head = lambda head: {**params, 'Dense_2': head}
    head_grad = jax.grad(lambda h: loss_fn(with_head(h), t.support))(params['Dense_2'])
    head = jax.tree_util.tree_map(lambda h, g: h - alpha * g, params['Dense_2'], head_grad)
    return loss_fn(with_head(head), t.query)

  grad, _ = variant(learner.task_grad)(params, t)
  expected = jax.grad(head_only_maml)(params)
  assert rel_l2(grad, expected) < 1e-5
  # The body gets a meta-gradient (second order, through the head's step) and
  # the result is not full MAML's.
  assert float(jnp.abs(grad['Dense_0']['kernel']).max()) > 0
  maml_grad, _ = jaxmaml.maml(loss_fn, inner_lr=alpha, num_steps=1).task_grad(params, t)
  assert rel_l2(grad, maml_grad) > 1e-3


def test_explicit_head_and_bad_masks(regression_task):
  loss_fn, params, t = regression_task
  head = jax.tree_util.tree_map(lambda _: False, params)
  head['Dense_1'] = jax.tree_util.tree_map(lambda _: True, params['Dense_1'])
  adapted, _ = jaxmaml.anil(loss_fn, inner_lr=0.1, num_steps=1, head=head).adapt(params, t.support)
  np.testing.assert_array_equal(adapted['Dense_2']['kernel'], params['Dense_2']['kernel'])
  assert rel_l2(adapted['Dense_1'], params['Dense_1']) > 1e-5
  with pytest.raises(ValueError, match='mask must have the structure of params'):
    jaxmaml.anil(loss_fn, inner_lr=0.1, num_steps=1, head={'Dense_2': True}).adapt(
      params, t.support
    )
  with pytest.raises(ValueError, match='selects no parameter'):
    none = jax.tree_util.tree_map(lambda _: False, params)
    jaxmaml.anil(loss_fn, inner_lr=0.1, num_steps=1, head=none).adapt(params, t.support)
  with pytest.raises(TypeError, match='non-empty dict of layers'):
    jaxmaml.last_layer(jnp.zeros(3))
