"""Timing, threads, memory and fresh processes, shared by the benchmarks."""

from collections.abc import Callable
import contextlib
import json
import math
import os
import resource
import subprocess
import sys
import time

import numpy as np


def time_calls(fn: Callable[[], object], warmup: int, repeats: int) -> dict:
  """Seconds of ``fn()`` (which must block until its result is ready).

  Returns:
    ``first_call_s`` (the first, untimed-for-steady-state call) and the median,
    min and max over ``repeats`` calls after ``warmup`` calls in all.
  """
  start = time.perf_counter()
  fn()
  first = time.perf_counter() - start
  for _ in range(warmup - 1):
    fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return {
    'first_call_s': first,
    'step_s_median': float(np.median(times)),
    'step_s_min': float(np.min(times)),
    'step_s_max': float(np.max(times)),
    'repeats': repeats,
  }


def time_blocks(
  fn: Callable[..., object],
  min_block_s: float,
  repeats: int,
  *,
  carry: tuple | None = None,
  warmup_blocks: int = 0,
) -> list[float]:
  """Seconds per call of ``fn``, over ``repeats`` timed blocks of at least
  ``min_block_s`` each (calls too short to time alone).

  The first call, untimed, sets the calls per block; ``warmup_blocks``
  untimed blocks follow it.

  Args:
    fn: without ``carry``, ``fn()``, which must block until its result is
      ready. With ``carry``, a JAX step ``fn(*carry) -> carry`` (e.g. a jitted
      meta-step of a train state): each call feeds the next and is dispatched
      without waiting, as in a training loop; a block ends with
      ``jax.block_until_ready`` of the last carry.
    min_block_s: the least seconds of a block.
    repeats: timed blocks.
    carry: the first arguments of ``fn``, or None.
    warmup_blocks: untimed blocks before the timed ones.

  Returns:
    ``repeats`` seconds per call, one per timed block.
  """
  if carry is None:
    call, wait = fn, lambda: None
  else:
    import jax  # pylint: disable=import-outside-toplevel

    state = [carry]

    def call():
      state[0] = fn(*state[0])

    wait = lambda: jax.block_until_ready(state[0])
  start = time.perf_counter()
  call()
  wait()
  calls = max(1, math.ceil(min_block_s / max(time.perf_counter() - start, 1e-6)))
  times = []
  for block in range(warmup_blocks + repeats):
    start = time.perf_counter()
    for _ in range(calls):
      call()
    wait()
    if block >= warmup_blocks:
      times.append((time.perf_counter() - start) / calls)
  return times


def peak_rss_bytes() -> int:
  """This process's peak resident set so far (Linux reports KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def device_peak_bytes() -> int | None:
  """The first JAX device's allocator peak, where the backend reports one
  (GPU, TPU; None on CPU)."""
  import jax  # pylint: disable=import-outside-toplevel

  stats = jax.devices()[0].memory_stats()
  return None if not stats else stats.get('peak_bytes_in_use')


def xla_memory(compiled) -> dict:
  """XLA's memory analysis of a compiled computation (``jax.stages.Compiled``).

  Returns:
    ``xla_temp_bytes``, its scratch memory, and ``xla_peak_bytes``: scratch,
    arguments and outputs, minus the donated arguments that outputs alias.
  """
  memory = compiled.memory_analysis()
  return {
    'xla_temp_bytes': int(memory.temp_size_in_bytes),
    'xla_peak_bytes': int(
      memory.temp_size_in_bytes
      + memory.argument_size_in_bytes
      + memory.output_size_in_bytes
      - memory.alias_size_in_bytes
    ),
  }


def limit_threads(threads: int) -> dict:
  """Binds this process to ``threads`` CPUs, for XLA and torch alike.

  XLA:CPU has no thread-count flag: it sizes its pool from the CPU affinity
  when its backend starts, so call this before JAX computes anything (a fresh
  process per measurement does). torch also gets ``set_num_threads``.

  Returns:
    ``{'threads', 'cpu_affinity', 'torch_threads'}``.
  """
  cpus = sorted(os.sched_getaffinity(0))
  if threads < len(cpus):
    os.sched_setaffinity(0, cpus[:threads])
  record = {'threads': threads, 'cpu_affinity': sorted(os.sched_getaffinity(0))}
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    return record
  torch.set_num_threads(threads)
  record['torch_threads'] = torch.get_num_threads()
  return record


def run_fresh(
  module: str, spec: dict, timeout_s: float | None = None, env: dict | None = None
) -> dict:
  """``python -m module --worker <spec as JSON>`` in a fresh process.

  The worker prints its result as one JSON line, last. A failure (an error,
  out of memory, ``timeout_s``) is returned as ``{'error': ...}`` so that one
  configuration cannot lose the rest of a run.
  """
  try:
    proc = subprocess.run(
      [sys.executable, '-m', module, '--worker', json.dumps(spec)],
      capture_output=True,
      text=True,
      timeout=timeout_s,
      env={**os.environ, **(env or {})},
    )
  except subprocess.TimeoutExpired:
    return {'error': f'timed out after {timeout_s:.0f} s'}
  if proc.returncode != 0:
    lines = proc.stderr.strip().splitlines()
    return {'error': lines[-1] if lines else f'exit status {proc.returncode}'}
  return json.loads(proc.stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def paused(pids: list[int]):
  """Stops the processes ``pids`` (SIGSTOP) for the duration, then resumes them."""
  import signal  # pylint: disable=import-outside-toplevel

  for pid in pids:
    os.kill(pid, signal.SIGSTOP)
  try:
    yield
  finally:
    for pid in pids:
      os.kill(pid, signal.SIGCONT)
