"""One writer per folder: a lock file holding the pid of the process that works there.

`hold(folder)` takes an exclusive `flock` on `<folder>/.lock` and writes the holder's pid into it.
The kernel drops the lock when the holder dies, however it dies, so a lock file left by a killed
run (a stale lock, whose pid no longer runs) never blocks the next run. A second run on the same
folder is refused with a one-line error naming the holder. Programs the holder starts
(pipeline.runner) inherit the lock's file descriptor, so the folder stays locked until they have
exited too.
"""
import contextlib
import errno
import fcntl
import os

from pipeline.cli import InputError

LOCK_NAME = '.lock'
_held = {}  # path -> file descriptor, the locks this process holds


class FolderInUse(InputError):
  """Another process holds the folder's lock."""


def lock_path(folder):
  return os.path.join(folder, LOCK_NAME)


def pid_running(pid):
  """Whether a process with this pid exists (zombies included)."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def _read_pid(fd):
  os.lseek(fd, 0, os.SEEK_SET)
  text = os.read(fd, 64).decode('ascii', 'replace').strip()
  return int(text) if text.isdigit() else None


def acquire(folder, what='folder'):
  """Locks `folder` (created if needed) for this process.

  Returns:
    (fd, stale_pid): the lock's file descriptor and the pid of a dead holder whose lock file was
    left behind (None if there was none).

  Raises:
    FolderInUse naming the holder's pid when another process holds the lock.
  """
  os.makedirs(folder, exist_ok=True)
  path = lock_path(folder)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError as e:
    holder = _read_pid(fd)
    os.close(fd)
    if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
      raise
    if holder is not None and pid_running(holder):
      who = f'process {holder}'
    elif holder is not None:
      who = f'the programs started by process {holder} (which has exited)'
    else:
      who = 'another process'
    raise FolderInUse(f'{what} {folder} is in use by {who} (lock file {path}); one run per '
                      'folder', hint='wait for it to finish or stop it, then rerun') from None
  stale = _read_pid(fd)
  if stale == os.getpid():
    stale = None
  os.ftruncate(fd, 0)
  os.lseek(fd, 0, os.SEEK_SET)
  os.write(fd, f'{os.getpid()}\n'.encode('ascii'))
  os.fsync(fd)
  _held[path] = fd
  return fd, stale


def release(folder):
  """Releases this process's lock on `folder` (the file stays, empty: no pid, nothing stale)."""
  fd = _held.pop(lock_path(folder), None)
  if fd is None:
    return
  os.ftruncate(fd, 0)
  fcntl.flock(fd, fcntl.LOCK_UN)
  os.close(fd)


@contextlib.contextmanager
def hold(folder, what='folder', announce=print):
  """Context manager: `acquire(folder)` on entry (announcing a recovered stale lock), `release`
  on exit."""
  _, stale = acquire(folder, what)
  if stale is not None and announce:
    announce(f'{what} {folder}: the lock of process {stale}, which no longer runs, was stale; '
             'taken over')
  try:
    yield
  finally:
    release(folder)


def held_fds():
  """The file descriptors of the locks this process holds (its children inherit them)."""
  return tuple(_held.values())
