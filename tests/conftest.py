"""Fixtures and markers shared by the test files.

``variant`` runs a test with and without ``jax.jit``; ``regression`` and
``regression_task`` are the tiny problems several files test on; the
``devices(n)`` marker skips a test on fewer than ``n`` devices. Plain helpers
(``rel_l2``, ``tiny_regression``, the conformance problems, ...) are in
``tests/utils.py``.
"""

import jax
import pytest

from tests.utils import task
from tests.utils import tiny_regression


def pytest_configure(config):
  config.addinivalue_line(
    'markers',
    'devices(n): needs n devices, skipped on fewer (tests/utils.py: '
    'run_on_simulated_devices runs them on simulated CPU devices)',
  )


def pytest_runtest_setup(item):
  marker = item.get_closest_marker('devices')
  if marker is not None and jax.device_count() < marker.args[0]:
    pytest.skip(f'needs {marker.args[0]} devices; run by test_on_simulated_devices in a subprocess')


def _without_jit(fn, **unused_jit_kwargs):
  """The eager variant: ``fn`` itself; ``jax.jit``'s keyword arguments are ignored."""
  return fn


# The eager variants are slow-marked: about 200 s of the default suite on 2 cores.
@pytest.fixture(
  params=[pytest.param(_without_jit, marks=pytest.mark.slow), jax.jit], ids=['eager', 'jit']
)
def variant(request):
  """Runs the test twice, as ``chex.variants(without_jit=True, with_jit=True)``:
  ``variant(fn, **jit_kwargs)`` is ``fn`` itself, then ``jax.jit(fn, **jit_kwargs)``.

  A fixture rather than ``chex.variants``, which generates methods of a
  ``chex.TestCase`` (absltest) class: these tests are pytest functions with
  ``parametrize`` and fixtures such as ``tmp_path``, which ``unittest`` classes
  do not get. Select one variant with ``-k jit`` or ``-k eager``; the eager
  one runs with the slow tests (``make test-slow``).
  """
  return request.param


@pytest.fixture
def regression():
  """``tiny_regression(key(0))``: ``(loss_fn, params, tasks)``, 4 sinusoid tasks."""
  return tiny_regression(jax.random.key(0))


@pytest.fixture
def regression_task():
  """Task 0 of a 3-task ``tiny_regression(key(0))``: ``(loss_fn, params, task)``."""
  loss_fn, params, tasks = tiny_regression(jax.random.key(0), num_tasks=3)
  return loss_fn, params, task(tasks, 0)
