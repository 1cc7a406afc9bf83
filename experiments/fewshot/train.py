"""Meta-trains MAML (or another algorithm of the family) on Omniglot or
miniImageNet and evaluates it, resuming from checkpoints.

``train_and_evaluate(config, workdir, data_dir)``: loads the data (Omniglot
from zips, folders or TFDS, split 1100/100/423 characters; miniImageNet in the
Ravi & Larochelle layout, 64/16/20 classes), meta-trains with tasks
drawn on the device inside the compiled meta-step, validates every
``eval_every`` iterations, keeps the best-on-validation parameters, and tests
them on ``num_test_tasks`` tasks from the test characters (mean accuracy and
95% CI), plus, for 20-way models, Lake et al.'s 20 one-shot runs. Writes
``log.jsonl``, ``results.json``, ``learning_curve.png`` and the checkpoints
``state.ckpt`` (latest) and ``best.ckpt`` to ``workdir``.
"""

import dataclasses
import functools
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

import jaxmaml
from jaxmaml.checkpoint import restore_checkpoint, save_checkpoint
from jaxmaml.data import episodes, miniimagenet, omniglot
from experiments import algorithms
from experiments import cli
from experiments.fewshot.config import Config

# Fields that change what training computes: a checkpoint resumes only with
# the same values (num_iterations may grow; the task stream is keyed by step).
# A checkpoint of the other dataset fails to restore on its parameter shapes.
TRAINING_FIELDS = ('num_ways', 'num_shots', 'num_queries', 'train_shots', 'inner_lr',
                   'train_inner_steps', 'meta_batch_size', 'outer_lr', 'first_order', 'rotate',
                   'bn_scale', 'image_size', 'seed', 'split_seed') + algorithms.FIELDS
# Fields added after checkpoints were written (the committed reproduction):
# a checkpoint without them was written with their defaults.
ADDED_FIELDS = ('train_shots',) + algorithms.FIELDS


def load_splits(config: Config, data_dir: str, cache_dir: str | None = None) -> dict:
  """``{'train'|'val'|'test': uint8 [classes, examples, size, size(, 3)]}``, requests checked."""
  if config.dataset == 'omniglot':
    data = omniglot.load_omniglot(data_dir, image_size=config.image_size, cache_dir=cache_dir)
    splits = {name: data.images[idx]
              for name, idx in omniglot.split_characters(seed=config.split_seed).items()}
  else:
    splits = {name: miniimagenet.load_miniimagenet(
                  data_dir, name, image_size=config.image_size, cache_dir=cache_dir).images
              for name in miniimagenet.SPLITS}
  for name, images in splits.items():
    try:
      episodes.check_episode_request(
          images.shape, config.num_ways,
          config.training_shots if name == 'train' else config.num_shots, config.queries)
    except ValueError as e:
      raise ValueError(f'The {name} split cannot serve this config: {e}') from None
  return splits


def make_learners(config: Config):
  """(model, training learner, evaluation learner); ProtoNets' model has no head.

  The training learner computes in ``config.precision``; evaluation is float32.
  """
  make = jaxmaml.Conv4 if config.dataset == 'omniglot' else jaxmaml.conv4_miniimagenet
  protonets = config.algorithm == 'protonets'
  model = make(None if protonets else config.num_ways, conv=config.conv, bn_scale=config.bn_scale)

  def build(apply):
    return algorithms.make_learners(
        config, jaxmaml.cross_entropy_loss(apply), has_aux=True,
        per_step_bn=jaxmaml.batch_norm_params, embed_fn=apply if protonets else None,
        num_ways=config.num_ways)

  learner, _ = build(jaxmaml.mixed_precision(jaxmaml.apply_fn(model), config.precision))
  _, eval_learner = build(jaxmaml.apply_fn(model))
  return model, learner, eval_learner


def make_mesh(config: Config) -> jax.sharding.Mesh | None:
  """The devices the meta-batch is split over; None for one device."""
  num_devices = config.num_devices or jax.device_count()
  if num_devices == 1:
    return None
  mesh = jaxmaml.task_mesh(num_devices)
  jaxmaml.sharding.check_divisible(config.meta_batch_size, mesh)
  return mesh


def _task_mapping(config: Config, num_tasks: int, num_shots: int, channels: int) -> dict:
  """``task_map``/``batch_size`` for meta-batches of ``num_tasks`` tasks (per device)."""
  if config.task_map == 'auto':
    image = (config.image_size, config.image_size, channels)
    batch = lambda n: (jax.ShapeDtypeStruct((num_tasks, n, *image), jnp.float32),
                       jax.ShapeDtypeStruct((num_tasks, n), jnp.int32))
    return jaxmaml.default_task_map(jaxmaml.Task(batch(config.num_ways * num_shots),
                                                 batch(config.num_ways * config.queries)))
  batch_size = config.task_batch_size if config.task_map == 'map' else None
  return {'task_map': config.task_map, 'batch_size': batch_size}


_sample = jax.jit(episodes.sample_episodes, static_argnums=2,
                  static_argnames=('num_ways', 'num_shots', 'num_queries', 'rotate'))


def evaluate_split(eval_learner, params, images, key, num_tasks: int, config: Config):
  """Per-task accuracies ``[num_tasks]`` on tasks drawn from ``images``."""
  accuracies = []
  for start in range(0, num_tasks, config.eval_batch_size):
    size = min(config.eval_batch_size, num_tasks - start)
    tasks = _sample(jax.random.fold_in(key, start), images, size, num_ways=config.num_ways,
                    num_shots=config.num_shots, num_queries=config.queries,
                    rotate=config.rotate)
    channels = 1 if images.ndim == 4 else images.shape[-1]
    metrics = jaxmaml.evaluate(eval_learner.task_loss, params, tasks,
                               **_task_mapping(config, size, config.num_shots, channels))
    accuracies.append(np.asarray(metrics['accuracy']))
  return np.concatenate(accuracies)


def evaluate_lake_runs(eval_learner, params, path: str, image_size: int) -> np.ndarray:
  """Accuracy on each of Lake et al.'s 20 one-shot 20-way runs, ``[20]``."""
  runs = omniglot.load_lake_runs(path, image_size=image_size)
  to_x = lambda images: jnp.asarray(images, jnp.float32)[..., None] / 255.0
  support_labels = jnp.tile(jnp.arange(20), (len(runs.labels), 1))
  tasks = jaxmaml.Task(support=(to_x(runs.train_images), support_labels),
                       query=(to_x(runs.test_images), jnp.asarray(runs.labels)))
  return np.asarray(jaxmaml.evaluate(eval_learner.task_loss, params, tasks)['accuracy'])


def _summary(accuracies) -> dict:
  mean, ci = jaxmaml.mean_confidence_interval(100.0 * np.asarray(accuracies))
  return {'accuracy': mean, 'ci95': ci, 'num_tasks': int(np.size(accuracies))}


def train_and_evaluate(config: Config, workdir: str, data_dir: str,
                       cache_dir: str | None = None, plots: bool = True,
                       test_only: bool = False) -> dict:
  """Runs (or resumes) the experiment; returns the report written to results.json.

  With ``test_only=True`` nothing is trained: the best-on-validation
  parameters in ``workdir`` are tested as they are (an interim result of a
  run in progress).
  """
  os.makedirs(workdir, exist_ok=True)
  mesh = make_mesh(config)
  primary = jax.process_index() == 0  # The one process that writes files.
  splits = load_splits(config, data_dir, cache_dir)
  model, learner, eval_learner = make_learners(config)
  keys = dict(zip(('init', 'train', 'val', 'test'), jax.random.split(jax.random.key(config.seed), 4)))
  channels = 1 if splits['train'].ndim == 4 else splits['train'].shape[-1]
  params = model.init(
      keys['init'], jnp.zeros([1, config.image_size, config.image_size, channels]))['params']
  optimizer = algorithms.make_optimizer(config)
  params = learner.init(params)  # The meta-parameters.
  state = jaxmaml.init_train_state(params, optimizer)
  meta = {'config': {k: getattr(config, k) for k in TRAINING_FIELDS}}
  progress = {'best_val': -1.0, 'best_step': 0, 'wall_time_s': 0.0, 'eval_time_s': 0.0}
  state_path, best_path = os.path.join(workdir, 'state.ckpt'), os.path.join(workdir, 'best.ckpt')
  restored = restore_checkpoint(state_path, state)
  if restored is not None:
    state, saved = restored
    saved['config'] = {**{k: getattr(Config(), k) for k in ADDED_FIELDS}, **saved['config']}
    if saved['config'] != json.loads(json.dumps(meta['config'])):
      raise ValueError(f'{state_path} was written with a different training config '
                       f"({saved['config']}); use another --workdir.")
    progress = {'eval_time_s': 0.0, **saved['progress']}
  best_params = state.params
  restored_best = restore_checkpoint(best_path, params)
  if restored_best is not None:
    best_params, best = restored_best
    if best['accuracy'] >= progress['best_val']:  # Saved after the last state.ckpt.
      progress.update(best_val=best['accuracy'], best_step=best['step'])

  meta_step = jaxmaml.make_meta_step(
      learner, optimizer, mesh=mesh,
      **_task_mapping(config, config.meta_batch_size // (1 if mesh is None else mesh.size),
                      config.training_shots, channels),
      sampler=functools.partial(
          episodes.sample_episodes, num_tasks=config.meta_batch_size,
          num_ways=config.num_ways, num_shots=config.training_shots,
          num_queries=config.queries, rotate=config.rotate,
          shuffle_support=config.inner_batch_size is not None))
  train_images = jnp.asarray(splits['train'])
  val_images = jnp.asarray(splits['val'])
  if mesh is not None:  # Once, so that no step copies them.
    state, train_images = jaxmaml.replicate((state, train_images), mesh)
  compile_time = 0.0
  if not test_only:
    compile_start = time.perf_counter()
    meta_step = meta_step.lower(state, keys['train'], train_images).compile()
    compile_time = time.perf_counter() - compile_start
    if primary:
      print(f'compiled the meta-step in {compile_time:.1f} s '
            f"({1 if mesh is None else mesh.size} device(s), {config.precision})")
  log = open(os.path.join(workdir, 'log.jsonl') if primary else os.devnull, 'a')
  start, running = int(state.step), None
  begin = time.perf_counter()
  elapsed = lambda: progress['wall_time_s'] + time.perf_counter() - begin
  train_time = lambda: elapsed() - progress['eval_time_s']  # What time_budget_s limits.
  bar = tqdm.tqdm(total=config.num_iterations, initial=start, unit='it', dynamic_ncols=True,
                  desc=f'{config.algorithm} {config.num_ways}-way {config.num_shots}-shot',
                  disable=not primary)
  for it in range(start, start if test_only else config.num_iterations):
    state, metrics = meta_step(state, jax.random.fold_in(keys['train'], it), train_images)
    done = it + 1
    last = done == config.num_iterations or (
        config.time_budget_s is not None and train_time() >= config.time_budget_s)
    if done % config.log_every == 0 or last:
      acc, loss = float(jnp.mean(metrics['accuracy'])), float(jnp.mean(metrics['loss']))
      cli.check_finite_updates(state.opt_state, done)
      cli.check_finite_loss(loss, done)
      running = acc if running is None else 0.9 * running + 0.1 * acc
      log.write(json.dumps({'step': done, 'train_accuracy': acc, 'train_loss': loss,
                            'time_s': elapsed(), 'meta_train_time_s': train_time()}) + '\n')
      bar.set_postfix(acc=f'{running:.3f}', loss=f'{loss:.3f}',
                      best_val=f"{progress['best_val']:.1f}%")
    if done % config.eval_every == 0 or last:
      eval_start = time.perf_counter()
      val = evaluate_split(eval_learner, state.params, val_images, keys['val'],
                           config.num_val_tasks, config)
      summary = _summary(val)
      progress['eval_time_s'] += time.perf_counter() - eval_start
      log.write(json.dumps({'step': done, 'val_accuracy': summary['accuracy'],
                            'val_ci95': summary['ci95'], 'time_s': elapsed(),
                            'meta_train_time_s': train_time()}) + '\n')
      if summary['accuracy'] > progress['best_val']:
        progress.update(best_val=summary['accuracy'], best_step=done)
        best_params = state.params
        if primary:
          save_checkpoint(best_path, best_params, {'step': done, **summary})
    if done % config.checkpoint_every == 0 or last:
      jax.block_until_ready(state)
      if primary:
        save_checkpoint(state_path, state,
                        {**meta, 'progress': {**progress, 'wall_time_s': elapsed()}})
      log.flush()
    bar.update(1)
    if last:
      break
  bar.close()
  jax.block_until_ready(state)
  progress['wall_time_s'] = elapsed()
  log.close()

  test = evaluate_split(eval_learner, best_params, jnp.asarray(splits['test']), keys['test'],
                        config.num_test_tasks, config)
  results = {'test': _summary(test), 'best_val_accuracy': progress['best_val'],
             'best_step': progress['best_step'], 'iterations': int(state.step),
             'train_time_s': progress['wall_time_s'],
             'meta_train_time_s': progress['wall_time_s'] - progress['eval_time_s'],
             'compile_time_s': compile_time, 'num_devices': 1 if mesh is None else mesh.size}
  lake_path = os.path.join(data_dir, 'one-shot-classification', 'all_runs.zip')
  if config.dataset == 'omniglot' and config.num_ways == 20 and os.path.exists(lake_path):
    results['lake_runs'] = _summary(evaluate_lake_runs(eval_learner, best_params, lake_path,
                                                       config.image_size))
  report = {
      'experiment': 'fewshot', 'config': dataclasses.asdict(config), 'results': results,
      'environment': cli.environment(),
  }
  if not primary:
    return report
  with open(os.path.join(workdir, 'results.json'), 'w') as f:
    json.dump(report, f, indent=2)
  if plots:
    plot_learning_curve(os.path.join(workdir, 'log.jsonl'),
                        os.path.join(workdir, 'learning_curve.png'), title=config.algorithm)
  return report


def plot_learning_curve(log_path: str, path: str, title: str = 'maml') -> None:
  """Training accuracy (per logged step) and validation accuracy vs iterations."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  with open(log_path) as f:
    rows = [json.loads(line) for line in f]
  train = [(r['step'], r['train_accuracy']) for r in rows if 'train_accuracy' in r]
  val = [(r['step'], r['val_accuracy'], r['val_ci95']) for r in rows if 'val_accuracy' in r]
  fig, ax = plt.subplots(figsize=(6, 4))
  if train:
    steps, acc = zip(*train)
    ax.plot(steps, 100 * np.asarray(acc), color='tab:gray', alpha=0.5, label='train (query)')
  if val:
    steps, acc, ci = map(np.asarray, zip(*val))
    ax.errorbar(steps, acc, yerr=ci, color='tab:red', marker='o', label='validation (95% CI)')
  ax.set(xlabel='meta-iteration', ylabel='accuracy (%)', title=title)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
