"""Held-out evaluation: per-task metrics, adaptation curves, confidence intervals."""

import jax
import numpy as np
import pytest

import jaxmaml
from tests.utils import tiny_regression


def test_mean_confidence_interval_known_values():
  mean, half_width = jaxmaml.mean_confidence_interval([1.0, 2.0, 3.0, 4.0])
  assert mean == pytest.approx(2.5)
  # 1.959964 * sample std (1.2909944) / sqrt(4)
  assert half_width == pytest.approx(1.959964 * 1.2909944 / 2, rel=1e-6)
  _, wider = jaxmaml.mean_confidence_interval([1.0, 2.0, 3.0, 4.0], confidence=0.99)
  assert wider == pytest.approx(2.575829 * 1.2909944 / 2, rel=1e-6)


@pytest.mark.parametrize('values, confidence', [([1.0], 0.95), ([1.0, 2.0], 1.0)])
def test_mean_confidence_interval_errors(values, confidence):
  with pytest.raises(ValueError):
    jaxmaml.mean_confidence_interval(values, confidence)


def test_adaptation_curve_matches_evaluate_at_each_step():
  loss_fn, params, tasks = tiny_regression(jax.random.key(0), num_tasks=6)
  curve = jaxmaml.adaptation_curve(loss_fn, params, tasks, inner_lr=0.05, num_steps=4)
  assert curve['loss'].shape == (6, 5)
  before = jax.vmap(lambda q: loss_fn(params, q))(tasks.query)
  np.testing.assert_allclose(curve['loss'][:, 0], before, rtol=1e-5)
  for k in (1, 4):
    metrics = jaxmaml.evaluate(
      jaxmaml.maml(loss_fn, inner_lr=0.05, num_steps=k).task_loss, params, tasks
    )
    np.testing.assert_allclose(curve['loss'][:, k], metrics['loss'], rtol=1e-5)


def test_adaptation_curve_with_schedule():
  loss_fn, params, tasks = tiny_regression(jax.random.key(1), num_tasks=3)
  rates = np.array([0.1, 0.05, 0.02])
  curve = jaxmaml.adaptation_curve(loss_fn, params, tasks, inner_lr=rates, num_steps=3)
  metrics = jaxmaml.evaluate(
    jaxmaml.maml(loss_fn, inner_lr=rates, num_steps=3).task_loss, params, tasks
  )
  np.testing.assert_allclose(curve['loss'][:, 3], metrics['loss'], rtol=1e-5)


def test_evaluate_task_maps_agree():
  loss_fn, params, tasks = tiny_regression(jax.random.key(2), num_tasks=10)
  task_loss = jaxmaml.maml(loss_fn, inner_lr=0.05, num_steps=3).task_loss
  ref = jaxmaml.evaluate(task_loss, params, tasks)
  chunked = jaxmaml.evaluate(task_loss, params, tasks, task_map='map', batch_size=3)
  np.testing.assert_allclose(chunked['loss'], ref['loss'], rtol=1e-5)
