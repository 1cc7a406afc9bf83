"""Mixed precision in the experiments: the optimizer that skips a non-finite
meta-update and the check that stops the run (moved from test_precision:
library tests do not import experiments)."""

import jax.numpy as jnp
import pytest

from experiments import algorithms
from experiments import loop
import jaxmaml


def test_a_non_finite_meta_gradient_is_skipped_and_stops_the_run():
  """In low precision the experiments' optimizer skips a non-finite update
  (the parameters stay finite), and the run stops with a clear error."""
  optimizer = algorithms.make_optimizer(
    algorithms.AlgorithmConfig(precision='bfloat16'), num_iterations=10_000
  )
  loss = lambda w, batch: jnp.mean((batch[0] * w - batch[1]) ** 2)
  learner = jaxmaml.maml(loss, inner_lr=0.1, num_steps=1)
  step = jaxmaml.make_meta_step(learner, optimizer)
  state = jaxmaml.init_train_state(jnp.float32(1.0), optimizer)
  finite = jaxmaml.Task(
    support=(jnp.ones((2, 5)), jnp.ones((2, 5))), query=(jnp.ones((2, 5)), jnp.zeros((2, 5)))
  )
  state, _ = step(state, finite)
  loop.check_finite_updates(state.opt_state, 1)  # Nothing to report.
  moved = float(state.params)
  assert moved != 1.0
  overflow = finite._replace(query=(jnp.full((2, 5), jnp.inf), jnp.zeros((2, 5))))
  state, _ = step(state, overflow)
  assert float(state.params) == moved  # Skipped.
  with pytest.raises(
    FloatingPointError,
    match=r'1 meta-gradient\(s\) were not finite by '
    r'iteration 2.*--precision float32',
  ):
    loop.check_finite_updates(state.opt_state, 2)
  with pytest.raises(ValueError, match='precision must be one of'):
    algorithms.AlgorithmConfig(precision='float16')
