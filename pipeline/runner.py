"""Running one pipeline stage as a subprocess, with progress lines and a record of completion.

A stage that runs a program (train.py, evaluate.py) streams the program's output into
`<output_dir>/logs/<stage>.log` and prints a short view of it: for training, one progress line per
logged step window (`[teacher] step 300/1500 (20%)  2.1 steps/s  ETA 9m32s`), for evaluation the
lines the program prints itself (tables, 'wrote ...'). A failure prints the log's tail and raises
an error naming the log.

Stage records (`<output_dir>/stages/<stage>.json`) make reruns skip finished work: a stage writes
{'settings': ..., 'outputs': [...], 'status': 'running'} before it starts and 'done' once its
outputs are verified. It is complete when the record says 'done', was written with the same
settings (which include the records of the stages it depends on, so redoing the teacher redoes the
students) and every output still exists. A 'running' record with other settings means the
stage's folder holds work of other settings: the caller clears it before starting afresh.
"""
import json
import os
import re
import subprocess
import sys
import time

from evaluation.files import atomic_write_text
from pipeline import cli
from pipeline import locks

# train.py (models/training.py) logs 'step 300 train {...} (123.4 images/s)' every summary window.
_STEP_LINE = re.compile(r'\bstep (\d+) train \{')
_EVAL_LINE = re.compile(r'\bstep (\d+) eval (\{.*\})')
_START_LINE = re.compile(r'^start_step=(\d+)')


def record_path(output_dir, stage):
  return os.path.join(output_dir, 'stages', f'{stage}.json')


def read_record(output_dir, stage):
  """The stage's record dict, or None when there is none (or it is unreadable)."""
  try:
    with open(record_path(output_dir, stage)) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def write_record(output_dir, stage, settings, outputs, status):
  """Writes the stage record atomically; returns it."""
  record = {'stage': stage, 'settings': settings, 'outputs': list(outputs), 'status': status,
            'time': time.time()}
  atomic_write_text(record_path(output_dir, stage), json.dumps(record, indent=2, sort_keys=True))
  return record


def _canonical(settings):
  return json.loads(json.dumps(settings, sort_keys=True))  # tuples -> lists, like a read record


def is_done(output_dir, stage, settings):
  """True when the stage finished with `settings` and all its recorded outputs exist."""
  record = read_record(output_dir, stage)
  return bool(record and record.get('status') == 'done'
              and record.get('settings') == _canonical(settings)
              and all(os.path.exists(p) for p in record.get('outputs', ())))


def has_other_settings(output_dir, stage, settings):
  """True when a record exists (running or done) written with settings other than `settings`."""
  record = read_record(output_dir, stage)
  return bool(record) and record.get('settings') != _canonical(settings)


def format_seconds(seconds):
  seconds = int(round(seconds))
  if seconds >= 3600:
    return f'{seconds // 3600}h{seconds % 3600 // 60:02d}m'
  if seconds >= 60:
    return f'{seconds // 60}m{seconds % 60:02d}s'
  return f'{seconds}s'


class TrainingProgress:
  """Turns train.py's log lines into progress lines with the rate and the time left.

  The rate is measured from the first logged window after the (re)start, so the one-off tracing
  of the first steps does not distort it; before that, no ETA is shown.
  """

  def __init__(self, stage, max_steps, clock=time.monotonic):
    self.stage, self.max_steps, self.clock = stage, int(max_steps), clock
    self.start_step = None
    self._first = None  # (time, step) of the first logged window

  def line(self, text):
    """The progress line for a log line of train.py, or None when it is not a progress line."""
    start = _START_LINE.search(text)
    if start:
      self.start_step = int(start.group(1))
      return f'[{self.stage}] training from step {self.start_step} to {self.max_steps}'
    match = _EVAL_LINE.search(text)
    if match:
      return f'[{self.stage}] step {match.group(1)} eval {match.group(2)}'
    match = _STEP_LINE.search(text)
    if not match:
      return None
    step, now = int(match.group(1)), self.clock()
    percent = 100.0 * step / max(self.max_steps, 1)
    text = f'[{self.stage}] step {step}/{self.max_steps} ({percent:.0f}%)'
    if self._first is None:
      self._first = (now, step)
    elif step > self._first[1]:
      rate = (step - self._first[1]) / max(now - self._first[0], 1e-9)
      text += (f'  {rate:.2f} steps/s  ETA {format_seconds((self.max_steps - step) / rate)}')
    return text


def run_program(stage, args, log_path, show=None, env=None):
  """Runs `python args...` from the repository root, logging to `log_path`.

  Args:
    stage: the stage name (for messages).
    args: the program and its flags, e.g. ['train.py', '--model=teacher', ...].
    log_path: every line of the program's output (stdout and stderr) is appended here.
    show: function `line -> str or None`: what to print for a line (None prints nothing).
    env: extra environment variables.

  Raises:
    RuntimeError naming the log when the program fails (after printing the log's tail).
  """
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  # The program dies with this process (cli.die_with_parent) and holds its folder locks too
  # (pipeline.locks), so no orphan writes into the output folder after a kill.
  # EIE_CONSOLE=full: the program prints everything (pipeline.console), which goes to the log.
  environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONUNBUFFERED='1',
                     EIE_CONSOLE='full', **cli.child_environment(), **(env or {}))
  command = [sys.executable] + list(args)
  tail = []
  with open(log_path, 'a') as log:
    log.write(f'\n$ {" ".join(command)}\n')
    process = subprocess.Popen(command, cwd=root, env=environment, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, bufsize=1,
                               pass_fds=locks.held_fds())
    try:
      for text in process.stdout:
        log.write(text)
        log.flush()
        tail = (tail + [text])[-40:]
        shown = show(text.rstrip('\n')) if show else None
        if shown is not None:
          print(shown, flush=True)
      code = process.wait()
    except BaseException:  # Ctrl-C or an error here: do not leave the program running
      process.kill()
      process.wait()
      raise
  if code != 0:
    # A program's own one-line error (pipeline.cli) is its last line; anything else (a crash)
    # shows the log's tail.
    last = [i for i, t in enumerate(tail) if ': error: ' in t and i >= len(tail) - 2]
    sys.stdout.write(''.join(tail[last[-1]:] if last else tail))
    raise RuntimeError(f'stage {stage}: {args[0]} failed with exit code {code}; '
                       f'full output in {log_path}')
