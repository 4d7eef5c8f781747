"""pipeline.console: TensorFlow's start-up notices, C++ log lines and library warnings stay off the
console by default, our own lines stay on, and --verbosity=1 brings everything back."""
import logging
import os
import subprocess
import sys

import pytest

from pipeline import console

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROGRAM = """
import sys
from pipeline import console
quieted = console.quiet(sys.argv)
import logging
import tensorflow as tf
from absl import logging as absl_logging
tf.constant([1.0]) + 1.0  # the first op probes for CUDA devices
tf.get_logger().warning('5 out of the last 5 calls to <function f> triggered tf.function retracing')
absl_logging.warning('our own warning')
absl_logging.error('an error of ours')
import warnings
warnings.warn('old API', DeprecationWarning)
print('quieted', quieted, flush=True)
"""


def _run(*args, env=None):
  environment = dict(os.environ, PYTHONPATH=ROOT)
  for name in ('TF_CPP_MIN_LOG_LEVEL', console.FULL_ENV):
    environment.pop(name, None)
  environment.update(env or {})
  return subprocess.run([sys.executable, '-c', PROGRAM, *args], cwd=ROOT, env=environment,
                        capture_output=True, text=True, timeout=300)


def test_requested_verbosity():
  assert console.requested_verbosity(['p', '--verbosity=1']) == 1
  assert console.requested_verbosity(['p', '-v', '2']) == 2
  assert console.requested_verbosity(['p', '--v=0', 'x']) == 0
  assert console.requested_verbosity(['p', '--model=x']) is None
  assert console.requested_verbosity(['p', '--verbosity=loud']) is None


def test_startup_noise_and_library_records():
  assert console.is_startup_noise('WARNING: All log messages before absl::InitializeLog() is '
                                  'called are written to STDERR')
  assert console.is_startup_noise('I0000 00:00:1.2 23002 cudart_stub.cc:31] Could not find cuda '
                                  'drivers on your machine, GPU will not be used.')
  assert not console.is_startup_noise('evaluate.py relpose: error: image a.png: no such file')
  ours = logging.LogRecord('absl', logging.INFO, f'{ROOT}/main.py', 1, 'x', None, None)
  theirs = logging.LogRecord('absl', logging.WARNING,
                             '/x/site-packages/tensorflow_datasets/core/features/feature.py', 1,
                             'x', None, None)
  assert not console.is_library_record(ours) and console.is_library_record(theirs)
  assert console.is_library_record(logging.LogRecord('tensorflow', logging.WARNING, 'p', 1, 'x',
                                                     None, None))
  keep_info, no_info = console._ConsoleFilter(True), console._ConsoleFilter(False)
  assert keep_info.filter(ours) and not no_info.filter(ours)
  assert not keep_info.filter(theirs)
  theirs.levelno = logging.ERROR
  assert keep_info.filter(theirs)


@pytest.mark.slow  # two fresh TensorFlow processes, ~20 s
def test_quiet_by_default_and_everything_with_verbosity():
  quiet = _run()
  assert quiet.returncode == 0, quiet.stderr
  assert 'quieted True' in quiet.stdout
  for noise in ('absl::InitializeLog', 'cudart_stub', 'cpu_feature_guard', 'cuInit', 'retracing',
                'DeprecationWarning'):
    assert noise not in quiet.stderr, (noise, quiet.stderr)
  assert 'our own warning' in quiet.stderr and 'an error of ours' in quiet.stderr
  loud = _run('--verbosity=1')
  assert 'quieted False' in loud.stdout
  assert 'retracing' in loud.stderr and 'our own warning' in loud.stderr
  # On a machine without CUDA drivers TensorFlow says so while it loads.
  if 'cudart_stub' in loud.stderr:
    assert 'absl::InitializeLog' in loud.stderr
  # A program that the pipeline runs prints everything: its output is the stage's log.
  full = _run(env={console.FULL_ENV: 'full'})
  assert 'quieted False' in full.stdout and 'retracing' in full.stderr


def test_log_to_file_gets_every_record_and_the_startup_lines(tmp_path):
  console.STARTUP_LINES[:] = ['I0000 cudart_stub.cc:31] Could not find cuda drivers']
  try:
    handler = console.log_to_file(str(tmp_path / 'logs' / 'main.log'))
    try:
      logging.getLogger('tensorflow_datasets').warning('a library warning')
    finally:
      logging.getLogger().removeHandler(handler)
      handler.close()
  finally:
    console.STARTUP_LINES[:] = []
  text = (tmp_path / 'logs' / 'main.log').read_text()
  assert 'cudart_stub' in text and 'a library warning' in text
