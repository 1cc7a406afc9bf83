"""Runs the sinusoid experiment: ``python -m experiments.sinusoid.main``.

Every field of ``Config`` is a command-line flag (``--num_iterations 2000``,
``--shots 5 10``, ``--first_order``); ``--full`` runs the paper's 70,000
iterations.
"""

import argparse
import dataclasses
import sys
import time
import types
import typing

from experiments.sinusoid import config as config_lib
from experiments.sinusoid import train


def _add_field(parser: argparse.ArgumentParser, field: dataclasses.Field) -> None:
  kind = field.type
  args = typing.get_args(kind)
  if typing.get_origin(kind) in (typing.Union, types.UnionType):
    kind = next(a for a in args if a is not type(None))
  flag = f'--{field.name}'
  if kind is bool:
    parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=field.default)
  elif typing.get_origin(kind) is tuple:
    parser.add_argument(flag, type=typing.get_args(kind)[0], nargs='+',
                        default=field.default)
  else:
    parser.add_argument(flag, type=kind, default=field.default)


def parse_args(argv: list[str]) -> tuple[config_lib.Config, argparse.Namespace]:
  parser = argparse.ArgumentParser(
      description='MAML vs pretrained on sinusoid regression (Finn et al. 2017).',
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument('--workdir', default='runs/sinusoid',
                      help='where results, plots and checkpoints go')
  parser.add_argument('--full', action='store_true',
                      help=f'the paper protocol: {config_lib.PAPER_ITERATIONS} iterations')
  for field in dataclasses.fields(config_lib.Config):
    _add_field(parser, field)
  args = parser.parse_args(argv)
  values = {f.name: getattr(args, f.name) for f in dataclasses.fields(config_lib.Config)}
  values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
  if args.full:
    values['num_iterations'] = config_lib.PAPER_ITERATIONS
  try:
    return config_lib.Config(**values), args
  except ValueError as e:
    parser.error(str(e))


def main(argv: list[str] | None = None) -> None:
  config, args = parse_args(sys.argv[1:] if argv is None else argv)
  print(f'sinusoid experiment, {config.num_iterations} iterations per model, '
        f'K in {config.shots}; writing to {args.workdir}')
  start = time.perf_counter()
  report = train.train_and_evaluate(config, args.workdir)
  print(f'\nTest MSE on {config.num_test_tasks} tasks (mean ± 95% CI), '
        f'{time.perf_counter() - start:.0f} s in all:\n')
  print(report['table'])
  print(f'\nresults.json, mse_vs_steps.png, predictions.png in {args.workdir}')


if __name__ == '__main__':
  main()
