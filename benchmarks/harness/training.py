"""Equal-budget meta-training: Omniglot 5-way 1-shot for a fixed wall time, then tested.

``train`` is the harness's one call into the experiments:
``experiments.fewshot.budget.equal_budget_run`` (the shared loop,
``experiments.loop``) on the MAML paper's config (``configs.TRAINING_CONFIG``) with a
variant's overrides, among
them ``time_budget_s``: seconds of meta-training, validation excluded.
"""

from benchmarks.harness.configs import TRAINING_CONFIG


def train(
  variant: str, overrides: dict, workdir: str, data_dir: str, cache_dir: str | None = None
) -> dict:
  """Trains (or resumes in ``workdir``) one variant, in this process; its test accuracy.

  Args:
    variant: the row's name.
    overrides: fields of the few-shot config by their flat names
      (``experiments.cli.override``), e.g. ``{'first_order': True,
      'time_budget_s': 30.0}``.
    workdir: checkpoints, ``log.jsonl`` and ``results.json``.
    data_dir, cache_dir: the Omniglot data and its preprocessed cache.

  Returns:
    ``variant``, ``budget_s``, ``meta_train_time_s``, ``iterations``, ``test``
    (accuracy, CI, tasks), ``best_val_accuracy`` and ``val_curve`` (meta-train
    seconds, validation accuracy and CI, per validation).
  """
  from experiments.fewshot import budget  # pylint: disable=import-outside-toplevel

  overrides = dict(overrides)
  budget_s = overrides.pop('time_budget_s')
  return {
    'variant': variant,
    **budget.equal_budget_run(
      budget_s, workdir, data_dir, cache_dir, config=TRAINING_CONFIG, **overrides
    ),
  }
