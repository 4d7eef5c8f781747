"""Result tables: the results CSV, markdown rows and per-pair record files.

The results CSV has a fixed header (one per table kind, e.g. ALIGNMENT_HEADER). Appending never
corrupts an existing file: under an exclusive lock on `<csv>.lock` (so concurrent runs do not lose
each other's rows), the old content is read and checked (its header must match exactly; a foreign
file is an error, never overwritten), then old content plus the new row is written to a temp file in
the same folder and moved over the original with `os.replace`.
"""
import csv
import fcntl
import io
import os

from evaluation.files import atomic_write_text

ALIGNMENT_HEADER = ('name', 'mode', 'pairs', 'n', 'median_deg', 'mean_deg', 'acc10', 'acc30')
SYNTHESIS_HEADER = ('name', 'mode', 'pairs', 'n', 'l1', 'psnr_db', 'ssim')


def _format(value):
  if isinstance(value, float):
    return f'{value:.4f}'
  return str(value)


def append_row(path, row, header=ALIGNMENT_HEADER):
  """Appends `row` (a dict with every header key) to the CSV at `path`, creating it with `header`.

  Raises:
    ValueError naming the file when it exists with another header, or when `row` lacks a column.
  """
  path = os.fspath(path)
  missing = [k for k in header if k not in row]
  if missing:
    raise ValueError(f'results row for {path} lacks columns {missing}')
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path + '.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    old = ''
    if os.path.exists(path):
      with open(path, newline='') as f:
        old = f.read()
    if old:
      first = next(csv.reader(io.StringIO(old)), [])
      if tuple(first) != tuple(header):
        raise ValueError(f'results CSV {path} has header {first}, expected {list(header)}; '
                         'refusing to append to a different table')
      if not old.endswith('\n'):
        old += '\n'
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator='\n')
    if not old:
      writer.writerow(header)
    writer.writerow([_format(row[k]) for k in header])
    atomic_write_text(path, old + buffer.getvalue())


def read_rows(path):
  """The rows of a results CSV as a list of dicts (strings)."""
  with open(path, newline='') as f:
    return list(csv.DictReader(f))


def markdown_table(rows, header):
  """A markdown table (header, rule, one line per row dict) as a string."""
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for row in rows:
    lines.append('| ' + ' | '.join(_format(row[k]) for k in header) + ' |')
  return '\n'.join(lines)
