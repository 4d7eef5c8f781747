"""The command-line plumbing every program shares (pipeline.cli) and the folder locks
(pipeline.locks): one-line errors, flag checks, one run per folder, children that die with their
parent."""
import os
import signal
import subprocess
import sys
import textwrap
import time

from absl import app
import pytest

from pipeline import cli
from pipeline import locks
from tests.conftest import REPO_ROOT


def test_checks_name_the_flag():
  assert cli.check_int('--steps', 3) == 3
  assert cli.check_int('--every', 0, minimum=0) == 0
  for bad in (0, -5, 2.5, True, None):
    with pytest.raises(cli.InputError, match='--steps must be a positive integer'):
      cli.check_int('--steps', bad)
  with pytest.raises(cli.InputError, match='--every must be a non-negative integer, got -1'):
    cli.check_int('--every', -1, minimum=0)
  assert cli.check_power_of_two('--image_size', 16, minimum=4) == 16
  for bad in (7, 2, 24):
    with pytest.raises(cli.InputError, match='--image_size must be a power of two >= 4'):
      cli.check_power_of_two('--image_size', bad, minimum=4)
  with pytest.raises(cli.InputError, match='--mode=x: each value must be one of fmap, target'):
    cli.check_choices('--mode', ['x'], ('fmap', 'target'))
  with pytest.raises(cli.InputError, match='--data_config is not valid JSON'):
    cli.parse_json_object('--data_config', '{bandwidth: 16}')
  with pytest.raises(cli.InputError, match='must be a JSON object'):
    cli.parse_json_object('--data_config', '[1]')


def test_output_and_input_paths(tmp_path):
  a_file = tmp_path / 'file'
  a_file.write_text('x')
  with pytest.raises(cli.InputError, match='is a file, not a folder'):
    cli.check_output_dir('--output_dir', str(a_file))
  with pytest.raises(cli.InputError, match='is a file, not a folder'):
    cli.check_output_dir('--output_dir', str(a_file / 'below'))
  assert cli.check_output_dir('--output_dir', str(tmp_path / 'new' / 'deep'))
  assert not (tmp_path / 'new').exists()  # checking writes nothing
  with pytest.raises(cli.InputError, match='is a folder, not a file'):
    cli.check_output_file('--output', str(tmp_path))
  with pytest.raises(cli.InputError, match='no such folder'):
    cli.check_input_dir('--mesh_dir', str(tmp_path / 'none'))
  with pytest.raises(cli.InputError, match='no such file'):
    cli.check_input_file('--embeddings', str(tmp_path / 'none.npz'))


def _exit(main, argv, capsys):
  with pytest.raises(SystemExit) as exit_info:
    cli.exit_on_error(main, 'prog.py')(argv)
  return exit_info.value.code, capsys.readouterr().err.strip().splitlines()


def test_errors_are_one_line_and_a_hint_with_the_trace_behind_verbosity(capsys):
  from absl import flags  # pylint: disable=g-import-not-at-top

  def bad_flag(argv):
    raise cli.InputError('--steps must be a positive integer, got -5')

  def bad_file(argv):
    raise ValueError('embeddings file x.npz: no such file\nsecond line')

  def usage(argv):
    raise app.UsageError('unexpected arguments')

  code, err = _exit(bad_flag, ['prog.py'], capsys)
  assert code == 2 and err == ['prog.py: error: --steps must be a positive integer, got -5']
  code, err = _exit(usage, ['prog.py'], capsys)
  assert code == 2 and err == ['prog.py: error: unexpected arguments']
  code, err = _exit(bad_file, ['prog.py'], capsys)
  assert code == 1 and err == ['prog.py: error: embeddings file x.npz: no such file',
                               '  full traceback with --verbosity=1']
  old = flags.FLAGS['verbosity'].value
  try:
    flags.FLAGS['verbosity'].value = 1
    code, err = _exit(bad_file, ['prog.py'], capsys)
  finally:
    flags.FLAGS['verbosity'].value = old
  assert code == 1 and err[0] == 'Traceback (most recent call last):'
  assert err[-1] == 'prog.py: error: embeddings file x.npz: no such file'

  def bug(argv):
    raise KeyError('a bug keeps its traceback')

  with pytest.raises(KeyError):
    cli.exit_on_error(bug, 'prog.py')(['prog.py'])


def _python(code, **kwargs):
  """A Python process running `code` from the repository root (no TensorFlow: fast)."""
  return subprocess.Popen([sys.executable, '-c', textwrap.dedent(code)], cwd=REPO_ROOT,
                          env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)), text=True, **kwargs)


def test_one_process_per_folder_and_stale_locks_taken_over(tmp_path):
  folder = str(tmp_path / 'out')
  fd, stale = locks.acquire(folder, '--output_dir')
  try:
    assert stale is None and fd in locks.held_fds()
    with open(locks.lock_path(folder)) as f:
      assert f.read().strip() == str(os.getpid())
    other = _python(f"""
        from pipeline import locks
        try:
          locks.acquire({folder!r}, '--output_dir')
        except locks.FolderInUse as e:
          print(e)
        """, stdout=subprocess.PIPE)
    out, _ = other.communicate(timeout=60)
    assert f'--output_dir {folder} is in use by process {os.getpid()}' in out
  finally:
    locks.release(folder)
  assert locks.held_fds() == ()

  # A holder killed with SIGKILL leaves its pid in the lock file: the next run takes it over.
  holder = _python(f"""
      import time
      from pipeline import locks
      locks.acquire({folder!r})
      print('locked', flush=True)
      time.sleep(60)
      """, stdout=subprocess.PIPE)
  assert holder.stdout.readline().strip() == 'locked'
  with pytest.raises(locks.FolderInUse, match=f'in use by process {holder.pid}'):
    locks.acquire(folder)
  holder.kill()
  holder.wait()
  messages = []
  with locks.hold(folder, 'folder', announce=messages.append):
    assert len(messages) == 1 and f'process {holder.pid}, which no longer runs' in messages[0]
  with open(locks.lock_path(folder)) as f:
    assert f.read() == ''  # released: no pid left to look stale


def test_children_die_with_their_parent(tmp_path):
  """A parent that starts a child the way pipeline.runner does, SIGKILLed: the child goes too
  (without die_with_parent it kept running, writing into the output folder)."""
  pid_file = tmp_path / 'child.pid'
  parent = _python(f"""
      import subprocess, sys, time
      from pipeline import cli
      import os
      child = subprocess.Popen([sys.executable, '-c', '''
      import os, time
      from pipeline import cli
      cli.die_with_parent()
      open({str(pid_file)!r}, "w").write(str(os.getpid()))
      time.sleep(120)
      '''], env=dict(os.environ, **cli.child_environment()))
      time.sleep(120)
      """)
  try:
    deadline = time.time() + 60
    while not (pid_file.exists() and pid_file.read_text()) and time.time() < deadline:
      time.sleep(0.1)
    child = int(pid_file.read_text())
    assert locks.pid_running(child)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 10
    while _alive(child) and time.time() < deadline:
      time.sleep(0.1)
    assert not _alive(child)
  finally:
    if parent.poll() is None:
      parent.kill()


def _alive(pid):
  """Running and not a zombie."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().split(')')[-1].split()[0] != 'Z'
  except FileNotFoundError:
    return False


_TF_NOISE = ('WARNING: All log messages', 'I0000', 'E0000', 'W0000', 'To enable the following',
             'oneDNN')


def _command(tmp_path, *args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', CUDA_VISIBLE_DEVICES='')
  return subprocess.run([sys.executable, *args], cwd=REPO_ROOT, env=env, capture_output=True,
                        text=True, timeout=300)


@pytest.mark.slow  # a dozen TensorFlow processes
def test_every_command_reports_a_bad_flag_in_one_line_and_writes_nothing(tmp_path):
  out = tmp_path / 'out'
  cases = [
      (['main.py', '--teacher_steps=-5'], '--teacher_steps must be a positive integer, got -5'),
      (['main.py', '--bandwidth=abc'], 'flag --bandwidth=abc'),
      (['main.py', '--stages=bogus'], "unknown stages ['bogus']"),
      (['train.py', '--model=teacher', '--max_steps=-1'], '--max_steps must be a non-negative'),
      (['train.py', '--model=teacher', '--batch_size=0'], '--batch_size must be a positive'),
      (['train.py', '--model=teacher', '--data_config={bandwidth: 8'],
       '--data_config is not valid JSON'),
      (['train.py', '--model=bogus'], 'flag --model=bogus'),
      (['evaluate.py', '--mode=bogus', '--embeddings=x.npz'], '--mode=bogus: each value'),
      (['evaluate.py', '--pairs=all', '--embeddings=x.npz'], '--pairs=all: each value'),
      (['evaluate.py', '--bandwidth=3'], "Unknown command line flag 'bandwidth'"),
      (['-m', 'datasets.build', '--bandwidth=0'], '--bandwidth must be a positive integer'),
      (['-m', 'datasets.build', '--source=folder', f'--mesh_dir={tmp_path / "none"}'],
       '--mesh_dir='),
  ]
  for args, message in cases:
    program = args[1].split('.')[-1] + '.py' if args[0] == '-m' else args[0]
    place = {'main.py': [f'--output_dir={out}'], 'train.py': [f'--model_dir={out}'],
             'build.py': [f'--data_dir={out}']}.get(program, [])
    result = _command(tmp_path, *args, *place)
    lines = [l for l in result.stderr.splitlines() if l.strip() and not l.startswith(_TF_NOISE)]
    assert result.returncode != 0, args
    assert 'Traceback' not in result.stderr and 1 <= len(lines) <= 2, (args, lines)
    assert lines[0].startswith(f'{program}:') and message in lines[0], (args, lines)
    assert not out.exists(), args
