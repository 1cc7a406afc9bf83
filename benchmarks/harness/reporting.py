"""The report as Markdown tables and PNG plots."""

import numpy as np

from benchmarks.harness.configs import MEMORY_BUDGETS_GIB
from benchmarks.harness.configs import MEMORY_VARIANTS
from benchmarks.harness.configs import VARIANTS

# The report's meta-step tables and equal-budget accuracy tables, in order:
# (key of the report, title).
STEP_TABLES = (
  ('variants', "Variants at the paper's inner steps"),
  ('sweep', 'Inner-step sweep'),
  ('family', 'The family (one meta-step each)'),
  ('precision', 'float32 vs bfloat16 compute'),
  ('devices', 'The meta-batch split over devices'),
)
ACCURACY_TABLES = (
  ('accuracy', 'Omniglot 5-way 1-shot at equal meta-training time'),
  ('family_accuracy', 'The family on Omniglot 5-way 1-shot at equal meta-training time'),
  (
    'precision_accuracy',
    'Second-order Omniglot 5-way 1-shot, float32 vs bfloat16, at equal meta-training time',
  ),
)


def _mib(x) -> str:
  return 'n/a' if x is None else f'{x / 2**20:.1f}'


def step_table(rows: list[dict], matmul_flop_per_s: float) -> list[str]:
  """Meta-step rows (``kernels.measure_meta_step``) as Markdown table lines."""
  lines = [
    '| shape | variant | inner steps | lower + compile (s) | step (ms), median [IQR] '
    '| tasks/s | GFLOP/s | of matmul | XLA temp / peak (MiB) | peak RSS (MiB) |',
    '|---' * 10 + '|',
  ]
  for r in rows:
    variant = r['variant'] + (
      '' if r.get('precision', 'float32') == 'float32' else f' {r["precision"]}'
    )
    if r.get('num_devices', 1) > 1:
      variant += f', {r["num_devices"]} devices'
    if 'error' in r:
      lines.append(f'| {r["name"]} | {variant} | {r["inner_steps"]} | error: {r["error"]} |')
      continue
    lo, hi = r['step_s_iqr']
    lines.append(
      f'| {r["shape"]} | {variant} | {r["inner_steps"]} '
      f'| {r["lower_s"]:.1f} + {r["compile_s"]:.1f} '
      f'| {1e3 * r["step_s_median"]:.2f} [{1e3 * lo:.2f}, {1e3 * hi:.2f}] '
      f'| {r["tasks_per_s"]:.0f} | {r["achieved_flop_per_s"] / 1e9:.1f} '
      f'| {r["achieved_flop_per_s"] / matmul_flop_per_s:.1%} '
      f'| {_mib(r["xla_temp_bytes"])} / {_mib(r["xla_peak_bytes"])} '
      f'| {_mib(r["peak_rss_bytes"])} |'
    )
  return lines


def _series(rows: list[dict], variants):
  """``(shape, variant, [(inner_steps, row), ...] by steps)`` for each shape of
  the rows without an error and each of ``variants`` measured there."""
  rows = [r for r in rows if 'error' not in r]
  for name in dict.fromkeys(r['shape'] for r in rows):
    for variant in variants:
      mine = sorted(
        ((r['inner_steps'], r) for r in rows if r['shape'] == name and r['variant'] == variant),
        key=lambda pair: pair[0],
      )
      if mine:
        yield name, variant, mine


def remat_summary(rows: list[dict]) -> list[str]:
  """Peak memory at the most inner steps relative to one step, per variant."""
  lines = []
  for name, variant, mine in _series(rows, VARIANTS):
    if len(mine) > 1 and mine[0][0] == 1:
      (_, one), (steps, most) = mine[0], mine[-1]
      lines.append(
        f'- {name}, {variant}: XLA peak memory '
        f'x{most["xla_peak_bytes"] / one["xla_peak_bytes"]:.2f}'
        f' and step time x{most["step_s_median"] / one["step_s_median"]:.1f} '
        f'from 1 to {steps} inner steps'
      )
  return lines


def memory_table(rows: list[dict], matmul_flop_per_s: float | None = None) -> list[str]:
  """Memory rows (the ``resnet12_memory`` section) as Markdown table lines;
  rows compiled but not run have no step time."""
  del matmul_flop_per_s  # The rows' FLOP/s are in harness.json.
  lines = [
    '| shape | variant | inner steps | lower + compile (s) | step (s), median [IQR] '
    '| XLA temp / peak (MiB) | device peak (MiB) |',
    '|---' * 7 + '|',
  ]
  for r in rows:
    if 'error' in r:
      lines.append(f'| {r["name"]} | {r["variant"]} | {r["inner_steps"]} | error: {r["error"]} |')
      continue
    step = 'compiled only'
    if 'step_s_median' in r:
      lo, hi = r['step_s_iqr']
      step = f'{r["step_s_median"]:.2f} [{lo:.2f}, {hi:.2f}]'
    lines.append(
      f'| {r["shape"]} | {r["variant"]} | {r["inner_steps"]} '
      f'| {r["lower_s"]:.1f} + {r["compile_s"]:.1f} | {step} '
      f'| {_mib(r["xla_temp_bytes"])} / {_mib(r["xla_peak_bytes"])} '
      f'| {_mib(r.get("device_peak_bytes"))} |'
    )
  return lines


def memory_fits(rows: list[dict]) -> list[dict]:
  """Per shape and variant, XLA's peak memory as ``base + per_step * inner
  steps`` through the two largest measured step counts (the growth where it is
  extrapolated from; a one-step loop compiles to a different program), the
  largest deviation of the other rows from that line, and the most inner steps
  within each of ``MEMORY_BUDGETS_GIB`` by it (None where the memory does not
  grow with the steps)."""
  fits = []
  for name, variant, mine in _series(rows, MEMORY_VARIANTS):
    points = [(n, r['xla_peak_bytes']) for n, r in mine]
    if len({n for n, _ in points}) >= 2:
      steps, peak = (np.asarray(x, float) for x in zip(*points))
      per_step = (peak[-1] - peak[-2]) / (steps[-1] - steps[-2])
      base = peak[-1] - per_step * steps[-1]
      grows = per_step > 2**20  # Less than a MiB per step: flat.
      fits.append(
        {
          'shape': name,
          'variant': variant,
          'measured_steps': [int(s) for s in steps],
          'base_bytes': float(base),
          'per_step_bytes': float(per_step),
          'max_deviation_bytes': float(np.max(np.abs(base + per_step * steps - peak))),
          'steps_within': {
            label: int(max(0, (gib * 2**30 - base) // per_step)) if grows else None
            for label, gib in MEMORY_BUDGETS_GIB.items()
          },
        }
      )
  return fits


def fit_table(fits: list[dict]) -> list[str]:
  """``memory_fits`` as Markdown table lines."""
  budgets = list(MEMORY_BUDGETS_GIB)
  lines = [
    '| shape | variant | MiB + MiB/step (measured steps) | largest deviation (MiB) | '
    + ' | '.join(f'inner steps within {b}' for b in budgets)
    + ' |',
    '|---' * (4 + len(budgets)) + '|',
  ]
  for f in fits:
    within = [
      'any (flat)' if f['steps_within'][b] is None else str(f['steps_within'][b]) for b in budgets
    ]
    lines.append(
      f'| {f["shape"]} | {f["variant"]} | {_mib(f["base_bytes"])} + '
      f'{_mib(f["per_step_bytes"])} ({", ".join(map(str, f["measured_steps"]))}) '
      f'| {_mib(f["max_deviation_bytes"])} | ' + ' | '.join(within) + ' |'
    )
  return lines


def accuracy_table(rows: list[dict]) -> list[str]:
  """Equal-budget training rows (``training.train``) as Markdown table lines."""
  lines = [
    '| variant | budget (s) | iterations | test accuracy (%) | tasks |',
    '|---|---|---|---|---|',
  ]
  for r in rows:
    lines.append(
      f'| {r["variant"]} | error: {r["error"]} |'
      if 'error' in r
      else f'| {r["variant"]} | {r["meta_train_time_s"]:.0f} | {r["iterations"]} '
      f'| {r["test"]["accuracy"]:.2f} ± {r["test"]["ci95"]:.2f} '
      f'| {r["test"]["num_tasks"]} |'
    )
  return lines


def markdown(report: dict) -> str:
  """The tables of ``report`` (``harness.md``) as Markdown."""
  flop_per_s = report['matmul']['flop_per_s']
  lines = [f'Dense float32 matmul ({report["matmul"]["n"]}^2): {flop_per_s / 1e9:.1f} GFLOP/s.', '']
  for key, title in STEP_TABLES:
    if key in report:
      lines += [f'## {title}', ''] + step_table(report[key], flop_per_s) + ['']
      if key == 'sweep':
        lines += remat_summary(report[key]) + ['']
  if 'resnet12_memory' in report:
    lines += ['## ResNet-12 memory against inner steps', ''] + memory_table(
      report['resnet12_memory']
    )
    lines += ['', 'XLA peak = base + per step x inner steps (the two largest step counts):', '']
    lines += fit_table(report.get('resnet12_memory_fit', [])) + ['']
  for key, title in ACCURACY_TABLES:
    if isinstance(report.get(key), list):
      lines += [f'## {title}', ''] + accuracy_table(report[key]) + ['']
  if 'results' in report.get('peers', {}):
    from benchmarks import peers  # pylint: disable=import-outside-toplevel

    lines += ['## Peers (PyTorch, learn2learn)', '', peers.markdown(report['peers'])]
  for key, value in report.items():
    if isinstance(value, dict) and set(value) & {'skipped', 'error'}:
      lines.append(f'{key}: {value.get("skipped") or value.get("error")}')
  return '\n'.join(lines) + '\n'


def _pyplot():
  """matplotlib's pyplot, drawing to files only."""
  # pylint: disable=import-outside-toplevel
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  return plt


def _save(fig, path: str) -> None:
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  _pyplot().close(fig)


def plot_sweep(rows: list[dict], path: str) -> None:
  """Step time and XLA peak memory vs inner steps, one column per shape."""
  rows = [r for r in rows if 'error' not in r]
  names = list(dict.fromkeys(r['shape'] for r in rows))
  fig, axes = _pyplot().subplots(2, len(names), figsize=(5 * len(names), 7), squeeze=False)
  for col, name in enumerate(names):
    for variant in VARIANTS:
      mine = sorted(
        (r['inner_steps'], r) for r in rows if r['shape'] == name and r['variant'] == variant
      )
      steps = [s for s, _ in mine]
      axes[0, col].plot(steps, [1e3 * r['step_s_median'] for _, r in mine], 'o-', label=variant)
      axes[1, col].plot(steps, [r['xla_peak_bytes'] / 2**20 for _, r in mine], 'o-', label=variant)
    axes[0, col].set(title=name, ylabel='meta-step time (ms)', yscale='log')
    axes[1, col].set(xlabel='inner steps', ylabel='XLA peak memory (MiB)')
    axes[0, col].legend()
  _save(fig, path)


def plot_memory(rows: list[dict], path: str) -> None:
  """XLA peak memory vs inner steps, one column per shape, one line per variant."""
  series = list(_series(rows, MEMORY_VARIANTS))
  names = list(dict.fromkeys(name for name, _, _ in series))
  fig, axes = _pyplot().subplots(1, len(names), figsize=(5 * len(names), 4), squeeze=False)
  for ax, name in zip(axes[0], names):
    for _, variant, mine in (s for s in series if s[0] == name):
      ax.plot(
        [n for n, _ in mine], [r['xla_peak_bytes'] / 2**30 for _, r in mine], 'o-', label=variant
      )
    ax.set(title=name, xlabel='inner steps', ylabel='XLA peak memory (GiB)', ylim=(0, None))
    ax.legend(fontsize=8)
  _save(fig, path)


def plot_accuracy(rows: list[dict], path: str) -> None:
  """Validation accuracy vs meta-training wall time, one line per variant."""
  fig, ax = _pyplot().subplots(figsize=(6, 4))
  for r in rows:
    if 'error' not in r and r['val_curve']:
      t, acc, ci = map(np.asarray, zip(*r['val_curve']))
      ax.errorbar(
        t, acc, yerr=ci, marker='o', capsize=2, label=f'{r["variant"]} ({r["iterations"]} it)'
      )
  ax.set(
    xlabel='meta-training wall time (s)',
    ylabel='validation accuracy (%)',
    title='Omniglot 5-way 1-shot at equal budget',
  )
  ax.legend()
  _save(fig, path)
