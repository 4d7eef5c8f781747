"""Timing workers for the peer SO(3) correlation libraries (pysofft, s2fft), run under .venv-bench.

bench_correlation_peers.py starts this script with the .venv-bench interpreter, once per peer:

  .venv-bench/bin/python benchmarks/peer_workers.py --peer=NAME --config=FILE.json

The config lists the (bandwidth, channels) cases; for each it names a check file (`.npz` with one pair
`f, g [2B, 2B, C]` float64 and their coefficients `f_coeffs, g_coeffs [B, B (m >= 0), C]` from
numpy_so3.sht_forward) and where to write the peer's volume for that pair. The worker prints one JSON
line per case on stdout. Only numpy and the peer are imported here: this interpreter has no TensorFlow.

How each peer is made to compute `c(R) = sum_c integral f_c(R^T x) g_c(x) dx` (docs/conventions.md), and how
its output maps to our volume `[alpha, beta, gamma]` (checked against numpy_so3 by the harness):

- pysofft (SOFT 2.0 rewrite, Fortran + FFTW): it has no spherical transform, so it takes the numpy
  coefficients. Its SO(3) Wigner coefficients of our correlation are
  `C^l_{mn} = 2 pi sqrt(2 / (2l + 1)) (-1)^(m - n) sum_c f_lm conj(g_ln)` (the factor is its Wigner
  normalisation; the same as its own `cross_correlation_ylm_real`, which is one channel only), and
  `irsoft_many` returns `[pair, alpha, gamma, beta]` on exactly our SOFT grid.
- s2fft (JAX, float64): its Driscoll-Healy grid has 2B - 1 longitudes, so each map is resampled
  exactly (FFT, band-limited) from 2B to 2B - 1 columns. With L = N = B its Wigner coefficients of our
  correlation are `flmn[n', l, m'] = 8 pi^2 / (2l + 1) sum_c g_{l m'} conj(f_{l n'})`, and its inverse
  Wigner transform returns `[gamma (2B - 1), beta (2B), alpha (2B - 1)]`: the same betas as ours, but
  alpha and gamma on a grid of 2B - 1 steps, so only alpha = gamma = 0 is shared with our grid.
  The default `s2fft` peer uses s2fft's precomputed kernels (exact). `s2fft.wigner.inverse` refuses
  N >= 8 with its recursive methods ("lower precision"); the `s2fft_recursive` peer calls the
  underlying `inverse_jax` directly to show why: it matches numpy_so3 to 1e-15 at B = 16 but is wrong
  (errors as large as the volume) at B = 32.
"""
import argparse
import json
import statistics
import sys
import time

import numpy as np


def time_calls(fn, min_time, max_repeats, block=lambda x: x):
  """Runs `fn()` once (first call: tables, plans, compilation) then repeatedly.

  Returns (first_call_seconds, median_seconds_per_later_call, repeats).
  """
  start = time.perf_counter()
  block(fn())
  first = time.perf_counter() - start
  times = []
  total = 0.0
  while len(times) < 2 or (total < min_time and len(times) < max_repeats):
    start = time.perf_counter()
    block(fn())
    times.append(time.perf_counter() - start)
    total += times[-1]
  return first, statistics.median(times), len(times)


def all_orders(coeffs):
  """`[..., B (l), B (m >= 0), C]` of real maps -> `[..., B, 2B - 1 (m = -(B-1)..B-1), C]`.

  The same as numpy_so3's, which this interpreter cannot import (it needs `geometry`, hence TF).
  """
  b = coeffs.shape[-3]
  m = np.arange(1, b)
  negative = ((-1.0) ** m)[:, None] * np.conj(coeffs[..., :, 1:, :])
  return np.concatenate([negative[..., ::-1, :], coeffs], axis=-2)


class PysofftCorrelation:
  """Numpy cross-spectra, gathered into pysofft's Wigner coefficient layout, then `irsoft_many`."""

  def __init__(self, bandwidth, precompute_wigners, threads=1):
    from pysofft import Soft
    b = bandwidth
    self.bandwidth = b
    self.use_mp = threads > 1  # its OpenMP loops; the thread count comes from OMP_NUM_THREADS
    self.soft = Soft(b, precompute_wigners=precompute_wigners)
    l, m, n = np.asarray(self.soft.coeff_indices).T  # one row (l, m, n) per coefficient
    # Half cross-spectra X[l, n, m] = sum_c conj(g_ln) f_lm are computed for m >= 0 only; the rest is
    # X[l, n, m] = (-1)^(m + n) conj(X[l, -n, -m]).
    mirrored = m < 0
    n_src = np.where(mirrored, -n, n)
    m_src = np.where(mirrored, -m, m)
    self.flat_index = (l * (2 * b - 1) + n_src + b - 1) * b + m_src
    self.mirrored = mirrored
    sign = np.where(mirrored, (-1.0) ** (m + n), 1.0)
    self.weight = 2 * np.pi * np.sqrt(2.0 / (2 * l + 1)) * (-1.0) ** (m - n) * sign

  def coefficients(self, f_coeffs, g_coeffs):
    """`[P, B, B, C]` twice -> pysofft Wigner coefficients `[P, (4B^3 - B) / 3]`."""
    f_by_channel = np.ascontiguousarray(np.swapaxes(f_coeffs, -1, -2))  # BLAS needs contiguous
    half = np.conj(all_orders(g_coeffs)) @ f_by_channel                # [P, l, n, m >= 0]
    values = half.reshape(half.shape[0], -1)[:, self.flat_index]
    values = np.where(self.mirrored, np.conj(values), values)
    return np.ascontiguousarray(values * self.weight)

  def __call__(self, f_coeffs, g_coeffs):
    """Volumes `[P, alpha, gamma, beta]` (pysofft's layout)."""
    coeffs = self.coefficients(f_coeffs, g_coeffs)
    return self.soft.irsoft_many(coeffs, use_mp=self.use_mp)

  def to_ours(self, volume):
    return np.transpose(volume, (0, 1, 3, 2))

  def grid(self):
    angles = self.soft.euler_angles
    return angles['alpha'], angles['beta'], angles['gamma']

  def table_bytes(self):
    if not self.soft.wigners_are_precomputed:
      return 0  # d^l_{mn} are recomputed on the fly by the Kostelec recursion
    # The package does not report it; about (4B^3 - B) / 3 * 2B / 8 doubles by its symmetries.
    return None


class S2fftCorrelation:
  """s2fft forward transforms and inverse Wigner transform in one jitted, vmapped JAX function."""

  def __init__(self, bandwidth, precomputed):
    import jax
    jax.config.update('jax_enable_x64', True)
    import jax.numpy as jnp
    import s2fft
    from s2fft.precompute_transforms import construct
    from s2fft.precompute_transforms import spherical as precompute_spherical
    from s2fft.precompute_transforms import wigner as precompute_wigner
    from s2fft.recursions import price_mcewen
    from s2fft.transforms import wigner as recursive_wigner
    self.jax, self.jnp = jax, jnp
    b = lmax = nmax = bandwidth
    self.bandwidth = b
    # The tables are arguments of the jitted function, not constants folded into it.
    if precomputed:
      # s2fft's numpy kernel builders give the same kernels as its JAX ones, about 15x sooner.
      self._tables = [
          jnp.asarray(construct.spin_spherical_kernel(lmax, 0, reality=True, sampling='dh',
                                                      forward=True)),
          jnp.asarray(construct.wigner_kernel(lmax, nmax, reality=True, sampling='dh',
                                              forward=False))]
      sht = lambda f, t: precompute_spherical.forward(f, lmax, 0, kernel=t[0], sampling='dh',
                                                      reality=True, method='jax')
      inverse = lambda flmn, t: precompute_wigner.inverse(flmn, lmax, nmax, kernel=t[1],
                                                          sampling='dh', reality=True, method='jax')
    else:
      self._tables = [
          price_mcewen.generate_precomputes_jax(lmax, 0, sampling='dh', forward=True),
          price_mcewen.generate_precomputes_wigner_jax(lmax, nmax, sampling='dh', forward=False,
                                                       reality=True)]
      sht = lambda f, t: s2fft.forward_jax(f, lmax, 0, sampling='dh', reality=True, precomps=t[0])
      inverse = lambda flmn, t: recursive_wigner.inverse_jax(flmn, lmax, nmax, sampling='dh',
                                                             reality=True, precomps=t[1])
    degree_norm = jnp.asarray(8 * np.pi ** 2 / (2 * np.arange(lmax) + 1))

    def to_s2fft_grid(maps):
      """`[2B, 2B, C]` -> `[2B, 2B - 1, C]`: exact resampling of band-limited rows."""
      spectrum = jnp.fft.rfft(maps, axis=1)[:, :b]
      return jnp.fft.irfft(spectrum, n=2 * b - 1, axis=1) * ((2 * b - 1) / (2 * b))

    def one_pair(f, g, tables):
      transform = jax.vmap(lambda x: sht(x, tables), in_axes=-1, out_axes=-1)
      f_lm = transform(to_s2fft_grid(f))                                 # [L, 2L - 1, C]
      g_lm = transform(to_s2fft_grid(g))
      # reality=True reads only n' >= 0 (n' = the order of f); the rest stays zero.
      positive = jnp.einsum('lqc,lpc->plq', g_lm, jnp.conj(f_lm[:, lmax - 1:]))  # [n', l, m']
      flmn = jnp.zeros((2 * nmax - 1, lmax, 2 * lmax - 1), positive.dtype)
      flmn = flmn.at[nmax - 1:].set(positive * degree_norm[None, :, None])
      return inverse(flmn, tables)                                       # [gamma, beta, alpha]

    def pairs(f, g, tables):
      """`[P, 2B, 2B, C]` twice -> `[P, gamma, beta, alpha]`, 8 pairs at a time (bounds memory)."""
      p = f.shape[0]
      chunk = 8 if p % 8 == 0 else p
      split = lambda x: x.reshape((p // chunk, chunk) + x.shape[1:])
      one_chunk = jax.vmap(one_pair, in_axes=(0, 0, None))
      out = jax.lax.map(lambda fg: one_chunk(fg[0], fg[1], tables), (split(f), split(g)))
      return out.reshape((p,) + out.shape[2:])

    self._fn = jax.jit(pairs)

  def __call__(self, f, g):
    return self._fn(f, g, self._tables)

  def block(self, x):
    return x.block_until_ready()

  def to_ours(self, volume):
    return np.transpose(np.asarray(volume), (0, 3, 2, 1))

  def grid(self):
    b = self.bandwidth
    steps = 2 * np.pi * np.arange(2 * b - 1) / (2 * b - 1)
    return steps, np.pi * (2 * np.arange(2 * b) + 1) / (4 * b), steps

  def table_bytes(self):
    return int(sum(np.asarray(t).nbytes for t in self.jax.tree_util.tree_leaves(self._tables)))


PEERS = {  # name -> constructor(bandwidth, threads); XLA takes its threads from XLA_FLAGS
    'pysofft': lambda b, t: PysofftCorrelation(b, precompute_wigners=False, threads=t),
    'pysofft_precomputed': lambda b, t: PysofftCorrelation(b, precompute_wigners=True, threads=t),
    's2fft': lambda b, t: S2fftCorrelation(b, precomputed=True),
    's2fft_recursive': lambda b, t: S2fftCorrelation(b, precomputed=False),
}


def random_inputs(peer, rng, batch, bandwidth, channels):
  """Timing inputs: maps for s2fft, coefficients (as numpy_so3 would give them) for pysofft."""
  b = bandwidth
  if isinstance(peer, PysofftCorrelation):
    def coeffs():
      c = rng.standard_normal((batch, b, b, channels, 2)).view(np.complex128)[..., 0]
      c[:, :, 0] = c[:, :, 0].real                                       # m = 0 is real
      return c * np.tril(np.ones((b, b)))[None, :, :, None]              # zero where m > l
    return coeffs(), coeffs()
  maps = lambda: peer.jnp.asarray(rng.standard_normal((batch, 2 * b, 2 * b, channels)))
  return maps(), maps()


def run_case(name, case, min_time, max_repeats, threads):
  b, channels = case['bandwidth'], case['channels']
  start = time.perf_counter()
  peer = PEERS[name](b, threads)
  setup = time.perf_counter() - start
  block = getattr(peer, 'block', lambda x: x)
  result = {'peer': name, 'bandwidth': b, 'channels': channels, 'setup_s': setup,
            'table_bytes': peer.table_bytes(), 'batches': {}}
  rng = np.random.default_rng(0)
  for batch in case['batches']:
    f, g = random_inputs(peer, rng, batch, b, channels)
    first, per_call, repeats = time_calls(lambda: peer(f, g), min_time, max_repeats, block)
    result['batches'][str(batch)] = {'first_call_s': first, 'per_pair_s': per_call / batch,
                                     'repeats': repeats}
    del f, g
  # The check pair, through the same code path, saved in our layout with the peer's own grid angles.
  check = np.load(case['check_npz'])
  if isinstance(peer, PysofftCorrelation):
    volume = peer(check['f_coeffs'][None], check['g_coeffs'][None])
  else:
    volume = peer(peer.jnp.asarray(check['f'][None]), peer.jnp.asarray(check['g'][None]))
  alpha, beta, gamma = peer.grid()
  np.savez(case['volume_out'], volume=peer.to_ours(volume)[0], alpha=alpha, beta=beta, gamma=gamma)
  return result


def main(argv):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--peer', required=True, choices=sorted(PEERS))
  parser.add_argument('--config', required=True, help='JSON file written by the harness')
  args = parser.parse_args(argv)
  try:
    with open(args.config) as f:
      config = json.load(f)
  except (OSError, ValueError) as e:
    raise SystemExit(f'peer_workers: cannot read --config={args.config}: {e}')
  for case in config['cases']:
    result = run_case(args.peer, case, config['min_time'], config['max_repeats'],
                      config.get('threads', 1))
    print(json.dumps(result), flush=True)


if __name__ == '__main__':
  main(sys.argv[1:])
