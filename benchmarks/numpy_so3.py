"""SO(3) correlation of spherical maps in plain numpy (float64): the SOFT algorithm, written out.

This is the baseline of the correlation benchmarks and an independent reference for the TensorFlow
implementation in `correlation/`. It follows docs/conventions.md exactly:

  c(R) = sum_channels integral over S^2 of (R . f_c)(x) g_c(x) dx,   (R . f)(x) = f(R^T x),

for maps `[..., 2B, 2B, C]` on the Driscoll-Healy grid, returned on the SOFT grid of SO(3) as a volume
`[..., 2B (alpha), 2B (beta), 2B (gamma)]` whose index `(i, j, k)` is the rotation
`R = Rz(alpha_i) Ry(beta_j) Rz(gamma_k)`. If `g = R0 . f`, the volume peaks at `R0`.

The algorithm, in the notation used throughout this file:
  1. Forward spherical harmonic transform (orthonormal `Y_l^m`, Condon-Shortley phase):
     `f_lm = sum_j w_j N_l d^l_{m0}(beta_j) sum_k f(beta_j, alpha_k) e^{-i m alpha_k}` with the exact
     Driscoll-Healy weights `w_j` (geometry.quadrature_weights) and `N_l = sqrt((2l + 1) / (4 pi))`;
     `Y_l^m(beta, alpha) = N_l d^l_{m0}(beta) e^{i m alpha}`.
  2. Rotating a harmonic: `Y_l^m(R^T x) = sum_n D^l_{nm}(R) Y_l^n(x)`, with the Wigner matrix
     `D^l_{nm}(alpha, beta, gamma) = e^{-i n alpha} d^l_{nm}(beta) e^{-i m gamma}`. Hence, for real g,
     `c(alpha, beta, gamma) = sum_{l,n,m} conj(g_ln) f_lm d^l_{nm}(beta) e^{-i n alpha} e^{-i m gamma}`.
  3. Per-degree cross-spectra `X_l[n, m] = sum_c conj(g_lnc) f_lmc` (only m >= 0: the volume is real).
  4. Wigner-d contraction over l at every beta_j, then a 2-D FFT over (n, m) -> (alpha, gamma).

The Wigner-d values come from the three-term recursion in l of Kostelec & Rockmore (SOFT), seeded by
the closed forms of `d^L_{nm}` at `max(|n|, |m|) = L`. Tables are built once per bandwidth and cached.
"""
import functools
import math

import numpy as np

from geometry import grids
from geometry import rotations


def _check_bandwidth(bandwidth, name='bandwidth'):
  if int(bandwidth) != bandwidth or bandwidth < 1:
    raise ValueError(f'{name} must be a positive integer, got {bandwidth!r}')
  return int(bandwidth)


def _bandwidth_of_maps(maps, name):
  """Checks a map array `[..., 2B, 2B, C]` and returns B."""
  if maps.ndim < 3 or maps.shape[-3] != maps.shape[-2] or maps.shape[-3] % 2:
    raise ValueError(f'{name} must be spherical maps [..., 2B, 2B, C], got shape {maps.shape}')
  return maps.shape[-3] // 2


_lgamma = np.vectorize(math.lgamma, otypes=[np.float64])


def _sqrt_binomial(n, k):
  """sqrt(n choose k) for arrays k, via log-gamma so that large degrees do not overflow."""
  k = np.asarray(k, np.float64)
  return np.exp(0.5 * (math.lgamma(n + 1) - _lgamma(k + 1) - _lgamma(n - k + 1)))


def wigner_d_levels(bandwidth, beta):
  """Yields `(l, d)` for l = 0..B-1: Wigner small-d values `d^l_{nm}(beta)` for all n and m >= 0.

  `d` is float64 `[2B - 1 (n = -(B-1)..B-1), B (m = 0..B-1), len(beta)]`, zero where `|n| > l` or
  `m > l`. Convention: `d^l_{nm}(beta) = <l n| exp(-i beta J_y) |l m>`, so that
  `Y_l^m(beta, alpha) = sqrt((2l + 1) / (4 pi)) d^l_{m0}(beta) e^{i m alpha}` (Condon-Shortley phase).
  Values with m < 0 follow from `d^l_{nm} = (-1)^(n - m) d^l_{mn} = d^l_{-m,-n}`.

  The recursion (Kostelec & Rockmore 2008, eq. for fixed n, m, increasing l):
    l sqrt(((l+1)^2 - n^2)((l+1)^2 - m^2)) d^{l+1}
      = (2l+1) (l(l+1) cos(beta) - n m) d^l - (l+1) sqrt((l^2 - n^2)(l^2 - m^2)) d^{l-1},
  started at `l = max(|n|, m)` from the closed forms (cb = cos(beta/2), sb = sin(beta/2)):
    d^L_{nL} = sqrt(C(2L, L+n)) cb^(L+n) sb^(L-n)
    d^L_{Lm} = (-1)^(L-m) sqrt(C(2L, L+m)) cb^(L+m) sb^(L-m)
    d^L_{-L,m} = sqrt(C(2L, L+m)) cb^(L-m) sb^(L+m).
  """
  b = _check_bandwidth(bandwidth)
  beta = np.asarray(beta, np.float64).reshape(-1)
  n = np.arange(-(b - 1), b)[:, None, None]
  m = np.arange(b)[None, :, None]
  cos_beta = np.cos(beta)[None, None, :]
  cb, sb = np.cos(beta / 2)[None, None, :], np.sin(beta / 2)[None, None, :]
  edge = np.maximum(np.abs(n), m)  # the degree at which the recursion for (n, m) starts

  def seeds(level):
    """`d^L_{nm}` on the edge max(|n|, m) = L, zero elsewhere."""
    big_l = level
    out = np.zeros((2 * b - 1, b, beta.size))
    if big_l >= b:
      return out
    ns = np.arange(-big_l, big_l + 1)
    ms = np.arange(big_l + 1)
    # Column m = L, every n.
    out[ns + b - 1, big_l, :] = (_sqrt_binomial(2 * big_l, big_l + ns)[:, None] *
                                 cb[0, 0] ** (big_l + ns[:, None]) * sb[0, 0] ** (big_l - ns[:, None]))
    # Rows n = +L and n = -L, every m <= L.
    binom = _sqrt_binomial(2 * big_l, big_l + ms)[:, None]
    sign = (-1.0) ** (big_l - ms)[:, None]
    out[big_l + b - 1, ms, :] = (
        sign * binom * cb[0, 0] ** (big_l + ms[:, None]) * sb[0, 0] ** (big_l - ms[:, None]))
    out[b - 1 - big_l, ms, :] = binom * cb[0, 0] ** (big_l - ms[:, None]) * sb[0, 0] ** (big_l + ms[:, None])
    return out

  d_prev = np.zeros((2 * b - 1, b, beta.size))
  d_cur = seeds(0)
  yield 0, d_cur
  if b == 1:
    return
  # Degree 1 by hand: the recursion divides by l, and d^1_{00} = cos(beta) is its only interior value.
  d_next = seeds(1)
  d_next[b - 1, 0] = cos_beta[0, 0]
  d_prev, d_cur = d_cur, d_next
  yield 1, d_cur
  nn, mm = n.astype(np.float64), m.astype(np.float64)
  for l in range(1, b - 1):
    interior = edge < l + 1
    denominator = l * np.sqrt(np.where(interior, ((l + 1) ** 2 - nn ** 2) * ((l + 1) ** 2 - mm ** 2), 1.0))
    previous_factor = (l + 1) * np.sqrt(np.maximum((l ** 2 - nn ** 2) * (l ** 2 - mm ** 2), 0.0))
    recurred = ((2 * l + 1) * (l * (l + 1) * cos_beta - nn * mm) * d_cur - previous_factor * d_prev)
    d_next = np.where(interior, recurred / denominator, seeds(l + 1))
    d_prev, d_cur = d_cur, d_next
    yield l + 1, d_cur


@functools.lru_cache(maxsize=8)
def wigner_d_tables(bandwidth, grid_bandwidth):
  """Wigner-d tables for the correlation, one per order m >= 0, at the betas of `grid_bandwidth`.

  Returns a tuple of B read-only float64 arrays; entry m is `[2B - 1 (n), 2 grid_bandwidth (beta_j),
  B - m (l = m..B-1)]` holding `d^l_{nm}(beta_j)` (zero where |n| > l), laid out so that the sum over
  l is one batched matrix product per m. About `2 B^4 * (grid_bandwidth / B)` doubles in all.
  """
  b = _check_bandwidth(bandwidth)
  beta, _ = grids.sphere_grid(_check_bandwidth(grid_bandwidth, 'grid_bandwidth'))
  tables = [np.zeros((2 * b - 1, beta.size, b - m)) for m in range(b)]
  for l, d in wigner_d_levels(b, beta):
    for m in range(l + 1):
      tables[m][:, :, l - m] = d[:, m, :]
  for t in tables:
    t.flags.writeable = False
  return tuple(tables)


@functools.lru_cache(maxsize=8)
def legendre_table(bandwidth):
  """Quadrature-weighted normalised Legendre values, float64 `[B (m), B (l), 2B (beta_j)]`.

  Entry `[m, l, j] = w_j sqrt((2l + 1) / (4 pi)) d^l_{m0}(beta_j)` (zero for l < m), so that the
  forward transform is one batched matrix product per order m.
  """
  b = _check_bandwidth(bandwidth)
  weights = grids.quadrature_weights(b)
  d_m0 = wigner_d_tables(b, b)[0]  # [2B - 1 (n), 2B (beta), B (l)]: d^l_{n0}
  table = np.zeros((b, b, 2 * b))
  norms = np.sqrt((2 * np.arange(b) + 1) / (4 * np.pi))
  for m in range(b):
    table[m] = (d_m0[m + b - 1].T * norms[:, None]) * weights[None, :]
  table.flags.writeable = False
  return table


def table_bytes(bandwidth, upsample=1):
  """Bytes held by the cached tables that `correlate(..., upsample)` uses at this bandwidth."""
  b = _check_bandwidth(bandwidth)
  wigner = sum((2 * b - 1) * 2 * b * upsample * (b - m) for m in range(b))
  if upsample != 1:  # the forward transform then needs the tables at the input betas too
    wigner += sum((2 * b - 1) * 2 * b * (b - m) for m in range(b))
  return 8 * (wigner + b * b * 2 * b)


def sht_forward(maps):
  """Forward spherical harmonic transform of real maps.

  Args:
    maps: real `[..., 2B, 2B, C]` (rows beta_j north to south, columns alpha_k).

  Returns:
    complex128 `[..., B (l), B (m = 0..B-1), C]`, orthonormal with Condon-Shortley phase, zero where
    m > l. Coefficients with m < 0 follow from `f_{l,-m} = (-1)^m conj(f_lm)`.
  """
  maps = np.asarray(maps, np.float64)
  b = _bandwidth_of_maps(maps, 'maps')
  lead, channels = maps.shape[:-3], maps.shape[-1]
  # Sum over longitudes: e^{-i m alpha_k} is numpy's forward FFT convention.
  spectrum = np.fft.rfft(maps, axis=-2)[..., :b, :]                    # [..., 2B (j), B (m), C]
  spectrum = np.moveaxis(spectrum.reshape((-1, 2 * b, b, channels)), 2, 0)  # [B (m), N, 2B, C]
  spectrum = np.moveaxis(spectrum, 1, 2).reshape(b, 2 * b, -1)          # [B (m), 2B (j), N C]
  table = legendre_table(b)                                            # [B (m), B (l), 2B (j)]
  # Real and imaginary parts side by side, contiguous: numpy's matmul only uses BLAS on those.
  parts = np.ascontiguousarray(spectrum).view(np.float64)              # [B (m), 2B (j), 2 N C]
  coeffs = (table @ parts).view(np.complex128)                         # [B (m), B (l), N C]
  coeffs = coeffs.reshape(b, b, -1, channels).transpose(2, 1, 0, 3)   # [N, B (l), B (m), C]
  return coeffs.reshape(lead + (b, b, channels))


def _negative_orders(coeffs):
  """Coefficients `[..., B (l), B (m >= 0), C]` of a real map -> all orders `[..., B, 2B - 1, C]`."""
  b = coeffs.shape[-3]
  m = np.arange(1, b)
  negative = ((-1.0) ** m)[:, None] * np.conj(coeffs[..., :, 1:, :])  # f_{l,-m}, m = 1..B-1
  return np.concatenate([negative[..., ::-1, :], coeffs], axis=-2)    # orders -(B-1)..B-1


def cross_spectra(f_coeffs, g_coeffs):
  """Per-degree cross-spectra `X[..., l, n, m] = sum_c conj(g_lnc) f_lmc`.

  Args:
    f_coeffs, g_coeffs: complex `[..., B (l), B (m >= 0), C]` from `sht_forward`.

  Returns:
    complex128 `[..., B (l), 2B - 1 (n = -(B-1)..B-1), B (m >= 0)]`.
  """
  if f_coeffs.shape != g_coeffs.shape:
    raise ValueError(f'cross_spectra: shapes differ, {f_coeffs.shape} vs {g_coeffs.shape}')
  g_all = _negative_orders(g_coeffs)
  return np.conj(g_all) @ np.ascontiguousarray(f_coeffs.swapaxes(-1, -2))


def inverse_so3(spectra, upsample=1, pair_chunk=None):
  """Correlation volume from cross-spectra: Wigner-d contraction over l, then a 2-D FFT.

  Args:
    spectra: complex `[P, B (l), 2B - 1 (n), B (m >= 0)]` from `cross_spectra`, flattened over pairs.
    upsample: integer K >= 1; the volume is sampled on the SOFT grid of bandwidth K B (the spectrum
      is zero-padded: exact band-limited interpolation).
    pair_chunk: pairs per step (bounds the temporaries); default keeps each step near 128 MiB.

  Returns:
    float64 `[P, 2KB (alpha), 2KB (beta), 2KB (gamma)]`.
  """
  upsample = _check_bandwidth(upsample, 'upsample')
  p, b = spectra.shape[0], spectra.shape[1]
  size = 2 * b * upsample
  tables = wigner_d_tables(b, b * upsample)
  if pair_chunk is None:
    pair_chunk = max(1, (128 << 20) // (16 * size * size * (size // 2 + 1)))
  n_index = np.arange(-(b - 1), b) % size  # order n sits at FFT bin n mod size
  out = np.empty((p, size, size, size))
  for start in range(0, p, pair_chunk):
    chunk = spectra[start:start + pair_chunk]
    q = chunk.shape[0]
    # c = sum_{n,m} S[n, m] e^{-i(n alpha + m gamma)} is real, so it equals size^2 * ifft2(conj(S)),
    # and the half spectrum m >= 0 determines the rest (S[-n, -m] = conj(S[n, m])). The tables are
    # real, so conj(S) is the contraction of conj(X): we conjugate the small input, not the output.
    half = np.zeros((q, size // 2 + 1, size, size), np.complex128)  # [pair, m, n bin, beta_j]
    for m in range(b):
      x = np.ascontiguousarray(chunk[:, m:, :, m].transpose(2, 1, 0))  # [n, l, pair]
      x = x.view(np.float64).reshape(2 * b - 1, b - m, 2 * q)        # real and imaginary side by side
      x[..., 1::2] *= -1                                              # conj(X)
      s = (tables[m] @ x).view(np.complex128)                         # conj(S): [n, beta_j, pair]
      half[:, m, n_index] = s.transpose(2, 0, 1)
    # The real transform runs over the last axis named: m -> gamma.
    volume = np.fft.irfftn(half, s=(size, size), axes=(2, 1))         # [pair, gamma, alpha, beta]
    out[start:start + q] = size * size * volume.transpose(0, 2, 3, 1)
  return out


def correlate(f, g, upsample=1):
  """SO(3) correlation `c(R) = sum_c integral (R . f_c)(x) g_c(x) dx` of real maps.

  Args:
    f, g: real `[..., 2B, 2B, C]`, same shape.
    upsample: integer K >= 1, the volume's grid is the SOFT grid of bandwidth K B.

  Returns:
    float64 `[..., 2KB (alpha), 2KB (beta), 2KB (gamma)]`; index (i, j, k) is the rotation
    `Rz(alpha_i) Ry(beta_j) Rz(gamma_k)` of geometry.so3_grid(K B).
  """
  f, g = np.asarray(f, np.float64), np.asarray(g, np.float64)
  if f.shape != g.shape:
    raise ValueError(f'correlate: f and g must have the same shape, got {f.shape} and {g.shape}')
  b = _bandwidth_of_maps(f, 'f')
  lead = f.shape[:-3]
  flat = lambda x: x.reshape((-1,) + x.shape[-3:])
  spectra = cross_spectra(sht_forward(flat(f)), sht_forward(flat(g)))
  volume = inverse_so3(spectra, upsample)
  return volume.reshape(lead + volume.shape[1:])


def volume_argmax_rotation(volume):
  """Rotation matrices `[..., 3, 3]` (float64) at the argmax of volumes `[..., 2B, 2B, 2B]`."""
  volume = np.asarray(volume)
  size = volume.shape[-1]
  if volume.ndim < 3 or volume.shape[-3:] != (size,) * 3 or size % 2:
    raise ValueError(f'volume must be [..., 2B, 2B, 2B], got shape {volume.shape}')
  flat = volume.reshape(volume.shape[:-3] + (-1,)).argmax(axis=-1)
  i, j, k = np.unravel_index(flat, (size,) * 3)
  alpha, beta, gamma = grids.so3_grid(size // 2)
  angles = np.stack([alpha[i], beta[j], gamma[k]], axis=-1)
  return rotations.euler_zyz_to_matrix(angles).numpy()


def align(f, g, upsample=1):
  """Argmax rotation `R` of the correlation, with `g ~= R . f`: float64 `[..., 3, 3]`."""
  return volume_argmax_rotation(correlate(f, g, upsample))
