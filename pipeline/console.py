"""A quiet console: the programs print their own progress and results, not TensorFlow's notices.

`quiet(argv)` is called by main.py, train.py and evaluate.py before anything imports TensorFlow.
Unless the command line asks for more (`--verbosity=1` or higher, `-v`), or the environment says
the output is a log (`EIE_CONSOLE=full`, which pipeline.runner sets for the programs it runs, so
`<output_dir>/logs/<stage>.log` keeps everything), it

- sets `TF_CPP_MIN_LOG_LEVEL=3` (unless the environment sets it): TensorFlow's C++ INFO, WARNING
  and ERROR lines, among them the `failed call to cuInit` error of CPU-only machines, XLA's
  service notices and tf.data notes;
- imports TensorFlow with stderr (file descriptor 2) caught: the lines it prints while loading,
  before Python could stop them (`All log messages before absl::InitializeLog() ...`,
  `cudart_stub.cc ... Could not find cuda drivers`, `cpu_feature_guard.cc ... optimized to use`),
  are kept in `STARTUP_LINES` (for a log) and any other line is written back to stderr;
- drops Python log records and warnings of TensorFlow, TFDS and Keras below ERROR from the
  console (deprecations, `triggered tf.function retracing`, TFDS's notes); with `own_info=False`
  (main.py, whose progress is its printed lines) also the program's own INFO records;
- with `tfds=True`, turns TFDS's progress bars off.

`log_to_file(path)` sends every log record (INFO and up, unfiltered) and the caught start-up lines
to a file: main.py keeps its own in `<output_dir>/logs/main.log`.
"""
import logging
import os
import sys
import tempfile
import warnings

FULL_ENV = 'EIE_CONSOLE'  # 'full': print everything (the output is a log)
STARTUP_LINES = []  # what TensorFlow printed while it was imported (quiet mode only)
# Substrings of TensorFlow's start-up notices (C++ lines printed before Python can set a level).
_STARTUP_NOISE = (
    'All log messages before absl::InitializeLog() is called',
    'cudart_stub.cc', 'cpu_feature_guard.cc', 'To enable the following instructions',
    'cuda_platform.cc', 'cuda_executor.cc', 'cuda_dnn.cc', 'cuda_fft.cc', 'cuda_blas.cc',
    'Unable to register cu', 'TF-TRT Warning', 'oneDNN custom operations are on',
    'computation placer already registered', 'absl::InitializeLog',
)
_LIBRARY_LOGGERS = ('tensorflow', 'tensorflow_datasets', 'keras', 'tensorflow_hub', 'jax', 'h5py',
                    'matplotlib', 'PIL')
_state = {'quiet': False}


def requested_verbosity(argv):
  """The absl `--verbosity` (or `-v`) value given in `argv`, or None."""
  for i, arg in enumerate(argv[1:], start=1):
    for prefix in ('--verbosity=', '-v=', '--v='):
      if arg.startswith(prefix):
        try:
          return int(arg[len(prefix):])
        except ValueError:
          return None
    if arg in ('--verbosity', '-v', '--v') and i + 1 < len(argv):
      try:
        return int(argv[i + 1])
      except ValueError:
        return None
  return None


def is_startup_noise(line):
  """Whether a stderr line is one of TensorFlow's start-up notices."""
  return any(s in line for s in _STARTUP_NOISE)


def is_library_record(record):
  """Whether a log record comes from a library (not from this project's code)."""
  if record.name.split('.')[0] in _LIBRARY_LOGGERS:
    return True
  path = getattr(record, 'pathname', '') or ''
  return 'site-packages' in path or 'dist-packages' in path


class _ConsoleFilter(logging.Filter):
  """Keeps ERROR and up; below that, the program's own records (INFO and up when `own_info`)."""

  def __init__(self, own_info):
    super().__init__()
    self.own_info = own_info

  def filter(self, record):
    if record.levelno >= logging.ERROR:
      return True
    if is_library_record(record):
      return False
    return self.own_info or record.levelno >= logging.WARNING


def _import_tensorflow_catching_stderr(tfds):
  """Imports TensorFlow (and TFDS) with fd 2 redirected; returns what they printed there."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as caught:
    os.dup2(caught.fileno(), 2)
    try:
      import tensorflow  # pylint: disable=g-import-not-at-top,unused-import
      if tfds:
        import tensorflow_datasets  # pylint: disable=g-import-not-at-top,unused-import
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      caught.seek(0)
      text = caught.read().decode('utf-8', errors='replace')
  return text.splitlines()


def quiet(argv=None, own_info=True, tfds=False):
  """Quietens the console of this program (module docstring); returns whether it did.

  Args:
    argv: the command line (default sys.argv), for `--verbosity`.
    own_info: show the program's own INFO log records (False: only its printed lines, and its
      warnings and errors).
    tfds: also import TFDS quietly and turn its progress bars off.
  """
  argv = sys.argv if argv is None else argv
  verbosity = requested_verbosity(argv)
  if os.environ.get(FULL_ENV) == 'full' or (verbosity is not None and verbosity >= 1):
    return False
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  # Already loaded (`python -m datasets.build`: the package imports it first), its start-up lines
  # are out; the filters below still apply.
  lines = [] if 'tensorflow' in sys.modules else _import_tensorflow_catching_stderr(tfds)
  STARTUP_LINES.extend(lines)
  for line in lines:
    if not is_startup_noise(line):
      print(line, file=sys.stderr)
  for module in ('tensorflow', 'tensorflow_datasets', 'keras', 'tensorflow_hub', 'absl'):
    warnings.filterwarnings('ignore', module=module)
  warnings.filterwarnings('ignore', category=DeprecationWarning)
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  console_filter = _ConsoleFilter(own_info)
  # On the console's handlers only (absl's, used under app.run, and those before it), so that a
  # log file (log_to_file) still gets every record.
  handlers = [absl_logging.get_absl_handler(), logging.lastResort]
  for name in ('',) + _LIBRARY_LOGGERS:
    handlers += logging.getLogger(name).handlers
  for handler in set(handlers):
    if handler is not None:
      handler.addFilter(console_filter)
  if tfds:
    from tensorflow_datasets.core.utils import tqdm_utils  # pylint: disable=g-import-not-at-top
    tqdm_utils.display_progress_bar(False)
  _state['quiet'] = True
  return True


def is_quiet():
  """Whether `quiet` quietened this program."""
  return _state['quiet']


def log_to_file(path):
  """Every log record from now on (INFO and up, nothing filtered) and the start-up lines caught
  by `quiet` go to `path` (appended)."""
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  handler = logging.FileHandler(path)
  handler.setLevel(logging.INFO)
  handler.setFormatter(absl_logging.PythonFormatter())
  if STARTUP_LINES:
    with open(path, 'a') as f:
      f.write('\n'.join(STARTUP_LINES) + '\n')
  logging.getLogger().addHandler(handler)
  return handler
