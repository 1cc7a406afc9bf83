"""Where iMAML's sinusoid K=5 training first goes non-finite.

iMAML as ``--algorithm imaml --train_inner_steps 10 --imaml_reg 2`` (inner lr
0.01, 5 CG steps, Adam 1e-3, meta-batch 25), optionally with its authors'
damping (``--damped``: cg_damping 1, reg_damping 10). Prints every 500
iterations the largest query loss, first and last support loss and CG
residual in the meta-batch, and how many meta-batches so far had a task with
CG residual above 1 (a sign of an indefinite system); at the first
non-finite metric, the failing task's support losses before each inner step.

  python docs/family/sinusoid/imaml_study.py --damped
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxmaml
from jaxmaml.data import sinusoid


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--damped', action='store_true')
  parser.add_argument('--iterations', type=int, default=10_000)
  args = parser.parse_args()

  model = jaxmaml.MLP(features=(40, 40, 1))
  params = model.init(jax.random.key(0), jnp.zeros([1, 1]))['params']
  loss_fn = jaxmaml.mse_loss(jaxmaml.apply_fn(model))
  learner = jaxmaml.imaml(
    loss_fn,
    inner_lr=0.01,
    num_steps=10,
    reg=2.0,
    cg_steps=5,
    cg_damping=1.0 if args.damped else 0.0,
    reg_damping=10.0 if args.damped else 0.0,
  )
  optimizer = optax.adam(1e-3)
  state = jaxmaml.init_train_state(params, optimizer)
  step = jaxmaml.make_meta_step(learner, optimizer)
  sample = jax.jit(lambda key: sinusoid.sample_tasks(key, num_tasks=25, num_support=5, num_query=5))
  key, indefinite = jax.random.key(7), 0
  for it in range(args.iterations):
    state, metrics = step(state, sample(jax.random.fold_in(key, it)))
    support = np.asarray(metrics['support_losses'])  # [tasks, steps]
    residual, query = np.asarray(metrics['cg_residual']), np.asarray(metrics['loss'])
    finite = np.isfinite(query) & np.isfinite(residual) & np.isfinite(support).all(1)
    indefinite += bool(np.nanmax(residual) > 1.0)
    if it % 500 == 0 or not finite.all():
      print(
        f'{it} query max {np.nanmax(query):.3f} support first/last max '
        f'{np.nanmax(support[:, 0]):.3f}/{np.nanmax(support[:, -1]):.3f} '
        f'cg residual max {np.nanmax(residual):.3g}; meta-batches with a residual > 1 '
        f'so far: {indefinite}',
        flush=True,
      )
    if not finite.all():
      task = int(np.argmin(finite))
      print(
        f'first non-finite task {task}: support losses before each inner step '
        f'{support[task]}, cg residual {residual[task]}, query loss {query[task]}'
      )
      break


if __name__ == '__main__':
  main()
