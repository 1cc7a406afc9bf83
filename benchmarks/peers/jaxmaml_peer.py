"""jaxmaml: ``meta_gradient`` of ``maml`` on the Flax Conv4, jitted.

The task mapping defaults to ``jaxmaml.default_task_map`` (what the
experiments use); ``task_map``/``batch_size`` override it.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import measure
from benchmarks import peers
from benchmarks import problems
import jaxmaml


def unavailable() -> str | None:
  return None


def learner(
  problem, num_steps: int, first_order: bool, conv: str = 'matmul', **kwargs
) -> jaxmaml.MetaLearner:
  loss_fn = jaxmaml.cross_entropy_loss(jaxmaml.apply_fn(problems.make_model(problem, conv)))
  return jaxmaml.maml(
    loss_fn,
    inner_lr=problem.inner_lr,
    num_steps=num_steps,
    has_aux=True,
    first_order=first_order,
    **kwargs,
  )


def meta_gradient_fn(
  problem, task_map: str, batch_size: int | None, conv: str = 'matmul', **kwargs
):
  """``fn(params, tasks) -> (meta_loss, grads)``, not jitted."""
  meta_learner = learner(problem, problem.inner_steps, problem.first_order, conv, **kwargs)

  def fn(params, tasks):
    grads, metrics = jaxmaml.meta_gradient(
      meta_learner, params, tasks, task_map=task_map, batch_size=batch_size
    )
    return jnp.mean(metrics['loss']), grads

  return fn


def model_flops(problem, params, tasks) -> float:
  """XLA's FLOP count of the meta-gradient with tasks vmapped and the inner loop
  unrolled (a loop body would be counted once): the model's arithmetic."""
  fn = meta_gradient_fn(problem, 'vmap', None, unroll=True)
  return float(jax.jit(fn).lower(params, tasks).cost_analysis()['flops'])


def make(
  problem,
  params,
  tasks,
  dtype,
  task_map: str | None = None,
  batch_size: int | None = None,
  conv: str = 'matmul',
) -> peers.Peer:
  x64 = np.dtype(dtype) == np.float64
  with jax.enable_x64(x64):
    cast = lambda x: jnp.asarray(x, dtype) if np.issubdtype(x.dtype, np.floating) else x
    params = jax.device_put(jax.tree_util.tree_map(cast, problems.unflatten(params)))
    tasks = jax.device_put(jax.tree_util.tree_map(cast, tasks))
    mapping = (
      jaxmaml.default_task_map(tasks)
      if task_map is None
      else {'task_map': task_map, 'batch_size': batch_size}
    )
    start = time.perf_counter()
    lowered = jax.jit(meta_gradient_fn(problem, **mapping, conv=conv)).lower(params, tasks)
    lower_s = time.perf_counter() - start
    start = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - start
    extras = {
      'lower_s': lower_s,
      'compile_s': compile_s,
      **measure.xla_memory(compiled),
      'model_flops': model_flops(problem, params, tasks),
    }

  def step():
    return jax.block_until_ready(compiled(params, tasks))

  def evaluator(eval_tasks):
    with jax.enable_x64(x64):
      eval_tasks = jax.device_put(jax.tree_util.tree_map(cast, eval_tasks))
    task_loss = learner(problem, problem.eval_inner_steps, True, conv).task_loss
    eval_mapping = jaxmaml.default_task_map(eval_tasks)

    def run():
      with jax.enable_x64(x64):
        return np.asarray(
          jaxmaml.evaluate(task_loss, params, eval_tasks, **eval_mapping)['accuracy']
        )

    return run

  return peers.Peer(
    step,
    lambda out: (float(out[0]), problems.flatten(out[1])),
    evaluator,
    {**mapping, 'conv': conv},
    extras,
  )
