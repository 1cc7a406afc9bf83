"""Where the experiments' metrics go: ``log.jsonl`` and TensorBoard event files.

``open_writer(workdir, kinds, start_step)`` returns one ``Writer`` for the
kinds named (``LOGS``): ``'jsonl'`` appends each row as a JSON line to
``workdir/log.jsonl`` (what the plots and ``results.json`` read back);
``'tensorboard'`` writes every number of a row as a scalar,
``train/<name>`` and ``val/<name>``, to event files in
``workdir/tensorboard`` through tensorboardX (a maintained writer that needs
neither TensorFlow nor PyTorch; ``clu.metric_writers`` writes TensorBoard
files only through TensorFlow), with a margin chart of the validation
accuracy and its 95 % CI. A resumed run purges the events logged after the
checkpoint it resumed from, so the curves show each step once.
"""

from collections.abc import Callable, Sequence
import json
import os
from typing import NamedTuple

LOGS = ('jsonl', 'tensorboard')


class Writer(NamedTuple):
  """Rows of metrics to the logs.

  Attributes:
    write: ``row -> None``; ``row`` has ``step`` and numbers named
      ``train_<name>``, ``val_<name>`` or neither (e.g. ``time_s``).
    flush: writes what is buffered (at every checkpoint).
    close: flushes and closes the files.
  """

  write: Callable[[dict], None]
  flush: Callable[[], None]
  close: Callable[[], None]


def parse_logs(value: str) -> tuple[str, ...]:
  """``'tensorboard,jsonl'`` as ``('tensorboard', 'jsonl')``, names checked.

  Raises:
    ValueError: for a name not in ``LOGS``, or a repeated one.

  Examples:
    >>> parse_logs('jsonl,tensorboard')
    ('jsonl', 'tensorboard')
    >>> parse_logs('')
    ()
  """
  kinds = tuple(k.strip() for k in value.split(',') if k.strip())
  unknown = sorted(set(kinds) - set(LOGS))
  if unknown or len(set(kinds)) != len(kinds):
    raise ValueError(
      f'log must be a comma-separated list of distinct names from {LOGS}, got {value!r}.'
    )
  return kinds


def _jsonl(workdir: str) -> Writer:
  log = open(os.path.join(workdir, 'log.jsonl'), 'a')
  return Writer(lambda row: log.write(json.dumps(row) + '\n'), log.flush, log.close)


def _tag(name: str) -> str:
  for prefix in ('train', 'val'):
    if name.startswith(prefix + '_'):
      return f'{prefix}/{name[len(prefix) + 1 :]}'
  return f'time/{name}'


def _tensorboard(workdir: str, start_step: int) -> Writer:
  from jaxmaml.data import extras

  tensorboardx = extras.import_optional('tensorboardX', purpose='--log tensorboard')
  # purge_step: TensorBoard drops the events of earlier files at or after it,
  # those logged after the checkpoint this run resumes from.
  # The suffix keeps the files of runs started within the same second apart
  # (their names hold the time in seconds), in the order of their steps.
  writer = tensorboardx.SummaryWriter(
    os.path.join(workdir, 'tensorboard'),
    purge_step=start_step + 1 if start_step else None,
    filename_suffix=f'.{start_step:012d}',
  )
  writer.add_custom_scalars(
    {
      'validation': {
        'accuracy (95% CI)': [
          'Margin',
          ['val/accuracy', 'val/accuracy_ci_low', 'val/accuracy_ci_high'],
        ]
      }
    }
  )

  def write(row: dict) -> None:
    step = row['step']
    for name, value in row.items():
      if name != 'step' and isinstance(value, int | float):
        writer.add_scalar(_tag(name), value, step)
    if 'val_accuracy' in row and 'val_ci95' in row:
      writer.add_scalar('val/accuracy_ci_low', row['val_accuracy'] - row['val_ci95'], step)
      writer.add_scalar('val/accuracy_ci_high', row['val_accuracy'] + row['val_ci95'], step)

  return Writer(write, writer.flush, writer.close)


def open_writer(workdir: str, kinds: Sequence[str], start_step: int = 0) -> Writer:
  """One ``Writer`` for the logs named in ``kinds`` (``LOGS``), in ``workdir``.

  Args:
    workdir: where ``log.jsonl`` and ``tensorboard/`` are.
    kinds: a subset of ``LOGS``; empty: a writer that drops every row.
    start_step: the iteration the run starts (resumes) from.
  """
  writers = [_jsonl(workdir) if k == 'jsonl' else _tensorboard(workdir, start_step) for k in kinds]

  def each(field: str) -> Callable:
    def call(*args):
      for writer in writers:
        getattr(writer, field)(*args)

    return call

  return Writer(each('write'), each('flush'), each('close'))
