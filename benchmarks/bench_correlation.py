"""Timing of the TensorFlow SO(3) correlation (`correlation.correlate`) against a straightforward baseline.

Usage:
  TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/bench_correlation.py [--configs=32:32:1,32:32:64,64:32:1]
      [--reps=30] [--baseline_max_bandwidth=32] [--baseline_max_pairs=64] [--xla_only]

Each config is `B:C:N`: bandwidth, channels, pairs per call. Both implementations run the same SHTs;
the baseline then contracts a dense Wigner-d table `[2B, B, 2B-1, 2B-1]` (all orders, no symmetry, one
einsum) and takes a complex 2-D FFT, as a first implementation would. Times are the best of `reps`
calls (the machine is shared; the best is the least disturbed; `reps // pairs`, at least 3, for
batches), in milliseconds, after warm-up;
`CPU ms/pair` is the process CPU time of that call (all threads), steadier under contention.
`first call` is the cost of the first call of a fresh configuration: table build plus tracing (and XLA
compilation). Prints a Markdown table; the baseline's volume is checked against ours. The `align` rows
time `correlation.align` (grid peaks, then Newton refinement on the volume's own beta rows,
`so3.evaluate_rows`) on pairs `g = R . f` in a tf.function: the default (4 distinct grid peaks, the 2
that can still win refined), the grid argmax alone, and no refinement. `bench_align.py` times align
beside correlate and numpy, with accuracy and cold start.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf

import correlation
from correlation import legendre
from correlation import rotation
from correlation import sht
from correlation import so3
from correlation import wigner
from geometry import grids
from geometry import rotations


def dense_wigner_table(bandwidth):
  """`d^l_{mn}(beta_j)` for all orders, float32 `[2B (j), B (l), 2B-1 (m), 2B-1 (n)]`."""
  beta, _ = grids.sphere_grid(bandwidth)
  return np.concatenate([wigner.wigner_d_matrices(bandwidth, beta[i:i + 8]).numpy()
                         for i in range(0, 2 * bandwidth, 8)]).astype(np.float32)


def baseline_correlate(f, g, table):
  """Straightforward correlation: full cross-spectrum, dense einsum over l, complex 2-D FFT."""
  b_max = f.shape[-3] // 2
  f_all = rotation.all_orders(sht.forward(f))                           # [N, l, n, C]
  g_all = rotation.all_orders(sht.forward(g))
  spectrum = tf.einsum('zlmc,zlnc->zlmn', tf.math.conj(g_all), f_all)     # X^l_mn, all m, n
  s = tf.einsum('jlmn,zlmn->zjmn', tf.cast(table, spectrum.dtype), spectrum)
  s = tf.roll(tf.pad(s, [[0, 0], [0, 0], [0, 1], [0, 1]]), [-(b_max - 1)] * 2, axis=[2, 3])
  # c = sum S exp(-i(m alpha + n gamma)): a forward 2-D DFT over (m, n).
  volume = tf.math.real(tf.signal.fft2d(s))                                # [N, beta, alpha, gamma]
  return tf.transpose(volume, [0, 2, 1, 3])


def best_time_ms(fn, args, reps):
  """(wall, process CPU) milliseconds of the fastest of `reps` calls, after a warm-up call.

  On a shared machine the CPU time (summed over threads) is the steadier of the two.
  """
  fn(*args)
  times = []
  for _ in range(reps):
    start, start_cpu = time.perf_counter(), time.process_time()
    fn(*args).numpy()
    times.append((time.perf_counter() - start, time.process_time() - start_cpu))
  return tuple(1e3 * t for t in min(times))


def first_call_s(fn, args):
  start = time.perf_counter()
  fn(*args).numpy()
  return time.perf_counter() - start


def clear_table_caches():
  for cached in (so3.contraction_plan, legendre.legendre_table, legendre.analysis_tables,
                 legendre.synthesis_tables, legendre.parity_degrees, wigner._recursion_coefficients):
    cached.cache_clear()


def run_config(bandwidth, channels, pairs, reps, with_baseline, xla_only=False):
  rng = np.random.default_rng(0)
  shape = (pairs, 2 * bandwidth, 2 * bandwidth, channels)
  f = tf.constant(rng.standard_normal(shape), tf.float32)
  g = tf.constant(rng.standard_normal(shape), tf.float32)
  rows = []
  reps = max(3, reps // pairs)
  modes = (('ours, XLA', True),) if xla_only else (('ours, tf.function', False), ('ours, XLA', True))
  for label, jit in modes:
    clear_table_caches()
    fn = tf.function(so3.correlate, jit_compile=jit)
    first = first_call_s(fn, (f, g))
    rows.append((label, best_time_ms(fn, (f, g), reps), first))
  table_mb = (so3.contraction_plan(bandwidth, bandwidth, 'float32').table_bytes +
              sum(t.nbytes for t in legendre.analysis_tables(bandwidth, 'float32'))) / 2**20
  baseline = None
  if with_baseline:
    start = time.perf_counter()
    table = tf.constant(dense_wigner_table(bandwidth))
    fn = tf.function(lambda a, b: baseline_correlate(a, b, table), jit_compile=True)
    first = first_call_s(fn, (f, g)) + (time.perf_counter() - start)
    reference = fn(f, g).numpy()
    ours_volume = so3.correlate(f, g).numpy()
    error = np.abs(reference - ours_volume).max() / np.abs(reference).max()
    if error > 1e-4:
      raise AssertionError(f'baseline and correlate disagree: relative error {error:.2e}')
    baseline = best_time_ms(fn, (f, g), reps)
    rows.append(('baseline (dense table), XLA', baseline, first))
    baseline_mb = table.shape.num_elements() * 4 / 2**20
  g_rotated = rotation.rotate(f, rotations.euler_zyz_to_matrix(
      tf.constant(rng.uniform(0, np.pi, (pairs, 3)), tf.float32)))
  for label, options in (
      (f'align, {correlation.alignment.CANDIDATE_PEAKS} peaks refined, tf.function', {}),
      ('align, 1 peak refined, tf.function', {'candidates': 1}),
      ('align, grid only, tf.function', {'refine': False})):
    fn = tf.function(lambda a, b, options=options: correlation.align(a, b, **options))
    first = first_call_s(fn, (f, g_rotated))
    rows.append((label, best_time_ms(fn, (f, g_rotated), reps), first))
  lines = []
  for label, (ms, cpu_ms), first in rows:
    ratio = f'{baseline[0] / ms:.1f}x' if baseline and not label.startswith('align') else '-'
    mb = baseline_mb if label.startswith('baseline') else table_mb
    lines.append(f'| {bandwidth} | {channels} | {pairs} | {label} | {ms:.2f} | {ms / pairs:.3f} | '
                 f'{cpu_ms / pairs:.3f} | {ratio} | {first:.1f} | {mb:.1f} |')
  return lines


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--configs', default='32:32:1,32:32:64,64:32:1,64:32:16')
  parser.add_argument('--reps', type=int, default=30)
  parser.add_argument('--baseline_max_bandwidth', type=int, default=32)
  parser.add_argument('--baseline_max_pairs', type=int, default=64)
  parser.add_argument('--xla_only', action='store_true', help='skip the tf.function (no XLA) rows')
  args = parser.parse_args()
  try:
    configs = [tuple(int(v) for v in item.split(':')) for item in args.configs.split(',')]
    assert all(len(c) == 3 for c in configs)
  except (ValueError, AssertionError):
    parser.error(f'--configs must be a comma-separated list of B:C:N, got {args.configs!r}')
  print(f'TensorFlow {tf.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}')
  print('| B | C | pairs | implementation | ms/call | ms/pair | CPU ms/pair | speed-up vs baseline '
        '| first call (s) | table MB |')
  print('|---|---|---|---|---|---|---|---|---|---|')
  for bandwidth, channels, pairs in configs:
    with_baseline = bandwidth <= args.baseline_max_bandwidth and pairs <= args.baseline_max_pairs
    for line in run_config(bandwidth, channels, pairs, args.reps, with_baseline, args.xla_only):
      print(line, flush=True)


if __name__ == '__main__':
  main()
