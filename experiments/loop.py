"""The one resumable meta-training loop of the experiments (and of the
benchmarks' equal-budget runs).

``resume(checkpoints, state)`` restores the latest checkpoint (refusing one
written with another training config) and the best-on-validation parameters;
``run(step, resumed, checkpoints, cadence)`` then calls ``step`` until
``num_iterations`` or the time budget, checks and logs the metrics every
``log_every`` iterations (to a progress bar and the ``experiments.logs``
writers: ``log.jsonl``, TensorBoard), validates every ``eval_every`` (keeping
the best parameters), and checkpoints every ``checkpoint_every`` (Orbax,
``jaxmaml.checkpoint``). The task stream is keyed by iteration, so a resumed
run computes exactly what an uninterrupted one would.

Nothing non-finite reaches disk: ``with_finite_flag(meta_step)`` compiles one
reduced flag into the step (the new parameters, optimizer state and loss all
finite), which ``run`` reads only where it logs, validates or checkpoints; a
false flag stops the run there, before anything is written, naming the last
(finite) checkpoint. ``resume`` refuses a checkpoint holding non-finite values.
"""

from collections.abc import Callable
import contextlib
import json
import os
import time
import typing
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
import tqdm

from experiments import logs
import jaxmaml
from jaxmaml import checkpoint

FINITE = 'finite'
"""The metric ``with_finite_flag`` adds and ``run`` reads: the new state and loss all finite."""


class Cadence(NamedTuple):
  """How long a run lasts and how often it logs, validates and checkpoints (iterations)."""

  num_iterations: int
  log_every: int
  checkpoint_every: int
  eval_every: int | None = None  # None: no validation.
  time_budget_s: float | None = None  # Seconds of meta-training (validation excluded).


class Checkpoints(NamedTuple):
  """Where a run checkpoints, and the training config every checkpoint records.

  Attributes:
    path: the directory of the latest state (``MetaTrainState`` and
      progress), an Orbax checkpoint manager's.
    config: the fields that change what training computes, by name: a
      checkpoint resumes only with the same values.
    added_defaults: the values of fields that older checkpoints lack (they
      were written with these).
    best_path: the directory of the best parameters on validation (None: no
      validation).
    metadata: more JSON written into every checkpoint, not checked.
    msgpack_path, msgpack_best_path: the single-file checkpoints of jaxmaml
      before Orbax (``jaxmaml.checkpoint.restore_msgpack``), read when
      ``path`` (``best_path``) holds none; never written.
    async_save: write checkpoints in the background (Orbax's async saving).
  """

  path: str
  config: dict
  added_defaults: dict | None = None
  best_path: str | None = None
  metadata: dict | None = None
  msgpack_path: str | None = None
  msgpack_best_path: str | None = None
  async_save: bool = False


class Resumed(NamedTuple):
  """Where a run stands.

  Attributes:
    state: the ``MetaTrainState``.
    best_params: the best meta-parameters on validation so far (without
      validation: those of ``state``).
    progress: ``wall_time_s`` and ``eval_time_s`` (time spent validating) so
      far, and with validation ``best_val`` (accuracy, %) and ``best_step``.
    smoothed: the moving average of the first logged metric at the last log
      of this process's run (None before).
  """

  state: jaxmaml.MetaTrainState
  best_params: jaxmaml.Params
  progress: dict
  smoothed: float | None = None


def resume(checkpoints: Checkpoints, state: jaxmaml.MetaTrainState) -> Resumed:
  """``state`` restored from ``checkpoints`` (as it is when there are none).

  Raises:
    ValueError: if the checkpoint was written with another training config,
      or does not match the structure of ``state``.
  """
  progress = {'wall_time_s': 0.0, 'eval_time_s': 0.0}
  if checkpoints.best_path is not None:
    progress.update(best_val=-1.0, best_step=0)
  initial_params = state.params
  smoothed = None
  restored = _restore(checkpoints.path, checkpoints.msgpack_path, state)
  if restored is not None:
    state, saved = restored
    check_config(
      {**(checkpoints.added_defaults or {}), **saved.get('config', {})},
      checkpoints.config,
      checkpoints.path,
    )
    # The sinusoid's first checkpoints kept the wall time alone.
    progress.update(saved.get('progress', {'wall_time_s': saved.get('wall_time_s', 0.0)}))
    smoothed = progress.pop('smoothed', None)
  best_params = state.params
  restored_best = (
    None
    if checkpoints.best_path is None
    else _restore(checkpoints.best_path, checkpoints.msgpack_best_path, initial_params)
  )
  if restored_best is not None:
    best_params, best = restored_best
    if best['accuracy'] >= progress['best_val']:  # Saved after the last state checkpoint.
      progress.update(best_val=best['accuracy'], best_step=best['step'])
  return Resumed(state, best_params, progress, smoothed)


def check_config(saved: dict, config: dict, path: str) -> None:
  """Raises a ValueError naming every field where ``saved`` (a checkpoint's) differs."""
  config = json.loads(json.dumps(config))  # As the checkpoint's JSON holds it.
  differ = [k for k in sorted(set(saved) | set(config)) if saved.get(k) != config.get(k)]
  if not differ:
    return
  fields = ', '.join(f'{k}={saved.get(k)!r} (now {config.get(k)!r})' for k in differ)
  hint = (
    ' A scheduled outer learning rate decays over the num_iterations the run '
    'started with: such a run resumes to that count only.'
    if 'outer_schedule_iterations' in differ
    else ''
  )
  raise ValueError(
    f'{path} was written with a different training config: {fields}.{hint} '
    'Use another --workdir, or delete it.'
  )


def _restore(directory: str, msgpack_path: str | None, target):
  """The latest checkpoint in ``directory``, else that of ``msgpack_path``, else
  None; refused if it holds non-finite values."""
  restored = None
  if os.path.isdir(directory):
    manager = checkpoint.checkpoint_manager(directory)
    try:
      restored = checkpoint.restore_checkpoint(manager, target)
    finally:
      manager.close()
  if restored is None and msgpack_path is not None:
    restored, directory = checkpoint.restore_msgpack(msgpack_path, target), msgpack_path
  if restored is not None and not all_finite(restored[0]):
    raise ValueError(
      f'{directory} holds non-finite values (a diverged run, saved before jaxmaml '
      'refused to checkpoint one): delete it, or use another --workdir.'
    )
  return restored


def all_finite(tree) -> bool:
  """Whether every floating-point leaf of ``tree`` is finite (on the host)."""
  return bool(_all_finite(tree))


@jax.jit
def _all_finite(tree) -> jax.Array:
  flags = [
    jnp.all(jnp.isfinite(x))
    for x in jax.tree.leaves(tree)
    if jnp.issubdtype(jnp.result_type(x), jnp.inexact)
  ]
  return jnp.all(jnp.stack(flags)) if flags else jnp.array(True)


def with_finite_flag(meta_step: Callable) -> Callable:
  """``meta_step`` (``(state, *args) -> (state, metrics)``) jitted, with
  ``metrics[FINITE]``: a bool scalar, whether the new state's parameters and
  optimizer state and the step's ``loss`` are all finite. One reduction in the
  compiled step; ``run`` reads it only where it writes."""

  def step(state: jaxmaml.MetaTrainState, *args):
    state, metrics = meta_step(state, *args)
    finite = _all_finite((state.params, state.opt_state, metrics['loss']))
    return state, {**metrics, FINITE: finite}

  return jax.jit(step)


def run(
  step: Callable[[jaxmaml.MetaTrainState, int], tuple[jaxmaml.MetaTrainState, dict]],
  resumed: Resumed,
  checkpoints: Checkpoints,
  cadence: Cadence,
  *,
  metrics: tuple[str, ...] = ('loss',),
  validate: Callable[[jaxmaml.Params], dict] | None = None,
  log_dir: str | None = None,
  log: tuple[str, ...] = ('jsonl',),
  desc: str = '',
) -> Resumed:
  """Meta-trains from ``resumed`` to ``cadence.num_iterations`` (or the budget).

  Every process takes part in the checkpoints (as Orbax expects); only
  process 0 writes the logs and shows the bar.

  Args:
    step: ``(state, iteration) -> (state, metrics)``, one meta-step on the
      tasks of ``iteration``; ``metrics`` hold per-task ``loss``, the others
      named in ``metrics`` and ``FINITE`` (``with_finite_flag``).
    resumed: where the run stands (``resume``).
    checkpoints: where to checkpoint, and the config to record.
    cadence: how long, and how often to log, validate and checkpoint.
    metrics: the metrics logged (their means over the meta-batch, as
      ``train_<name>``); the bar shows a moving average of the first.
    validate: ``params -> summary`` with ``accuracy`` (%, kept best on) and
      the other figures to log (as ``val_<name>``; ``num_tasks`` is not
      logged), every ``cadence.eval_every`` iterations and at the last.
    log_dir: where the logs are written (None: no logs).
    log: which logs (``experiments.logs.LOGS``): ``'jsonl'`` appends JSON
      lines to ``log_dir/log.jsonl``, ``'tensorboard'`` writes event files
      to ``log_dir/tensorboard``.
    desc: the progress bar's label.

  Returns:
    Where the run stands at its end; ``progress['wall_time_s']`` includes
    this call.

  Raises:
    FloatingPointError: at the first iteration that would log, validate or
      checkpoint with a non-finite loss or state (nothing is written for it;
      the message names the last checkpoint), or, in low precision, a
      skipped non-finite meta-gradient.
    ValueError: if ``resumed`` is past ``cadence.num_iterations``, or
      ``validate`` comes without ``best_path`` or ``eval_every``.
  """
  if validate is not None and (checkpoints.best_path is None or cadence.eval_every is None):
    raise ValueError('validate needs checkpoints.best_path and cadence.eval_every.')
  state, best_params, progress, smoothed = resumed
  progress = dict(progress)
  start = int(state.step)
  if start > cadence.num_iterations:
    raise ValueError(
      f'{checkpoints.path} is at iteration {start}, past '
      f'num_iterations={cadence.num_iterations}; use another --workdir.'
    )
  primary = jax.process_index() == 0  # The one process that writes the logs.
  with contextlib.ExitStack() as stack:  # Closes what is open, also on an error.
    writer = logs.open_writer(log_dir or '', log if log_dir and primary else (), start)
    stack.callback(writer.close)
    # Every process saves (Orbax coordinates them); closing waits for async saves.
    state_manager = stack.enter_context(
      checkpoint.checkpoint_manager(checkpoints.path, async_save=checkpoints.async_save)
    )
    best_manager = None
    if validate is not None:
      best_manager = stack.enter_context(
        checkpoint.checkpoint_manager(
          typing.cast(str, checkpoints.best_path), async_save=checkpoints.async_save
        )
      )
    begin = time.perf_counter()
    elapsed = lambda: progress['wall_time_s'] + time.perf_counter() - begin
    train_time = lambda: elapsed() - progress['eval_time_s']  # What time_budget_s limits.
    times = lambda: {'time_s': elapsed(), 'meta_train_time_s': train_time()}
    bar = tqdm.tqdm(
      total=cadence.num_iterations,
      initial=start,
      unit='it',
      dynamic_ncols=True,
      desc=desc,
      disable=not primary,
    )
    stack.callback(bar.close)
    for it in range(start, cadence.num_iterations):
      state, step_metrics = step(state, it)
      done = it + 1
      last = done == cadence.num_iterations or (
        cadence.time_budget_s is not None and train_time() >= cadence.time_budget_s
      )
      logs_now = done % cadence.log_every == 0 or last
      evaluates = validate is not None and (done % cadence.eval_every == 0 or last)
      checkpoints_now = done % cadence.checkpoint_every == 0 or last
      if logs_now or evaluates or checkpoints_now:  # Read the flag only where something is written.
        check_finite_updates(state.opt_state, done)
        if not bool(step_metrics[FINITE]):
          raise _diverged(done, state_manager, checkpoints.path)
      if logs_now:
        means = {name: float(jnp.mean(step_metrics[name])) for name in metrics}
        first = means[metrics[0]]
        smoothed = first if smoothed is None else 0.9 * smoothed + 0.1 * first
        writer.write({'step': done, **{f'train_{k}': v for k, v in means.items()}, **times()})
        postfix = {k: f'{v:.3f}' for k, v in {**means, metrics[0]: smoothed}.items()}
        if validate is not None:
          best_val = progress['best_val']  # -1 until the first validation.
          postfix['best_val'] = f'{best_val:.1f}%' if best_val >= 0 else 'none yet'
        bar.set_postfix(postfix)
      if evaluates:
        eval_start = time.perf_counter()
        summary = validate(state.params)
        progress['eval_time_s'] += time.perf_counter() - eval_start
        writer.write(
          {
            'step': done,
            **{f'val_{k}': v for k, v in summary.items() if k != 'num_tasks'},
            **times(),
          }
        )
        if summary['accuracy'] > progress['best_val']:
          progress.update(best_val=summary['accuracy'], best_step=done)
          best_params = state.params
          checkpoint.save_checkpoint(best_manager, done, best_params, {'step': done, **summary})
      if checkpoints_now:
        jax.block_until_ready(state)
        checkpoint.save_checkpoint(
          state_manager,
          done,
          state,
          {
            'config': checkpoints.config,
            **(checkpoints.metadata or {}),
            'progress': {**progress, 'wall_time_s': elapsed(), 'smoothed': smoothed},
          },
        )
        writer.flush()
      bar.update(1)
      if last:
        break
    jax.block_until_ready(state)
  progress['wall_time_s'] = elapsed()
  return Resumed(state, best_params if validate else state.params, progress, smoothed)


def _diverged(iteration: int, manager, path: str) -> FloatingPointError:
  """The error that stops a diverged run, naming its last (finite) checkpoint."""
  last = manager.latest_step()
  kept = (
    'no checkpoint was written before it'
    if last is None
    else f'the last checkpoint, {os.path.join(path, str(last))} (iteration {last}), is finite'
  )
  return FloatingPointError(
    f'meta-training diverged: the loss or the new parameters or optimizer state are '
    f'not finite at iteration {iteration}; nothing was saved for it, and {kept}. A '
    'resumed run would draw the same tasks: rerun with a smaller outer_lr or inner_lr '
    'in a new --workdir.'
  )


def check_finite_updates(opt_state, iteration: int) -> None:
  """Stops a low-precision run at its first non-finite meta-gradient.

  ``opt_state`` comes from an ``optax.apply_if_finite`` optimizer (see
  ``experiments.algorithms.make_optimizer``), which skipped that update: the
  state is the last finite one, and may be checkpointed before this raises.
  """
  if isinstance(opt_state, optax.ApplyIfFiniteState) and int(opt_state.total_notfinite):
    raise FloatingPointError(
      f'{int(opt_state.total_notfinite)} meta-gradient(s) were not finite by iteration '
      f'{iteration}; those updates were skipped and the saved state is the last finite one. '
      'Low precision with second-order gradients is a known cause (the double backward '
      'overflows in bfloat16): run with --precision float32, or --first_order.'
    )
