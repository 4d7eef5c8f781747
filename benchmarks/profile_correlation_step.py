"""Where one compiled `correlate` step spends its time, XLA operation by operation.

Runs a step (`so3._volume_step`, one XLA call) under the TensorFlow profiler and sums, per operation
of XLA's compiled program (a fusion, a matrix product, an FFT, a copy), the time of the events that
XLA's CPU runtime records directly under each execution of the program. Names are those of the
optimized HLO (`tf.function(...).experimental_get_compiler_ir(...)(stage='optimized_hlo')` prints
it, so a fusion can be read back to the ops it fused). The profiler adds a little time to every
operation; compare operations with each other, and whole steps with `bench_correlation_pieces.py`.

Usage:
  .venv/bin/python benchmarks/profile_correlation_step.py [--bandwidth=32] [--channels=32]
      [--pairs=1] [--threads=1] [--calls=50] [--top=25]
"""
import collections
import glob
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import step_flags  # pylint: disable=g-import-not-at-top
from benchmarks.threads import thread_environment  # pylint: disable=g-import-not-at-top
from benchmarks.threads import threads_from_argv  # pylint: disable=g-import-not-at-top

os.environ.update(thread_environment(threads_from_argv(sys.argv[1:])))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf
from tensorflow.tsl.profiler.protobuf import xplane_pb2

from correlation import so3

PROGRAM_EVENT = 'ThunkExecutor::Execute'  # one execution of the compiled program


def operation_times(space):
  """Seconds per operation name, summed over the space's executions, and the executions' total.

  An operation is an event directly under a program execution on the same trace line (events nest
  by time: a copy's transpose kernels lie inside the copy and are not counted again).
  """
  per_operation, total = collections.Counter(), 0.0
  for plane in space.planes:
    names = plane.event_metadata
    for line in plane.lines:
      events = sorted(line.events, key=lambda e: (e.offset_ps, -e.duration_ps))
      open_events = []  # (end, name) of the events enclosing the current one
      for event in events:
        start, end = event.offset_ps, event.offset_ps + event.duration_ps
        while open_events and open_events[-1][0] <= start:
          open_events.pop()
        name = names[event.metadata_id].name
        if name == PROGRAM_EVENT:
          total += event.duration_ps * 1e-12
        elif open_events and open_events[-1][1] == PROGRAM_EVENT and not name.startswith('end: '):
          per_operation[name] += event.duration_ps * 1e-12
        open_events.append((end, name))
  return per_operation, total


def profile(step, args, calls):
  """Runs `step(*args)` `calls` times under the profiler: (per-operation seconds, total) per call."""
  for _ in range(3):
    step(*args)
  logdir = tempfile.mkdtemp(prefix='correlation_profile_')
  try:
    tf.profiler.experimental.start(logdir)
    for _ in range(calls):
      step(*args)
    tf.profiler.experimental.stop()
    space = xplane_pb2.XSpace()
    for path in glob.glob(os.path.join(logdir, '**', '*.xplane.pb'), recursive=True):
      with open(path, 'rb') as trace:
        space.MergeFromString(trace.read())
  finally:
    shutil.rmtree(logdir, ignore_errors=True)
  per_operation, total = operation_times(space)
  return {name: seconds / calls for name, seconds in per_operation.items()}, total / calls


def main(argv):
  args = step_flags.parse_step_flags(__doc__.split('\n')[0], argv,
                                     calls=(50, 'profiled calls'),
                                     top=(25, 'operations listed, slowest first'))
  tf.config.threading.set_intra_op_parallelism_threads(args.threads)
  tf.config.threading.set_inter_op_parallelism_threads(args.threads)
  b, rng = args.bandwidth, np.random.default_rng(0)
  shape = (args.pairs, 2 * b, 2 * b, args.channels)
  f = tf.constant(rng.standard_normal(shape), tf.float32)
  g = tf.constant(rng.standard_normal(shape), tf.float32)
  step = tf.function(lambda x, y: so3._volume_step(x, y, b, False), jit_compile=True)  # pylint: disable=protected-access
  per_operation, total = profile(step, (f, g), args.calls)
  if not per_operation:
    raise SystemExit('the profiler recorded no XLA operations (is this TensorFlow built with XLA?)')
  print(f'B = {b}, C = {args.channels}, {args.pairs} pair(s) per call, {args.threads} thread(s), '
        f'TensorFlow {tf.__version__}, mean of {args.calls} profiled calls: the compiled program '
        f'{1e3 * total:.3f} ms, its {len(per_operation)} operations {1e3 * sum(per_operation.values()):.3f} ms '
        'in all.\n')
  print('| operation | ms per call | share |')
  print('|---|---|---|')
  ranked = sorted(per_operation.items(), key=lambda item: -item[1])
  for name, seconds in ranked[:args.top]:
    print(f'| {name} | {1e3 * seconds:.3f} | {100 * seconds / total:.1f}% |')
  rest = sum(seconds for _, seconds in ranked[args.top:])
  if rest:
    print(f'| {len(ranked) - args.top} others | {1e3 * rest:.3f} | {100 * rest / total:.1f}% |')


if __name__ == '__main__':
  main(sys.argv[1:])
