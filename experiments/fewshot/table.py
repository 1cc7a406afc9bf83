"""The MAML few-shot table in one command: ``python -m experiments.fewshot.table``.

Runs the paper settings back to back (default: the four Omniglot settings of
Finn et al. 2017, Table 1, second order, seeds 0, 1 and 2), each with
``train.train_and_evaluate`` in ``<workdir>/<setting>_<algorithm>_seed<k>``,
and writes one results table, ``<workdir>/table.md`` and ``table.json`` (and
``table.png`` where matplotlib is installed), after every run::

    python -m experiments.fewshot.table                       # the full table
    python -m experiments.fewshot.table --algorithms maml,fomaml --seeds 0
    python -m experiments.fewshot.table --time_budget_s 480   # 480 s of meta-training in all

Runs go in order: seed 0 of every algorithm and setting first (second order
before first order), then the next seeds. A run whose ``results.json`` is
complete for its config (``is_complete``) is reused, not retrained; an
interrupted one resumes from its checkpoints. ``--time_budget_s`` is a total
for the whole table: each run gets what is left of it (after the
meta-training time of the finished runs) divided by the runs left, as its
config's ``time_budget_s``. Every other field of ``Config`` is a flag that
overrides every run's config (``--num_iterations 2000``); ``--seeds`` sets
``seed``, ``split_seed`` stays the same (one character split for every seed).

Per run the table holds the test accuracy ± 95 % CI of the best-on-validation
parameters (``train.train_and_evaluate`` selects on validation only), the
paper's figure ± its CI and how they compare (``AGREEMENT``), iterations,
meta-training, validation and compile time and the device; per setting and
algorithm, the mean ± sample standard deviation over seeds.
"""

import argparse
from collections.abc import Callable, Sequence
import dataclasses
import json
import math
import os
import sys
import traceback
from typing import NamedTuple

import numpy as np

from experiments import cli
from experiments.fewshot import config as config_lib
from experiments.fewshot import main as fewshot_main
from experiments.fewshot import train
from jaxmaml import files

DEFAULT_SETTINGS = (
  'omniglot_5way1shot',
  'omniglot_5way5shot',
  'omniglot_20way1shot',
  'omniglot_20way5shot',
)
# The table's algorithms: their names in the table and whether first order.
ALGORITHMS = {'maml': ('MAML', False), 'fomaml': ('first-order MAML', True)}
# Fields the table sets itself (--seeds, --algorithms): no passthrough flags.
TABLE_FIELDS = ('seed', 'first_order', 'algorithm')
# Fields that change neither what a run trains nor what it tests: a finished
# run is reused whatever their values (is_complete).
NOT_COMPARED = ('time_budget_s', 'log', 'log_every', 'checkpoint_every', 'async_checkpoints')
AGREEMENT = (
  '"paper in our CI": the paper\'s mean lies within our 95 % confidence interval, '
  '|ours - paper| <= our CI; "CIs overlap": the two 95 % intervals overlap, '
  "|ours - paper| <= our CI + the paper's CI (CIs as half-widths)."
)


class Run(NamedTuple):
  """One run of the table: a config name, an algorithm of ``ALGORITHMS``, a seed."""

  setting: str
  algorithm: str
  seed: int

  @property
  def name(self) -> str:
    """The run's folder in the table's workdir, e.g. ``omniglot_5way1shot_maml_seed0``."""
    return f'{self.setting}_{self.algorithm}_seed{self.seed}'


def plan(settings: Sequence[str], algorithms: Sequence[str], seeds: Sequence[int]) -> list[Run]:
  """The runs in the order they are trained: seed by seed, within a seed
  algorithm by algorithm (as given), within an algorithm setting by setting.

  Examples:
    >>> [r.name for r in plan(['a', 'b'], ['maml'], [0, 1])]
    ['a_maml_seed0', 'b_maml_seed0', 'a_maml_seed1', 'b_maml_seed1']
  """
  return [Run(s, a, seed) for seed in seeds for a in algorithms for s in settings]


def run_config(run: Run, overrides: dict | None = None) -> config_lib.Config:
  """``CONFIGS[run.setting]`` with ``overrides`` (flat field names), the run's
  seed and its algorithm's ``first_order``; ``split_seed`` as the config's."""
  first_order = ALGORITHMS[run.algorithm][1]
  return cli.override(
    config_lib.CONFIGS[run.setting], **(overrides or {}), seed=run.seed, first_order=first_order
  )


def run_budget(total_s: float | None, spent_s: float, runs_left: int) -> float | None:
  """A run's ``time_budget_s``: what is left of ``total_s`` over the runs left.

  Args:
    total_s: the table's meta-training budget (None: no budget).
    spent_s: the meta-training seconds of the runs finished so far.
    runs_left: the runs still to train, this one included (>= 1).

  Returns:
    None without a budget; else ``(total_s - spent_s) / runs_left``, or 0.0
    once the budget is spent (the run is not started).

  Examples:
    >>> run_budget(480.0, 0.0, 4), run_budget(480.0, 130.0, 3), run_budget(480.0, 500.0, 1)
    (120.0, 116.66666666666667, 0.0)
  """
  if total_s is None:
    return None
  return max(total_s - spent_s, 0.0) / runs_left


def _as_json(value):
  return json.loads(json.dumps(value))


def is_complete(report: dict | None, config: config_lib.Config, budgeted: bool) -> bool:
  """Whether ``report`` (a run's ``results.json``) is a finished run of ``config``.

  It is when it was written with the same config (but for ``NOT_COMPARED``:
  the budget and the logging) and reached ``num_iterations``, or, when the
  table has a budget (``budgeted``), was stopped by its own budget (its
  meta-training time is at least its ``time_budget_s``; that budget need not
  be the share it would get now). Without a budget, a run stopped by one is
  not complete: it resumes from its checkpoints to ``num_iterations``.
  """
  if not report or 'results' not in report or 'test' not in report['results']:
    return False
  saved, wanted = dict(report.get('config', {})), _as_json(cli.flatten(config))
  saved_budget = saved.get('time_budget_s')
  for name in NOT_COMPARED:
    saved.pop(name, None)
    wanted.pop(name)
  if saved != wanted:
    return False
  results = report['results']
  if results['iterations'] >= config.num_iterations:
    return True
  return budgeted and saved_budget is not None and results['meta_train_time_s'] >= saved_budget


def paper_figure(setting: str, algorithm: str) -> tuple[float, float] | None:
  """The MAML paper's test accuracy and 95 % CI (%) for a setting, or None."""
  figures = (
    config_lib.PAPER_ACCURACY_FIRST_ORDER if ALGORITHMS[algorithm][1] else config_lib.PAPER_ACCURACY
  )
  return figures.get(setting)


def agreement(mean: float, ci: float, paper: float, paper_ci: float) -> dict:
  """``paper_in_ci`` and ``cis_overlap`` of ``AGREEMENT`` for our ``mean ± ci``
  and the paper's ``paper ± paper_ci``.

  Examples:
    >>> agreement(99.37, 0.30, 98.7, 0.4)
    {'paper_in_ci': False, 'cis_overlap': True}
  """
  distance = abs(mean - paper)
  return {'paper_in_ci': bool(distance <= ci), 'cis_overlap': bool(distance <= ci + paper_ci)}


def table_row(run: Run, report: dict) -> dict:
  """The table's row of ``run`` from its ``report`` (what ``train.train_and_evaluate``
  wrote to ``results.json``; a report without ``device_kind`` names the backend)."""
  results, config = report['results'], report['config']
  test = results['test']
  row = {
    'run': run.name,
    'setting': run.setting,
    'algorithm': run.algorithm,
    'algorithm_name': ALGORITHMS[run.algorithm][0],
    'seed': run.seed,
    'iterations': results['iterations'],
    'num_iterations': config['num_iterations'],
    'time_budget_s': config.get('time_budget_s'),
    'meta_train_s': results['meta_train_time_s'],
    'validation_s': results['train_time_s'] - results['meta_train_time_s'],
    'compile_s': results['compile_time_s'],
    'device_kind': report['environment'].get('device_kind', report['environment']['backend']),
    'device_count': results['num_devices'],
    'test_accuracy': test['accuracy'],
    'test_ci95': test['ci95'],
    'test_tasks': test['num_tasks'],
    'best_val_accuracy': results['best_val_accuracy'],
    'best_step': results['best_step'],
  }
  if 'lake_runs' in results:
    row.update(
      lake_accuracy=results['lake_runs']['accuracy'], lake_ci95=results['lake_runs']['ci95']
    )
  paper = paper_figure(run.setting, run.algorithm)
  row.update(paper_accuracy=None, paper_ci95=None, paper_in_ci=None, cis_overlap=None)
  if paper is not None:
    row.update(paper_accuracy=paper[0], paper_ci95=paper[1])
    row.update(agreement(test['accuracy'], test['ci95'], *paper))
  return row


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
  """The mean and sample standard deviation (ddof 1; None for one value).

  Examples:
    >>> mean_std([98.0, 99.0, 100.0])
    (99.0, 1.0)
    >>> mean_std([97.5])
    (97.5, None)
  """
  values = np.asarray(values, np.float64)
  return float(values.mean()), (float(values.std(ddof=1)) if values.size > 1 else None)


def summarize(rows: Sequence[dict]) -> list[dict]:
  """Per setting and algorithm (in the rows' order): the seeds and the mean ±
  sample std of their test accuracies and of their iterations."""
  groups = {}
  for row in rows:
    groups.setdefault((row['setting'], row['algorithm']), []).append(row)
  summary = []
  for (setting, algorithm), group in groups.items():
    mean, std = mean_std([r['test_accuracy'] for r in group])
    summary.append(
      {
        'setting': setting,
        'algorithm': algorithm,
        'algorithm_name': ALGORITHMS[algorithm][0],
        'seeds': [r['seed'] for r in group],
        'test_accuracy_mean': mean,
        'test_accuracy_std': std,
        'iterations_mean': float(np.mean([r['iterations'] for r in group])),
        'paper_accuracy': group[0]['paper_accuracy'],
        'paper_ci95': group[0]['paper_ci95'],
      }
    )
  return summary


def _yes_no(value: bool | None) -> str:
  return '—' if value is None else ('yes' if value else 'no')


def _paper(row: dict) -> str:
  return '—' if row['paper_accuracy'] is None else f'{row["paper_accuracy"]} ± {row["paper_ci95"]}'


def markdown_row(row: dict, lake: bool = False) -> str:
  """One run as a row of ``markdown``'s first table (``lake``: with Lake's runs).

  Examples:
    >>> row = {'setting': 'omniglot_5way1shot', 'algorithm_name': 'MAML', 'seed': 0,
    ...        'iterations': 500, 'num_iterations': 60000, 'meta_train_s': 118.9,
    ...        'validation_s': 4.2, 'compile_s': 12.34, 'device_kind': 'cpu',
    ...        'device_count': 1, 'test_accuracy': 97.5, 'test_ci95': 0.61,
    ...        'test_tasks': 600, 'paper_accuracy': 98.7, 'paper_ci95': 0.4,
    ...        'paper_in_ci': False, 'cis_overlap': False}
    >>> markdown_row(row).split(' | ')[:5]
    ['| omniglot_5way1shot', 'MAML', '0', '500 of 60000', '119']
    >>> markdown_row(row).split(' | ')[5:]
    ['4', '12.3', 'cpu ×1', '97.50 ± 0.61 (600)', '98.7 ± 0.4', 'no', 'no |']
  """
  iterations = str(row['iterations'])
  if row['iterations'] != row['num_iterations']:
    iterations += f' of {row["num_iterations"]}'
  cells = [
    row['setting'],
    row['algorithm_name'],
    str(row['seed']),
    iterations,
    f'{row["meta_train_s"]:.0f}',
    f'{row["validation_s"]:.0f}',
    f'{row["compile_s"]:.1f}',
    f'{row["device_kind"]} ×{row["device_count"]}',
    f'{row["test_accuracy"]:.2f} ± {row["test_ci95"]:.2f} ({row["test_tasks"]})',
  ]
  if lake:
    cells.append(
      f'{row["lake_accuracy"]:.2f} ± {row["lake_ci95"]:.2f}' if 'lake_accuracy' in row else '—'
    )
  cells += [_paper(row), _yes_no(row['paper_in_ci']), _yes_no(row['cis_overlap'])]
  return '| ' + ' | '.join(cells) + ' |'


def markdown_summary_row(entry: dict) -> str:
  """One setting and algorithm as a row of ``markdown``'s table over seeds.

  Examples:
    >>> entry = {'setting': 'omniglot_5way1shot', 'algorithm_name': 'MAML', 'seeds': [0, 1],
    ...          'test_accuracy_mean': 98.9, 'test_accuracy_std': 0.2828,
    ...          'iterations_mean': 500.0, 'paper_accuracy': 98.7, 'paper_ci95': 0.4}
    >>> markdown_summary_row(entry)
    '| omniglot_5way1shot | MAML | 2 (0, 1) | 98.90 ± 0.28 | 500 | 98.7 ± 0.4 |'
  """
  std = entry['test_accuracy_std']
  accuracy = f'{entry["test_accuracy_mean"]:.2f}' + (
    ' (one seed)' if std is None else f' ± {std:.2f}'
  )
  seeds = f'{len(entry["seeds"])} ({", ".join(map(str, entry["seeds"]))})'
  cells = [
    entry['setting'],
    entry['algorithm_name'],
    seeds,
    accuracy,
    f'{entry["iterations_mean"]:.0f}',
    _paper(entry),
  ]
  return '| ' + ' | '.join(cells) + ' |'


def _as_flags(overrides: dict) -> str:
  """``overrides`` as the flags that gave them, or 'none'.

  Examples:
    >>> _as_flags({'num_iterations': 10, 'rotate': False})
    '`--num_iterations 10 --no-rotate`'
  """
  flags = []
  for name, value in overrides.items():
    if isinstance(value, bool):
      flags.append(f'--{name}' if value else f'--no-{name}')
    else:
      flags += [f'--{name}', *map(str, value if isinstance(value, tuple) else [value])]
  return f'`{" ".join(flags)}`' if flags else 'none'


def markdown(table: dict) -> str:
  """``table.md``: the runs, the means over seeds, and what is not done yet."""
  budget = table['time_budget_s']
  lines = [
    '# MAML few-shot table (Finn et al. 2017, Tables 1 and 2)',
    '',
    (
      f'Meta-training budget: {budget:g} s for the whole table, each run getting what '
      'was left over the runs left.'
      if budget is not None
      else 'No time budget: every run to its num_iterations.'
    ),
    f'Overrides of every config: {_as_flags(table["overrides"])}.',
    'Test accuracy: the best-on-validation parameters on the test tasks, mean ± 95 % CI '
    '(tasks). Times: meta-training, validation during training, and compiling the '
    "meta-step (the last session's, for a resumed run).",
    AGREEMENT,
    '',
  ]
  rows = table['rows']
  lake = any('lake_accuracy' in r for r in rows)
  if rows:
    header = [
      'setting',
      'algorithm',
      'seed',
      'iterations',
      'meta-train (s)',
      'validation (s)',
      'compile (s)',
      'device',
      'test accuracy (%)',
      *(["Lake's 20 runs (%)"] if lake else []),
      'paper (%)',
      'paper in our CI',
      'CIs overlap',
    ]
    lines += ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    lines += [markdown_row(r, lake) for r in rows]
    lines += [
      '',
      'Over seeds: mean ± sample standard deviation (ddof 1) of the test accuracies.',
      '',
      '| setting | algorithm | seeds | test accuracy (%) | iterations (mean) | paper (%) |',
      '|---|---|---|---|---|---|',
    ]
    lines += [markdown_summary_row(s) for s in table['summary']]
  else:
    lines.append('No run has finished yet.')
  for key, title in (('pending', 'Not run yet'), ('skipped', 'Skipped'), ('failed', 'Failed')):
    if table[key]:
      items = table[key]
      text = (
        ', '.join(items)
        if isinstance(items, list)
        else '; '.join(f'{k}: {v}' for k, v in items.items())
      )
      lines += ['', f'{title}: {text}.']
  return '\n'.join(lines) + '\n'


def plot(table: dict, path: str) -> bool:
  """``table.png``: test accuracy ± 95 % CI per setting (a point per seed), the
  paper's figure ± its CI beside it; False (nothing written) without matplotlib."""
  try:
    import matplotlib
  except ImportError:
    return False
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  rows = table['rows']
  settings = list(dict.fromkeys(r['setting'] for r in rows))
  algorithms = list(dict.fromkeys(r['algorithm'] for r in rows))
  fig, ax = plt.subplots(figsize=(max(4.0, 1.8 * len(settings)), 4))
  width = 0.8 / max(len(algorithms), 1)
  for j, algorithm in enumerate(algorithms):
    group = [r for r in rows if r['algorithm'] == algorithm]
    center = [settings.index(r['setting']) - 0.4 + (j + 0.5) * width for r in group]
    seeds = sorted({r['seed'] for r in group})
    jitter = [0.25 * width * (seeds.index(r['seed']) / max(len(seeds) - 1, 1) - 0.5) for r in group]
    ax.errorbar(
      np.add(center, jitter),
      [r['test_accuracy'] for r in group],
      yerr=[r['test_ci95'] for r in group],
      fmt='o',
      capsize=3,
      color=f'C{j}',
      label=f'{ALGORITHMS[algorithm][0]} (per seed)',
    )
    papers = {r['setting']: r for r in group if r['paper_accuracy'] is not None}
    if papers:
      ax.errorbar(
        [settings.index(s) - 0.4 + (j + 0.5) * width + 0.3 * width for s in papers],
        [r['paper_accuracy'] for r in papers.values()],
        yerr=[r['paper_ci95'] for r in papers.values()],
        fmt='*',
        markersize=10,
        capsize=3,
        color=f'C{j}',
        markeredgecolor='black',
        label=f'{ALGORITHMS[algorithm][0]}, paper',
      )
  ax.set_xticks(range(len(settings)), [s.replace('_', '\n', 1) for s in settings])
  ax.set(ylabel='test accuracy (%), 95 % CI', title='MAML: ours (o) and the paper (*)')
  ax.grid(axis='y', alpha=0.3)
  ax.legend(fontsize='small')
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return True


def write_table(table: dict, workdir: str, plots: bool = True) -> None:
  """``table.json``, ``table.md`` and (with ``plots`` and rows) ``table.png`` in
  ``workdir``, each replaced at once (``jaxmaml.files.atomic_write``)."""
  files.atomic_write(
    os.path.join(workdir, 'table.json'), lambda f: f.write(json.dumps(table, indent=2).encode())
  )
  files.atomic_write(os.path.join(workdir, 'table.md'), lambda f: f.write(markdown(table).encode()))
  if plots and table['rows']:
    plot(table, os.path.join(workdir, 'table.png'))


def read_json(path: str) -> dict | None:
  """The JSON object at ``path``; None if it is missing or unreadable."""
  try:
    with open(path) as f:
      value = json.load(f)
  except (OSError, ValueError):
    return None
  return value if isinstance(value, dict) else None


class TableSpec(NamedTuple):
  """What the table command runs: the runs in order, each one's config (no
  ``time_budget_s`` yet) and data folder, and where and how."""

  runs: tuple[Run, ...]
  configs: dict  # Run -> Config
  data_dirs: dict  # Run -> str
  workdir: str
  cache_dir: str | None = None
  time_budget_s: float | None = None
  overrides: dict | None = None
  plots: bool = True


def build_table(spec: TableSpec, reports: dict, failed: dict, skipped: dict) -> dict:
  """``table.json``'s content from the reports of the finished runs (by ``Run``)."""
  rows = [table_row(r, reports[r]) for r in spec.runs if r in reports]
  done = set(reports) | {r for r in spec.runs if r.name in failed or r.name in skipped}
  return {
    'table': 'MAML few-shot (Finn et al. 2017, Tables 1 and 2)',
    'agreement': AGREEMENT,
    'time_budget_s': spec.time_budget_s,
    'settings': list(dict.fromkeys(r.setting for r in spec.runs)),
    'algorithms': list(dict.fromkeys(r.algorithm for r in spec.runs)),
    'seeds': list(dict.fromkeys(r.seed for r in spec.runs)),
    'overrides': spec.overrides or {},
    'rows': rows,
    'summary': summarize(rows),
    'pending': [r.name for r in spec.runs if r not in done],
    'skipped': dict(skipped),
    'failed': dict(failed),
    'environment': cli.environment(),
  }


def run_table(spec: TableSpec, log: Callable[[str], None] = print) -> dict:
  """Trains (or reuses) every run of ``spec`` in order, writing the table after each.

  A run that fails (diverges, say) is recorded under ``failed`` and the next
  one starts; one left no budget is recorded under ``skipped``.

  Returns:
    The table, as written to ``table.json``.
  """
  os.makedirs(spec.workdir, exist_ok=True)
  budgeted = spec.time_budget_s is not None
  reports, failed, skipped = {}, {}, {}
  for run in spec.runs:
    report = read_json(os.path.join(spec.workdir, run.name, 'results.json'))
    if is_complete(report, spec.configs[run], budgeted):
      reports[run] = report
  reused = set(reports)
  spent = sum(r['results']['meta_train_time_s'] for r in reports.values())
  write = lambda: write_table(build_table(spec, reports, failed, skipped), spec.workdir, spec.plots)
  write()
  todo = [r for r in spec.runs if r not in reused]
  for i, run in enumerate(spec.runs, start=1):
    where = f'[{i}/{len(spec.runs)}] {run.name}'
    if run in reused:
      log(f'{where}: complete, reused ({_result(run, reports[run])})')
      continue
    left = len(todo) - todo.index(run)
    budget = run_budget(spec.time_budget_s, spent, left)
    if budget == 0.0:
      skipped[run.name] = f'the {spec.time_budget_s:g} s budget was spent'
      log(f'{where}: skipped, {skipped[run.name]}')
      write()
      continue
    config = dataclasses.replace(spec.configs[run], time_budget_s=budget)
    log(
      f'{where}: training'
      + (
        ''
        if budget is None
        else f', budget {budget:.1f} s of meta-training '
        f'({spec.time_budget_s - spent:.1f} s left over {left} run(s))'
      )
    )
    run_dir = os.path.join(spec.workdir, run.name)
    try:
      report = train.train_and_evaluate(
        config, run_dir, spec.data_dirs[run], spec.cache_dir, plots=spec.plots
      )
    except Exception as e:  # The next runs still go; this one is named in the table.
      traceback.print_exc()
      failed[run.name] = f'{type(e).__name__}: {e}'
      log(f'{where}: failed, {failed[run.name]}')
      write()
      continue
    reports[run] = report
    spent += report['results']['meta_train_time_s']
    log(f'{where}: {_result(run, report)}')
    write()
  log(f'table: {os.path.join(spec.workdir, "table.md")}')
  return build_table(spec, reports, failed, skipped)


def _result(run: Run, report: dict) -> str:
  results = report['results']
  paper = paper_figure(run.setting, run.algorithm)
  return (
    f'{results["test"]["accuracy"]:.2f} ± {results["test"]["ci95"]:.2f} % '
    + ('' if paper is None else f'(paper {paper[0]} ± {paper[1]} %) ')
    + f'after {results["iterations"]} iterations, '
    f'{results["meta_train_time_s"]:.1f} s of meta-training'
  )


class _Unset:
  """The default of the passthrough flags: the setting's own value."""

  def __repr__(self) -> str:
    return "the setting's"


_UNSET = _Unset()


def _comma_list(value: str, parse=str) -> list:
  items = [v.strip() for v in value.split(',') if v.strip()]
  if not items or len(set(items)) != len(items):
    raise argparse.ArgumentTypeError(f'expected a comma-separated list without repeats: {value!r}')
  try:
    return [parse(v) for v in items]
  except ValueError:
    raise argparse.ArgumentTypeError(f'not a list of {parse.__name__}s: {value!r}') from None


def parse_args(argv: list[str]) -> tuple[TableSpec, argparse.Namespace]:
  """The table named by the command line (a bad flag is a usage error)."""
  parser = argparse.ArgumentParser(
    description='The MAML few-shot table: paper settings back to back, resumed, '
    'in one Markdown + JSON table (Finn et al. 2017).',
    formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    conflict_handler='resolve',  # The table's --time_budget_s replaces the config's.
  )
  overrides_group = parser.add_argument_group(
    "overrides of every run's config (--seed, --first_order and --algorithm excepted; "
    "default: the setting's own value)"
  )
  cli.add_config_flags(overrides_group, config_lib.Config)
  fields = cli.flatten(config_lib.Config())
  parser.set_defaults(**{name: _UNSET for name in fields if name != 'time_budget_s'})
  parser.add_argument(
    '--settings',
    type=lambda v: list(config_lib.MAML_CONFIGS) if v == 'all' else _comma_list(v),
    default=','.join(DEFAULT_SETTINGS),
    help='comma-separated names of MAML configs, or "all" (every one; each dataset read '
    'from its default folder unless --data_dir)',
  )
  parser.add_argument(
    '--algorithms',
    type=_comma_list,
    default='maml',
    help=f'comma-separated, of {", ".join(ALGORITHMS)} (fomaml: first-order MAML)',
  )
  parser.add_argument(
    '--seeds', type=lambda v: _comma_list(v, int), default='0,1,2', help='comma-separated'
  )
  parser.add_argument('--workdir', default='runs/table', help='the table and a folder per run')
  parser.add_argument(
    '--data_dir',
    default=None,
    help="every run's data (None: each dataset's default, config.DEFAULT_DATA_DIRS)",
  )
  parser.add_argument('--cache_dir', default=None, help='preprocessed-array cache')
  parser.add_argument(
    '--time_budget_s',
    type=float,
    default=None,
    help='seconds of meta-training for the whole table (validation excluded), '
    'shared out run by run: each gets what is left over the runs left',
  )
  parser.add_argument(
    '--plots',
    action=argparse.BooleanOptionalAction,
    default=True,
    help="table.png and the runs' learning curves",
  )
  cli.add_runtime_flags(parser)
  args = parser.parse_args(argv)
  for name in TABLE_FIELDS:
    if getattr(args, name) is not _UNSET:
      parser.error(f'--{name} is set by the table: use --seeds and --algorithms.')
  overrides = {
    name: tuple(v) if isinstance(v, list) else v
    for name in fields
    if name != 'time_budget_s' and (v := getattr(args, name)) is not _UNSET
  }
  settings = args.settings
  unknown = [s for s in settings if s not in config_lib.MAML_CONFIGS]
  if unknown:
    parser.error(
      f'unknown settings {unknown}: the table runs MAML configs, one of '
      f'{sorted(config_lib.MAML_CONFIGS)} or all (run the family configs with '
      'experiments.fewshot.main --config).'
    )
  unknown = [a for a in args.algorithms if a not in ALGORITHMS]
  if unknown:
    parser.error(f'unknown algorithms {unknown}; choose from {sorted(ALGORITHMS)}.')
  if args.time_budget_s is not None and not (
    math.isfinite(args.time_budget_s) and args.time_budget_s > 0
  ):
    parser.error(f'--time_budget_s must be a finite number > 0, got {args.time_budget_s}.')
  runs = plan(settings, args.algorithms, args.seeds)
  configs = {}
  for run in runs:
    try:
      configs[run] = run_config(run, overrides)
    except (TypeError, ValueError) as e:
      parser.error(f'{run.setting}: {e}')
    if configs[run].num_ways < config_lib.MIN_WAYS:
      parser.error(
        f'num_ways must be an int >= {config_lib.MIN_WAYS}, got {configs[run].num_ways}.'
      )
  data_dirs = {
    run: args.data_dir or config_lib.DEFAULT_DATA_DIRS[configs[run].dataset] for run in runs
  }
  spec = TableSpec(
    tuple(runs),
    configs,
    data_dirs,
    args.workdir,
    args.cache_dir,
    args.time_budget_s,
    overrides,
    args.plots,
  )
  return spec, args


def main(argv: list[str] | None = None) -> dict:
  """Runs the table; exits with status 1 if a run failed."""
  spec, args = parse_args(sys.argv[1:] if argv is None else argv)
  cli.apply_runtime_flags(args)
  try:
    for config in spec.configs.values():
      fewshot_main.check_devices(config)
  except ValueError as e:
    sys.exit(f'error: {e}')
  print(
    f'{len(spec.runs)} run(s) into {spec.workdir}'
    + ('' if spec.time_budget_s is None else f', {spec.time_budget_s:g} s of meta-training in all')
  )
  table = run_table(spec)
  if table['failed']:
    sys.exit(f'error: {len(table["failed"])} run(s) failed: {", ".join(table["failed"])}')
  return table


if __name__ == '__main__':
  main()
