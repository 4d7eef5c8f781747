"""What every command of the project shares: flag checks, one-line errors, dying with the parent.

main.py, train.py, evaluate.py and `python -m datasets.build` check all their flags and inputs
with the `check_*` functions here before they write anything, and run under `run`, which turns a
bad flag or input into one line on stderr (plus at most a hint line) and a non-zero exit:

  main.py: error: --teacher_steps must be a positive integer, got -5

The full traceback follows only with `--verbosity=1` (absl's flag) or higher. Errors that are not
about the input (a bug) keep their traceback.

Programs started by the pipeline (pipeline.runner) call `die_with_parent()` first thing, so a
killed main.py takes its train.py or evaluate.py with it instead of leaving an orphan that keeps
writing into the output folder.

Light on purpose: no TensorFlow import, so the checks run before any heavy work.
"""
import ctypes
import json
import os
import signal
import sys
import traceback

from absl import app
from absl import flags

# The pid of the parent that wants its children to die with it (set by pipeline.runner).
PARENT_PID_ENV = 'EIE_PARENT_PID'
_PR_SET_PDEATHSIG = 1  # linux/prctl.h

EXIT_USAGE = 2  # a bad flag or input
EXIT_FAILURE = 1  # the work itself failed


class InputError(app.UsageError, ValueError):
  """A bad flag or input file: shown as one line (and an optional hint line), no traceback.

  Both a usage error (absl's) and a ValueError, so callers that catch either see it.
  """

  def __init__(self, message, hint=None):
    super().__init__(message, EXIT_USAGE)
    self.hint = hint


# Checks of single values. Each returns the (converted) value or raises InputError naming the flag.

def check_int(name, value, minimum=1):
  """`value` as int if it is an integer >= `minimum`; `name` is the flag, e.g. '--max_steps'."""
  if isinstance(value, bool) or value is None or int(value) != value or value < minimum:
    what = ('a positive integer' if minimum == 1 else 'a non-negative integer' if minimum == 0
            else f'an integer >= {minimum}')
    raise InputError(f'{name} must be {what}, got {value!r}')
  return int(value)


def check_power_of_two(name, value, minimum=1):
  """`value` as int if it is a power of two >= `minimum`."""
  if (isinstance(value, bool) or value is None or int(value) != value or value < minimum
      or int(value) & (int(value) - 1)):
    raise InputError(f'{name} must be a power of two >= {minimum}, got {value!r}')
  return int(value)


def check_choices(name, values, choices):
  """`values` (a list) if it is non-empty and every value is one of `choices`."""
  bad = [v for v in values if v not in choices]
  if bad or not values:
    raise InputError(f'{name}={",".join(values)}: each value must be one of '
                     f'{", ".join(choices)}')
  return list(values)


def check_output_dir(name, path):
  """`path` if it can be a folder of outputs: absent (then its parent must not be a file) or a
  folder, not a file."""
  if not path:
    raise InputError(f'{name} is empty')
  if os.path.exists(path) and not os.path.isdir(path):
    raise InputError(f'{name}={path} is a file, not a folder')
  parent = os.path.dirname(os.path.abspath(path))
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent):
    raise InputError(f'{name}={path}: {parent} is a file, not a folder')
  return path


def check_output_file(name, path):
  """`path` if a file can be written there: not a folder, and its folder not a file."""
  if not path:
    raise InputError(f'{name} is empty')
  if os.path.isdir(path):
    raise InputError(f'{name}={path} is a folder, not a file')
  check_output_dir(name, os.path.dirname(os.path.abspath(path)))
  return path


def check_input_dir(name, path):
  """`path` if it is an existing folder."""
  if not path or not os.path.isdir(path):
    raise InputError(f'{name}={path}: no such folder')
  return path


def check_input_file(name, path):
  """`path` if it is an existing file."""
  if not path or not os.path.isfile(path):
    raise InputError(f'{name}={path}: no such file')
  return path


def parse_json_object(name, text):
  """The JSON object `text` of flag `name` as a dict."""
  try:
    value = json.loads(text or '{}')
  except json.JSONDecodeError as e:
    raise InputError(f'{name} is not valid JSON ({e}): {text!r}') from None
  if not isinstance(value, dict):
    raise InputError(f'{name} must be a JSON object, got {text!r}')
  return value


# Running a command.

def _program(argv0=None):
  return os.path.basename(argv0 or sys.argv[0] or 'program')


def _verbose():
  """Whether to print tracebacks: with --verbosity=1 or more, and in programs the pipeline runs
  (their output goes to a log file, which keeps the trace; the console shows the last line)."""
  if os.environ.get(PARENT_PID_ENV):
    return True
  try:
    return flags.FLAGS['verbosity'].value >= 1
  except (KeyError, flags.Error):
    return False


def print_error(error, program=None, hint=None):
  """Prints `program: error: <message>` (and a hint line) on stderr."""
  program = program or _program()
  message = ' '.join(str(error).split('\n')[0].split()) or type(error).__name__
  print(f'{program}: error: {message}', file=sys.stderr)
  hint = hint or getattr(error, 'hint', None)
  if hint:
    print(f'  {hint}', file=sys.stderr)
  sys.stderr.flush()


# What `run` reports as one line: bad flags and inputs, missing or unreadable files, failed stages.
INPUT_ERRORS = (app.UsageError, ValueError, OSError)
WORK_ERRORS = (RuntimeError,)


def exit_on_error(main, program=None):
  """`main(argv)` wrapped so that input errors end the process with one line (see module doc)."""

  def wrapped(argv):
    try:
      return main(argv)
    except KeyboardInterrupt:
      print(f'{program or _program(argv[0])}: interrupted', file=sys.stderr)
      sys.exit(130)
    except INPUT_ERRORS + WORK_ERRORS as e:
      if _verbose():
        traceback.print_exc()
      usage = isinstance(e, (app.UsageError, InputError))
      print_error(e, program or _program(argv[0]),
                  None if usage or _verbose() else 'full traceback with --verbosity=1')
      sys.exit(EXIT_USAGE if usage else EXIT_FAILURE)

  return wrapped


def flags_parser(program=None, flag_values=flags.FLAGS):
  """An `app.run` flags parser that reports a bad flag as one line and a hint, not a screen."""

  def parse(argv):
    try:
      return flag_values(argv)
    except flags.Error as e:
      print_error(e, program or _program(argv[0]), 'the flags: --helpshort')
      sys.exit(EXIT_USAGE)

  return parse


def run(main, program=None):
  """`app.run(main)` with one-line errors for bad flags and inputs (see the module docstring)."""
  app.run(exit_on_error(main, program), flags_parser=flags_parser(program))


# Dying with the parent.

def child_environment():
  """Environment entries for a child that must die with this process (see die_with_parent)."""
  return {PARENT_PID_ENV: str(os.getpid())}


def die_with_parent():
  """If started by a parent that asked for it (PARENT_PID_ENV), be killed when the parent dies.

  Linux only (prctl PR_SET_PDEATHSIG); elsewhere nothing happens. A parent that died before the
  call (this process is then already an orphan) ends this process at once.
  """
  parent = os.environ.get(PARENT_PID_ENV)
  if not parent or not sys.platform.startswith('linux'):
    return
  try:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
  except (OSError, AttributeError):
    return
  if str(os.getppid()) != parent:
    os._exit(EXIT_FAILURE)  # pylint: disable=protected-access  (no clean-up: the parent is gone)
