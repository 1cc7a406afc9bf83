"""Few-shot MAML: ``python -m experiments.fewshot.main --config omniglot_5way1shot``.

``--config`` picks one of the MAML paper's settings (omniglot_5way1shot,
omniglot_5way5shot, omniglot_20way1shot, omniglot_20way5shot,
miniimagenet_5way1shot, miniimagenet_5way5shot, and the other datasets'), or
one of the family's at its paper's protocol (omniglot_5way1shot_maml_plus_plus,
omniglot_20way1shot_maml_plus_plus, omniglot_5way1shot_reptile,
omniglot_5way1shot_imaml); every field of ``Config`` is also a flag that
overrides it (``--num_iterations 2000``, ``--first_order``). A rerun with the
same ``--workdir`` resumes from its last checkpoint.
"""

import argparse
import sys

import jax

from experiments import cli
from experiments.fewshot import config as config_lib
from experiments.fewshot import train


def parse_args(argv: list[str]):
  parser = argparse.ArgumentParser(
    description='MAML few-shot classification on Omniglot or miniImageNet (Finn et al. 2017).',
    formatter_class=argparse.ArgumentDefaultsHelpFormatter,
  )
  parser.add_argument('--config', default='omniglot_5way1shot', choices=sorted(config_lib.CONFIGS))
  parser.add_argument(
    '--workdir', default=None, help='checkpoints, logs and results (default runs/<config>)'
  )
  parser.add_argument(
    '--data_dir',
    default=None,
    help='Omniglot: the zips or their folders, or a TFDS data_dir '
    f'(default {config_lib.DEFAULT_DATA_DIRS["omniglot"]}); miniImageNet: '
    'images/ and the CSVs (default $JAXMAML_MINIIMAGENET or data/miniimagenet)',
  )
  parser.add_argument(
    '--cache_dir',
    default=None,
    help='preprocessed-array cache (default $JAXMAML_CACHE or ~/.cache/jaxmaml)',
  )
  parser.add_argument(
    '--test_only',
    action='store_true',
    help='train nothing: test the best checkpoint in --workdir as it is',
  )
  cli.add_runtime_flags(parser, distributed=True)
  known, _ = parser.parse_known_args(argv)
  cli.add_config_flags(parser, config_lib.Config, config_lib.CONFIGS[known.config])
  args = parser.parse_args(argv)
  args.workdir = args.workdir or f'runs/{args.config}'
  config = cli.config_from_args(parser, args, config_lib.Config)
  if config.num_ways < config_lib.MIN_WAYS:
    parser.error(
      f'num_ways must be an int >= {config_lib.MIN_WAYS} (a classification task '
      f'tells classes apart), got {config.num_ways}.'
    )
  args.data_dir = args.data_dir or config_lib.DEFAULT_DATA_DIRS[config.dataset]
  return config, args


def check_devices(config: config_lib.Config) -> None:
  """Raises a ValueError naming num_devices unless there are that many devices
  (None: all of them) and they split the meta-batch evenly; call after
  ``jax.distributed.initialize()``, before loading data."""
  available = jax.device_count()
  if config.num_devices is not None and config.num_devices > available:
    raise ValueError(
      f'num_devices must be between 1 and the {available} available '
      f'({jax.default_backend()}) devices, got {config.num_devices}.'
    )
  devices = config.num_devices or available
  if config.meta_batch_size % devices:
    raise ValueError(
      f'meta_batch_size ({config.meta_batch_size} tasks) must be divisible by the number '
      f'of devices ({devices}: num_devices, or all of them) so that every device gets '
      'the same number of tasks.'
    )


def paper_figure(name: str, config: config_lib.Config) -> str:
  """The paper's figure for config ``name`` as ``config`` runs it (first-order
  MAML: the first-order figure), or 'none' where the paper has none."""
  paper = config_lib.PAPER_ACCURACY
  if config.algo.first_order:
    paper = config_lib.PAPER_ACCURACY_FIRST_ORDER if config.algo.algorithm == 'maml' else {}
  elif config.algo.algorithm != config_lib.CONFIGS[name].algo.algorithm:
    paper = {}
  if name not in paper:
    return 'none'
  mean, ci = paper[name]
  return f'{mean} %' if ci is None else f'{mean} ± {ci} %'


def main(argv: list[str] | None = None) -> None:
  config, args = parse_args(sys.argv[1:] if argv is None else argv)
  cli.apply_runtime_flags(args)
  try:
    check_devices(config)
  except ValueError as e:
    sys.exit(f'error: {e}')
  print(f'{args.config}: {config}\nwriting to {args.workdir}')
  report = train.train_and_evaluate(
    config, args.workdir, args.data_dir, args.cache_dir, test_only=args.test_only
  )
  r = report['results']
  print(
    f'\ntest accuracy ({r["test"]["num_tasks"]} tasks): {r["test"]["accuracy"]:.2f} '
    f'± {r["test"]["ci95"]:.2f} %  (paper: {paper_figure(args.config, config)}), '
    f'{r["iterations"]} iterations, {r["train_time_s"] / 3600:.2f} h, best validation '
    f'{r["best_val_accuracy"]:.2f} % at step {r["best_step"]}'
  )
  if 'lake_runs' in r:
    print(
      f"Lake et al.'s 20 one-shot runs: {r['lake_runs']['accuracy']:.2f} "
      f'± {r["lake_runs"]["ci95"]:.2f} %'
    )


if __name__ == '__main__':
  main()
