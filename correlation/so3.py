"""SO(3) correlation of spherical maps: cross-spectra, then the inverse SO(3) Fourier transform.

`c(R) = sum_channels integral_{S^2} (R . f_c)(x) g_c(x) dx`. With `R = Rz(alpha) Ry(beta) Rz(gamma)`,
`(R . f)_l^m = sum_n exp(-i m alpha) d^l_{mn}(beta) exp(-i n gamma) f_l^n` and Parseval,

  c(alpha, beta, gamma) = sum_{m, n} exp(-i m alpha - i n gamma) S_{mn}(beta),
  S_{mn}(beta) = sum_l d^l_{mn}(beta) X^l_{mn},   X^l_{mn} = sum_c f_l^n conj(g_l^m)   (cross-spectrum).

For real maps `S_{-m,-n} = conj(S_{mn})`, so only `n >= 0` is computed and the last step is an inverse
real 2-D FFT. The Wigner-d contraction over `l` is grouped by `k = max(|m|, |n|)` (the first degree
where `d^l_{mn}` is not zero) into a few batched matrix products, and uses
`d^l_{mn}(pi - beta) = (-1)^(l-n) d^l_{-m,n}(beta)` to store only the northern half of the beta grid.

The volume is on the SOFT grid of `geometry.so3_grid(B')`, `B' = upsample * B`, indexed
`[..., alpha, beta, gamma]`. Upsampling evaluates the same band-limited function on a finer grid (zero
padding in the spectral domain).

`normalize=True` first removes each channel's mean over the sphere (its l = 0 term) and scales it to unit
L2 norm over the sphere, for f and g alike, so each channel contributes a correlation coefficient in
[-1, 1] and `c(R) / C` is the mean over channels of the cosine similarity of `R . f_c` and `g_c`.
"""
import functools

import numpy as np
import tensorflow as tf

from correlation import sht
from correlation import wigner
from geometry import grids


def cross_spectrum(f_coeffs, g_coeffs):
  """`X^l_{mn} = sum_c f_l^n conj(g_l^m)`: `[..., B, B, C]` twice -> `[..., B (l), 2B-1 (m), B (n >= 0)]`.

  The m axis runs over `-(B-1)..B-1` (index `m + B - 1`); leading dimensions broadcast.
  """
  b_max = f_coeffs.shape[-2]
  # One real product of stacked (re, im) parts gives all four real blocks; with
  # conj(g_l^{-m}) = (-1)^m g_l^m they make both the m >= 0 and the m < 0 halves.
  stack = lambda c: tf.concat([tf.math.real(c), tf.math.imag(c)], axis=-2)
  blocks = tf.matmul(stack(g_coeffs), stack(f_coeffs), transpose_b=True)  # [..., l, 2B, 2B]
  re_re, re_im = blocks[..., :b_max, :b_max], blocks[..., :b_max, b_max:]
  im_re, im_im = blocks[..., b_max:, :b_max], blocks[..., b_max:, b_max:]
  positive = tf.complex(re_re + im_im, re_im - im_re)                      # conj(g_m) f_n
  sign = tf.constant((-1.0) ** np.arange(b_max - 1, 0, -1), re_re.dtype)[:, None]
  negative = tf.reverse(tf.complex(re_re - im_im, re_im + im_re)[..., 1:, :], axis=[-2])
  negative = tf.complex(sign * tf.math.real(negative), sign * tf.math.imag(negative))
  return tf.concat([negative, positive], axis=-2)


def normalize_coefficients(coeffs, epsilon=1e-8):
  """Per channel: drop the mean (l = 0) and scale to unit L2 norm over the sphere. `[..., B, B, C]`."""
  b_max = coeffs.shape[-3]
  keep_degree = np.ones([b_max, 1, 1]); keep_degree[0] = 0
  centred = coeffs * tf.constant(keep_degree, coeffs.dtype)
  # ||f||^2 = sum_l |f_l^0|^2 + 2 sum_{m>0} |f_l^m|^2 (negative orders mirror the positive ones).
  order_weight = np.full([1, b_max, 1], 2.0); order_weight[0, 0, 0] = 1.0
  power = tf.abs(centred) ** 2 * tf.constant(order_weight, tf.abs(centred).dtype)
  norm = tf.sqrt(tf.reduce_sum(power, axis=[-3, -2], keepdims=True))
  return centred / tf.cast(tf.maximum(norm, epsilon), coeffs.dtype)


class _ContractionPlan:
  """Order-pair bookkeeping and Wigner-d tables for one (bandwidth, grid bandwidth, dtype).

  Pairs `(m, n)`, `|m| < B`, `0 <= n < B`, have flat index `(m + B - 1) * B + n` and level
  `max(|m|, n)`, the first degree where `d^l_{mn}` is not zero. Pairs are sorted by level and cut into
  a few buckets of consecutive levels (one matrix product each: few, large products run faster than
  one per level, at the price of some zeros); a bucket covers degrees `l >= first_level` and its
  table is `d^l_{mn}(beta_j)`, `[pairs, B' (j < B', northern half), B - first_level]`.
  `mirror_signs [B (l), B (n)]` is the `(-1)^(l - n)` of the reflection `beta -> pi - beta`.
  """

  def __init__(self, bandwidth, grid_bandwidth, dtype, num_buckets=8):
    b, gb = bandwidth, grid_bandwidth
    m, n = np.meshgrid(np.arange(-(b - 1), b), np.arange(b), indexing='ij')
    m, n = m.ravel(), n.ravel()
    level = np.maximum(np.abs(m), n)
    order = np.lexsort((m, n, level))          # sorted by level, ties in a fixed order
    level = level[order]
    self.gather_pairs = order                 # sorted position -> flat pair index
    self.scatter_pairs = np.argsort(order)    # flat pair index -> sorted position
    beta, _ = grids.sphere_grid(gb)
    with tf.init_scope():  # eager even when first asked for inside a tf.function
      d = np.concatenate([wigner.wigner_d(b, beta[i:min(i + 16, gb)], m[order], n[order]).numpy()
                          for i in range(0, gb, 16)], axis=0)              # [B', l, pairs]
    edges = np.unique(np.round(np.linspace(0, b, min(num_buckets, b) + 1)).astype(int))
    self.buckets = []  # (first pair, number of pairs, first level)
    self.tables = []
    for lo, hi in zip(edges[:-1], edges[1:]):
      rows = np.flatnonzero((level >= lo) & (level < hi))
      self.buckets.append((int(rows[0]), len(rows), int(lo)))
      self.tables.append(np.ascontiguousarray(np.transpose(d[:, lo:, rows], (2, 0, 1))).astype(dtype))
    l = np.arange(b)
    self.mirror_signs = ((-1.0) ** (l[:, None] - l[None, :])).astype(dtype)
    self.table_bytes = sum(t.nbytes for t in self.tables)


@functools.lru_cache(maxsize=None)
def contraction_plan(bandwidth, grid_bandwidth, dtype):
  """The cached `_ContractionPlan` for maps of `bandwidth` evaluated on the SO(3) grid `grid_bandwidth`."""
  return _ContractionPlan(int(bandwidth), int(grid_bandwidth), np.dtype(dtype).name)


def _contract(spectrum, plan, grid_bandwidth):
  """`S_{mn}(beta_j) = sum_l d^l_{mn}(beta_j) X^l_{mn}`: `[N, B, 2B-1, B]` -> `[N, 2B' (j), 2B-1, B]`.

  The tables hold the northern half `j < B'`. The southern half follows from
  `S_{mn}(pi - beta) = sum_l d^l_{-m,n}(beta) (-1)^(l-n) X^l_{mn}`: the same tables applied to the
  spectrum with m reversed and signed, whose result is then reversed in m and in j.
  """
  b_max = spectrum.shape[-1]
  gb = grid_bandwidth
  real_dtype = spectrum.dtype.real_dtype
  batch = tf.shape(spectrum)[0]
  mirrored = tf.reverse(spectrum, axis=[2]) * tf.cast(plan.mirror_signs[:, None, :], spectrum.dtype)
  columns = tf.concat([tf.math.real(spectrum), tf.math.imag(spectrum),
                       tf.math.real(mirrored), tf.math.imag(mirrored)], axis=0)  # [4N, l, m, n]
  pairs = tf.reshape(tf.transpose(columns, [2, 3, 1, 0]), [(2 * b_max - 1) * b_max, b_max, -1])
  pairs = tf.gather(pairs, plan.gather_pairs)                               # [P (sorted), l, 4N]
  outputs = []
  for (start, size, first_level), table in zip(plan.buckets, plan.tables):
    block = pairs[start:start + size, first_level:, :]
    outputs.append(tf.matmul(tf.constant(table, real_dtype), block))        # [pk, B', 4N]
  flat = tf.gather(tf.concat(outputs, axis=0), plan.scatter_pairs)           # [P, B', 4N]
  flat = tf.transpose(tf.reshape(flat, [2 * b_max - 1, b_max, gb, 4, batch]), [3, 4, 2, 0, 1])
  north = tf.complex(flat[0], flat[1])                                      # [N, j, m, n]
  south = tf.reverse(tf.complex(flat[2], flat[3]), axis=[1, 2])
  return tf.concat([north, south], axis=1)


def volume_from_spectrum(spectrum, grid_bandwidth=None):
  """Inverse SO(3) Fourier transform of cross-spectra `[..., B, 2B-1, B]` -> `[..., 2B', 2B', 2B']`.

  Args:
    spectrum: `X^l_{mn}` as from `cross_spectrum` (complex64 or complex128).
    grid_bandwidth: B' >= B of the output SO(3) grid (default B).
  Returns:
    real `c[..., alpha, beta, gamma]` on `geometry.so3_grid(B')`.
  """
  spectrum = tf.convert_to_tensor(spectrum)
  b_max = spectrum.shape[-1]
  if spectrum.shape.rank is None or spectrum.shape.rank < 3 or tuple(spectrum.shape[-3:]) != (
      b_max, 2 * b_max - 1, b_max):
    raise ValueError(f'expected cross-spectra [..., B, 2B-1, B], got shape {spectrum.shape}')
  gb = b_max if grid_bandwidth is None else int(grid_bandwidth)
  if gb < b_max:
    raise ValueError(f'grid_bandwidth={gb} must be at least the bandwidth {b_max}')
  plan = contraction_plan(b_max, gb, spectrum.dtype.real_dtype.name)
  batch_shape = tf.shape(spectrum)[:-3]
  flat = tf.reshape(spectrum, [-1, b_max, 2 * b_max - 1, b_max])
  s = _contract(flat, plan, gb)                                            # [N, j, m, n]
  # Place m on the length-2B' FFT axis (negative m wrap around) and pad n to the B'+1 real-FFT bins.
  zeros_m = tf.zeros_like(s[:, :, :1, :])
  gap = tf.repeat(zeros_m, 2 * gb - (2 * b_max - 1), axis=2)
  s = tf.concat([s[:, :, b_max - 1:, :], gap, s[:, :, :b_max - 1, :]], axis=2)
  s = tf.pad(s, [[0, 0], [0, 0], [0, 0], [0, gb + 1 - b_max]])
  # c = sum S exp(-i(m a + n g)) is real, so c = conj(c) = (2B')^2 irfft2(conj(S)).
  volume = tf.signal.irfft2d(tf.math.conj(s), fft_length=[2 * gb, 2 * gb])  # [N, beta, alpha, gamma]
  volume = tf.transpose(volume, [0, 2, 1, 3]) * tf.cast((2 * gb)**2, volume.dtype)
  return tf.reshape(volume, tf.concat([batch_shape, [2 * gb] * 3], 0))


def _check_pair(f, g):
  f = sht._check_map(f, 'correlation.correlate (f)')
  g = sht._check_map(g, 'correlation.correlate (g)')
  if f.shape[-3:] != g.shape[-3:]:
    raise ValueError(f'correlate: f {f.shape} and g {g.shape} must have the same [2B, 2B, C]')
  return f, tf.cast(g, f.dtype)


def spectra(f, g, normalize=False):
  """Forward SHTs of two map batches and their cross-spectrum `[..., B, 2B-1, B]` (broadcast)."""
  f, g = _check_pair(f, g)
  f_coeffs, g_coeffs = sht.forward(f), sht.forward(g)
  if normalize:
    f_coeffs, g_coeffs = normalize_coefficients(f_coeffs), normalize_coefficients(g_coeffs)
  return cross_spectrum(f_coeffs, g_coeffs)


# Pairs per step of `map_pairs`. A correlation volume is 1 MB at B = 32; a few pairs at a time stay in
# cache, where one large batch spills every stage to memory: at B = 32, C = 32 a batch of 64 ran
# about 6 times faster (XLA, 2 cores) in steps of 1-4 pairs than in one step.
PAIRS_PER_STEP = 4


def map_pairs(fn, f, g, output_dtypes, pairs_per_step=PAIRS_PER_STEP):
  """`fn(f_step, g_step)` over steps of a few pairs, for maps `[..., 2B, 2B, C]` (leading dims broadcast).

  Args:
    fn: maps `[n, 2B, 2B, C]` twice -> a tuple of tensors with leading dimension n.
    f, g: maps (checked, g cast to f's dtype).
    output_dtypes: tuple of the dtypes of fn's outputs.
    pairs_per_step: pairs per call of fn.
  Returns:
    (tuple of fn's outputs, concatenated over all pairs `[N, ...]`; the leading shape to restore).
  """
  f, g = _check_pair(f, g)
  batch_shape = tf.broadcast_dynamic_shape(tf.shape(f)[:-3], tf.shape(g)[:-3])
  f = tf.reshape(tf.broadcast_to(f, tf.concat([batch_shape, tf.shape(f)[-3:]], 0)),
                 [-1] + f.shape[-3:].as_list())
  g = tf.reshape(tf.broadcast_to(g, tf.concat([batch_shape, tf.shape(g)[-3:]], 0)),
                 [-1] + g.shape[-3:].as_list())
  count = f.shape[0]
  step = pairs_per_step if count is None else max(1, min(pairs_per_step, count))
  count = tf.shape(f)[0]
  padded = (count + step - 1) // step * step  # zero maps fill the last step; their results are cut
  pad = [[0, padded - count], [0, 0], [0, 0], [0, 0]]
  to_steps = lambda x: tf.reshape(tf.pad(x, pad), [-1, step] + x.shape[1:].as_list())
  outputs = tf.map_fn(lambda pair: tuple(fn(*pair)), (to_steps(f), to_steps(g)),
                      fn_output_signature=tuple(output_dtypes), parallel_iterations=1)
  outputs = tuple(tf.reshape(o, tf.concat([[padded], tf.shape(o)[2:]], 0))[:count] for o in outputs)
  return outputs, batch_shape


def _check_upsample(upsample):
  if int(upsample) != upsample or upsample < 1:
    raise ValueError(f'upsample must be a positive integer, got {upsample!r}')
  return int(upsample)


def correlate(f, g, upsample=1, normalize=False):
  """SO(3) correlation volume of maps `[..., 2B, 2B, C]` -> real `[..., 2B', 2B', 2B']`, `B' = upsample B`.

  `c[..., i, j, k] = sum_c integral (R . f_c) g_c` at `R = Rz(alpha_i) Ry(beta_j) Rz(gamma_k)` of
  `geometry.so3_grid(B')`; see the module docstring for `normalize`. Leading dimensions broadcast.
  """
  upsample = _check_upsample(upsample)
  f = sht._check_map(f, 'correlation.correlate (f)')
  grid_bandwidth = upsample * f.shape[-3] // 2
  (volume,), batch_shape = map_pairs(
      lambda a, b: (volume_from_spectrum(spectra(a, b, normalize), grid_bandwidth),), f, g,
      (f.dtype,))
  return tf.reshape(volume, tf.concat([batch_shape, [2 * grid_bandwidth] * 3], 0))


def evaluate(spectrum, angles):
  """The band-limited correlation at continuous ZYZ angles, with its gradient and Hessian.

  Args:
    spectrum: cross-spectra `[..., B, 2B-1, B]`.
    angles: `[..., 3]` (alpha, beta, gamma) in radians, same leading dimensions as `spectrum`.
  Returns:
    (value `[...]`, gradient `[..., 3]`, hessian `[..., 3, 3]`) with respect to (alpha, beta, gamma).
  """
  b_max = spectrum.shape[-1]
  real_dtype = spectrum.dtype.real_dtype
  alpha, beta, gamma = tf.unstack(tf.cast(angles, real_dtype), axis=-1)
  # Orders n >= -2 suffice: each derivative invalidates the lowest column (see wigner_d_derivative).
  d = wigner.wigner_d_matrices(b_max, beta, first_n=-2)                    # [..., l, m, n >= -2]
  d1 = wigner.wigner_d_derivative(d, first_n=-2)
  d2 = wigner.wigner_d_derivative(d1, first_n=-2)
  d0, d1, d2 = d[..., 2:], d1[..., 2:], d2[..., 2:]                        # n >= 0
  x = spectrum
  k0, k1, k2 = (tf.reduce_sum(x * tf.cast(d, x.dtype), axis=-3) for d in (d0, d1, d2))  # [..., m, n]
  m = tf.range(-(b_max - 1), b_max, dtype=real_dtype)[:, None]
  n = tf.range(b_max, dtype=real_dtype)[None, :]
  # Only n >= 0 is stored: the n > 0 terms stand for their mirrored (-m, -n) conjugates too.
  weight = tf.where(n > 0, tf.constant(2.0, real_dtype), tf.constant(1.0, real_dtype))
  phase = -(alpha[..., None, None] * m + gamma[..., None, None] * n)
  e = tf.complex(weight * tf.cos(phase), weight * tf.sin(phase))
  zero = tf.zeros_like(m * n)
  def total(k, poly_re, poly_im):
    """Re sum_mn e * k * (poly_re + i poly_im)."""
    return tf.reduce_sum(tf.math.real(e * k * tf.complex(poly_re + zero, poly_im + zero)), [-2, -1])
  one = tf.ones_like(zero)
  value = total(k0, one, zero)
  grad = tf.stack([total(k0, zero, -m), total(k1, one, zero), total(k0, zero, -n)], -1)
  h_aa = total(k0, -m * m, zero)
  h_gg = total(k0, -n * n, zero)
  h_ag = total(k0, -m * n, zero)
  h_ab = total(k1, zero, -m)
  h_gb = total(k1, zero, -n)
  h_bb = total(k2, one, zero)
  hess = tf.stack([tf.stack([h_aa, h_ab, h_ag], -1), tf.stack([h_ab, h_bb, h_gb], -1),
                   tf.stack([h_ag, h_gb, h_gg], -1)], -2)
  return value, grad, hess
