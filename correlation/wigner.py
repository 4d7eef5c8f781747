"""Wigner small-d functions `d^l_{mn}(beta)` by the three-term recursion in degree (as in SOFT).

Convention: `d^l_{mn}(beta) = <l m| exp(-i beta J_y) |l n>` (Wigner; e.g. `d^1_{10} = -sin(beta)/sqrt 2`),
so that with `D^l_{mn}(alpha, beta, gamma) = exp(-i m alpha) d^l_{mn}(beta) exp(-i n gamma)` the rotation
`R = Rz(alpha) Ry(beta) Rz(gamma)` acts on spherical-harmonic coefficients as
`(R . f)_l^m = sum_n D^l_{mn}(R) f_l^n`, where `(R . f)(x) = f(R^T x)` (docs/conventions.md).

For each order pair `(m, n)` the recursion starts at `l0 = max(|m|, |n|)` from the closed form
`d^{l0}_{mn} = sign sqrt(binom(2 l0, l0 - q)) cos(beta/2)^a sin(beta/2)^b`, evaluated in log space so that
nothing overflows (tiny seeds underflow to zero, as the functions they stand for do), and steps up with

  (l-1) sqrt((l^2-m^2)(l^2-n^2)) d^l
      = (2l-1) ((l-1) l cos(beta) - m n) d^{l-1} - l sqrt(((l-1)^2-m^2)((l-1)^2-n^2)) d^{l-2}.

This one routine serves every table of the package (the associated-Legendre table of the SHT is
`d^l_{m0}` up to a factor) and also runs in-graph at arbitrary angles (rotation, peak refinement).
"""
import functools

import numpy as np
import tensorflow as tf
from scipy.special import gammaln


def _check_bandwidth(bandwidth):
  if int(bandwidth) != bandwidth or bandwidth < 1:
    raise ValueError(f'bandwidth must be a positive integer, got {bandwidth!r}')
  return int(bandwidth)


@functools.lru_cache(maxsize=None)
def _recursion_coefficients(bandwidth, m_orders, n_orders):
  """Numpy float64 tables for order pairs `(m_orders[p], n_orders[p])`.

  Returns (a, b, c, seed_log_scale, seed_sign, cos_power, sin_power, start) where a, b, c are `[B, P]`
  recursion coefficients `d^l = (a_l cos(beta) - b_l) d^{l-1} - c_l d^{l-2}` (zero for `l <= l0`),
  the seed terms are `[P]` and `start` `[B, P]` is 1 where `l == l0`.
  """
  b_max = bandwidth
  m = np.asarray(m_orders, np.float64)
  n = np.asarray(n_orders, np.float64)
  l0 = np.maximum(np.abs(m), np.abs(n))
  if np.any(l0 >= b_max):
    raise ValueError(f'orders must satisfy max(|m|, |n|) < bandwidth={b_max}')
  l = np.arange(b_max, dtype=np.float64)[:, None]
  with np.errstate(divide='ignore', invalid='ignore'):
    norm_l = (l - 1) * np.sqrt((l**2 - m**2) * (l**2 - n**2))
    a = (2 * l - 1) * (l - 1) * l / norm_l
    b = (2 * l - 1) * m * n / norm_l
    c = l * np.sqrt(np.maximum(((l - 1)**2 - m**2) * ((l - 1)**2 - n**2), 0)) / norm_l
  stepping = (l > l0) & (l >= 2)
  a, b, c = (np.where(stepping, t, 0.0) for t in (a, b, c))
  # d^1_00 = cos(beta): the general formula divides by (l - 1) = 0 there.
  first = (l == 1) & (l0 == 0)
  a = np.where(first, 1.0, a)

  # Seeds at l = l0 (Wigner's sum has a single term when one order is +-l0).
  m_dominant = np.abs(m) >= np.abs(n)
  q = np.where(m_dominant, n, m)                 # the other order
  up = np.where(m_dominant, m >= 0, n > 0)       # the dominant order is +l0
  cos_power = np.where(up, l0 + q, l0 - q)
  sin_power = np.where(up, l0 - q, l0 + q)
  log_binom = 0.5 * (gammaln(2 * l0 + 1) - gammaln(l0 - q + 1) - gammaln(l0 + q + 1))
  odd = np.where(m_dominant, np.where(up, l0 - n, 0.0), np.where(up, 0.0, m + l0))
  seed_sign = 1.0 - 2.0 * (np.mod(odd, 2) == 1)
  start = (l == l0).astype(np.float64)
  tables = (a, b, c, log_binom, seed_sign, cos_power, sin_power, start)
  for t in tables:
    t.flags.writeable = False
  return tables


def wigner_d(bandwidth, beta, m_orders, n_orders):
  """`d^l_{mn}(beta)` for `l < bandwidth` and the order pairs given.

  Args:
    bandwidth: B; degrees 0..B-1 are returned.
    beta: float tensor `[...]` of angles in radians (float32 or float64; the result follows).
    m_orders, n_orders: int sequences of equal length P with `max(|m|, |n|) < B`.

  Returns:
    `[..., B (l), P]`, zero where `l < max(|m|, |n|)`.
  """
  b_max = _check_bandwidth(bandwidth)
  m_orders = tuple(int(v) for v in np.ravel(m_orders))
  n_orders = tuple(int(v) for v in np.ravel(n_orders))
  if len(m_orders) != len(n_orders):
    raise ValueError(f'wigner_d: {len(m_orders)} m orders but {len(n_orders)} n orders')
  beta = tf.convert_to_tensor(beta)
  if not beta.dtype.is_floating:
    beta = tf.cast(beta, tf.float32)
  dtype = beta.dtype
  a, b, c, log_binom, sign, cos_power, sin_power, start = (
      tf.constant(t, dtype) for t in _recursion_coefficients(b_max, m_orders, n_orders))
  beta = beta[..., None]
  # The clamp keeps 0 * log(0) finite at the poles; a positive power of it underflows to 0 as it should.
  tiny = tf.constant(np.finfo(dtype.as_numpy_dtype).tiny, dtype)
  log_cos = tf.math.log(tf.maximum(tf.abs(tf.cos(beta / 2)), tiny))
  log_sin = tf.math.log(tf.maximum(tf.abs(tf.sin(beta / 2)), tiny))
  seed = sign * tf.exp(log_binom + cos_power * log_cos + sin_power * log_sin)
  cos_beta = tf.cos(beta)

  def step(state, coefficients):
    prev2, prev1 = state
    a_l, b_l, c_l, start_l = coefficients
    return prev1, start_l * seed + (a_l * cos_beta - b_l) * prev1 - c_l * prev2

  # tf.scan keeps the graph one step long whatever the bandwidth (a loop would unroll B steps).
  zeros = tf.zeros_like(seed)
  _, degrees = tf.scan(step, (a, b, c, start), initializer=(zeros, zeros))  # [B, ..., P]
  rank = len(degrees.shape)
  return tf.transpose(degrees, list(range(1, rank - 1)) + [0, rank - 1])

def full_orders(bandwidth):
  """All order pairs `(m, n)`, `|m|, |n| < B`, row-major over `m` then `n`: two int arrays `[(2B-1)^2]`."""
  b_max = _check_bandwidth(bandwidth)
  orders = np.arange(-(b_max - 1), b_max)
  m, n = np.meshgrid(orders, orders, indexing='ij')
  return m.ravel(), n.ravel()


def wigner_d_matrices(bandwidth, beta, first_n=None):
  """`d^l(beta)` as matrices: `[..., B (l), 2B-1 (m), B - first_n (n)]`.

  m runs over `-(B-1)..B-1` (index `m + B - 1`), n over `first_n..B-1` (default all, `-(B-1)`).
  """
  b_max = _check_bandwidth(bandwidth)
  first_n = -(b_max - 1) if first_n is None else int(first_n)
  m, n = np.meshgrid(np.arange(-(b_max - 1), b_max), np.arange(first_n, b_max), indexing='ij')
  d = wigner_d(b_max, beta, m, n)
  return tf.reshape(d, tf.concat([tf.shape(d)[:-1], [2 * b_max - 1, b_max - first_n]], 0))


def wigner_d_derivative(d, first_n=None):
  """`d/dbeta` of Wigner-d matrices `[..., B, 2B-1, B - first_n]` (as from `wigner_d_matrices`).

  Uses `d'_{mn} = (c^-_n d_{m,n-1} - c^+_n d_{m,n+1}) / 2`, `c^+-_n = sqrt(l(l+1) - n(n+-1))`, from
  `d/dbeta exp(-i beta J_y) = exp(-i beta J_y) (J_- - J_+) / 2`; apply twice for the second derivative.
  With a truncated range (`first_n > -(B-1)`) the column `n = first_n` lacks its neighbour `n - 1` and
  is not valid; every other column is.
  """
  b_max = d.shape[-3]
  first_n = -(b_max - 1) if first_n is None else int(first_n)
  orders = np.arange(first_n, b_max, dtype=np.float64)
  l = np.arange(b_max, dtype=np.float64)[:, None, None]
  lower = np.sqrt(np.maximum(l * (l + 1) - orders * (orders - 1), 0)) / 2
  upper = np.sqrt(np.maximum(l * (l + 1) - orders * (orders + 1), 0)) / 2
  lower, upper = tf.constant(lower, d.dtype), tf.constant(upper, d.dtype)
  zeros = tf.zeros_like(d[..., :1])
  d_n_minus_1 = tf.concat([zeros, d[..., :-1]], axis=-1)  # entry n holds d_{m, n-1}
  d_n_plus_1 = tf.concat([d[..., 1:], zeros], axis=-1)
  return lower * d_n_minus_1 - upper * d_n_plus_1
