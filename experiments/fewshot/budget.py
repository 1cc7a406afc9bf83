"""Equal-budget runs: a few-shot config meta-trained for a fixed meta-training
time (validation excluded), as the benchmarks compare variants and algorithms.

``equal_budget_run`` is ``train.train_and_evaluate`` (the one training loop,
``experiments.loop``) with ``time_budget_s``; it returns the figures of the
comparison, with the validation curve against meta-training time.
"""

import os

from experiments import cli
from experiments import logs
from experiments.fewshot import config as config_lib
from experiments.fewshot import train


def equal_budget_run(
  budget_s: float,
  workdir: str,
  data_dir: str,
  cache_dir: str | None = None,
  *,
  config: str = 'omniglot_5way1shot',
  plots: bool = True,
  **overrides,
) -> dict:
  """Meta-trains ``CONFIGS[config]`` with ``overrides`` for ``budget_s`` seconds, then tests.

  Args:
    budget_s: seconds of meta-training (validation excluded), the run's
      ``time_budget_s``.
    workdir: checkpoints, log and results (a rerun there resumes).
    data_dir, cache_dir, plots: as for ``train.train_and_evaluate``.
    config: the base config, a name of ``config_lib.CONFIGS``.
    **overrides: fields of the config by their flat names
      (``experiments.cli.override``), e.g. ``first_order=True``,
      ``algorithm='reptile'``, ``eval_every=250``, ``num_val_tasks=160``.

  Returns:
    JSON-able figures: ``budget_s``, ``meta_train_time_s``, ``iterations``,
    ``test`` (``accuracy``, ``ci95``, ``num_tasks``), ``best_val_accuracy``
    and ``val_curve``, ``[meta_train_time_s, val_accuracy, val_ci95]`` at
    every validation.
  """
  run_config = cli.override(config_lib.CONFIGS[config], time_budget_s=budget_s, **overrides)
  results = train.train_and_evaluate(run_config, workdir, data_dir, cache_dir, plots=plots)[
    'results'
  ]
  curve = [
    [r['meta_train_time_s'], r['val_accuracy'], r['val_ci95']]
    for r in logs.read_log(os.path.join(workdir, 'log.jsonl'))
    if 'val_accuracy' in r
  ]
  return {
    'budget_s': budget_s,
    'meta_train_time_s': results['meta_train_time_s'],
    'iterations': results['iterations'],
    'test': results['test'],
    'best_val_accuracy': results['best_val_accuracy'],
    'val_curve': curve,
  }
