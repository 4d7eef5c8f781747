"""Benchmark the SO(3) correlation against its peers: time per pair, first-call cost, table memory.

In one run, for every bandwidth B, channel count C and batch size, this times the full correlation of
maps `[batch, 2B, 2B, C]` (spherical transforms + cross-spectra + inverse SO(3) transform) for:

  numpy            benchmarks/numpy_so3.py, float64: the baseline every ratio refers to;
  tf_eager         correlation.correlate, float32, eager;
  tf_jit           correlation.correlate inside tf.function(jit_compile=True), float32;
  pysofft          SOFT 2.0's Fortran rewrite (on-the-fly Kostelec recursion), float64; it has no
                   spherical transform, so its time adds numpy_so3's measured SHT time;
  pysofft_precomputed   the same with its Wigner-d values precomputed;
  s2fft            s2fft on JAX CPU with precomputed kernels, float64;
  s2fft_recursive  s2fft on JAX CPU with on-the-fly Price-McEwen recursions, float64.

The peers live in the separate virtualenv .venv-bench (see benchmarks/README.md) and run as
subprocesses of benchmarks/peer_workers.py, one after the other (never in parallel with a timing here).
First calls (table building, planning, compilation) are timed separately and excluded from the
per-pair time, which is the median over repeated calls divided by the batch size. Each run also checks
every implementation on one pair `g = R0 . f` (sums of von Mises-Fisher bumps, R0 on the SOFT grid):
the angle between its argmax rotation and R0, and its largest difference from numpy_so3 at the grid
points both share, relative to the volume's maximum.

Usage (quick, < 2 minutes):
  .venv/bin/python benchmarks/bench_correlation_peers.py --bandwidths=32 --channels=32
Full grid (B, C in {16, 32, 64}, batches 1 and 64), written to a file:
  .venv/bin/python benchmarks/bench_correlation_peers.py --output=/tmp/correlation_peers.md
"""
import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a script: make `geometry`, `correlation` importable
  sys.path.insert(0, str(REPO_ROOT))

from benchmarks.threads import thread_environment  # pylint: disable=g-import-not-at-top
from benchmarks.threads import threads_from_argv  # pylint: disable=g-import-not-at-top

# Before numpy, TF and the workers start: each reads its thread count once.
os.environ.update(thread_environment(threads_from_argv(sys.argv[1:])))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

import correlation  # pylint: disable=g-import-not-at-top
import geometry  # pylint: disable=g-import-not-at-top
from benchmarks import numpy_so3  # pylint: disable=g-import-not-at-top
from benchmarks import step_flags  # pylint: disable=g-import-not-at-top

LOCAL_PEERS = ('numpy', 'tf_eager', 'tf_jit')
WORKER_PEERS = ('pysofft', 'pysofft_precomputed', 's2fft', 's2fft_recursive')
ALL_PEERS = LOCAL_PEERS + WORKER_PEERS
# s2fft_recursive is wrong beyond B ~ 16 (s2fft warns of it) and slow; pysofft_precomputed is close
# to pysofft. Both run when named in --peers.
DEFAULT_PEERS = ('numpy', 'tf_eager', 'tf_jit', 'pysofft', 's2fft')
WRONG = 1e-3  # a relative difference from numpy above this is an error, not float32 rounding
KAPPA = 3.0  # concentration of the check pair's bumps: smooth, so band-limited in practice


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--bandwidths', default='16,32,64', help='comma-separated B values')
  parser.add_argument('--channels', default='16,32,64', help='comma-separated C values')
  parser.add_argument('--batches', default='1,64', help='comma-separated pairs per call')
  parser.add_argument('--peers', default=','.join(DEFAULT_PEERS),
                      help=f'subset of {",".join(ALL_PEERS)}')
  parser.add_argument('--bench_python', default=str(REPO_ROOT / '.venv-bench' / 'bin' / 'python'),
                      help='interpreter of the virtualenv that has pysofft and s2fft')
  parser.add_argument('--threads', type=int, default=1,
                      help='threads for every implementation (BLAS, TF, OpenMP, XLA); one thread '
                           'gives steadier numbers on a shared machine')
  parser.add_argument('--min_time', type=float, default=0.5,
                      help='keep repeating a timed call until this many seconds are spent')
  parser.add_argument('--max_repeats', type=int, default=10, help='at most this many timed calls')
  parser.add_argument('--output', default=None, help='also write the markdown report here')
  parser.add_argument('--json_output', default=None, help='also write the raw results here')
  args = parser.parse_args(argv)
  args.bandwidths = step_flags.int_list(args.bandwidths, 'bandwidths')
  args.channels = step_flags.int_list(args.channels, 'channels')
  args.batches = step_flags.int_list(args.batches, 'batches')
  args.peers = [p.strip() for p in args.peers.split(',') if p.strip()]
  unknown = sorted(set(args.peers) - set(ALL_PEERS))
  if unknown or 'numpy' not in args.peers:
    raise SystemExit(f'--peers: unknown {unknown}; choose from {ALL_PEERS} (numpy is required, '
                     f'it is the baseline), got {args.peers}')
  if args.min_time < 0 or args.max_repeats < 2 or args.threads < 1:
    raise SystemExit('--min_time must be >= 0, --max_repeats >= 2 and --threads >= 1')
  return args


def time_calls(fn, min_time, max_repeats):
  """First call timed alone, then repeats until `min_time`: (first_s, median_s, repeats)."""
  start = time.perf_counter()
  fn()
  first = time.perf_counter() - start
  times = []
  while len(times) < 2 or (sum(times) < min_time and len(times) < max_repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return first, statistics.median(times), len(times)


def check_pair(bandwidth, channels):
  """Maps `f, g = R0 . f` `[2B, 2B, C]` (float64) from von Mises-Fisher bumps, and R0 `[3, 3]`."""
  rng = np.random.default_rng(bandwidth * 1000 + channels)
  mu = rng.standard_normal((channels, 4, 3))
  mu /= np.linalg.norm(mu, axis=-1, keepdims=True)
  weight = rng.uniform(0.5, 1.5, (channels, 4))
  alpha, beta, gamma = geometry.so3_grid(bandwidth)
  index = (bandwidth // 3, bandwidth // 2 + 1, (3 * bandwidth) // 2)
  r0 = geometry.euler_zyz_to_matrix(
      np.array([alpha[index[0]], beta[index[1]], gamma[index[2]]])).numpy()
  xyz = geometry.sphere_directions(bandwidth)

  def bumps(rotation):
    centres = mu @ rotation.T  # f(R^T x) = sum a exp(kappa (R mu) . x)
    return np.einsum('ck,...ck->...c', weight,
                     np.exp(KAPPA * np.einsum('ckd,...d->...ck', centres, xyz)))

  return bumps(np.eye(3)), bumps(r0), r0


def judge(volume, grid, reference, r0):
  """Argmax error (degrees) against R0 and the largest relative difference from the numpy volume.

  `volume` is `[alpha, beta, gamma]` on the angles `grid = (alpha, beta, gamma)`; the difference is taken
  where those angles coincide with the SOFT grid of the reference.
  """
  volume = np.asarray(volume, np.float64)
  i, j, k = np.unravel_index(volume.argmax(), volume.shape)
  found = geometry.euler_zyz_to_matrix(np.array([grid[0][i], grid[1][j], grid[2][k]])).numpy()
  error = float(geometry.angular_distance(found, r0).numpy())
  ours = geometry.so3_grid(reference.shape[0] // 2)
  shared = []
  for theirs, mine in zip(grid, ours):
    match = np.isclose(np.asarray(theirs)[:, None], mine[None, :], atol=1e-9)
    shared.append((np.nonzero(match.any(1))[0], match.argmax(1)[match.any(1)]))
  part = volume[np.ix_(shared[0][0], shared[1][0], shared[2][0])]
  ref_part = reference[np.ix_(shared[0][1], shared[1][1], shared[2][1])]
  difference = float(np.abs(part - ref_part).max() / np.abs(reference).max())
  return error, difference


def _nbytes(tables):
  """Bytes of the numpy arrays in `tables` (an array, or nested tuples and lists of them)."""
  if isinstance(tables, np.ndarray):
    return tables.nbytes
  if isinstance(tables, (tuple, list)):
    return sum(_nbytes(t) for t in tables)
  return 0


def tensorflow_table_bytes(bandwidth):
  """Bytes of the TF implementation's cached float32 tables, where its internals expose them."""
  try:
    total = correlation.so3.contraction_plan(bandwidth, bandwidth, 'float32').table_bytes
  except AttributeError:
    return None
  for name in ('analysis_tables', 'analysis_table'):  # the forward transform's Legendre tables
    builder = getattr(correlation.legendre, name, None)
    if builder is not None:
      return int(total + _nbytes(builder(bandwidth, 'float32')))
  return None


def clear_tensorflow_caches():
  """So that the TF first call includes building its tables, like every other first call here."""
  for name in ('so3', 'legendre', 'wigner', 'sht'):
    module = getattr(correlation, name, None)
    for value in list(vars(module).values()) if module is not None else []:
      if callable(getattr(value, 'cache_clear', None)):
        value.cache_clear()


def prepare_case(bandwidth, channels, workdir):
  """The check pair of one case, its numpy volume, and the file the peers read it from."""
  f0, g0, r0 = check_pair(bandwidth, channels)
  check_file = os.path.join(workdir, f'check_B{bandwidth}_C{channels}.npz')
  np.savez(check_file, f=f0, g=g0, f_coeffs=numpy_so3.sht_forward(f0),
           g_coeffs=numpy_so3.sht_forward(g0))
  case = {'bandwidth': bandwidth, 'channels': channels, 'check_npz': check_file}
  return case, (f0, g0, r0, numpy_so3.correlate(f0, g0))


def run_local(args, bandwidth, channels, check):
  """Times numpy and TF here: (rows, numpy's SHT seconds per pair by batch)."""
  f0, g0, r0, reference = check
  rows, sht_per_pair = [], {}
  rng = np.random.default_rng(0)
  tf_jit = tf.function(lambda f, g: correlation.correlate(f, g), jit_compile=True)
  for peer in [p for p in LOCAL_PEERS if p in args.peers]:
    if peer == 'numpy':
      numpy_so3.wigner_d_tables.cache_clear()
      numpy_so3.legendre_table.cache_clear()
    else:
      clear_tensorflow_caches()
    for batch in args.batches:
      f = rng.standard_normal((batch, 2 * bandwidth, 2 * bandwidth, channels))
      g = rng.standard_normal(f.shape)
      if peer == 'numpy':
        call = lambda: numpy_so3.correlate(f, g)
      else:
        f32, g32 = tf.constant(f, tf.float32), tf.constant(g, tf.float32)
        fn = correlation.correlate if peer == 'tf_eager' else tf_jit
        call = lambda: fn(f32, g32)
      first, median, repeats = time_calls(call, args.min_time, args.max_repeats)
      rows.append({'peer': peer, 'bandwidth': bandwidth, 'channels': channels, 'batch': batch,
                   'per_pair_s': median / batch, 'first_call_s': first, 'repeats': repeats})
      if peer == 'numpy':  # what pysofft, which starts from coefficients, needs on top
        sht = lambda: (numpy_so3.sht_forward(f), numpy_so3.sht_forward(g))
        sht_per_pair[batch] = time_calls(sht, args.min_time, 2)[1] / batch
      del f, g
    if peer == 'numpy':
      volume, table = reference, numpy_so3.table_bytes(bandwidth)
    else:
      fn = correlation.correlate if peer == 'tf_eager' else tf_jit
      volume = fn(tf.constant(f0, tf.float32), tf.constant(g0, tf.float32)).numpy()
      table = tensorflow_table_bytes(bandwidth)
    error, difference = judge(volume, geometry.so3_grid(bandwidth), reference, r0)
    for row in rows:
      if row['peer'] == peer:
        row.update(table_bytes=table, argmax_error_deg=error, max_rel_diff=difference)
  return rows, sht_per_pair


def run_worker(args, peer, cases, workdir):
  """Runs one peer's cases in .venv-bench: (list of its JSON results, error text or None)."""
  config = os.path.join(workdir, f'{peer}.json')
  with open(config, 'w') as fh:
    json.dump({'cases': cases, 'min_time': args.min_time, 'max_repeats': args.max_repeats,
               'threads': args.threads}, fh)
  command = [args.bench_python, str(REPO_ROOT / 'benchmarks' / 'peer_workers.py'),
             f'--peer={peer}', f'--config={config}']
  env = dict(os.environ, **thread_environment(str(args.threads)))
  proc = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
  results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{')]
  if proc.returncode == 0:
    return results, None
  error = ' | '.join(proc.stderr.strip().splitlines()[-3:])
  print(f'# {peer}: worker failed (exit {proc.returncode}): {error}', file=sys.stderr)
  return results, f'worker exit {proc.returncode}: {error}'


def run(args):
  tf.config.threading.set_intra_op_parallelism_threads(args.threads)
  tf.config.threading.set_inter_op_parallelism_threads(args.threads)
  with tempfile.TemporaryDirectory(prefix='bench_correlation_') as workdir:
    return _run_in(args, workdir)


def _run_in(args, workdir):
  cases, checks = [], {}
  for bandwidth in args.bandwidths:
    for channels in args.channels:
      case, checks[bandwidth, channels] = prepare_case(bandwidth, channels, workdir)
      cases.append(dict(case, batches=args.batches))
  # The peers first, while this process is small: TF keeps the memory of its largest batch.
  failures, peer_results = {}, []
  for peer in [p for p in WORKER_PEERS if p in args.peers]:
    if not os.path.exists(args.bench_python):
      failures[peer] = f'no interpreter at --bench_python={args.bench_python}'
      continue
    peer_cases = [dict(c, volume_out=os.path.join(
        workdir, f'{peer}_B{c["bandwidth"]}_C{c["channels"]}.npz')) for c in cases]
    results, error = run_worker(args, peer, peer_cases, workdir)
    if error:
      failures[peer] = error
    for result, case in zip(results, peer_cases):
      saved = np.load(case['volume_out'])
      f0, g0, r0, reference = checks[result['bandwidth'], result['channels']]
      peer_results.append((peer, result, judge(
          saved['volume'], (saved['alpha'], saved['beta'], saved['gamma']), reference, r0)))
    print(f'# {peer} done', file=sys.stderr, flush=True)
  rows, sht_times = [], {}
  for (bandwidth, channels), check in checks.items():
    local, sht_times[bandwidth, channels] = run_local(args, bandwidth, channels, check)
    rows += local
    print(f'# B={bandwidth} C={channels}: numpy and TF done', file=sys.stderr, flush=True)
  for peer, result, (argmax_error, difference) in peer_results:
    b, c = result['bandwidth'], result['channels']
    for position, (batch, timing) in enumerate(result['batches'].items()):
      batch = int(batch)
      per_pair = timing['per_pair_s']
      setup = result['setup_s'] if position == 0 else 0.0  # tables are built once per case
      note = ''
      if peer.startswith('pysofft'):  # it starts from coefficients: add numpy's transform time
        note = f'SO(3) part {1e3 * per_pair:.3g} ms + numpy SHT'
        per_pair += sht_times[b, c][batch]
      rows.append({'peer': peer, 'bandwidth': b, 'channels': c, 'batch': batch,
                   'per_pair_s': per_pair, 'first_call_s': setup + timing['first_call_s'],
                   'repeats': timing['repeats'], 'table_bytes': result['table_bytes'],
                   'argmax_error_deg': argmax_error, 'max_rel_diff': difference, 'note': note})
  return rows, failures


def markdown(rows, failures, args):
  baseline = {(r['bandwidth'], r['channels'], r['batch']): r['per_pair_s']
              for r in rows if r['peer'] == 'numpy'}
  lines = [
      f'Machine: {platform.machine()}, {os.cpu_count()} cores, load average {args.load_before} '
      f'before and {os.getloadavg()[0]:.1f} after; {args.threads} thread(s) per implementation; '
      f'TensorFlow {tf.__version__}, numpy {np.__version__}. Time per pair = median over repeated '
      f'calls / batch. First call = the first call at that batch size (compilation), plus building '
      f'the tables in the first batch size measured. Speed-up = numpy time / '
      f'time, same run. Check: pair g = R0 . f; argmax error vs R0 and max |c - c_numpy| / max |c| '
      f'at shared grid points (s2fft: alpha = gamma = 0 only).', '',
      '| B | C | batch | implementation | ms / pair | speed-up vs numpy | first call (s) | '
      'tables (MiB) | argmax err (deg) | rel. diff | note |',
      '|---|---|---|---|---|---|---|---|---|---|---|']
  order = {p: i for i, p in enumerate(ALL_PEERS)}
  for r in sorted(rows, key=lambda r: (r['bandwidth'], r['channels'], r['batch'], order[r['peer']])):
    base = baseline.get((r['bandwidth'], r['channels'], r['batch']))
    table = r.get('table_bytes')
    table = '?' if table is None else ('on the fly' if table == 0 else f'{table / 2**20:.3g}')
    note = r.get('note', '')
    if r.get('max_rel_diff', 0) > WRONG:
      note = ('WRONG volume; ' + note).strip('; ')
    lines.append(
        f'| {r["bandwidth"]} | {r["channels"]} | {r["batch"]} | {r["peer"]} | '
        f'{1e3 * r["per_pair_s"]:.3g} | {base / r["per_pair_s"]:.2f}x | {r["first_call_s"]:.3g} | '
        f'{table} | {r.get("argmax_error_deg", float("nan")):.2g} | '
        f'{r.get("max_rel_diff", float("nan")):.1e} | {note} |')
  for peer, error in sorted(failures.items()):
    lines.append(f'\n{peer}: not measured ({error})')
  return '\n'.join(lines) + '\n'


def write_atomic(path, text):
  directory = os.path.dirname(os.path.abspath(path))
  with tempfile.NamedTemporaryFile('w', dir=directory, delete=False, suffix='.tmp') as fh:
    fh.write(text)
  os.replace(fh.name, path)


def main(argv):
  args = parse_args(argv)
  args.load_before = f'{os.getloadavg()[0]:.1f}'
  rows, failures = run(args)
  report = markdown(rows, failures, args)
  print(report)
  if args.output:
    write_atomic(args.output, report)
  if args.json_output:
    write_atomic(args.json_output, json.dumps({'rows': rows, 'failures': failures}, indent=1))


if __name__ == '__main__':
  main(sys.argv[1:])
