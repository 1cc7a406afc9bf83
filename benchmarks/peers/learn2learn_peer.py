"""learn2learn 0.2.0's ``l2l.algorithms.MAML`` (``clone()``, ``adapt()``,
``.backward()`` per task) around the torch Conv4. Installing it on Python 3.11
takes a patched build: ``docs/benchmarks/peers_install.md``."""

import contextlib
import io

from benchmarks import peers
from benchmarks.peers import torch_net


def import_learn2learn():
  """``learn2learn``, with gym's import-time deprecation notice silenced."""
  with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    import learn2learn  # pylint: disable=import-outside-toplevel
  return learn2learn


def unavailable() -> str | None:
  reason = torch_net.unavailable()
  if reason:
    return reason
  try:
    import_learn2learn()
  except Exception as e:  # ImportError, or torchvision's RuntimeError.
    return f'import learn2learn failed: {type(e).__name__}: {e}'
  return None


def make(problem, params, tasks, dtype, bn_impl: str = 'native') -> peers.Peer:
  torch, F = torch_net.torch, torch_net.F
  l2l = import_learn2learn()
  dtype = torch_net.torch_dtype(dtype)
  module = torch_net.make_module(problem, params, dtype, bn_impl)
  batch = torch_net.torch_tasks(tasks, dtype)
  maml = l2l.algorithms.MAML(module, lr=problem.inner_lr, first_order=problem.first_order)
  num_tasks = problem.meta_batch_size

  def step():
    maml.zero_grad(set_to_none=True)
    total = 0.0
    for i in range(num_tasks):
      xs, ys, xq, yq = (t[i] for t in batch)
      learner = maml.clone()
      for _ in range(problem.inner_steps):
        learner.adapt(F.cross_entropy(learner(xs), ys))
      query_loss = F.cross_entropy(learner(xq), yq) / num_tasks
      query_loss.backward()
      total += query_loss.detach()
    return total, {k: p.grad for k, p in maml.module.named_parameters()}

  def evaluator(eval_tasks):
    eval_batch = torch_net.torch_tasks(eval_tasks, dtype)

    def run():
      accuracies = []
      for i in range(eval_batch[0].shape[0]):
        xs, ys, xq, yq = (t[i] for t in eval_batch)
        learner = maml.clone(first_order=True)
        for _ in range(problem.eval_inner_steps):
          learner.adapt(F.cross_entropy(learner(xs), ys))
        with torch.no_grad():
          accuracies.append(torch_net.accuracy(learner(xq), yq))
      return torch.stack(accuracies).numpy()

    return run

  return peers.Peer(
    step,
    lambda out: (float(out[0]), torch_net.flax_grads(out[1], params)),
    evaluator,
    {'bn_impl': bn_impl},
  )
