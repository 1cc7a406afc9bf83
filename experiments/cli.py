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


def environment() -> dict:
  """What produced a result: JAX version, backend, devices, Python, machine."""
  return {'jax': jax.__version__, 'backend': jax.default_backend(),
          'devices': [str(d) for d in jax.devices()], 'python': platform.python_version(),
          'machine': platform.machine(), 'cpu_count': os.cpu_count()}
