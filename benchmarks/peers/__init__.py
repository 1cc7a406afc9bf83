"""jaxmaml and its PyTorch peers behind one interface, by name.

Each implementation is a module with ``unavailable() -> str | None`` (why it
cannot run here) and ``make(problem, params, tasks, dtype) -> Peer``. Every one
gets the same Flax parameters and meta-batch (``benchmarks.problems``) and
returns its meta-gradient in the Flax layout, so that they can be compared to
each other in float64. ``python -m benchmarks.peers`` runs the shape table.
"""

from collections.abc import Callable
import importlib
from typing import Any, NamedTuple

IMPLEMENTATIONS = {
  'jaxmaml': 'jaxmaml_peer',
  'learn2learn': 'learn2learn_peer',  # l2l.algorithms.MAML around the torch Conv4.
  'torch_autograd_loop': 'torch_autograd',  # learn2learn's algorithm, written directly.
  'torch_func_vmap': 'torch_func',  # torch.func.grad of torch.func.grad, vmapped.
  'torch_func_loop': 'torch_func',  # The same per-task function in a Python loop.
}
PEERS = tuple(name for name in IMPLEMENTATIONS if name != 'jaxmaml')


class Peer(NamedTuple):
  """One implementation on fixed inputs.

  Attributes:
    step: runs the meta-gradient of the meta-batch, blocking until it is
      done; returns it in the implementation's own form.
    result: ``step``'s output as ``(meta_loss, flat Flax-layout gradients)``.
    evaluator: ``evaluator(tasks) -> run``; ``run()`` adapts to every task of
      ``tasks`` for ``problem.eval_inner_steps`` steps (no outer gradient) and
      returns the query accuracies ``[num_tasks]`` as numpy.
    options: what the implementation ran with (e.g. jaxmaml's task mapping).
    extras: measurements only this implementation has (jaxmaml: compile time,
      XLA's memory analysis, model FLOPs).
  """

  step: Callable[[], Any]
  result: Callable[[Any], tuple[float, dict]]
  evaluator: Callable[[Any], Callable[[], Any]]
  options: dict
  extras: dict | None = None


def get(name: str):
  """The module of implementation ``name``."""
  if name not in IMPLEMENTATIONS:
    raise ValueError(f'Unknown implementation {name!r}; known: {tuple(IMPLEMENTATIONS)}.')
  return importlib.import_module(f'benchmarks.peers.{IMPLEMENTATIONS[name]}')


def make(name: str, problem, params, tasks, dtype, **options) -> Peer:
  """Implementation ``name`` on ``problem`` with ``params`` and ``tasks`` in ``dtype``."""
  module = get(name)
  if name.startswith('torch_func'):
    options = {'vmap': name == 'torch_func_vmap', **options}
  return module.make(problem, params, tasks, dtype, **options)


def unavailable(name: str) -> str | None:
  """Why implementation ``name`` cannot run here, or None."""
  return get(name).unavailable()
