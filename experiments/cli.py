"""Shared by experiments and benchmarks: frozen configs by their flat field
names (every field is a flag, a nested config's fields under their own names),
argument checks for configs, and the environment record written into results."""

import argparse
import dataclasses
import numbers
import os
import platform
import types
import typing

import jax

from jaxmaml import checks


def flatten(config) -> dict:
  """Every field of ``config`` by name, a nested config's fields in its place.

  Examples:
    >>> from experiments.sinusoid.config import Config
    >>> flat = flatten(Config())
    >>> flat['num_iterations'], flat['inner_lr'], 'algo' in flat
    (10000, 0.01, False)
  """
  flat = {}
  for field in dataclasses.fields(config):
    value = getattr(config, field.name)
    flat.update(flatten(value) if dataclasses.is_dataclass(value) else {field.name: value})
  return flat


def override(config, **values):
  """``config`` with the fields named in ``values`` replaced: its own, or by
  their flat names those of the configs it nests.

  Raises:
    TypeError: for a name that is no field of ``config`` or of a config it nests.
    ValueError: from the configs' checks.

  Examples:
    >>> from experiments.sinusoid.config import Config
    >>> config = override(Config(), num_iterations=5, inner_lr=0.1)
    >>> config.num_iterations, config.algo.inner_lr
    (5, 0.1)
  """
  changes, rest = {}, dict(values)
  for field in dataclasses.fields(config):
    value = rest.pop(field.name, getattr(config, field.name))
    if dataclasses.is_dataclass(value):  # A nested config, its fields by their names.
      nested = {name: rest.pop(name) for name in flatten(value) if name in rest}
      value = override(value, **nested) if nested else value
    changes[field.name] = value
  if rest:
    raise TypeError(f'{type(config).__name__} has no field {sorted(rest)[0]!r}.')
  return dataclasses.replace(config, **changes)


def add_config_flags(parser: argparse.ArgumentParser, config_cls, defaults=None) -> None:
  """Adds ``--<field>`` for every field of ``config_cls`` and of the configs it
  nests (bools as --x/--no-x), with the values of ``defaults`` as defaults."""
  defaults = defaults or config_cls()
  for field in dataclasses.fields(config_cls):
    default = getattr(defaults, field.name)
    if dataclasses.is_dataclass(default):
      add_config_flags(parser, type(default), default)
      continue
    kind = field.type
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
      kind = next(a for a in typing.get_args(kind) if a is not type(None))
    flag = f'--{field.name}'
    if kind is bool:
      parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
    elif typing.get_origin(kind) is tuple:
      parser.add_argument(flag, type=typing.get_args(kind)[0], nargs='+', default=default)
    else:
      parser.add_argument(flag, type=kind, default=default)


def config_from_args(parser, args: argparse.Namespace, config_cls, **overrides):
  """The config named by the parsed flags; a bad value is a usage error."""
  values = {name: getattr(args, name) for name in flatten(config_cls())}
  values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
  try:
    return override(config_cls(), **{**values, **overrides})
  except ValueError as e:
    parser.error(str(e))


def to_flags(config, defaults) -> list[str]:
  """The flags that give ``config`` when ``defaults`` are the flags' defaults.

  The inverse of ``add_config_flags``: the fields where ``config`` differs
  from ``defaults``. A field that is None where ``defaults`` is not has no
  flag (a ValueError).

  Examples:
    >>> from experiments.algorithms import AlgorithmConfig
    >>> to_flags(AlgorithmConfig(algorithm='reptile', inner_lr=0.1), AlgorithmConfig())
    ['--algorithm', 'reptile', '--inner_lr', '0.1']
  """
  base, flags = flatten(defaults), []
  for name, value in flatten(config).items():
    if base[name] == value:
      continue
    if isinstance(value, bool):
      flags.append(f'--{name}' if value else f'--no-{name}')
    elif value is None:
      raise ValueError(f'{name}=None has no flag; it is the default only.')
    elif isinstance(value, tuple):
      flags += [f'--{name}', *map(str, value)]
    else:
      flags += [f'--{name}', str(value)]
  return flags


def check_positive_ints(config, names) -> None:
  """Raises an error naming the first field of ``names`` that is not an int >= 1."""
  for name in names:
    checks.positive_int(getattr(config, name), name)


def check_positive_reals(config, names) -> None:
  """Raises an error naming the first field of ``names`` that is not a finite real > 0."""
  for name in names:
    checks.real_number(getattr(config, name), name, positive=True)


def check_int_between(value, name: str, minimum: int, maximum: int) -> int:
  """``value`` as an int, or an error naming ``name`` unless an int in
  ``[minimum, maximum]``.

  Examples:
    >>> check_int_between(7, 'seed', 0, SEED_MAX)
    7
    >>> check_int_between(-1, 'seed', 0, SEED_MAX)
    Traceback (most recent call last):
    ...
    ValueError: seed must be an int in [0, 4294967295], got -1.
  """
  expected = f'an int in [{minimum}, {maximum}]'
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise checks.NotAnIntError(f'{name} must be {expected}, got {value!r}.')
  if not minimum <= value <= maximum:
    raise ValueError(f'{name} must be {expected}, got {value}.')
  return int(value)


# ``jax.random.key`` keeps the low 32 bits of a seed: 2**32 would be seed 0.
SEED_MAX = 2**32 - 1


def check_seeds(config, names) -> None:
  """Raises an error naming the first field of ``names`` that is no int in
  ``[0, SEED_MAX]`` (larger or negative seeds alias smaller ones)."""
  for name in names:
    check_int_between(getattr(config, name), name, 0, SEED_MAX)


def check_bools(config, names) -> None:
  """Raises a TypeError naming the first field of ``names`` that is not a bool."""
  for name in names:
    value = getattr(config, name)
    if not isinstance(value, bool):
      raise TypeError(f'{name} must be a bool, got {value!r}.')


def check_tuple(value, name: str, check_item, *, empty: bool = False, unique: bool = False):
  """Raises an error naming ``name`` unless ``value`` is a tuple (non-empty
  unless ``empty``, without repeats with ``unique``) whose items pass
  ``check_item(item, f'{name}[i]')``."""
  if not isinstance(value, tuple):
    raise TypeError(f'{name} must be a tuple, got {value!r}.')
  if not value and not empty:
    raise ValueError(f'{name} must not be empty.')
  for i, item in enumerate(value):
    check_item(item, f'{name}[{i}]')
  if unique and len(set(value)) != len(value):
    raise ValueError(f'{name} must not repeat a value, got {value}.')


def check_choice(value, name: str, choices: tuple[str, ...]) -> None:
  """Raises a ValueError naming ``name`` unless ``value`` is one of ``choices``."""
  if value not in choices:
    raise ValueError(f'{name} must be one of {choices}, got {value!r}.')


def add_runtime_flags(parser: argparse.ArgumentParser, distributed: bool = False) -> None:
  """Flags that change how a run executes, not what it computes."""
  parser.add_argument(
    '--compilation_cache',
    default=None,
    metavar='DIR',
    help='persistent XLA compilation cache: a rerun with the same '
    'programs loads them from DIR instead of compiling',
  )
  if distributed:
    parser.add_argument(
      '--distributed',
      action='store_true',
      help='multi-host: call jax.distributed.initialize() first (on '
      'Cloud TPU, SLURM or Open MPI it finds its peers by itself; '
      'elsewhere pass the three flags below); every process runs the '
      'same command',
    )
    parser.add_argument(
      '--coordinator_address',
      default=None,
      metavar='HOST:PORT',
      help='with --distributed: the address of process 0',
    )
    parser.add_argument(
      '--num_processes',
      type=int,
      default=None,
      help='with --distributed: how many processes in all',
    )
    parser.add_argument(
      '--process_id',
      type=int,
      default=None,
      help='with --distributed: this process, 0..num_processes-1',
    )


def apply_runtime_flags(args: argparse.Namespace) -> None:
  """Acts on ``add_runtime_flags``'s flags; call before any JAX computation."""
  if args.compilation_cache:
    enable_compilation_cache(args.compilation_cache)
  if getattr(args, 'distributed', False):
    # Cross-process collectives for CPU devices (GPUs and TPUs have their own).
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(
      coordinator_address=args.coordinator_address,
      num_processes=args.num_processes,
      process_id=args.process_id,
    )


def enable_compilation_cache(path: str) -> None:
  """Caches every compiled program in ``path``, across processes and runs."""
  jax.config.update('jax_compilation_cache_dir', os.path.abspath(path))
  # Cache every program, however fast it compiled or small it is.
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)


def environment() -> dict:
  """What produced a result: JAX version, backend, devices, Python, machine."""
  return {
    'jax': jax.__version__,
    'backend': jax.default_backend(),
    'devices': [str(d) for d in jax.devices()],
    'device_kind': jax.devices()[0].device_kind,
    'python': platform.python_version(),
    'process_count': jax.process_count(),
    'machine': platform.machine(),
    'cpu_count': os.cpu_count(),
  }
