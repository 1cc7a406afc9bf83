"""Where the experiments' metrics go: ``log.jsonl`` and TensorBoard event files.

``open_writer(workdir, kinds, start_step)`` returns one ``Writer`` for the
kinds named (``LOGS``): ``'jsonl'`` appends each row as a JSON line to
``workdir/log.jsonl`` (what the plots and ``results.json`` read back);
``'tensorboard'`` writes every number of a row as a scalar,
``train/<name>`` and ``val/<name>``, to event files in
``workdir/tensorboard`` through tensorboardX (a maintained writer that needs
neither TensorFlow nor PyTorch; ``clu.metric_writers`` writes TensorBoard
files only through TensorFlow), with a margin chart of the validation
accuracy and its 95 % CI. A resumed run drops the rows and purges the events
logged after the checkpoint it resumed from, so the logs hold each step once.

``log.jsonl`` is written line-atomically: each row is one ``write`` of a
complete line to a file opened for appending, unbuffered (``flush``, at every
checkpoint, ``fsync``-s it), so a run killed at any moment leaves whole rows
and at most a partial last line if the system stopped mid-write. Opening the
writer drops a last line that ``read_log`` would ignore (partial or
unparsable), with a warning, before appending, so it cannot end up in the
middle of the file; ``read_log(path)`` reads the rows back, ignoring such a
last line with a warning and refusing corruption anywhere else.
"""

from collections.abc import Callable, Sequence
import json
import os
from typing import NamedTuple
import warnings

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


def _parse_row(line: bytes) -> dict | None:
  """``line`` (without its newline) as a row, or None if it is not a JSON object."""
  try:
    row = json.loads(line)
  except ValueError:  # json.JSONDecodeError and UnicodeDecodeError.
    return None
  return row if isinstance(row, dict) else None


def _rows(path: str) -> tuple[list[dict], list[int], bytes]:
  """``(rows, ends, dropped)``: the rows of ``log.jsonl`` at ``path``; ``ends``,
  where each row's line ends in the file; ``dropped``, what follows the last
  (an unparsable or partial last line, else ``b''``).

  Raises:
    ValueError: naming the file and the line, for an unparsable line
      anywhere but last.
  """
  with open(path, 'rb') as f:
    data = f.read()
  lines = data.split(b'\n')
  if lines[-1] == b'':  # The file ends with a newline (or is empty).
    lines.pop()
  rows, ends = [], []
  for number, line in enumerate(lines, start=1):
    row = _parse_row(line)
    if row is None:
      if number < len(lines):
        raise ValueError(
          f'{path}, line {number}: not a JSON object ({line[:80]!r}); the log is corrupt '
          'before its last line, which a killed run cannot cause: the file was edited or '
          'damaged. Fix or remove that line.'
        )
      return rows, ends, data[ends[-1] if ends else 0 :]
    rows.append(row)
    ends.append(min((ends[-1] if ends else 0) + len(line) + 1, len(data)))
  return rows, ends, b''


def read_log(path: str | os.PathLike) -> list[dict]:
  """The rows of the ``log.jsonl`` at ``path``, in order.

  A last line that is partial (no newline: the run was killed while writing
  it) or does not parse is ignored with a warning; it is the row being
  written when the run stopped, and a resumed run logs that step again.

  Raises:
    FileNotFoundError: if there is no ``path``.
    ValueError: naming the file and the line number, for a line before the
      last that is not a JSON object.

  Examples:
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), 'log.jsonl')
    >>> with open(path, 'w') as f:
    ...   _ = f.write('{"step": 1, "train_loss": 0.5}\\n{"step": 2, "tr')
    >>> with warnings.catch_warnings(record=True) as caught:
    ...   warnings.simplefilter('always')
    ...   read_log(path)
    [{'step': 1, 'train_loss': 0.5}]
    >>> 'partial last line' in str(caught[0].message) and '(line 2, 15 bytes' in str(
    ...   caught[0].message
    ... )
    True
  """
  path = os.fspath(path)
  rows, _, dropped = _rows(path)
  if dropped:
    warnings.warn(_dropped_message('Ignoring', path, len(rows) + 1, dropped), stacklevel=2)
  return rows


def _dropped_message(verb: str, path: str, number: int, dropped: bytes) -> str:
  if dropped.endswith(b'\n'):
    kind, why = 'unparsable', 'it is not a JSON object'
  else:
    kind, why = 'partial', 'a run stopped while writing it'
  return (
    f'{verb} the {kind} last line of {path} (line {number}, {len(dropped)} bytes, '
    f'{dropped[:80]!r}): {why}.'
  )


def _last_byte(path: str) -> bytes:
  with open(path, 'rb') as f:
    f.seek(-1, os.SEEK_END)
    return f.read(1)


def _jsonl(workdir: str, start_step: int | None) -> Writer:
  path = os.path.join(workdir, 'log.jsonl')
  if os.path.exists(path):  # Appending after a partial line would corrupt the log.
    rows, ends, dropped = _rows(path)
    if dropped:
      warnings.warn(_dropped_message('Dropping', path, len(rows) + 1, dropped), stacklevel=3)
    # The rows after the resumed checkpoint: the resumed run logs those steps again.
    keep = len(rows)
    if start_step is not None:
      keep = next((i for i, r in enumerate(rows) if r.get('step', 0) > start_step), keep)
    if dropped or keep < len(rows):
      os.truncate(path, ends[keep - 1] if keep else 0)
  log = open(path, 'ab', buffering=0)  # O_APPEND, and no buffer to split a line.
  if os.path.getsize(path) and _last_byte(path) != b'\n':
    log.write(b'\n')  # A whole row without its newline: keep it, end its line.

  def write(row: dict) -> None:
    line = memoryview((json.dumps(row) + '\n').encode())
    while line:  # One write but in a rare short write (a full disk raises).
      line = line[log.write(line) :]

  return Writer(write, lambda: os.fsync(log.fileno()), log.close)


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


def open_writer(workdir: str, kinds: Sequence[str], start_step: int | None = None) -> Writer:
  """One ``Writer`` for the logs named in ``kinds`` (``LOGS``), in ``workdir``.

  Args:
    workdir: where ``log.jsonl`` and ``tensorboard/`` are.
    kinds: a subset of ``LOGS``; empty: a writer that drops every row.
    start_step: the iteration the run starts (resumes) from: the rows and
      events logged after it (by the run that stopped there) are dropped.
      None keeps every row.

  Raises:
    ValueError: for ``'jsonl'``, if the existing ``log.jsonl`` is corrupt
      before its last line (as ``read_log``), before the run starts rather
      than when its rows are read back.

  Warns:
    UserWarning: for ``'jsonl'``, when a partial or unparsable last line of
      the existing ``log.jsonl`` is dropped before appending.
  """
  writers = [
    _jsonl(workdir, start_step) if k == 'jsonl' else _tensorboard(workdir, start_step or 0)
    for k in kinds
  ]

  def each(field: str) -> Callable:
    def call(*args):
      for writer in writers:
        getattr(writer, field)(*args)

    return call

  return Writer(each('write'), each('flush'), each('close'))
