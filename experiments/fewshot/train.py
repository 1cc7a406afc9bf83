"""Meta-trains MAML (or another algorithm of the family) on a few-shot
dataset and evaluates it, resuming from checkpoints.

``train_and_evaluate(config, workdir, data_dir)``: loads the data (Omniglot
from zips, folders or TFDS, split 1100/100/423 characters; miniImageNet in the
Ravi & Larochelle layout, 64/16/20 classes; CIFAR-FS, FC100, CUB-200-2011 and
tieredImageNet with their shipped splits), meta-trains with tasks
drawn on the device inside the compiled meta-step, validates every
``eval_every`` iterations, keeps the best-on-validation parameters, and tests
them on ``num_test_tasks`` tasks from the test characters (mean accuracy and
95% CI), plus, for 20-way models, Lake et al.'s 20 one-shot runs. Writes
``log.jsonl`` and ``tensorboard/`` (``--log``), ``results.json``,
``learning_curve.png`` and the Orbax checkpoints ``state/`` (latest) and
``best/`` to ``workdir``.
"""

import json
import os
import time
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from experiments import algorithms
from experiments import cli
from experiments import logs
from experiments import loop
from experiments.fewshot.config import Config
import jaxmaml
from jaxmaml.data import episodes
from jaxmaml.data import miniimagenet
from jaxmaml.data import omniglot

# Fields that change what training computes: a checkpoint resumes only with
# the same values (num_iterations may grow; the task stream is keyed by step).
# A checkpoint of the other dataset fails to restore on its parameter shapes.
TRAINING_FIELDS = (
  'num_ways',
  'num_shots',
  'num_queries',
  'train_shots',
  'meta_batch_size',
  'rotate',
  'pooling',
  'batch_norm',
  'bn_scale',
  'image_size',
  'seed',
  'split_seed',
) + algorithms.TRAINING_FIELDS
# Fields added after checkpoints were written (the committed reproduction):
# a checkpoint without them was written with their defaults.
ADDED_FIELDS = ('train_shots', 'pooling', 'batch_norm') + algorithms.ADDED_FIELDS


def _loaders() -> dict:
  """The loader of every dataset but Omniglot: ``(root, split, *, image_size, cache_dir)``."""
  from jaxmaml.data import cifar  # Imported when used.
  from jaxmaml.data import cub
  from jaxmaml.data import tiered_imagenet

  return {
    'miniimagenet': miniimagenet.load_miniimagenet,
    'cifar_fs': cifar.load_cifar_fs,
    'fc100': cifar.load_fc100,
    'cub': cub.load_cub,
    'tiered_imagenet': tiered_imagenet.load_tiered_imagenet,
  }


class Split(NamedTuple):
  """One split's classes: ``images [classes, examples, size, size(, 3)]`` uint8
  and, for classes of unequal size (CUB-200-2011, tieredImageNet; padded),
  ``counts [classes]``, class ``c``'s images being ``images[c, :counts[c]]``;
  None when every slot is an image."""

  images: np.ndarray
  counts: np.ndarray | None = None


def load_splits(config: Config, data_dir: str, cache_dir: str | None = None) -> dict:
  """``{'train'|'val'|'test': Split}``, each checked against the config's tasks.

  Tasks are drawn from every image of classes of unequal size (the samplers'
  ``counts=``); a split whose smallest class is too small for the config's
  shots and queries is refused.
  """
  if config.dataset == 'omniglot':
    data = omniglot.load_omniglot(data_dir, image_size=config.image_size, cache_dir=cache_dir)
    splits = {
      name: Split(data.images[idx])
      for name, idx in omniglot.split_characters(seed=config.split_seed).items()
    }
  else:
    load = _loaders()[config.dataset]
    splits = {}
    for name in miniimagenet.SPLITS:  # 'train', 'val', 'test', as every loader's.
      split = load(data_dir, name, image_size=config.image_size, cache_dir=cache_dir)
      splits[name] = Split(split.images, getattr(split, 'counts', None))
  for name, split in splits.items():
    try:
      episodes.check_episode_request(
        split.images.shape,
        config.num_ways,
        config.training_shots if name == 'train' else config.num_shots,
        config.queries,
        counts=split.counts,
      )
    except ValueError as e:
      raise ValueError(f'The {name} split cannot serve this config: {e}') from None
  return splits


def model_and_learners(config: Config) -> tuple[nn.Module, algorithms.Learners]:
  """The model (ProtoNets': without its head, the embedding) and its learners,
  with ``config.batch_norm``'s statistics."""
  # Omniglot: the MAML paper's Omniglot Conv4; every other data set: its
  # miniImageNet Conv4 (max-pooling, 32 filters, flattened head) at the
  # dataset's image size (84x84, or 32x32 for CIFAR-FS and FC100).
  make = jaxmaml.Conv4 if config.dataset == 'omniglot' else jaxmaml.conv4_miniimagenet
  headless = config.algo.algorithm == 'protonets'
  pooling = {} if config.pooling is None else {'pooling': config.pooling}
  model = make(
    None if headless else config.num_ways,
    **pooling,
    conv=config.conv,
    batch_norm=config.batch_norm,
    bn_scale=config.bn_scale,
  )
  learners = algorithms.make_learners(
    config.algo,
    jaxmaml.apply_fn(model),
    jaxmaml.cross_entropy_loss,
    has_aux=True,
    per_step_bn=jaxmaml.batch_norm_params,
    num_ways=config.num_ways,
  )
  if config.batch_norm == 'inductive':
    learners = algorithms.Learners(*map(jaxmaml.inductive_batch_norm, learners))
  return model, learners


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
    batch = lambda n: (
      jax.ShapeDtypeStruct((num_tasks, n, *image), jnp.float32),
      jax.ShapeDtypeStruct((num_tasks, n), jnp.int32),
    )
    return jaxmaml.default_task_map(
      jaxmaml.Task(batch(config.num_ways * num_shots), batch(config.num_ways * config.queries))
    )
  batch_size = config.task_batch_size if config.task_map == 'map' else None
  return {'task_map': config.task_map, 'batch_size': batch_size}


_sample = jax.jit(
  episodes.sample_episodes,
  static_argnums=2,
  static_argnames=('num_ways', 'num_shots', 'num_queries', 'rotate'),
)


def _channels(images) -> int:
  return 1 if images.ndim == 4 else images.shape[-1]


def evaluate_split(eval_learner, params, split: Split, key, num_tasks: int, config: Config):
  """Per-task accuracies ``[num_tasks]`` on tasks drawn from ``split`` (on the device)."""
  accuracies = []
  for start in range(0, num_tasks, config.eval_batch_size):
    size = min(config.eval_batch_size, num_tasks - start)
    tasks = _sample(
      jax.random.fold_in(key, start),
      split.images,
      size,
      num_ways=config.num_ways,
      num_shots=config.num_shots,
      num_queries=config.queries,
      rotate=config.rotate,
      counts=split.counts,
    )
    metrics = jaxmaml.evaluate(
      eval_learner.task_loss,
      params,
      tasks,
      **_task_mapping(config, size, config.num_shots, _channels(split.images)),
    )
    accuracies.append(np.asarray(metrics['accuracy']))
  return np.concatenate(accuracies)


def evaluate_lake_runs(eval_learner, params, path: str, image_size: int) -> np.ndarray:
  """Accuracy on each of Lake et al.'s 20 one-shot 20-way runs, ``[20]``."""
  runs = omniglot.load_lake_runs(path, image_size=image_size)
  to_x = lambda images: jnp.asarray(images, jnp.float32)[..., None] / 255.0
  support_labels = jnp.tile(jnp.arange(20), (len(runs.labels), 1))
  tasks = jaxmaml.Task(
    support=(to_x(runs.train_images), support_labels),
    query=(to_x(runs.test_images), jnp.asarray(runs.labels)),
  )
  return np.asarray(jaxmaml.evaluate(eval_learner.task_loss, params, tasks)['accuracy'])


def _summary(accuracies) -> dict:
  mean, ci = jaxmaml.mean_confidence_interval(100.0 * np.asarray(accuracies))
  return {'accuracy': mean, 'ci95': ci, 'num_tasks': int(np.size(accuracies))}


def create_train_state(
  config: Config, model: nn.Module, learner, optimizer, key, channels: int
) -> jaxmaml.MetaTrainState:
  """The initial meta-parameters (``learner.init`` of the model's) and optimizer state."""
  image = jaxmaml.Referenced(jnp.zeros([1, config.image_size, config.image_size, channels]))
  params = jax.jit(model.init)(key, image)['params']  # Jitted: one compile, not one per op.
  return jaxmaml.init_train_state(learner.init(params), optimizer)


def make_checkpoints(config: Config, workdir: str) -> loop.Checkpoints:
  """``state/`` (latest) and ``best/`` in ``workdir`` (Orbax), recording
  ``TRAINING_FIELDS``; a run checkpointed before Orbax resumes from its
  ``state.ckpt`` and ``best.ckpt``."""
  flat, defaults = cli.flatten(config), cli.flatten(Config())
  return loop.Checkpoints(
    path=os.path.join(workdir, 'state'),
    config={
      **{k: flat[k] for k in TRAINING_FIELDS},
      'outer_schedule_iterations': algorithms.schedule_iterations(
        config.algo, config.num_iterations
      ),
    },
    added_defaults={
      **{k: defaults[k] for k in ADDED_FIELDS},
      'outer_schedule_iterations': None,
    },
    best_path=os.path.join(workdir, 'best'),
    msgpack_path=os.path.join(workdir, 'state.ckpt'),
    msgpack_best_path=os.path.join(workdir, 'best.ckpt'),
    async_save=config.async_checkpoints,
  )


def compile_meta_step(config: Config, learner, optimizer, state, split: Split, key, mesh):
  """``(step, state, seconds)``: the compiled meta-step as ``loop.run`` calls it,
  drawing its tasks from ``split`` on the device, and ``state`` replicated over
  ``mesh``."""
  devices = 1 if mesh is None else mesh.size

  def sampler(key, images, counts):
    return episodes.sample_episodes(
      key,
      images,
      config.meta_batch_size,
      num_ways=config.num_ways,
      num_shots=config.training_shots,
      num_queries=config.queries,
      rotate=config.rotate,
      shuffle_support=config.algo.inner_batch_size is not None,
      counts=counts,
    )

  meta_step = loop.with_finite_flag(
    jaxmaml.make_meta_step(
      learner,
      optimizer,
      mesh=mesh,
      **_task_mapping(
        config, config.meta_batch_size // devices, config.training_shots, _channels(split.images)
      ),
      sampler=sampler,
    )
  )
  data = jax.tree.map(jnp.asarray, split)
  if mesh is not None:  # Once, so that no step copies them.
    state, data = jaxmaml.replicate((state, data), mesh)
  start = time.perf_counter()
  compiled = meta_step.lower(state, key, *data).compile()
  seconds = time.perf_counter() - start
  if jax.process_index() == 0:
    print(
      f'compiled the meta-step in {seconds:.1f} s ({devices} device(s), {config.algo.precision})'
    )
  step = lambda state, it: compiled(state, jax.random.fold_in(key, it), *data)
  return step, state, seconds


def meta_train(
  config: Config,
  run: loop.Resumed,
  learners: algorithms.Learners,
  optimizer,
  checkpoints: loop.Checkpoints,
  splits: dict,
  keys: dict,
  mesh,
  workdir: str,
):
  """``(run, compile seconds)``: ``run`` meta-trained by ``loop.run``, validated
  every ``eval_every`` iterations, logged to ``config.log`` in ``workdir``."""
  step, state, compile_time = compile_meta_step(
    config, learners.training, optimizer, run.state, splits['train'], keys['train'], mesh
  )
  val = jax.tree.map(jnp.asarray, splits['val'])
  validate = lambda params: _summary(
    evaluate_split(learners.evaluation, params, val, keys['val'], config.num_val_tasks, config)
  )
  run = loop.run(
    step,
    run._replace(state=state),
    checkpoints,
    loop.Cadence(
      config.num_iterations,
      config.log_every,
      config.checkpoint_every,
      config.eval_every,
      config.time_budget_s,
    ),
    metrics=('accuracy', 'loss'),
    validate=validate,
    log_dir=workdir,
    log=logs.parse_logs(config.log),
    desc=(
      f'{config.algo.algorithm}{" (first order)" if config.algo.first_order else ""} '
      f'{config.num_ways}-way {config.num_shots}-shot'
    ),
  )
  return run, compile_time


def train_and_evaluate(
  config: Config,
  workdir: str,
  data_dir: str,
  cache_dir: str | None = None,
  plots: bool = True,
  test_only: bool = False,
) -> dict:
  """Runs (or resumes) the experiment; returns the report written to results.json.

  With ``test_only=True`` nothing is trained: the best-on-validation
  parameters in ``workdir`` are tested as they are (an interim result of a
  run in progress).
  """
  os.makedirs(workdir, exist_ok=True)
  mesh = make_mesh(config)
  splits = load_splits(config, data_dir, cache_dir)
  keys = dict(
    zip(('init', 'train', 'val', 'test'), jax.random.split(jax.random.key(config.seed), 4))
  )
  model, learners = model_and_learners(config)
  optimizer = algorithms.make_optimizer(config.algo, config.num_iterations)
  checkpoints = make_checkpoints(config, workdir)
  run = loop.resume(
    checkpoints,
    create_train_state(
      config, model, learners.training, optimizer, keys['init'], _channels(splits['train'].images)
    ),
  )
  if int(run.state.step) > config.num_iterations:  # Also with test_only: never reported.
    raise ValueError(
      f'{workdir} holds a run at iteration {int(run.state.step)}, past '
      f'num_iterations={config.num_iterations}: a run is never shortened; pass at least '
      f'{int(run.state.step)}, or use another --workdir.'
    )
  compile_time = 0.0
  if not test_only:
    run, compile_time = meta_train(
      config, run, learners, optimizer, checkpoints, splits, keys, mesh, workdir
    )
  progress = run.progress
  if not loop.all_finite(run.best_params):  # Never written since jaxmaml checks; refused anyway.
    raise FloatingPointError(f'The best parameters in {workdir} are not finite: nothing to test.')
  results = {
    **evaluate_test(
      config, learners.evaluation, run.best_params, splits['test'], keys['test'], data_dir
    ),
    'best_val_accuracy': progress['best_val'],
    'best_step': progress['best_step'],
    'iterations': int(run.state.step),
    'train_time_s': progress['wall_time_s'],
    'meta_train_time_s': progress['wall_time_s'] - progress['eval_time_s'],
    'compile_time_s': compile_time,
    'num_devices': 1 if mesh is None else mesh.size,
  }
  report = {
    'experiment': 'fewshot',
    'config': cli.flatten(config),
    'results': results,
    'environment': cli.environment(),
  }
  if jax.process_index() == 0:  # The one process that writes files.
    write_report(report, workdir, plots)
  return report


def evaluate_test(config: Config, eval_learner, params, split: Split, key, data_dir: str) -> dict:
  """``test``: ``params`` on ``config.num_test_tasks`` tasks of ``split``;
  ``lake_runs``: on Lake et al.'s runs, for 20-way Omniglot models."""
  results = {
    'test': _summary(
      evaluate_split(
        eval_learner, params, jax.tree.map(jnp.asarray, split), key, config.num_test_tasks, config
      )
    )
  }
  lake_path = os.path.join(data_dir, 'one-shot-classification', 'all_runs.zip')
  if config.dataset == 'omniglot' and config.num_ways == 20 and os.path.exists(lake_path):
    results['lake_runs'] = _summary(
      evaluate_lake_runs(eval_learner, params, lake_path, config.image_size)
    )
  return results


def write_report(report: dict, workdir: str, plots: bool) -> None:
  """``results.json`` and (with ``plots``) ``learning_curve.png`` in ``workdir``."""
  with open(os.path.join(workdir, 'results.json'), 'w') as f:
    json.dump(report, f, indent=2)
  if plots and os.path.exists(os.path.join(workdir, 'log.jsonl')):
    plot_learning_curve(
      os.path.join(workdir, 'log.jsonl'),
      os.path.join(workdir, 'learning_curve.png'),
      title=report['config']['algorithm'],
    )


def plot_learning_curve(log_path: str, path: str, title: str = 'maml') -> None:
  """Training accuracy (per logged step) and validation accuracy vs iterations."""
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  rows = logs.read_log(log_path)
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
