"""``log.jsonl``: written line-atomically, a partial last line dropped before a
resumed run appends, and read back (``read_log``) tolerating only a bad last line."""

import json
import os
import warnings

import pytest

from experiments import logs

ROWS = [{'step': 2, 'train_loss': 0.5, 'time_s': 1.0}, {'step': 4, 'val_accuracy': 61.5}]


def _text(rows) -> str:
  return ''.join(json.dumps(row) + '\n' for row in rows)


def test_each_row_is_on_disk_whole_as_soon_as_it_is_written(tmp_path):
  # A run killed right after a write (no flush, no close) loses nothing and
  # leaves no partial line, also for a row larger than any I/O buffer.
  big = {'step': 6, 'note': 'x' * 100_000}
  writer = logs.open_writer(str(tmp_path), ('jsonl',))
  for i, row in enumerate([*ROWS, big]):
    writer.write(row)
    assert (tmp_path / 'log.jsonl').read_text() == _text([*ROWS, big][: i + 1])
  writer.flush()
  writer.close()
  assert logs.read_log(tmp_path / 'log.jsonl') == [*ROWS, big]


def test_resumed_writer_drops_a_partial_last_line(tmp_path):
  path = tmp_path / 'log.jsonl'
  path.write_text(_text(ROWS) + '{"step": 6, "train_lo')  # Killed mid-write.
  with pytest.warns(UserWarning, match=r'Dropping the partial last line of .*log\.jsonl \(line 3'):
    writer = logs.open_writer(str(tmp_path), ('jsonl',), start_step=4)
  writer.write({'step': 6, 'train_loss': 0.25})
  writer.close()
  with warnings.catch_warnings():
    warnings.simplefilter('error')  # The log is whole again: no warning.
    assert logs.read_log(path) == [*ROWS, {'step': 6, 'train_loss': 0.25}]


@pytest.mark.parametrize('tail', ['', '{"step": 6, "train_lo'])
def test_resumed_writer_drops_the_rows_logged_after_its_checkpoint(tmp_path, tail):
  # A run checkpointed at step 2 and killed after logging step 4 (and perhaps
  # while writing step 6) logs steps 4 and 6 again when it resumes from 2.
  path = tmp_path / 'log.jsonl'
  path.write_text(_text(ROWS) + tail)
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')  # The partial line's warning: tested above.
    writer = logs.open_writer(str(tmp_path), ('jsonl',), start_step=2)
  writer.write({'step': 4, 'val_accuracy': 62.0})
  writer.close()
  assert logs.read_log(path) == [ROWS[0], {'step': 4, 'val_accuracy': 62.0}]
  logs.open_writer(str(tmp_path), ('jsonl',), start_step=0).close()  # Before any checkpoint.
  assert path.read_text() == ''


def test_resumed_writer_drops_an_unparsable_last_line_and_keeps_a_whole_one(tmp_path):
  path = tmp_path / 'log.jsonl'
  path.write_text(_text(ROWS) + 'garbage\n')
  with pytest.warns(UserWarning, match='Dropping the unparsable last line'):
    logs.open_writer(str(tmp_path), ('jsonl',)).close()
  assert path.read_text() == _text(ROWS)
  path.write_text(_text(ROWS)[:-1])  # A whole last row without its newline is kept.
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    writer = logs.open_writer(str(tmp_path), ('jsonl',))
  writer.write({'step': 6})
  writer.close()
  assert logs.read_log(path) == [*ROWS, {'step': 6}]


@pytest.mark.parametrize('last', ['{"step": 6, "tr', '{"step": 6, "train_loss": 0.2\n', '3\n'])
def test_read_log_ignores_a_bad_last_line_with_a_warning(tmp_path, last):
  path = tmp_path / 'log.jsonl'
  path.write_text(_text(ROWS) + last)
  with pytest.warns(UserWarning, match=r'Ignoring the (partial|unparsable) last line .*line 3'):
    assert logs.read_log(path) == ROWS
  assert path.read_text() == _text(ROWS) + last  # Reading changes nothing.


@pytest.mark.parametrize('bad', ['{"step": 3, "tr', '', '[1, 2]', '\xff'])
def test_read_log_refuses_corruption_before_the_last_line(tmp_path, bad):
  path = tmp_path / 'log.jsonl'
  path.write_bytes(
    (json.dumps(ROWS[0]) + '\n' + bad + '\n' + json.dumps(ROWS[1]) + '\n').encode('latin-1')
  )
  with pytest.raises(ValueError, match=rf'{path}, line 2: not a JSON object'):
    logs.read_log(path)
  with pytest.raises(ValueError, match=rf'{path}, line 2'):  # Before the run, not after it.
    logs.open_writer(str(tmp_path), ('jsonl',))


def test_read_log_of_an_empty_or_missing_log(tmp_path):
  (tmp_path / 'log.jsonl').write_text('')
  assert logs.read_log(tmp_path / 'log.jsonl') == []
  with pytest.raises(FileNotFoundError):
    logs.read_log(tmp_path / 'nowhere.jsonl')
  assert not os.path.exists(tmp_path / 'nowhere.jsonl')
