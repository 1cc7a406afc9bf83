"""Meta-trains MAML (or ``config.algo.algorithm``) and the pretrained baseline on
sinusoids, and evaluates both.

``train_and_evaluate(config, workdir)`` is the whole experiment: for every K in
``config.shots`` it meta-trains the algorithm, trains the paper's "pretrained" baseline
(one network regressing all tasks jointly, then fine-tuned with a tuned step
size) on the same stream of tasks, and reports the test MSE after 0..10
gradient steps on ``config.num_test_tasks`` held-out tasks with 95% confidence
intervals (for algorithms whose adaptation is not plain gradient descent on
every parameter at ``inner_lr``, after 0 and ``eval_inner_steps`` steps of
their own evaluation learner). It writes ``results.json``, ``mse_vs_steps.png`` and
``predictions.png`` to ``workdir``; training checkpoints there and resumes.
"""

import functools
import json
import operator
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import algorithms
from experiments import cli
from experiments import loop
from experiments.sinusoid.config import Config
import jaxmaml
from jaxmaml.data import sinusoid
from jaxmaml.kit import identity

# The fields that change what training computes. A checkpoint resumes only
# with the same values; num_iterations may grow (the task stream is keyed by
# iteration, so 10k + 60k resumed equals 70k in one go).
TRAINING_FIELDS = ('meta_batch_size', 'num_query', 'hidden', 'seed') + algorithms.TRAINING_FIELDS
# Algorithms whose adaptation is plain gradient descent at inner_lr on every
# parameter (Reptile with its default inner SGD): their whole MSE-vs-steps
# curve is computed in one pass.
CURVE_ALGORITHMS = ('maml', 'reptile')


def _plain_gd(config: Config) -> bool:
  return config.algo.algorithm in CURVE_ALGORITHMS and config.algo.inner_optimizer == 'sgd'


DIVERGED_MSE = 100.0


def make_model(config: Config) -> jaxmaml.MLP:
  return jaxmaml.MLP(features=(*config.hidden, 1))


def joint_training(loss_fn: jaxmaml.LossFn) -> jaxmaml.MetaLearner:
  """The pretrained baseline as a learner: no inner loop, loss on every point."""

  def task_loss(params, task):
    both = jax.tree_util.tree_map(lambda s, q: jnp.concatenate([s, q]), task.support, task.query)
    loss = loss_fn(params, both)
    return loss, {'loss': loss}

  return jaxmaml.MetaLearner(
    init=identity,
    adapt=lambda params, support: (params, jnp.zeros([0])),
    task_loss=task_loss,
    task_grad=jaxmaml.grad_of(task_loss),
  )


def _keys(config: Config, shots: int) -> dict[str, jax.Array]:
  key = jax.random.fold_in(jax.random.key(config.seed), shots)
  init, train, val, test = jax.random.split(key, 4)
  return {'init': init, 'train': train, 'val': val, 'test': test}


def train(
  learner: jaxmaml.MetaLearner,
  optimizer,
  params: jaxmaml.Params,
  config: Config,
  shots: int,
  train_key: jax.Array,
  checkpoint_path: str,
  desc: str,
) -> tuple[jaxmaml.Params, dict]:
  """Runs ``config.num_iterations`` meta-steps (resuming from a checkpoint)."""
  flat, defaults = cli.flatten(config), cli.flatten(Config())
  checkpoints = loop.Checkpoints(
    path=checkpoint_path,
    config={
      **{k: flat[k] for k in TRAINING_FIELDS},
      'outer_schedule_iterations': algorithms.schedule_iterations(
        config.algo, config.num_iterations
      ),
    },
    msgpack_path=checkpoint_path + '.ckpt',  # Written before Orbax.
    added_defaults={
      **{k: defaults[k] for k in algorithms.ADDED_FIELDS},
      'outer_schedule_iterations': None,
    },
    metadata={'shots': shots},
  )
  meta_step = loop.with_finite_flag(jaxmaml.make_meta_step(learner, optimizer))
  sample = jax.jit(
    functools.partial(
      sinusoid.sample_tasks,
      num_tasks=config.meta_batch_size,
      num_support=shots,
      num_query=config.num_query or shots,
    )
  )
  run = loop.run(
    lambda state, it: meta_step(state, sample(jax.random.fold_in(train_key, it))),
    loop.resume(checkpoints, jaxmaml.init_train_state(learner.init(params), optimizer)),
    checkpoints,
    loop.Cadence(config.num_iterations, config.log_every, config.checkpoint_every),
    desc=desc,
  )
  return run.state.params, {
    'iterations': config.num_iterations,
    'train_time_s': run.progress['wall_time_s'],
    'final_train_loss': run.smoothed,
  }


def summarize_curve(losses: jax.Array) -> dict:
  """``[num_tasks, num_steps + 1]`` per-task MSE -> statistics per step.

  Mean and 95% CI as papers report them, plus the median and the number of
  tasks whose fine-tuning diverged, which a mean hides: an MSE above
  ``DIVERGED_MSE`` or not finite (predicting zero gives at most 12.5 on these
  tasks, amplitude**2 / 2).
  """
  losses = np.asarray(losses, np.float64)
  with np.errstate(invalid='ignore', over='ignore'):  # Diverged tasks: inf.
    stats = [jaxmaml.mean_confidence_interval(col) for col in losses.T]
  return {
    'mse_mean': [m for m, _ in stats],
    'mse_ci95': [c for _, c in stats],
    'mse_median': np.median(losses, axis=0).tolist(),
    'num_diverged': (~(losses <= DIVERGED_MSE)).sum(axis=0).tolist(),
  }


def tune_fine_tune_lr(loss_fn, params, val_tasks, config: Config) -> tuple[float, dict]:
  """The baseline's step size: lowest validation MSE averaged over steps 1..N."""
  scores = {}
  for lr in config.pretrained_lr_grid:
    curve = jaxmaml.adaptation_curve(
      loss_fn, params, val_tasks, inner_lr=lr, num_steps=config.algo.eval_inner_steps
    )
    score = float(jnp.mean(curve['loss'][:, 1:]))
    scores[lr] = score if np.isfinite(score) else float('inf')
  return min(scores, key=scores.get), scores


def run_shots(config: Config, shots: int, workdir: str) -> tuple[dict, dict]:
  """Trains and evaluates the algorithm and the baseline for one K."""
  model = make_model(config)
  loss_fn = jaxmaml.mse_loss(jaxmaml.apply_fn(model))
  keys = _keys(config, shots)
  init_params = model.init(keys['init'], jnp.zeros([1, 1]))['params']
  name = config.algo.algorithm
  learners = algorithms.make_learners(
    config.algo, jaxmaml.apply_fn(model), jaxmaml.mse_loss, has_aux=False
  )
  meta_params, meta_info = train(
    learners.training,
    algorithms.make_optimizer(config.algo, config.num_iterations),
    init_params,
    config,
    shots,
    keys['train'],
    os.path.join(workdir, f'{name}_k{shots}'),
    f'{name} K={shots}',
  )
  pre_params, pre_info = train(
    joint_training(loss_fn),
    optax.adam(config.algo.outer_lr),
    init_params,
    config,
    shots,
    keys['train'],
    os.path.join(workdir, f'pretrained_k{shots}'),
    f'pretrained K={shots}',
  )

  val_tasks = sinusoid.sample_tasks(keys['val'], config.num_val_tasks, shots, config.num_test_query)
  fine_tune_lr, lr_scores = tune_fine_tune_lr(loss_fn, pre_params, val_tasks, config)
  test_tasks = sinusoid.sample_tasks(
    keys['test'], config.num_test_tasks, shots, config.num_test_query
  )
  all_steps = list(range(config.algo.eval_inner_steps + 1))
  if _plain_gd(config):
    curve, steps = (
      jaxmaml.adaptation_curve(
        loss_fn,
        meta_params,
        test_tasks,
        inner_lr=config.algo.inner_lr,
        num_steps=config.algo.eval_inner_steps,
      )['loss'],
      all_steps,
    )
  else:
    curve = jaxmaml.evaluate(learners.evaluation.task_loss, meta_params, test_tasks)['loss'][
      :, None
    ]
    steps = [config.algo.eval_inner_steps]
  pre_curve = jaxmaml.adaptation_curve(
    loss_fn, pre_params, test_tasks, inner_lr=fine_tune_lr, num_steps=config.algo.eval_inner_steps
  )['loss']
  result = {
    name: {
      **summarize_curve(curve),
      **meta_info,
      'steps': steps,
      'fine_tune_lr': config.algo.inner_lr,
    },
    'pretrained': {
      **summarize_curve(pre_curve),
      **pre_info,
      'steps': all_steps,
      'fine_tune_lr': fine_tune_lr,
      'fine_tune_lr_validation_mse': {str(k): v for k, v in lr_scores.items()},
    },
  }
  trained = {
    'model': model,
    name: meta_params,
    'pretrained': pre_params,
    'eval_adapt': learners.evaluation.adapt,
    'fine_tune_lr': fine_tune_lr,
    'test_key': keys['test'],
  }
  return result, trained


def plot_curves(results: dict, config: Config, path: str) -> None:
  """MSE vs gradient steps, the algorithm vs pretrained, one panel per K (as in the paper)."""
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  methods = ((config.algo.algorithm, 'tab:red'), ('pretrained', 'tab:blue'))
  fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4), squeeze=False)
  for ax, (name, res) in zip(axes[0], results.items()):
    for method, color in methods:
      mean = np.array(res[method]['mse_mean'])
      ci = np.array(res[method]['mse_ci95'])
      ax.plot(res[method]['steps'], mean, 'o-', color=color, label=method)
      ax.fill_between(res[method]['steps'], mean - ci, mean + ci, color=color, alpha=0.2)
    title = f'{name}, {config.num_test_tasks} test tasks (95% CI)'
    diverged = max(res[m]['num_diverged'][-1] for m, _ in methods)
    if diverged:
      title += f'\n(up to {diverged} diverged task(s): mean off the chart)'
    ax.set(title=title, xlabel='number of gradient steps', ylabel='mean squared error')
    tops = [res[m]['mse_mean'][0] + res[m]['mse_ci95'][0] for m, _ in methods]
    ax.set_ylim(0, 1.15 * max([t for t in tops if np.isfinite(t)], default=1.0))
    ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def _fine_tune(loss_fn, params, support, lr: float, steps: int):
  """``params`` after ``steps`` steps of SGD at ``lr`` on ``support``."""
  if not steps:
    return params
  return jaxmaml.make_adapt(loss_fn, optax.sgd(lr), num_steps=steps)(params, support)[0]


def plot_predictions(trained: dict, config: Config, path: str, num_tasks: int = 3) -> None:
  """Predicted vs true curves for a few test tasks (the paper's Figure 2)."""
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  name, last = config.algo.algorithm, config.algo.eval_inner_steps
  rows = list(trained.items())
  fig, axes = plt.subplots(
    len(rows), num_tasks, figsize=(4.5 * num_tasks, 3.5 * len(rows)), squeeze=False
  )
  x_grid = jnp.linspace(-5.0, 5.0, 200)[:, None]
  for row, (shots, t) in zip(axes, rows):
    apply = jaxmaml.apply_fn(t['model'])
    loss_fn = jaxmaml.mse_loss(apply)
    sinusoid_key, input_key = jax.random.split(t['test_key'])
    waves = sinusoid.sample_sinusoids(sinusoid_key, config.num_test_tasks)
    tasks = sinusoid.make_tasks(input_key, waves, shots, config.num_test_query)
    sgd = functools.partial(_fine_tune, loss_fn)
    for i, ax in enumerate(row):
      support = jax.tree_util.tree_map(operator.itemgetter(i), tasks.support)
      truth = waves.amplitude[i] * jnp.sin(x_grid - waves.phase[i])
      ax.plot(x_grid, truth, 'k-', lw=2, label='ground truth')
      ax.plot(support[0], support[1], 'k^', ms=8, label='K points used')
      curves = [
        (t['eval_adapt'](t[name], support)[0], 'tab:red', '-', f'{name}, {last} steps'),
        (
          sgd(t['pretrained'], support, t['fine_tune_lr'], last),
          'tab:blue',
          '-',
          f'pretrained, {last} grad steps',
        ),
      ]
      if _plain_gd(config):
        curves += [
          (
            sgd(t[name], support, config.algo.inner_lr, steps),
            'tab:red',
            style,
            f'{name}, {steps} grad step{"s" * (steps != 1)}',
          )
          for steps, style in ((0, ':'), (1, '--'))
        ]
      for params, color, style, label in curves:
        ax.plot(x_grid, apply(params, x_grid), color=color, ls=style, label=label)
      ax.set(title=f'K={shots}, test task {i}', xlim=(-5, 5))
  axes[0, 0].legend(fontsize=7, loc='lower left')
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def format_table(results: dict, config: Config) -> str:
  """A Markdown table: test MSE (mean ± 95% CI) after 0, 1, 5 and N steps."""
  last = config.algo.eval_inner_steps
  steps = sorted({0, 1, min(5, last), last})
  lines = [
    '| K | method | iterations | train time (s) | '
    + ' | '.join(f'MSE {s} step{"s" * (s != 1)}' for s in steps)
    + f' | median MSE {last} steps | diverged tasks at {last} steps |',
    '|---' * (len(steps) + 6) + '|',
  ]
  for name, res in results.items():
    for method in (config.algo.algorithm, 'pretrained'):
      r = res[method]
      at = {s: i for i, s in enumerate(r['steps'])}
      cells = [
        f'{r["mse_mean"][at[s]]:.3f} ± {r["mse_ci95"][at[s]]:.3f}' if s in at else '–'
        for s in steps
      ]
      label = method if method != 'pretrained' else f'pretrained (lr {r["fine_tune_lr"]})'
      lines.append(
        f'| {name.split("=")[1]} | {label} | {r["iterations"]} | '
        f'{r["train_time_s"]:.0f} | '
        + ' | '.join(cells)
        + f' | {r["mse_median"][-1]:.3f} | {r["num_diverged"][-1]} |'
      )
  return '\n'.join(lines)


def train_and_evaluate(config: Config, workdir: str, plots: bool = True) -> dict:
  """Runs the experiment; writes results.json (and plots) to ``workdir``.

  Returns:
    The results dict written to ``results.json``.
  """
  os.makedirs(workdir, exist_ok=True)
  results, trained = {}, {}
  for shots in config.shots:
    results[f'K={shots}'], trained[shots] = run_shots(config, shots, workdir)
  report = {
    'experiment': 'sinusoid',
    'config': cli.flatten(config),
    'environment': cli.environment(),
    'results': results,
    'table': format_table(results, config),
  }
  with open(os.path.join(workdir, 'results.json'), 'w') as f:
    json.dump(report, f, indent=2)
  if plots:
    plot_curves(results, config, os.path.join(workdir, 'mse_vs_steps.png'))
    plot_predictions(trained, config, os.path.join(workdir, 'predictions.png'))
  return report
