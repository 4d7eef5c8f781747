"""`correlation.align` beside `correlate` and the numpy reference: time per pair, accuracy, cold start.

In one process, for every bandwidth B and batch size, rounds that call each implementation in turn
(this machine's speed swings 2x between processes and with its load: only ratios within one run
count) time per pair, as wall and as process CPU time (steadier on a shared machine; one thread):

  correlate      correlation.correlate, float32: the baseline of every ratio;
  align          correlation.align, default candidates, refined off the grid;
  align_1        correlation.align(candidates=1): the grid argmax's peak refined;
  align_grid     correlation.align(refine=False): the grid argmax, unrefined;
  numpy_argmax   benchmarks/numpy_so3.align: the numpy SOFT correlation (float64) and its grid argmax,
                 the plain peer (pysofft and s2fft run in bench_correlation_peers.py, .venv-bench).

`--pieces` adds one compiled align step cut after each stage (volume; + row samples; + distinct grid
peaks; + screening; + refinement), for where the time goes. Accuracy: the angle between the found
rotation and R0 for pairs `g = R0 . f` of band-limited maps with Haar-random R0 (`correlation.rotate`,
exact in the harmonic domain), median and max over `--accuracy_pairs`. `--cold` runs each of align
and correlate in fresh processes (B = 16 and 32, one pair and a batch of 16): seconds from process
start to the answer, of which importing, the first call alone, and a second call.

Usage:
  .venv/bin/python benchmarks/bench_align.py [--bandwidths=16,32,64] [--batches=1,16] [--channels=32]
      [--rounds=8] [--pieces] [--cold] [--threads=1]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
  sys.path.insert(0, REPO_ROOT)

from benchmarks.threads import thread_environment  # pylint: disable=g-import-not-at-top
from benchmarks.threads import threads_from_argv  # pylint: disable=g-import-not-at-top

os.environ.update(thread_environment(threads_from_argv(sys.argv[1:])))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

import correlation  # pylint: disable=g-import-not-at-top
from benchmarks import numpy_so3  # pylint: disable=g-import-not-at-top
from benchmarks import step_flags  # pylint: disable=g-import-not-at-top
from correlation import alignment  # pylint: disable=g-import-not-at-top
from correlation import so3  # pylint: disable=g-import-not-at-top
from geometry import rotations  # pylint: disable=g-import-not-at-top
from tests.test_rotate import band_limited_map, exact_rotations  # pylint: disable=g-import-not-at-top

# What one fresh process runs for the cold-start column: import, first call, second call.
COLD_SCRIPT = '''
import os, sys, time, json
start = time.perf_counter()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
import numpy as np
import correlation
imported = time.perf_counter()
b, batch, name = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
shape = ((batch,) if batch > 1 else ()) + (2 * b, 2 * b, 32)
rng = np.random.default_rng(0)
f, g = rng.standard_normal(shape).astype(np.float32), rng.standard_normal(shape).astype(np.float32)
fn = getattr(correlation, name)
t0 = time.perf_counter(); np.asarray(fn(f, g)); t1 = time.perf_counter()
np.asarray(fn(f, g)); t2 = time.perf_counter()
print(json.dumps({'import_s': imported - start, 'first_s': t1 - t0, 'second_s': t2 - t1}))
'''


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--bandwidths', default='16,32,64')
  parser.add_argument('--batches', default='1,16', help='pairs per call')
  parser.add_argument('--channels', type=int, default=32)
  parser.add_argument('--rounds', type=int, default=8, help='rounds over all implementations')
  parser.add_argument('--accuracy_pairs', type=int, default=16)
  parser.add_argument('--pieces', action='store_true', help='also time the stages of one align step')
  parser.add_argument('--cold', action='store_true', help='also time first calls in fresh processes')
  parser.add_argument('--no_numpy', action='store_true', help='leave out the numpy peer')
  parser.add_argument('--threads', type=int, default=1)
  args = parser.parse_args(argv)
  args.bandwidths = step_flags.int_list(args.bandwidths, 'bandwidths')
  args.batches = step_flags.int_list(args.batches, 'batches')
  if min(args.channels, args.rounds, args.accuracy_pairs, args.threads) < 1:
    raise SystemExit('--channels, --rounds, --accuracy_pairs and --threads must be positive')
  return args


def best_of_three(fn):
  """(wall, CPU) seconds of the fastest of three calls."""
  best = (np.inf, np.inf)
  for _ in range(3):
    wall, cpu = time.perf_counter(), time.process_time()
    tf.nest.map_structure(np.asarray, fn())
    best = min(best, (time.perf_counter() - wall, time.process_time() - cpu))
  return best


def implementations(with_numpy):
  """name -> function of (f, g) (float32 tensors, float64 arrays)."""
  found = {
      'correlate': lambda f, g, f64, g64: correlation.correlate(f, g),
      'align': lambda f, g, f64, g64: correlation.align(f, g),
      'align_1': lambda f, g, f64, g64: correlation.align(f, g, candidates=1),
      'align_grid': lambda f, g, f64, g64: correlation.align(f, g, refine=False),
  }
  if with_numpy:
    found['numpy_argmax'] = lambda f, g, f64, g64: numpy_so3.align(f64, g64)
  return found


def align_pieces(bandwidth):
  """Compiled functions of (f, g) `[n, 2B, 2B, C]`: one align step cut after each stage."""
  separation = 4 * 180.0 / bandwidth

  def upto(stage):
    def run(f, g):
      spectrum = so3.spectra(f, g)
      if stage == 'volume':
        return so3.volume_from_spectrum(spectrum, bandwidth)
      volume, samples = so3.volume_from_spectrum(spectrum, bandwidth, with_samples=True)
      if stage == '+ row samples':
        return volume, samples
      rotation, score, _ = alignment._distinct_peaks(volume, alignment.CANDIDATE_PEAKS, bandwidth,  # pylint: disable=protected-access
                                                     separation)
      if stage == '+ distinct peaks':
        return rotation, score
      rotation, score = alignment._screen(samples, rotation, score, alignment.REFINED_PEAKS,  # pylint: disable=protected-access
                                          bandwidth)
      if stage == '+ screening':
        return rotation, score
      return alignment._refine(spectrum, samples, rotation, alignment.REFINE_ITERATIONS,  # pylint: disable=protected-access
                               tf.math.is_finite(score))
    return tf.function(run, jit_compile=True, autograph=False)

  return {f'step: {stage}': upto(stage) for stage in
          ('volume', '+ row samples', '+ distinct peaks', '+ screening', '+ refinement')}


def time_case(args, bandwidth, batch):
  """Rows of one (B, batch): per-pair wall and CPU medians over rounds, and ratios to correlate."""
  rng = np.random.default_rng(bandwidth + batch)
  shape = ((batch,) if batch > 1 else ()) + (2 * bandwidth, 2 * bandwidth, args.channels)
  f64, g64 = rng.standard_normal(shape), rng.standard_normal(shape)
  f, g = tf.constant(f64, tf.float32), tf.constant(g64, tf.float32)
  calls = {name: (lambda fn=fn: fn(f, g, f64, g64))
           for name, fn in implementations(not args.no_numpy).items()}
  if args.pieces:
    flat = lambda x: tf.reshape(x, [-1] + x.shape[-3:].as_list())
    calls.update({name: (lambda fn=fn: fn(flat(f), flat(g)))
                  for name, fn in align_pieces(bandwidth).items()})
  times = {name: [] for name in calls}
  for call in calls.values():
    tf.nest.map_structure(np.asarray, call())  # compile
  for _ in range(args.rounds):
    for name, call in calls.items():
      times[name].append(best_of_three(call))
  per_pair = {name: (statistics.median(t[0] for t in ts) / batch,
                     statistics.median(t[1] for t in ts) / batch) for name, ts in times.items()}
  base = per_pair['correlate']
  return [{'bandwidth': bandwidth, 'batch': batch, 'name': name, 'wall_ms': 1e3 * wall,
           'cpu_ms': 1e3 * cpu, 'wall_ratio': wall / base[0], 'cpu_ratio': cpu / base[1]}
          for name, (wall, cpu) in per_pair.items()]


def accuracy(args, bandwidth):
  """name -> (median, max) degrees from R0 for band-limited pairs `g = R0 . f`, Haar-random R0."""
  f = band_limited_map(bandwidth, seed=bandwidth, channels=args.channels // 4 or 1)
  r0 = exact_rotations(args.accuracy_pairs, seed=bandwidth + 1)
  g = correlation.rotate(f, r0).numpy()
  f32, g32 = tf.constant(f, tf.float32), tf.constant(g, tf.float32)
  found = {}
  for name, fn in implementations(not args.no_numpy).items():
    if name == 'correlate':
      continue
    rotation = fn(f32, g32, np.broadcast_to(f, g.shape), g)
    error = rotations.angular_distance(tf.cast(rotation, tf.float64), r0).numpy()
    found[name] = (float(np.median(error)), float(error.max()))
  return found


def cold_start(bandwidth, batch, name):
  """Fresh process: (seconds from its start to the answer, import, first call, second call)."""
  start = time.perf_counter()
  proc = subprocess.run([sys.executable, '-c', COLD_SCRIPT, str(bandwidth), str(batch), name],
                        capture_output=True, text=True, cwd=REPO_ROOT, check=False,
                        env=dict(os.environ, PYTHONPATH=REPO_ROOT))
  total = time.perf_counter() - start
  lines = [line for line in proc.stdout.splitlines() if line.startswith('{')]
  if proc.returncode or not lines:
    raise SystemExit(f'cold-start process failed: {proc.stderr.strip().splitlines()[-1:]}')
  result = json.loads(lines[-1])
  return dict(result, total_s=total)


def main(argv):
  args = parse_args(argv)
  tf.config.threading.set_intra_op_parallelism_threads(args.threads)
  tf.config.threading.set_inter_op_parallelism_threads(args.threads)
  load = os.getloadavg()[0]
  print(f'TensorFlow {tf.__version__}, {os.cpu_count()} cores, load average {load:.1f}, '
        f'{args.threads} thread(s), C = {args.channels}, {args.rounds} rounds (median of the best of '
        '3 calls per round), per pair.\n')
  print('| B | batch | implementation | wall ms | CPU ms | wall / correlate | CPU / correlate | '
        'error median / max (deg) |')
  print('|---|---|---|---|---|---|---|---|')
  for bandwidth in args.bandwidths:
    errors = accuracy(args, bandwidth)
    for batch in args.batches:
      for row in time_case(args, bandwidth, batch):
        error = errors.get(row['name'])
        error = f'{error[0]:.3g} / {error[1]:.3g}' if error else ''
        print(f'| {bandwidth} | {batch} | {row["name"]} | {row["wall_ms"]:.3g} | {row["cpu_ms"]:.3g} | '
              f'{row["wall_ratio"]:.2f} | {row["cpu_ratio"]:.2f} | {error} |', flush=True)
  print(f'\nload average after: {os.getloadavg()[0]:.1f}')
  if args.cold:
    print('\n| call | B | batch | process start to answer (s) | import (s) | first call (s) | '
          'second call (s) |')
    print('|---|---|---|---|---|---|---|')
    for name in ('correlate', 'align'):
      for bandwidth in (16, 32):
        for batch in (1, 16):
          r = cold_start(bandwidth, batch, name)
          print(f'| {name} | {bandwidth} | {batch} | {r["total_s"]:.2f} | {r["import_s"]:.2f} | '
                f'{r["first_s"]:.2f} | {r["second_s"]:.3f} |', flush=True)


if __name__ == '__main__':
  main(sys.argv[1:])
