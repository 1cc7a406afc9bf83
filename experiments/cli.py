"""Shared by experiments and benchmarks: flags from a frozen config dataclass
(every field is a flag), and the environment record written into results."""

import argparse
import dataclasses
import math
import os
import platform
import types
import typing

import jax
import optax


def add_config_flags(parser: argparse.ArgumentParser, config_cls, defaults=None) -> None:
  """Adds ``--<field>`` for every field of ``config_cls`` (bools as --x/--no-x)."""
  defaults = defaults or config_cls()
  for field in dataclasses.fields(config_cls):
    kind = field.type
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
      kind = next(a for a in typing.get_args(kind) if a is not type(None))
    flag, default = f'--{field.name}', getattr(defaults, field.name)
    if kind is bool:
      parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
    elif typing.get_origin(kind) is tuple:
      parser.add_argument(flag, type=typing.get_args(kind)[0], nargs='+', default=default)
    else:
      parser.add_argument(flag, type=kind, default=default)


def config_from_args(parser, args: argparse.Namespace, config_cls, **overrides):
  """The config named by the parsed flags; a bad value is a usage error."""
  values = {f.name: getattr(args, f.name) for f in dataclasses.fields(config_cls)}
  values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
  try:
    return config_cls(**{**values, **overrides})
  except ValueError as e:
    parser.error(str(e))


def check_positive_ints(config, names) -> None:
  """Raises a ValueError naming the first field of ``names`` that is not an int >= 1."""
  for name in names:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(f'{name} must be a positive int, got {value!r}.')


def check_finite_loss(loss: float, iteration: int) -> None:
  """Stops a run whose meta-training diverged, before it is checkpointed."""
  if not math.isfinite(loss):
    raise FloatingPointError(
        f'meta-training diverged: the mean query loss is {loss} at iteration {iteration}. '
        'The last checkpoint holds the state before that; try a smaller outer_lr or '
        'inner_lr.')


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
        'overflows in bfloat16): run with --precision float32, or --first_order.')


def add_runtime_flags(parser: argparse.ArgumentParser, distributed: bool = False) -> None:
  """Flags that change how a run executes, not what it computes."""
  parser.add_argument('--compilation_cache', default=None, metavar='DIR',
                      help='persistent XLA compilation cache: a rerun with the same '
                      'programs loads them from DIR instead of compiling')
  if distributed:
    parser.add_argument('--distributed', action='store_true',
                        help='multi-host: call jax.distributed.initialize() first (on '
                        'Cloud TPU, SLURM or Open MPI it finds its peers by itself; '
                        'elsewhere pass the three flags below); every process runs the '
                        'same command')
    parser.add_argument('--coordinator_address', default=None, metavar='HOST:PORT',
                        help='with --distributed: the address of process 0')
    parser.add_argument('--num_processes', type=int, default=None,
                        help='with --distributed: how many processes in all')
    parser.add_argument('--process_id', type=int, default=None,
                        help='with --distributed: this process, 0..num_processes-1')


def apply_runtime_flags(args: argparse.Namespace) -> None:
  """Acts on ``add_runtime_flags``'s flags; call before any JAX computation."""
  if args.compilation_cache:
    enable_compilation_cache(args.compilation_cache)
  if getattr(args, 'distributed', False):
    # Cross-process collectives for CPU devices (GPUs and TPUs have their own).
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(coordinator_address=args.coordinator_address,
                               num_processes=args.num_processes, process_id=args.process_id)


def enable_compilation_cache(path: str) -> None:
  """Caches every compiled program in ``path``, across processes and runs."""
  jax.config.update('jax_compilation_cache_dir', os.path.abspath(path))
  # Cache every program, however fast it compiled or small it is.
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)


def environment() -> dict:
  """What produced a result: JAX version, backend, devices, Python, machine."""
  return {'jax': jax.__version__, 'backend': jax.default_backend(),
          'devices': [str(d) for d in jax.devices()], 'python': platform.python_version(),
          'process_count': jax.process_count(), 'machine': platform.machine(),
          'cpu_count': os.cpu_count()}
