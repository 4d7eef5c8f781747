"""Where the time of one correlation step goes, next to the bare library calls each piece cannot skip.

`correlation.correlate` runs, per step of pairs, four pieces: the forward SHTs of both maps, the
cross-spectrum, the Wigner-d contraction and the inverse 2-D FFT. This times each piece alone (each
XLA-compiled on its own, less the cost of an empty compiled call) and the whole step, and beside each
piece its *floor*: the same FFTs and matrix products on arrays already in the layout they want, with
no reshuffling, no complex bookkeeping and no call overhead, the faster of scipy/numpy (pocketfft,
BLAS) and XLA doing them:

  forward SHTs    rfft of every map row along a contiguous longitude axis, and the parity-split Legendre
                  products of `correlation.legendre.analysis_tables`;
  cross-spectrum  the one real product per degree of stacked (re, im) parts `[2B, 2C] @ [2C, 2B]`;
  contraction     the products of `so3.contraction_plan`'s tables with right-hand sides of their shapes;
  inverse FFT     scipy's irfft2 of the `[2B', 2B', B'+1]` spectra of every beta row, or its fft2 of
                  `[2B', 2B']` complex spectra of half the rows (two real rows packed in one, as
                  `correlation.so3` does), whichever is faster.

No floor row computes a correlation: each is a lower bound on any implementation of this algorithm
with these libraries on this machine. Times are the best of repeated calls, milliseconds per pair, all
in one process; `--threads` holds TF, XLA, BLAS and scipy to that many threads (default 1).

Usage:
  .venv/bin/python benchmarks/bench_correlation_pieces.py [--bandwidth=32] [--channels=32]
      [--pairs=1] [--threads=1] [--repeats=200]
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import step_flags  # pylint: disable=g-import-not-at-top
from benchmarks.threads import thread_environment  # pylint: disable=g-import-not-at-top
from benchmarks.threads import threads_from_argv  # pylint: disable=g-import-not-at-top

# Before numpy and TF start: each reads its thread count once.
os.environ.update(thread_environment(threads_from_argv(sys.argv[1:])))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # pylint: disable=g-import-not-at-top
import scipy.fft
import tensorflow as tf

from correlation import legendre
from correlation import sht
from correlation import so3


def best_ms(fn, repeats):
  """Milliseconds of the fastest of `repeats` calls after one warm-up call (the least disturbed)."""
  fn()
  best = float('inf')
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - start)
  return 1e3 * best


def compiled_ms(fn, args, repeats):
  """Best time of `fn(*args)` as one XLA-compiled call (eager calls return once it has run on the CPU;
  no `.numpy()`, which copies the result: 0.13 ms per MB here)."""
  compiled = tf.function(fn, jit_compile=True)
  return best_ms(lambda: compiled(*args), repeats)


def floor_pieces(bandwidth, channels, pairs, threads, repeats, rng):
  """Best times (ms per call) of the bare calls of each piece, on arrays in their ideal layout.

  Each piece runs twice, as scipy/numpy calls and as one XLA-compiled call (less an empty one) of the
  same FFTs and products; the faster counts (numpy's batched products of small matrices pay a call per
  matrix, XLA's FFTs are slower than scipy's).
  """
  b, c, n = bandwidth, channels, pairs
  f32 = lambda *shape: rng.standard_normal(shape).astype(np.float32)
  rows = f32(2 * n, 2 * b, c, 2 * b)                              # both maps, longitude last
  even, odd = legendre.analysis_tables(b, 'float32')             # [m, ceil(B/2), j] each
  legendre_rhs = f32(b, b, 2 * 2 * n * c)                         # [m, j (north), (re, im) x maps]
  stacked_g, stacked_f = f32(n, b, 2 * b, c), f32(n, b, c, 2 * b)  # per degree: [2B, C] @ [C, 2B]
  plan = so3.contraction_plan(b, b, 'float32')
  products = [(f32(size, 4 * 2 * n, b - first), table)
              for table, (_, size, first) in zip(plan.tables, plan.buckets)]
  if b > 1:
    products.append((f32(b - 1, 2 * 2 * n, b), plan.axial_table))
  spectra = (f32(n, 2 * b, 2 * b, b + 1) + 1j * f32(n, 2 * b, 2 * b, b + 1)).astype(np.complex64)
  packed = (f32(n, b, 2 * b, 2 * b) + 1j * f32(n, b, 2 * b, 2 * b)).astype(np.complex64)
  pieces = {
      'forward SHTs': (
          lambda: (scipy.fft.rfft(rows, axis=-1, workers=threads), np.matmul(even, legendre_rhs),
                   np.matmul(odd, legendre_rhs)),
          lambda x, r: (tf.signal.rfft(x), tf.matmul(even, r), tf.matmul(odd, r)),
          (rows, legendre_rhs)),
      'cross-spectrum': (lambda: np.matmul(stacked_g, stacked_f), tf.matmul, (stacked_g, stacked_f)),
      'contraction': (
          lambda: [np.matmul(rhs, table) for rhs, table in products],
          lambda *rhs: [tf.matmul(r, t) for r, (_, t) in zip(rhs, products)],
          tuple(rhs for rhs, _ in products)),
      'inverse FFT': (
          lambda: scipy.fft.irfft2(spectra, s=(2 * b, 2 * b), workers=threads),
          lambda s: tf.signal.irfft2d(s, fft_length=[2 * b, 2 * b]), (spectra,)),
      'inverse FFT, packed': (
          lambda: scipy.fft.fft2(packed, workers=threads), tf.signal.fft2d, (packed,)),
  }
  empty = compiled_ms(lambda x: x[0, 0, 0] + 1.0, (rows,), repeats)
  floor = {name: min(best_ms(library, repeats), max(compiled_ms(xla, args, repeats) - empty, 0.0))
           for name, (library, xla, args) in pieces.items()}
  floor['inverse FFT'] = min(floor['inverse FFT'], floor.pop('inverse FFT, packed'))
  return floor


def step_pieces(bandwidth, channels, pairs, repeats, rng):
  """Best times (ms per call) of the pieces of one compiled step, less an empty compiled call."""
  shape = (pairs, 2 * bandwidth, 2 * bandwidth, channels)
  f = tf.constant(rng.standard_normal(shape), tf.float32)
  g = tf.constant(rng.standard_normal(shape), tf.float32)
  f_coeffs, g_coeffs = sht.forward(f), sht.forward(g)
  spectrum = so3.cross_spectrum(f_coeffs, g_coeffs)
  plan = so3.contraction_plan(bandwidth, bandwidth, 'float32')
  packed = so3._packed_spectrum(spectrum, plan, bandwidth)  # pylint: disable=protected-access
  empty = compiled_ms(lambda x: x[0, 0, 0, 0] + 1.0, (f,), repeats)
  times = {
      'forward SHTs': compiled_ms(lambda x, y: (sht.forward(x), sht.forward(y)), (f, g), repeats),
      'cross-spectrum': compiled_ms(so3.cross_spectrum, (f_coeffs, g_coeffs), repeats),
      'contraction': compiled_ms(
          lambda x: so3._packed_spectrum(x, plan, bandwidth), (spectrum,), repeats),  # pylint: disable=protected-access
      'inverse FFT': compiled_ms(tf.signal.fft2d, (packed,), repeats),
      'whole step': compiled_ms(
          lambda x, y: so3._volume_step(x, y, bandwidth, False), (f, g), repeats),  # pylint: disable=protected-access
  }
  return {name: max(ms - empty, 0.0) for name, ms in times.items()}, empty


def main(argv):
  args = step_flags.parse_step_flags(__doc__.split('\n')[0], argv,
                                     repeats=(200, 'timed calls per piece; the best counts'))
  tf.config.threading.set_intra_op_parallelism_threads(args.threads)
  tf.config.threading.set_inter_op_parallelism_threads(args.threads)
  rng = np.random.default_rng(0)
  load = os.getloadavg()[0]
  ours, empty = step_pieces(args.bandwidth, args.channels, args.pairs, args.repeats, rng)
  floor = floor_pieces(args.bandwidth, args.channels, args.pairs, args.threads, args.repeats, rng)
  floor['whole step'] = sum(floor.values())
  per_pair = lambda ms: ms / args.pairs
  print(f'B = {args.bandwidth}, C = {args.channels}, {args.pairs} pair(s) per call, {args.threads} '
        f'thread(s), {os.cpu_count()} CPUs, load average {load:.1f} before and '
        f'{os.getloadavg()[0]:.1f} after; TensorFlow {tf.__version__}, numpy {np.__version__}, '
        f'scipy {scipy.__version__}. Best of {args.repeats} calls, ms per pair; an empty compiled '
        f'call ({empty:.3f} ms) is taken off each compiled piece. Floor: the bare FFTs and '
        'products on arrays in their ideal layout, the faster of scipy/numpy and XLA; the whole-step '
        'floor is their sum.\n')
  print('| piece | ours (XLA) | floor | ours / floor |')
  print('|---|---|---|---|')
  for name in ours:
    ratio = ours[name] / floor[name] if floor[name] > 0 else float('inf')
    print(f'| {name} | {per_pair(ours[name]):.3f} | {per_pair(floor[name]):.3f} | {ratio:.1f}x |')


if __name__ == '__main__':
  main(sys.argv[1:])
