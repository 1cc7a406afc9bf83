"""What learn2learn's ``MAML.adapt`` does, written directly with ``torch.autograd``.

Per task: ``torch.autograd.grad(create_graph=not first_order)`` for each inner
update, the query loss, ``.backward()`` accumulated over tasks. For machines
where learn2learn does not install.
"""

from benchmarks import peers
from benchmarks.peers import torch_net

unavailable = torch_net.unavailable


def make(problem, params, tasks, dtype, bn_impl: str = 'native', device: str = 'cpu') -> peers.Peer:
  torch = torch_net.torch
  dtype = torch_net.torch_dtype(dtype)
  module = torch_net.make_module(problem, params, dtype, bn_impl, device)
  batch = torch_net.torch_tasks(tasks, dtype, device)
  weights = {
    k: v.requires_grad_(True) for k, v in torch_net.torch_params(params, dtype, device).items()
  }
  loss_fn = lambda p, x, y: torch_net.F.cross_entropy(
    torch.func.functional_call(module, p, (x,)), y
  )
  num_tasks = problem.meta_batch_size

  def adapt(x, y, num_steps, create_graph):
    adapted = weights
    for _ in range(num_steps):
      grads = torch.autograd.grad(
        loss_fn(adapted, x, y), list(adapted.values()), create_graph=create_graph
      )
      adapted = {k: p - problem.inner_lr * g for (k, p), g in zip(adapted.items(), grads)}
    return adapted

  def step():
    for w in weights.values():
      w.grad = None
    total = 0.0
    for i in range(num_tasks):
      xs, ys, xq, yq = (t[i] for t in batch)
      adapted = adapt(xs, ys, problem.inner_steps, not problem.first_order)
      query_loss = loss_fn(adapted, xq, yq) / num_tasks
      query_loss.backward()
      total += query_loss.detach()
    return total, {k: w.grad for k, w in weights.items()}

  def evaluator(eval_tasks):
    eval_batch = torch_net.torch_tasks(eval_tasks, dtype, device)

    def run():
      accuracies = []
      for i in range(eval_batch[0].shape[0]):
        xs, ys, xq, yq = (t[i] for t in eval_batch)
        adapted = adapt(xs, ys, problem.eval_inner_steps, False)
        with torch.no_grad():
          accuracies.append(
            torch_net.accuracy(torch.func.functional_call(module, adapted, (xq,)), yq)
          )
      return torch.stack(accuracies).cpu().numpy()

    return run

  result = lambda out: (float(out[0]), torch_net.flax_grads(out[1], params))
  options = {'bn_impl': bn_impl, 'device': device}
  return peers.Peer(torch_net.synchronized(step, device), result, evaluator, options)
