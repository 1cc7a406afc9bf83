"""Runs the sinusoid experiment: ``python -m experiments.sinusoid.main``.

Every field of ``Config`` is a command-line flag (``--num_iterations 2000``,
``--shots 5 10``, ``--first_order``); ``--full`` runs the paper's 70,000
iterations.
"""

import argparse
import sys
import time

from experiments import cli
from experiments.sinusoid import config as config_lib
from experiments.sinusoid import train


def parse_args(argv: list[str]) -> tuple[config_lib.Config, argparse.Namespace]:
  parser = argparse.ArgumentParser(
    description='MAML vs pretrained on sinusoid regression (Finn et al. 2017).',
    formatter_class=argparse.ArgumentDefaultsHelpFormatter,
  )
  parser.add_argument(
    '--workdir', default='runs/sinusoid', help='where results, plots and checkpoints go'
  )
  parser.add_argument(
    '--full',
    action='store_true',
    help=f'the paper protocol: {config_lib.PAPER_ITERATIONS} iterations',
  )
  cli.add_runtime_flags(parser)
  cli.add_config_flags(parser, config_lib.Config)
  args = parser.parse_args(argv)
  overrides = {'num_iterations': config_lib.PAPER_ITERATIONS} if args.full else {}
  return cli.config_from_args(parser, args, config_lib.Config, **overrides), args


def main(argv: list[str] | None = None) -> None:
  config, args = parse_args(sys.argv[1:] if argv is None else argv)
  cli.apply_runtime_flags(args)
  print(
    f'sinusoid experiment, {config.num_iterations} iterations per model, '
    f'K in {config.shots}; writing to {args.workdir}'
  )
  start = time.perf_counter()
  report = train.train_and_evaluate(config, args.workdir)
  print(
    f'\nTest MSE on {config.num_test_tasks} tasks (mean ± 95% CI), '
    f'{time.perf_counter() - start:.0f} s in all:\n'
  )
  print(report['table'])
  print(f'\nresults.json, mse_vs_steps.png, predictions.png in {args.workdir}')


if __name__ == '__main__':
  main()
