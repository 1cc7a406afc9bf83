"""The measurements that run in a fresh Python process each, by kind.

``run_worker(kind, **kwargs)`` runs ``WORKERS[kind](**kwargs)`` through
``measure.run_fresh`` (``python -m benchmarks.harness --worker <JSON>``), so
that a measurement's peak RSS and compile caches are its own.
"""

import os

from benchmarks import measure
from benchmarks.harness import kernels
from benchmarks.harness import training

WORKERS = {
  'meta_step': kernels.measure_meta_step,
  'matmul': kernels.measure_matmul,
  'train': training.train,
}


def run_worker(kind: str, **kwargs) -> dict:
  """Runs ``WORKERS[kind](**kwargs)`` in a fresh Python process.

  A failure (e.g. out of memory) is returned as ``{**kwargs, 'error': [...]}``
  so that one configuration cannot lose the rest of the run. With
  ``num_devices > 1`` the process simulates that many CPU devices (the flag
  must be set before JAX starts; it does not affect GPUs or TPUs).
  """
  env = {}
  if kwargs.get('num_devices', 1) > 1:
    env['XLA_FLAGS'] = (
      os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_'
      f'count={kwargs["num_devices"]}'
    )
  row = measure.run_fresh('benchmarks.harness', {'kind': kind, **kwargs}, env=env)
  return {**kwargs, 'error': [row['error']]} if 'error' in row else row
