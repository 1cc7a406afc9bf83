"""``torch.func``: the meta-gradient of one task as ``torch.func.grad`` of the
query loss after inner steps that are themselves ``torch.func.grad`` of the
support loss (``functional_call`` on the torch Conv4; the inner graph is kept,
so the outer gradient is second order), ``torch.func.vmap``-ed over the
meta-batch (``vmap=True``) or in a Python loop."""

from benchmarks import peers
from benchmarks.peers import torch_net

unavailable = torch_net.unavailable


def make(
  problem, params, tasks, dtype, vmap: bool = True, bn_impl: str = 'native', device: str = 'cpu'
) -> peers.Peer:
  torch, F = torch_net.torch, torch_net.F
  dtype = torch_net.torch_dtype(dtype)
  module = torch_net.make_module(problem, params, dtype, bn_impl, device)
  batch = torch_net.torch_tasks(tasks, dtype, device)
  weights = torch_net.torch_params(params, dtype, device)
  num_tasks = problem.meta_batch_size

  def loss(p, x, y):
    return F.cross_entropy(torch.func.functional_call(module, p, (x,)), y)

  def adapt(p, x, y, num_steps, first_order):
    for _ in range(num_steps):
      grads = torch.func.grad(loss)(p, x, y)
      if first_order:
        grads = {k: g.detach() for k, g in grads.items()}
      p = {k: v - problem.inner_lr * grads[k] for k, v in p.items()}
    return p

  def task_loss(p, task):
    xs, ys, xq, yq = task
    return loss(adapt(p, xs, ys, problem.inner_steps, problem.first_order), xq, yq)

  def task_accuracy(p, task):
    xs, ys, xq, yq = task
    adapted = adapt(p, xs, ys, problem.eval_inner_steps, True)
    return torch_net.accuracy(torch.func.functional_call(module, adapted, (xq,)), yq)

  task_grad = torch.func.grad_and_value(task_loss)
  if vmap:
    mapped = torch.func.vmap(task_grad, in_dims=(None, 0))

    def step():
      grads, losses = mapped(weights, batch)
      return losses.mean(), {k: g.mean(0) for k, g in grads.items()}

    def evaluator(eval_tasks):
      eval_batch = torch_net.torch_tasks(eval_tasks, dtype, device)
      mapped_accuracy = torch.func.vmap(task_accuracy, in_dims=(None, 0))
      return lambda: mapped_accuracy(weights, eval_batch).detach().cpu().numpy()
  else:

    def step():
      total, losses = None, []
      for i in range(num_tasks):
        grads, value = task_grad(weights, tuple(t[i] for t in batch))
        total = grads if total is None else {k: total[k] + g for k, g in grads.items()}
        losses.append(value)
      return torch.stack(losses).mean(), {k: g / num_tasks for k, g in total.items()}

    def evaluator(eval_tasks):
      eval_batch = torch_net.torch_tasks(eval_tasks, dtype, device)
      return lambda: (
        torch.stack(
          [
            task_accuracy(weights, tuple(t[i] for t in eval_batch))
            for i in range(eval_batch[0].shape[0])
          ]
        )
        .detach()
        .cpu()
        .numpy()
      )

  result = lambda out: (float(out[0]), torch_net.flax_grads(out[1], params))
  options = {'vmap': vmap, 'bn_impl': bn_impl, 'device': device}
  return peers.Peer(torch_net.synchronized(step, device), result, evaluator, options)
