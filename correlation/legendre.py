"""Orthonormal associated-Legendre tables on the Driscoll-Healy colatitudes, cached per bandwidth.

`Pbar_l^m(beta) = N_lm P_l^m(cos beta)` with `N_lm = sqrt((2l+1)/(4 pi) (l-m)!/(l+m)!)` and the
Condon-Shortley phase `(-1)^m` inside `P_l^m`, so that `Y_l^m(beta, alpha) = Pbar_l^m(beta) exp(i m alpha)`.
We take it from the Wigner recursion: `Pbar_l^m(beta) = sqrt((2l+1)/(4 pi)) d^l_{m0}(beta)`.

The transforms use `Pbar_l^m(pi - beta) = (-1)^(l+m) Pbar_l^m(beta)`: tables hold the northern rows only,
split by the parity of `l + m` (the sum and the difference of mirrored rows meet only one parity each),
which halves both the tables and the work.
"""
import functools

import numpy as np
import tensorflow as tf

from correlation import wigner
from geometry import grids


@functools.lru_cache(maxsize=None)
def legendre_table(bandwidth):
  """`Pbar_l^m(beta_j)` as float64 numpy `[2B (j), B (l), B (m >= 0)]`, zero where `m > l`; read-only."""
  b_max = wigner._check_bandwidth(bandwidth)
  beta, _ = grids.sphere_grid(b_max)
  orders = np.arange(b_max)
  with tf.init_scope():  # eager even when first asked for inside a tf.function
    d = wigner.wigner_d(b_max, beta, orders, np.zeros_like(orders)).numpy()  # [2B, B (l), B (m)]
  table = np.sqrt((2 * np.arange(b_max) + 1) / (4 * np.pi))[None, :, None] * d
  table.flags.writeable = False
  return table


@functools.lru_cache(maxsize=None)
def parity_degrees(bandwidth):
  """Degrees of each parity: int arrays `[B (m), ceil(B/2)]` of the l with `l + m` even, resp. odd.

  Returns (even, odd, valid_even, valid_odd, position): missing entries (odd B) point at degree 0 and are
  masked by `valid_*`; `position[m, l]` is where degree l sits in `concat([even, odd], axis=1)[m]`.
  """
  half = (bandwidth + 1) // 2
  even, odd = np.zeros((bandwidth, half), int), np.zeros((bandwidth, half), int)
  valid_even, valid_odd = np.zeros((bandwidth, half)), np.zeros((bandwidth, half))
  position = np.zeros((bandwidth, bandwidth), int)
  for m in range(bandwidth):
    for parity, rows, valid, offset in ((0, even, valid_even, 0), (1, odd, valid_odd, half)):
      degrees = [l for l in range(bandwidth) if (l + m) % 2 == parity]
      rows[m, :len(degrees)] = degrees
      valid[m, :len(degrees)] = 1
      position[m, degrees] = offset + np.arange(len(degrees))
  return even, odd, valid_even, valid_odd, position


def _split_by_parity(table_mjl, bandwidth):
  """`[B (m), B (j north), B (l)]` -> (even, odd) tables `[B (m), B (j), ceil(B/2)]`, zero-padded."""
  even, odd, valid_even, valid_odd, _ = parity_degrees(bandwidth)
  take = lambda rows, valid: np.take_along_axis(table_mjl, rows[:, None, :], axis=2) * valid[:, None]
  return take(even, valid_even), take(odd, valid_odd)


@functools.lru_cache(maxsize=None)
def analysis_tables(bandwidth, dtype):
  """Forward-SHT tables `w_j Pbar_l^m(beta_j)` for northern rows, by parity: two `[B (m), ceil(B/2), B (j)]`.

  `w_j` are the exact Driscoll-Healy quadrature weights (longitude factor included), so the forward
  transform gives `f_l^m = integral f conj(Y_l^m)` exactly for band-limited maps.
  """
  north = (grids.quadrature_weights(bandwidth)[:, None, None] * legendre_table(bandwidth))[:bandwidth]
  tables = []
  for half in _split_by_parity(np.transpose(north, (2, 0, 1)), bandwidth):
    table = np.ascontiguousarray(np.transpose(half, (0, 2, 1))).astype(dtype)
    table.flags.writeable = False
    tables.append(table)
  return tuple(tables)


@functools.lru_cache(maxsize=None)
def synthesis_tables(bandwidth, dtype):
  """Inverse-SHT tables `Pbar_l^m(beta_j)` for northern rows, by parity: two `[B (m), B (j), ceil(B/2)]`."""
  north = legendre_table(bandwidth)[:bandwidth]
  tables = []
  for half in _split_by_parity(np.transpose(north, (2, 0, 1)), bandwidth):
    table = np.ascontiguousarray(half).astype(dtype)
    table.flags.writeable = False
    tables.append(table)
  return tuple(tables)
