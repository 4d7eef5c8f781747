"""SO(3) correlation of spherical maps: cross-spectra, then the inverse SO(3) Fourier transform.

`c(R) = sum_channels integral_{S^2} (R . f_c)(x) g_c(x) dx`. With `R = Rz(alpha) Ry(beta) Rz(gamma)`,
`(R . f)_l^m = sum_n exp(-i m alpha) d^l_{mn}(beta) exp(-i n gamma) f_l^n` and Parseval,

  c(alpha, beta, gamma) = sum_{m, n} exp(-i m alpha - i n gamma) S_{mn}(beta),
  S_{mn}(beta) = sum_l d^l_{mn}(beta) X^l_{mn},   X^l_{mn} = sum_c f_l^n conj(g_l^m)   (cross-spectrum).

For real maps `S_{-m,-n} = conj(S_{mn})`, so only `n >= 0` is computed, and the volume, real, takes one
complex 2-D FFT for two beta rows (`_packed_spectrum`). The Wigner-d contraction over `l` is a few
batched matrix products over tables that the symmetries of `d` cut to an eighth of all
`(beta_j, m, n)` (see `_ContractionPlan`).

The volume is on the SOFT grid of `geometry.so3_grid(B')`, `B' = upsample * B`, indexed
`[..., alpha, beta, gamma]`. Upsampling evaluates the same band-limited function on a finer grid (zero
padding in the spectral domain).

Off the grid the correlation is a trigonometric polynomial in all three angles: `S_{mn}(beta)` has
degree < B in beta and is known on the whole circle from the grid (`S_{mn}(-beta) = (-1)^(m-n)
S_{mn}(beta)`), so one FFT over beta gives its Fourier coefficients `Y` (`fourier_coefficients`), and
`evaluate` sums them, with exact derivatives, at any `(alpha, beta, gamma)`. `align` refines on
`evaluate_rows` instead: the same numbers by exact interpolation of the beta rows `S_{mn}(beta_j)`
that the volume is transformed from (`row_samples`), so no coefficient cube is built.

`normalize=True` first removes each channel's mean over the sphere (its l = 0 term) and scales it to unit
L2 norm over the sphere, for f and g alike, so each channel contributes a correlation coefficient in
[-1, 1] and `c(R) / C` is the mean over channels of the cosine similarity of `R . f_c` and `g_c`.
"""
import functools
import os

import numpy as np
import tensorflow as tf

from correlation import fusion
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
  keep_degree = np.where(np.arange(b_max) > 0, 1.0, 0.0)[:, None, None]
  centred = coeffs * tf.constant(keep_degree, coeffs.dtype)
  norm = tf.maximum(tf.sqrt(tf.reduce_sum(sht.degree_power(centred), axis=-2)), epsilon)
  # tf.complex rather than tf.cast: the gradient of a real -> complex cast warns in every trace.
  return centred / tf.complex(norm, tf.zeros_like(norm))[..., None, None, :]


class _ContractionPlan:
  """Order-pair bookkeeping and Wigner-d tables for one (bandwidth, grid bandwidth, dtype).

  Pairs `(m, n)`, `|m| < B`, `0 <= n < B`, have flat index `(m + B - 1) * B + n`. Three symmetries let
  the tables hold only the canonical pairs `|m| <= n` (a quarter of all `(m, n)`) on the northern half
  of the beta grid (`j < B'`):
    d^l_{mn} = (-1)^(m-n) d^l_{nm} = d^l_{-n,-m}          (partner: `(n, m)` or `(-n, -m)`),
    d^l_{mn}(pi - beta) = (-1)^(l-n) d^l_{-m,n}(beta)      (mirror).
  One product of a canonical table row with four signed right-hand sides gives four results: S of
  the pair itself (north), of its partner (north), of its mirror (south) and of its partner's mirror
  (south) -- every (pair, half) exactly once. For a canonical pair the first non-zero degree is n, so
  rows are sorted by n and cut into a few buckets of consecutive n (one matrix product each; few,
  large products run faster than one per degree); a bucket's table is `[pairs, B - first_n, B']`.
  """

  def __init__(self, bandwidth, grid_bandwidth, dtype, num_buckets=8):
    b, gb = bandwidth, grid_bandwidth
    flat = lambda m, n: (m + b - 1) * b + n
    zero_row = (2 * b - 1) * b  # index of an all-zero right-hand side
    canonical = [(m, n) for n in range(b) for m in range(-n, n + 1)]  # sorted by n
    count, l = len(canonical), np.arange(b)
    self.sources = np.full((4, count), zero_row)       # right-hand side pair of each role
    self.signs = np.zeros((4, count, b))               # its sign, per degree
    producer = np.zeros((2, (2 * b - 1) * b), int)     # (north, south) -> role * count + row
    for q, (m, n) in enumerate(canonical):
      partner, sigma = ((n, m), (-1.0)**(n - m)) if m >= 0 else ((-n, -m), 1.0)
      roles = [((m, n), 1.0, 0), ((-m, n), (-1.0)**(l - n), 1)]  # (pair, sign, 0 north / 1 south)
      if abs(m) < n:
        roles += [(partner, sigma, 0), ((-partner[0], partner[1]), sigma * (-1.0)**(l - partner[1]), 1)]
      for role, (pair, sign, half) in enumerate(roles):
        self.sources[role, q] = flat(*pair)
        self.signs[role, q] = sign
        producer[half, flat(*pair)] = role * count + q
    self.sources = np.concatenate([self.sources[[0, 2]], self.sources[[1, 3]]])  # roles: N, N, S, S
    self.signs = np.concatenate([self.signs[[0, 2]], self.signs[[1, 3]]]).astype(dtype)
    reorder = np.array([0, 2, 1, 3])  # producer indices follow the reordered roles
    self.producers = reorder[producer // count] * count + producer % count
    # Rows (0, k) have a second partner, (-k, 0) (d_{0k} = d_{-k,0}), and its mirror (k, 0): two more
    # roles for these B-1 rows only, computed by one extra product and numbered after the others.
    self.axial_rows = np.array([q for q, (m, n) in enumerate(canonical) if m == 0 and n > 0], int)
    self.axial_sources = np.array([[flat(-k, 0) for k in range(1, b)], [flat(k, 0) for k in range(1, b)]])
    self.axial_signs = np.stack([np.ones((b - 1, b)), np.tile((-1.0)**l, (b - 1, 1))]).astype(dtype)
    for role in range(2):
      for k in range(1, b):
        self.producers[role, flat((2 * role - 1) * k, 0)] = 4 * count + role * (b - 1) + k - 1
    m, n = np.array(canonical).T
    beta, _ = grids.sphere_grid(gb)
    with tf.init_scope():  # eager even when first asked for inside a tf.function
      d = np.concatenate([wigner.wigner_d(b, beta[i:min(i + 16, gb)], m, n).numpy()
                          for i in range(0, gb, 16)], axis=0)              # [B', l, pairs]
    edges = np.unique(np.round(np.linspace(0, b, min(num_buckets, b) + 1)).astype(int))
    self.buckets, self.tables = [], []  # buckets: (first row, number of rows, first degree)
    for lo, hi in zip(edges[:-1], edges[1:]):
      rows = np.flatnonzero((n >= lo) & (n < hi))
      self.buckets.append((int(rows[0]), len(rows), int(lo)))
      self.tables.append(np.ascontiguousarray(np.transpose(d[:, lo:, rows], (2, 1, 0))).astype(dtype))
    self.axial_table = np.ascontiguousarray(
        np.transpose(d[:, :, self.axial_rows], (2, 1, 0))).astype(dtype)  # [B-1, l, B']
    self.table_bytes = sum(t.nbytes for t in self.tables) + self.axial_table.nbytes
    self._index_gathers(b, gb, count)

  def _index_gathers(self, b, gb, count):
    """Gather indices that replace all reshuffling around the matrix products (`_products`).

    Products run transposed, `[roles, W, l] @ [l, j]`, so every gather moves whole rows: the cross-
    spectrum enters as `source [(2B-1) B + 1 (pairs (m, n), last one zero), W, B (l)]` (W: real and
    imaginary parts of every pair of the batch); bucket i's right-hand side is
    `source[rhs_pairs[i]]` from its first degree on, times `rhs_sign[i]`, `[rows, 4, W, L]`; the
    products' outputs, as blocks `[W, B' (j)]` per (row, role), then the axial ones and a zero block,
    stack to `out`, and `out[fft_blocks]` `[2 (north, south), 2B' (m in FFT order), B'+1 (n), W, B']`
    holds S with the wrapped negative orders and the zero padding of both FFT axes. `packed_blocks`
    `[2, (2B')^2]` and `packed_sign` index the same blocks over the whole n axis (`_packed_spectrum`).
    """
    self.rhs_pairs, self.rhs_sign, offsets, offset = [], [], [], 0
    for start, size, first_degree in self.buckets:
      self.rhs_pairs.append(self.sources[:, start:start + size].T.astype(np.int32))  # [rows, 4]
      self.rhs_sign.append(np.transpose(self.signs[:, start:start + size, first_degree:],
                                        (1, 0, 2))[:, :, None, :])                  # [rows, 4, 1, L]
      offsets.append(offset)
      offset += size * 4
    self.axial_pairs = self.axial_sources.T.astype(np.int32)                        # [B-1, 2]
    self.axial_sign = np.transpose(self.axial_signs, (1, 0, 2))[:, :, None, :]      # [B-1, 2, 1, l]
    axial_offset, zero_block = offset, offset + (b - 1) * 2
    half = np.arange(2)[:, None, None]
    m_fft = np.arange(2 * gb)[None, :, None]
    m = np.where(m_fft < b, m_fft, m_fft - 2 * gb)
    n = np.arange(gb + 1)[None, None, :]
    valid = (m > -b) & (n < b)
    producer = self.producers[half, np.where(valid, (m + b - 1) * b + n, 0)]
    role, q = producer // count, producer % count
    starts = np.array([start for start, _, _ in self.buckets])
    bucket = np.searchsorted(starts, q, side='right') - 1
    from_bucket = np.array(offsets)[bucket] + (q - starts[bucket]) * 4 + role
    axial = producer - 4 * count
    from_axial = axial_offset + (axial % max(b - 1, 1)) * 2 + axial // max(b - 1, 1)
    index = np.where(producer < 4 * count, from_bucket, from_axial)
    self.fft_blocks = np.where(valid, index, zero_block).astype(np.int32)          # [2, 2B', B'+1]
    # The whole n axis in FFT order for the packed spectrum of `volume_from_spectrum`: negative n from
    # S_{m,-n} = conj(S_{-m,n}), so its block is that of (-m, n) and its imaginary part changes sign.
    n_fft = np.arange(2 * gb)
    negative = n_fft > gb
    m_source = np.where(negative[None, :], (-np.arange(2 * gb)[:, None]) % (2 * gb),
                        np.arange(2 * gb)[:, None])
    n_source = np.where(negative, 2 * gb - n_fft, n_fft)[None, :]
    self.packed_blocks = np.reshape(self.fft_blocks[:, m_source, n_source], [2, -1])  # [2, (2B')^2]
    self.packed_sign = np.tile(np.where(negative, -1.0, 1.0), 2 * gb)[:, None]      # [(2B')^2, 1]


@functools.lru_cache(maxsize=None)
def contraction_plan(bandwidth, grid_bandwidth, dtype):
  """The cached `_ContractionPlan` for maps of `bandwidth` evaluated on the SO(3) grid `grid_bandwidth`."""
  return _ContractionPlan(int(bandwidth), int(grid_bandwidth), np.dtype(dtype).name)


def _products(spectrum, plan, grid_bandwidth):
  """The Wigner-d products of a batch of cross-spectra, one row of beta values per (pair, role).

  `[N, B, 2B-1, B]` -> `[blocks, 2 N B']`: block rows as numbered by `_ContractionPlan._index_gathers`
  (the last one zero), columns (real / imaginary part, pair, beta row j of the northern half). The pairs
  of a batch share one pass over the tables.
  """
  b_max = spectrum.shape[-1]
  real_dtype = spectrum.dtype.real_dtype
  block = 2 * tf.shape(spectrum)[0] * grid_bandwidth
  parts = tf.stack([tf.math.real(spectrum), tf.math.imag(spectrum)], axis=0)   # [2, N, l, m, n]
  source = tf.reshape(tf.transpose(parts, [3, 4, 0, 1, 2]), [(2 * b_max - 1) * b_max, -1, b_max])
  source = tf.concat([source, tf.zeros_like(source[:1])], axis=0)          # [(m, n) + 1, W = 2N, l]
  outputs = []
  for table, pairs, sign, (_, size, first_degree) in zip(plan.tables, plan.rhs_pairs,
                                                           plan.rhs_sign, plan.buckets):
    rhs = tf.gather(source[..., first_degree:], pairs) * tf.constant(sign, real_dtype)  # [rows, 4, W, L]
    rhs = tf.reshape(rhs, [size, -1, b_max - first_degree])
    outputs.append(tf.reshape(tf.matmul(rhs, tf.constant(table, real_dtype)), [-1, block]))
  if b_max > 1:
    rhs = tf.gather(source, plan.axial_pairs) * tf.constant(plan.axial_sign, real_dtype)
    rhs = tf.reshape(rhs, [b_max - 1, -1, b_max])                          # [B-1, 2 W, l]
    outputs.append(tf.reshape(tf.matmul(rhs, tf.constant(plan.axial_table, real_dtype)),
                              [-1, block]))
  outputs.append(tf.zeros_like(outputs[0][:1]))
  return tf.concat(outputs, axis=0)


def _contract(spectrum, plan, grid_bandwidth):
  """`S_{mn}(beta_j) = sum_l d^l_{mn}(beta_j) X^l_{mn}` for `n >= 0` on every beta row of the grid.

  `[N, B, 2B-1, B]` -> `[N, 2B' (j), 2B' (m; negative orders wrap around), B'+1 (n)]`, zero where
  `|m| >= B` or `n >= B`.
  """
  gb = grid_bandwidth
  blocks = tf.gather(_products(spectrum, plan, gb), np.reshape(plan.fft_blocks, [-1]))
  blocks = tf.reshape(blocks, [-1, 2, tf.shape(spectrum)[0] * gb])        # [blocks, re/im, N j]
  s = fusion.transpose_2d(tf.complex(blocks[:, 0], blocks[:, 1]), fusion.token(spectrum))
  s = tf.reshape(s, [-1, gb, 2, 2 * gb, gb + 1])                           # [N, j, half, m, n]
  # The southern rows come as pi - beta_j for j < B': reversed, they continue the northern ones.
  return tf.concat([s[:, :, 0], tf.reverse(s[:, :, 1], axis=[1])], axis=1)


def _packed_spectrum(spectrum, plan, grid_bandwidth, rows=None):
  """`Z = S_north + i S_south` over the whole (m, n) plane, for one complex FFT giving both halves.

  `[N, B, 2B-1, B]` -> `[N, B' (j), 2B' (m), 2B' (n)]` (both in FFT order) with `S_north = S(beta_j)`
  and `S_south = S(pi - beta_j)`. The volume is real, so `fft2(S)` is real on each beta row and
  `fft2(Z) = c(beta_j) + i c(pi - beta_j)`: one complex 2-D FFT of the same size as the two inverse
  real FFTs it replaces, which XLA runs about twice as fast (B = 64, within a step: 2.6-4 ms against
  7-10).
  """
  gb = grid_bandwidth
  rows = _products(spectrum, plan, gb) if rows is None else rows
  north = tf.reshape(tf.gather(rows, plan.packed_blocks[0]), [(2 * gb)**2, 2, -1])  # [mn, re/im, N j]
  south = tf.reshape(tf.gather(rows, plan.packed_blocks[1]), [(2 * gb)**2, 2, -1])
  sign = tf.constant(plan.packed_sign, rows.dtype)             # conjugates where n < 0
  z = tf.complex(north[:, 0] - sign * south[:, 1], sign * north[:, 1] + south[:, 0])  # [mn, N j]
  # Complex before the transpose: the FFT then reads the transposed data as it is (no pass to
  # interleave real and imaginary planes; B = 32: 1.83 against 2.01 ms a step, one thread).
  z = fusion.transpose_2d(z, fusion.token(spectrum))                     # [N j, m n]
  return tf.reshape(z, [-1, gb, 2 * gb, 2 * gb])


def volume_from_spectrum(spectrum, grid_bandwidth=None, with_samples=False):
  """Inverse SO(3) Fourier transform of cross-spectra `[..., B, 2B-1, B]` -> `[..., 2B', 2B', 2B']`.

  Args:
    spectrum: `X^l_{mn}` as from `cross_spectrum` of real maps (complex64 or complex128): the
      negative orders n follow from `S_{-m,-n} = conj(S_{mn})`.
    grid_bandwidth: B' >= B of the output SO(3) grid (default B).
    with_samples: also return `row_samples(spectrum, B')` (spectra `[N, B, 2B-1, B]` only), taken
      from the same Wigner-d products as the volume.
  Returns:
    real `c[..., alpha, beta, gamma]` on `geometry.so3_grid(B')` (and the row samples).
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
  # c = sum S exp(-i(m a + n g)) = fft2(S) on every beta row; rows beta_j and pi - beta_j share one.
  rows = _products(flat, plan, gb)
  both = tf.signal.fft2d(_packed_spectrum(flat, plan, gb, rows))           # [N, j, alpha, gamma]
  north = tf.transpose(tf.math.real(both), [0, 2, 1, 3])
  south = tf.reverse(tf.transpose(tf.math.imag(both), [0, 2, 1, 3]), axis=[2])
  volume = tf.concat([north, south], axis=2)
  volume = tf.reshape(volume, tf.concat([batch_shape, [2 * gb] * 3], 0))
  return (volume, row_samples(flat, gb, rows)) if with_samples else volume


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


# Correlation-volume elements per step of `map_pairs` (1 MB in float32: one volume at B' = 32, 8 at 16).
# Every stage is bound by memory traffic, not arithmetic, so a step should stay in cache: at B = 32,
# C = 32 (XLA, one thread, shared 2-core machine) a batch of 64 cost 1.6 ms of CPU per pair in steps of
# one pair, 1.7 in steps of 2 and 2.1 in steps of 4 (earlier code: 2.7 for 8, 3.3 for 16); at B = 16
# steps of 4 were best (0.29 ms/pair against 0.31 for single pairs and 0.32 for steps of 8); at B = 64
# (27.8 MB of tables, more than the cache) single pairs still won: 9.4-10.2 ms/pair against 12.0 in
# steps of 2 and 15.7 in steps of 4 (C = 32, batches of 16), so re-reading the tables is not the cost.
# Again after the packed FFT (2026-11-29, two threads, slower machine, best of 5): B = 32, batch 64: 1.73
# ms per pair in steps of 1, 1.97 in steps of 2, 1.91 in steps of 4; B = 64, batch 16: 13.0, 14.3, 18.0.
VOLUME_ELEMENTS_PER_STEP = 2**18

# Steps in flight at once when `map_steps` runs outside an XLA cluster. Each step is one compiled call
# that keeps about one core busy, so the steps of a batch run side by side: on 2 cores, B = 32, C = 32,
# batches of 64 took 1.0 ms per pair with 2 or 4 in flight against 1.4 with one.
PARALLEL_STEPS = max(2, min(8, os.cpu_count() or 2))


def pairs_per_step(grid_bandwidth):
  """How many pairs `map_pairs` handles at a time for volumes of bandwidth `grid_bandwidth`."""
  return max(1, min(4, VOLUME_ELEMENTS_PER_STEP // (2 * grid_bandwidth)**3))


CACHE_FLAG = '--tf_xla_persistent_cache_directory'


def default_cache_directory():
  """`$XDG_CACHE_HOME/equivariant_image_embeddings/xla` (default `~/.cache/...`)."""
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(base, 'equivariant_image_embeddings', 'xla')


def enable_compilation_cache(directory=None):
  """Keeps XLA's compiled steps on disk, so that a fresh process skips their compilation.

  Sets TensorFlow's persistent XLA cache (`TF_XLA_FLAGS=--tf_xla_persistent_cache_directory=...`),
  which TensorFlow reads at its first XLA compilation: call this before the first `correlate` /
  `align` of the process (importing TensorFlow first is fine). Entries are keyed by the compiled
  program, so a changed step compiles anew; clear the cache by deleting the directory. TensorFlow fails
  every compiled call when the directory cannot be written, so an unusable one is left out.

  Args:
    directory: where to keep the programs (default `default_cache_directory()`).
  Returns:
    the directory in use (one already set in TF_XLA_FLAGS wins), or None where it cannot be written.
  """
  flags = os.environ.get('TF_XLA_FLAGS', '')
  for flag in flags.split():
    if flag.startswith(CACHE_FLAG + '='):
      return flag.split('=', 1)[1]
  directory = os.path.abspath(directory or default_cache_directory())
  try:
    os.makedirs(directory, exist_ok=True)
    probe = os.path.join(directory, f'.write_test_{os.getpid()}')
    with open(probe, 'w'):
      pass
    os.remove(probe)
  except OSError:
    return None
  os.environ['TF_XLA_FLAGS'] = f'{flags} {CACHE_FLAG}={directory}'.strip()
  return directory


@functools.lru_cache(maxsize=None)
def compiled_step(step_fn, options):
  """`step_fn(f, g, **dict(options))` as one XLA-compiled tf.function, built once per (fn, options).

  XLA fuses the many small reshuffles of a step into a few loops: twice as fast as running them op by
  op (B = 32, C = 32). Inside a caller's own XLA cluster it is simply inlined. No AutoGraph: the steps
  use tf.cond / tf.while_loop themselves, and converting their source took most of a first call
  (seconds; see benchmarks/README.md).
  """
  return tf.function(lambda f, g: step_fn(f, g, **dict(options)), jit_compile=True, autograph=False)


@functools.lru_cache(maxsize=None)
def stepped(step_fn, options, output_dtypes, step, input_specs):
  """A tf.function running `compiled_step(step_fn, options)` over batches of its inputs.

  Args (all hashable: they key the cache):
    step_fn, options: as for `compiled_step`.
    output_dtypes: tuple of the dtypes of step_fn's outputs.
    step: items per call of step_fn.
    input_specs: one `(shape without the batch dimension, dtype)` per input of step_fn.
  The loop over steps is a graph even for eager callers, so that `PARALLEL_STEPS` steps run at once
  (inside a caller's XLA cluster they run one after another); it is traced once for any batch size.
  """
  compiled = compiled_step(step_fn, options)

  def run(*inputs):
    count = tf.shape(inputs[0])[0]
    padded = (count + step - 1) // step * step  # zeros fill the last step; their results are cut
    to_steps = lambda x: tf.reshape(
        tf.pad(x, [[0, padded - count]] + [[0, 0]] * (x.shape.rank - 1)),
        [-1, step] + x.shape[1:].as_list())
    outputs = tf.map_fn(lambda items: tuple(compiled(*items)), tuple(map(to_steps, inputs)),
                        fn_output_signature=tuple(output_dtypes),
                        parallel_iterations=PARALLEL_STEPS)
    return tuple(tf.reshape(o, tf.concat([[padded], tf.shape(o)[2:]], 0))[:count] for o in outputs)

  specs = [tf.TensorSpec([None, *shape], dtype) for shape, dtype in input_specs]
  return tf.function(run, input_signature=specs, autograph=False)


def map_steps(step_fn, inputs, output_dtypes, step, **options):
  """`step_fn(*inputs_step, **options)` over steps of `step` items of inputs with one leading dimension.

  Each step is an XLA-compiled call; up to `PARALLEL_STEPS` run at once (see `stepped`).

  Args:
    step_fn: a module-level function (it keys the cache of compiled steps) mapping inputs `[n, ...]` (and
      `options`) to a tuple of tensors with leading dimension n.
    inputs: tuple of tensors `[N, ...]` with static shapes after the first dimension.
    output_dtypes: tuple of the dtypes of step_fn's outputs.
    step: items per call of step_fn (all at once if there are at most this many).
    **options: hashable keyword arguments of step_fn.
  Returns:
    tuple of step_fn's outputs, concatenated over all items `[N, ...]`.
  """
  inputs = tuple(tf.convert_to_tensor(x) for x in inputs)
  options = tuple(sorted(options.items()))
  if inputs[0].shape[0] is not None and inputs[0].shape[0] <= step:  # one step: no loop
    return tuple(compiled_step(step_fn, options)(*inputs))
  specs = tuple((tuple(x.shape[1:]), x.dtype) for x in inputs)
  return stepped(step_fn, options, tuple(output_dtypes), int(step), specs)(*inputs)


def map_pairs(step_fn, f, g, output_dtypes, step, **options):
  """`map_steps` over pairs of maps `[..., 2B, 2B, C]`: leading dimensions broadcast and are flattened.

  Args:
    step_fn, output_dtypes, step, options: as for `map_steps`; step_fn takes maps `[n, 2B, 2B, C]` twice.
    f, g: maps (checked, g cast to f's dtype).
  Returns:
    (tuple of step_fn's outputs, concatenated over all pairs `[N, ...]`; the leading shape to restore
    with `restore_batch_shape`: a tuple where both shapes are static, else an int32 tensor).
  """
  f, g = _check_pair(f, g)
  if f.shape.is_fully_defined() and g.shape.is_fully_defined():
    # Static shapes (every eager call): broadcast and flatten with no shape ops, and not at all where
    # that is a no-op. The shape ops cost 1.4 ms an eager call (B = 32, C = 32): half a pair's step.
    try:
      batch_shape = tuple(np.broadcast_shapes(tuple(f.shape[:-3]), tuple(g.shape[:-3])))
    except ValueError as error:
      raise ValueError(f'the leading dimensions of f {f.shape} and g {g.shape} do not '
                       'broadcast') from error
    if np.prod(batch_shape, dtype=np.int64) <= step:  # one step: flattened inside its compiled call
      options = tuple(sorted(options.items()))
      return tuple(_compiled_pairs(step_fn, options, batch_shape)(f, g)), batch_shape
    f, g = _flatten_pairs(f, batch_shape), _flatten_pairs(g, batch_shape)
  else:
    batch_shape = tf.broadcast_dynamic_shape(tf.shape(f)[:-3], tf.shape(g)[:-3])
    f = tf.reshape(tf.broadcast_to(f, tf.concat([batch_shape, tf.shape(f)[-3:]], 0)),
                   [-1] + f.shape[-3:].as_list())
    g = tf.reshape(tf.broadcast_to(g, tf.concat([batch_shape, tf.shape(g)[-3:]], 0)),
                   [-1] + g.shape[-3:].as_list())
  return map_steps(step_fn, (f, g), output_dtypes, step, **options), batch_shape


@functools.lru_cache(maxsize=None)
def _compiled_pairs(step_fn, options, batch_shape):
  """`compiled_step` for one step of pairs of leading shape `batch_shape` (a tuple) that broadcasts and
  flattens them inside the compiled call: as eager ops a reshape costs 70 us (B = 16: a twentieth of a
  pair)."""
  step = compiled_step(step_fn, options)  # inlined: one XLA call in all
  return tf.function(lambda f, g: step(_flatten_pairs(f, batch_shape), _flatten_pairs(g, batch_shape)),
                     jit_compile=True, autograph=False)


def _flatten_pairs(maps, batch_shape):
  """Maps `[..., 2B, 2B, C]` of static shape -> `[N, 2B, 2B, C]` broadcast to the tuple `batch_shape`."""
  if tuple(maps.shape[:-3]) != batch_shape:
    maps = tf.broadcast_to(maps, batch_shape + tuple(maps.shape[-3:]))
  return maps if maps.shape.rank == 4 else tf.reshape(maps, [-1] + maps.shape[-3:].as_list())


def restore_batch_shape(values, batch_shape, item_shape):
  """`values [N, *item_shape]` -> `[*batch_shape, *item_shape]`, `batch_shape` as from `map_pairs`."""
  if isinstance(batch_shape, tuple):
    shape = list(batch_shape) + list(item_shape)
    return values if values.shape.as_list() == shape else tf.reshape(values, shape)
  return tf.reshape(values, tf.concat([batch_shape, tf.constant(list(item_shape), tf.int32)], 0))


def _check_upsample(upsample):
  if int(upsample) != upsample or upsample < 1:
    raise ValueError(f'upsample must be a positive integer, got {upsample!r}')
  return int(upsample)


def _volume_step(f, g, grid_bandwidth, normalize):
  return (volume_from_spectrum(spectra(f, g, normalize), grid_bandwidth),)


def correlate(f, g, upsample=1, normalize=False):
  """SO(3) correlation volume of maps `[..., 2B, 2B, C]` -> real `[..., 2B', 2B', 2B']`, `B' = upsample B`.

  `c[..., i, j, k] = sum_c integral (R . f_c) g_c` at `R = Rz(alpha_i) Ry(beta_j) Rz(gamma_k)` of
  `geometry.so3_grid(B')`; see the module docstring for `normalize`. Leading dimensions broadcast.
  """
  upsample = _check_upsample(upsample)
  f = sht._check_map(f, 'correlation.correlate (f)')
  grid_bandwidth = upsample * f.shape[-3] // 2
  (volume,), batch_shape = map_pairs(_volume_step, f, g, (f.dtype,), pairs_per_step(grid_bandwidth),
                                     grid_bandwidth=grid_bandwidth, normalize=normalize)
  return restore_batch_shape(volume, batch_shape, [2 * grid_bandwidth] * 3)


def fourier_coefficients(spectrum):
  """The correlation as a trigonometric polynomial: cross-spectra `[..., B, 2B-1, B]` -> `Y`.

  `c(alpha, beta, gamma) = Re sum_{k, m, n} w_n Y_{mnk} exp(i (k beta - m alpha - n gamma))` with
  `|k|, |m| < B`, `0 <= n < B`, `w_0 = 1` and `w_n = 2` for `n > 0` (the `-n` terms are conjugates).
  `Y_{mnk}` is the k-th Fourier coefficient of `S_{mn}(beta)`, a polynomial of degree < B: its values
  on the grid rows `beta_j` and, by `S_{mn}(2 pi - beta) = (-1)^(m-n) S_{mn}(beta)`, at their mirrors
  `2 pi - beta_j` are 4B equispaced samples, so one FFT gives `Y` exactly.

  Returns:
    complex `[..., 2B-1 (m), B (n), 2B-1 (k)]` (1 MB per pair at B = 32 in complex64).
  """
  spectrum = tf.convert_to_tensor(spectrum)
  b_max = spectrum.shape[-1]
  batch_shape = tf.shape(spectrum)[:-3]
  flat = tf.reshape(spectrum, [-1, b_max, 2 * b_max - 1, b_max])
  s = _contract(flat, contraction_plan(b_max, b_max, spectrum.dtype.real_dtype.name), b_max)
  orders = np.arange(-(b_max - 1), b_max)
  s = tf.gather(s[..., :b_max], orders % (2 * b_max), axis=2)             # [N, j, m, n]
  mirror_sign = (-1.0)**(orders[:, None] - np.arange(b_max))
  s = tf.concat([s, tf.reverse(s, axis=[1]) * tf.constant(mirror_sign, s.dtype)], axis=1)
  # Samples at theta_t = pi (2t + 1) / 4B, t < 4B: the FFT's k-th term is 4B exp(i k pi / 4B) Y_k.
  samples = tf.signal.fft(tf.transpose(s, [0, 2, 3, 1]))                   # [N, m, n, 4B]
  shift = np.exp(-1j * orders * np.pi / (4 * b_max)) / (4 * b_max)
  y = tf.gather(samples, orders % (4 * b_max), axis=-1) * tf.constant(shift, samples.dtype)
  return tf.reshape(y, tf.concat([batch_shape, [2 * b_max - 1, b_max, 2 * b_max - 1]], 0))


def evaluate(coefficients, angles):
  """The band-limited correlation at continuous ZYZ angles, with its gradient and Hessian.

  Args:
    coefficients: `Y` `[..., 2B-1, B, 2B-1]` from `fourier_coefficients`.
    angles: `[..., P, 3]` (alpha, beta, gamma) in radians: P points for each set of coefficients.
  Returns:
    (value `[..., P]`, gradient `[..., P, 3]`, hessian `[..., P, 3, 3]`) with respect to (alpha, beta,
    gamma).
  """
  y = tf.convert_to_tensor(coefficients)
  b_max = y.shape[-2]
  real_dtype = y.dtype.real_dtype
  angles = tf.cast(angles, real_dtype)
  orders = tf.range(-(b_max - 1), b_max, dtype=real_dtype)
  n = tf.range(b_max, dtype=real_dtype)

  def moments(angle, frequencies, weight=1.0):
    """`weight exp(i angle f) f^p` for p = 0, 1, 2: `[..., P, frequencies, 3]` (derivatives bring f)."""
    wave = tf.exp(tf.complex(tf.zeros_like(angle * frequencies), angle * frequencies))
    wave *= tf.cast(weight, wave.dtype)
    return tf.stack([wave * tf.cast(frequencies**p, wave.dtype) for p in range(3)], -1)

  by_k = moments(angles[..., 1:2], orders)                                  # [..., P, k, 3]
  by_n = moments(-angles[..., 2:3], n, tf.where(n > 0, 2.0, 1.0))           # [..., P, n, 3]
  by_m = moments(-angles[..., 0:1], orders)                                 # [..., P, m, 3]
  # Sums over k, then n, then m: moments r[a, b, c] of n^a m^b k^c, 27 numbers per point. The first,
  # the only large one, is one matrix product for all points, so Y is read once however many there are.
  r = tf.einsum('...mnk,...pkc->...mnpc', y, by_k)
  r = tf.einsum('...mnpc,...pna->...pmac', r, by_n)
  r = tf.einsum('...pmac,...pmb->...pabc', r, by_m)
  re, im = tf.math.real(r), tf.math.imag(r)
  value = re[..., 0, 0, 0]
  # d/dalpha brings -i m, d/dbeta i k, d/dgamma -i n.
  grad = tf.stack([im[..., 0, 1, 0], -im[..., 0, 0, 1], im[..., 1, 0, 0]], -1)
  h_aa, h_bb, h_gg = -re[..., 0, 2, 0], -re[..., 0, 0, 2], -re[..., 2, 0, 0]
  h_ab, h_ag, h_bg = re[..., 0, 1, 1], -re[..., 1, 1, 0], re[..., 1, 0, 1]
  hess = tf.stack([tf.stack([h_aa, h_ab, h_ag], -1), tf.stack([h_ab, h_bb, h_bg], -1),
                   tf.stack([h_ag, h_bg, h_gg], -1)], -2)
  return value, grad, hess



@functools.lru_cache(maxsize=None)
def _sample_tables(bandwidth, grid_bandwidth, dtype):
  """Numpy tables of `row_samples` and `evaluate_rows` for one (B, B', dtype).

  Returns (north, south, orders, cos_table, sin_table, even_count): block indices `[(2B-1) B]` of
  `_products` rows holding `S_{mn}(beta_j)` and `S_{mn}(pi - beta_j)`, `j < B'`, for the order pairs
  `orders [(2B-1) B, 2]` (m, n >= 0), those with m - n even first (`even_count` of them); and the
  beta kernels' tables `[B (k), 2B' (j)]` `c_k cos(k beta_j)` and `sin(k beta_j) / B'`.
  """
  b, gb = bandwidth, grid_bandwidth
  plan = contraction_plan(b, gb, dtype)
  m, n = (v.ravel() for v in np.meshgrid(np.arange(-(b - 1), b), np.arange(b), indexing='ij'))
  order = np.argsort((m - n) % 2, kind='stable')
  m, n = m[order], n[order]
  north = plan.fft_blocks[0, m % (2 * gb), n].astype(np.int32)
  south = plan.fft_blocks[1, m % (2 * gb), n].astype(np.int32)
  beta = np.pi * (2 * np.arange(2 * gb) + 1) / (4 * gb)
  k = np.arange(b)[:, None]
  cos_table = np.where(k == 0, 0.5, 1.0) / gb * np.cos(k * beta)
  sin_table = np.sin(k * beta) / gb
  return (north, south, np.stack([m, n], -1), cos_table.astype(dtype), sin_table.astype(dtype),
          int(np.sum((m - n) % 2 == 0)))


def row_samples(spectrum, grid_bandwidth=None, rows=None):
  """`S_{mn}(beta_j)` on the 2B' beta rows of the grid: what `evaluate_rows` sums at any angle.

  Args:
    spectrum: cross-spectra `[N, B, 2B-1, B]`.
    grid_bandwidth: B' >= B of the rows (default B).
    rows: `_products(spectrum, ...)` for this B', where the caller has them already.
  Returns:
    (even `[N, 2 E, 2B']`, odd `[N, 2 O, 2B']`): real and imaginary parts (interleaved per order
    pair) of the order pairs `(m, n >= 0)` with m - n even, then odd, on the rows `beta_j`, `j < 2B'`.
  """
  spectrum = tf.convert_to_tensor(spectrum)
  b_max = spectrum.shape[-1]
  gb = b_max if grid_bandwidth is None else int(grid_bandwidth)
  dtype = spectrum.dtype.real_dtype.name
  north, south, _, _, _, even = _sample_tables(b_max, gb, dtype)
  if rows is None:
    rows = _products(spectrum, contraction_plan(b_max, gb, dtype), gb)   # [blocks, 2 N B']
  count = tf.shape(spectrum)[0]
  half = lambda index: tf.reshape(tf.gather(rows, index), [len(index), 2, count, gb])
  # The southern rows are pi - beta_j: reversed, they continue the northern ones.
  samples = tf.concat([half(north), tf.reverse(half(south), axis=[-1])], axis=-1)  # [mn, 2, N, 2B']
  samples = tf.transpose(samples, [2, 0, 1, 3])
  return (tf.reshape(samples[:, :even], [count, 2 * even, 2 * gb]),
          tf.reshape(samples[:, even:], [count, -1, 2 * gb]))


def evaluate_rows(samples, angles, bandwidth):
  """The correlation at continuous ZYZ angles, with gradient and Hessian, from `row_samples`.

  In beta, `S_{mn}` is a trigonometric polynomial of degree < B known at 4B' equispaced angles (the
  rows and their mirrors `2 pi - beta_j`, where `S_{mn}` is `(-1)^(m-n)` times the row): the
  Dirichlet kernel of those samples interpolates it exactly, `S_{mn}(beta) = sum_j K^{+-}(beta, beta_j)
  S_{mn}(beta_j)` with `K^{+-} = D(beta - beta_j) +- D(beta + beta_j)` by the parity of m - n. One
  matrix product per parity gives S and its two beta-derivatives at all points, the alpha and gamma
  sums follow. Equal to `evaluate(fourier_coefficients(spectrum), angles)` to rounding, with no
  coefficient cube to build: the rows are those `volume_from_spectrum` transforms.

  Args:
    samples: `row_samples(spectrum, B')` (even, odd).
    angles: `[N, P, 3]` (alpha, beta, gamma) in radians: P points per pair.
    bandwidth: B of the spectrum.
  Returns:
    (value `[N, P]`, gradient `[N, P, 3]`, hessian `[N, P, 3, 3]`) with respect to (alpha, beta, gamma).
  """
  even, odd = samples
  b_max = int(bandwidth)
  gb = even.shape[-1] // 2
  real_dtype = even.dtype
  _, _, orders, cos_table, sin_table, _ = _sample_tables(b_max, gb, real_dtype.name)
  angles = tf.cast(angles, real_dtype)
  num_points = angles.shape[-2]
  k = tf.constant(np.arange(b_max), real_dtype)
  kb = angles[..., 1:2] * k                                                # [N, P, k]
  cos_kb, sin_kb = tf.cos(kb), tf.sin(kb)
  # Kernels and their first two beta-derivatives: [N, 3 P, 2B'].
  kernel = lambda weights, table: tf.reshape(
      tf.matmul(tf.stack(weights, axis=2), tf.constant(table)), [-1, 3 * num_points, 2 * gb])
  even_kernel = kernel([cos_kb, -k * sin_kb, -k * k * cos_kb], cos_table)
  odd_kernel = kernel([sin_kb, k * cos_kb, -k * k * sin_kb], sin_table)
  t = tf.concat([tf.matmul(even, even_kernel, transpose_b=True),
                 tf.matmul(odd, odd_kernel, transpose_b=True)], axis=1)  # [N, 2 mn, 3 P]
  t = tf.reshape(t, [-1, len(orders), 2, num_points, 3])
  t = tf.transpose(tf.complex(t[:, :, 0], t[:, :, 1]), [0, 2, 3, 1])     # [N, P, 3 (beta), mn]
  m = tf.constant(orders[:, 0], real_dtype)
  n = tf.constant(orders[:, 1], real_dtype)
  phase = -(angles[..., 0:1] * m + angles[..., 2:3] * n)                   # [N, P, mn]
  weight = tf.constant(np.where(orders[:, 1] > 0, 2.0, 1.0), real_dtype)
  wave = tf.complex(weight * tf.cos(phase), weight * tf.sin(phase))
  # Moments u[p, a, b] = Re sum_mn T_p wave (-i m)^a (-i n)^b: alpha brings -i m, gamma -i n.
  powers = np.arange(3)
  moments = ((-1j * orders[:, 0, None, None])**powers[:, None] *
             (-1j * orders[:, 1, None, None])**powers[None, :])            # [mn, 3 (a), 3 (b)]
  u = tf.math.real(tf.einsum('zpkq,qab->zpkab', t * wave[:, :, None],
                             tf.constant(moments.astype(wave.dtype.as_numpy_dtype))))
  value = u[..., 0, 0, 0]
  grad = tf.stack([u[..., 0, 1, 0], u[..., 1, 0, 0], u[..., 0, 0, 1]], -1)
  h_aa, h_bb, h_gg = u[..., 0, 2, 0], u[..., 2, 0, 0], u[..., 0, 0, 2]
  h_ab, h_ag, h_bg = u[..., 1, 1, 0], u[..., 0, 1, 1], u[..., 1, 0, 1]
  hess = tf.stack([tf.stack([h_aa, h_ab, h_ag], -1), tf.stack([h_ab, h_bb, h_bg], -1),
                   tf.stack([h_ag, h_bg, h_gg], -1)], -2)
  return value, grad, hess
