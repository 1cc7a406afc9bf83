"""Why MAML++ diverged on sinusoid K=5: its learned inner rates, by variant.

Trains MAML++ (5 steps, LSLR, MSL for 2,000 iterations, cosine outer schedule
as in ``--algorithm maml_plus_plus``) on sinusoid K=5 and prints, every 250
iterations, the training query loss and the range of the learned rates, until
10,000 iterations or the first non-finite loss. Variants: ``base``; ``nomsl``
(no multi-step loss); ``clipgrad`` (meta-gradient clipped to global norm 1);
``clamp`` (rates projected onto [0, 0.1] after each step).

  python docs/family/sinusoid/maml_plus_plus_study.py --variant base
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxmaml
from jaxmaml.data import sinusoid

VARIANTS = ('base', 'nomsl', 'clipgrad', 'clamp')


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--variant', choices=VARIANTS, default='base')
  parser.add_argument('--shots', type=int, default=5)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--iterations', type=int, default=10_000)
  args = parser.parse_args()

  model = jaxmaml.MLP(features=(40, 40, 1))
  params = model.init(jax.random.key(args.seed), jnp.zeros([1, 1]))['params']
  loss_fn = jaxmaml.mse_loss(jaxmaml.apply_fn(model))
  learner = jaxmaml.maml_plus_plus(
    loss_fn,
    inner_lr=0.01,
    num_steps=5,
    learn_inner_lr=True,
    msl_iterations=0 if args.variant == 'nomsl' else 2000,
  )
  optimizer = optax.adam(optax.cosine_decay_schedule(1e-3, args.iterations, alpha=1e-2))
  if args.variant == 'clipgrad':
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optimizer)
  state = jaxmaml.init_train_state(learner.init(params), optimizer)
  step = jaxmaml.make_meta_step(learner, optimizer)
  sample = jax.jit(
    lambda key: sinusoid.sample_tasks(
      key, num_tasks=25, num_support=args.shots, num_query=args.shots
    )
  )
  key = jax.random.key(100 + args.seed)
  for it in range(args.iterations):
    state, metrics = step(state, sample(jax.random.fold_in(key, it)))
    if args.variant == 'clamp':
      rates = jax.tree_util.tree_map(lambda r: jnp.clip(r, 0.0, 0.1), state.params['inner_lr'])
      state = state._replace(params={**state.params, 'inner_lr': rates})
    loss = float(jnp.mean(metrics['loss']))
    if it % 250 == 0 or not np.isfinite(loss):
      rates = np.stack(
        [np.asarray(r) for r in jax.tree_util.tree_leaves(state.params['inner_lr'])]
      )  # [parameter arrays, steps]
      print(
        f'{it} loss {loss:.3f} rates min {rates.min():.4f} max {rates.max():.4f} '
        f'per-step max {np.round(rates.max(0), 3)}',
        flush=True,
      )
      if not np.isfinite(loss):
        break


if __name__ == '__main__':
  main()
