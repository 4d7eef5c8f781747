"""Relative rotation between two spherical maps: the argmax of their SO(3) correlation, refined off-grid.

`align(f, g)` returns `R` with `g ~= R . f`: the maximum of the band-limited correlation. Each grid peak
of `correlation.correlate` is within half a grid step of a maximum; refinement takes Newton steps on
the correlation evaluated exactly at continuous ZYZ angles, with analytic gradient and Hessian
(`so3.evaluate_rows`: exact interpolation of the beta rows that the volume itself was transformed
from, so it costs no second transform). The highest grid value need not lie on the highest peak (two
peaks of nearly equal height, sampled at different distances from their tops), so `align` takes the
`CANDIDATE_PEAKS` best distinct grid peaks, refines the `REFINED_PEAKS` of them whose one-step Newton
prediction is highest (`_screen`) and returns the best refined one; all in one compiled step per few
pairs. Euler angles are singular at beta = 0, pi, so a start within `POLE_ZONE_DEG` of those is refined
in the frame `R = Ry(pi/2) R''` (where R'' has beta near pi/2), on the row samples of g's spectrum
rotated by `Ry(-pi/2)`.

`align_top_k` returns the k best distinct peaks: grid local maxima, greedy non-maximum suppression by
angular distance, then refinement of each. `confidence = score_1 / score_2` (best over second best peak,
inf where there is no second peak) flags symmetric objects (close to 1) versus clear matches.
"""
import functools

import numpy as np
import tensorflow as tf

from correlation import fusion
from correlation import sht
from correlation import so3
from correlation import wigner
from geometry import rotations


def _grid_angles(flat_index, grid_bandwidth, dtype):
  """Flat indices into `[2B', 2B', 2B']` volumes -> ZYZ angles `[..., 3]` of `geometry.so3_grid(B')`."""
  size = 2 * grid_bandwidth
  i, j, k = flat_index // (size * size), (flat_index // size) % size, flat_index % size
  step = np.pi / grid_bandwidth
  return tf.stack([tf.cast(i, dtype) * step, (tf.cast(j, dtype) + 0.5) * (step / 2),
                   tf.cast(k, dtype) * step], axis=-1)


def _local_maxima(volume):
  """Mask of grid points `[N, a, b, g]` not smaller than their 26 neighbours (alpha, gamma wrap)."""
  pooled = volume
  for axis in (1, 3):  # circular axes
    pooled = tf.maximum(pooled, tf.maximum(tf.roll(pooled, 1, axis), tf.roll(pooled, -1, axis)))
  edge = tf.fill(tf.shape(pooled[:, :, :1, :]), tf.constant(-np.inf, volume.dtype))
  up = tf.concat([edge, pooled[:, :, :-1, :]], axis=2)
  down = tf.concat([pooled[:, :, 1:, :], edge], axis=2)
  pooled = tf.maximum(pooled, tf.maximum(up, down))
  return volume >= pooled


@functools.lru_cache(maxsize=None)
def _quarter_turn_table(bandwidth, dtype):
  """`d^l_{m'm}(pi/2)` as numpy `[B (l), 2B-1 (m'), 2B-1 (m)]` of `dtype`, built once per argument."""
  with tf.init_scope():  # eager even when first asked for inside a tf.function
    return wigner.wigner_d_matrices(bandwidth, np.array(np.pi / 2)).numpy().astype(dtype)


def _quarter_turn_spectrum(spectrum):
  """Cross-spectrum of f and `Ry(-pi/2) . g`: `X'^l = d^l(pi/2)^T X^l` (acting on the g order m)."""
  quarter = _quarter_turn_table(spectrum.shape[-1], spectrum.dtype.name)
  return tf.matmul(tf.constant(quarter), spectrum, transpose_a=True)


# Once a start's Newton step is shorter than this (radians, per dtype), its refinement stops: the steps
# then only chase rounding noise (in float32, steps of up to 4e-4 rad go on forever on smooth maps at
# B = 32; 5e-4 rad is 0.03 degrees) and, converging quadratically, the next step would
# be far shorter still. From grid peaks that took 3 to 6 steps instead of 8 on test maps.
CONVERGED_STEP = {tf.float32: 5e-4, tf.float64: 1e-9}

# Starts closer than this to a pole (beta = 0 or pi, where ZYZ angles are singular) are refined in the
# quarter-turned frame, whose row samples cost about half a correlation to make. Newton steps in plain
# ZYZ angles converge as well this far from the poles; the zone, 6% of all rotations, decides how often
# the turned samples are made.
POLE_ZONE_DEG = 20


def _extreme_eigenvalues(matrix):
  """Largest and smallest eigenvalue `[...]` of symmetric 3 x 3 matrices `[..., 3, 3]` (closed form)."""
  a = matrix
  q = tf.linalg.trace(a) / 3
  off = a[..., 0, 1]**2 + a[..., 0, 2]**2 + a[..., 1, 2]**2
  diagonal = tf.stack([a[..., 0, 0], a[..., 1, 1], a[..., 2, 2]], -1) - q[..., None]
  p = tf.sqrt((tf.reduce_sum(diagonal**2, -1) + 2 * off) / 6)
  safe_p = tf.maximum(p, tf.constant(np.finfo(a.dtype.as_numpy_dtype).tiny, a.dtype))
  centred = (a - q[..., None, None] * tf.eye(3, dtype=a.dtype)) / safe_p[..., None, None]
  angle = tf.acos(tf.clip_by_value(_determinant(centred) / 2, -1.0, 1.0)) / 3
  return q + 2 * p * tf.cos(angle), q + 2 * p * tf.cos(angle + 2 * np.pi / 3)


def _determinant(m):
  """Determinants `[...]` of 3 x 3 matrices `[..., 3, 3]`."""
  return (m[..., 0, 0] * (m[..., 1, 1] * m[..., 2, 2] - m[..., 1, 2] * m[..., 2, 1])
          - m[..., 0, 1] * (m[..., 1, 0] * m[..., 2, 2] - m[..., 1, 2] * m[..., 2, 0])
          + m[..., 0, 2] * (m[..., 1, 0] * m[..., 2, 1] - m[..., 1, 1] * m[..., 2, 0]))


def _newton_step(grad, hess, max_step):
  """Ascent step `[..., 3]` and the gain its quadratic model predicts `[...]`, capped at `max_step`.

  A Newton step on `-hess + mu I`, `mu >= 0` just large enough to make it positive definite (its
  smallest eigenvalue at least 1e-3 of the largest |eigenvalue|): the plain Newton step where the
  Hessian is negative definite, as at every maximum, and an uphill step elsewhere. Closed forms for
  3 x 3 (eigenvalues, adjugate): XLA's `eigh` is an iteration of its own and cost more than an
  evaluation of the correlation.
  """
  largest, smallest = _extreme_eigenvalues(hess)
  floor = 1e-3 * tf.maximum(tf.abs(largest), tf.abs(smallest)) + 1e-12
  shift = tf.maximum(floor + largest, tf.zeros_like(largest))
  c = shift[..., None, None] * tf.eye(3, dtype=hess.dtype) - hess         # positive definite
  # c^-1 grad = adj(c) grad / det(c); c is symmetric, so is its adjugate.
  cofactor = lambda i, j: (c[..., (i + 1) % 3, (j + 1) % 3] * c[..., (i + 2) % 3, (j + 2) % 3]
                           - c[..., (i + 1) % 3, (j + 2) % 3] * c[..., (i + 2) % 3, (j + 1) % 3])
  adjugate = tf.stack([tf.stack([cofactor(i, j) for j in range(3)], -1) for i in range(3)], -2)
  step = tf.reduce_sum(adjugate * grad[..., None, :], -1) / _determinant(c)[..., None]
  norm = tf.norm(step, axis=-1, keepdims=True)
  step *= tf.minimum(tf.ones_like(norm), max_step / tf.maximum(norm, 1e-30))
  curvature_term = tf.reduce_sum(step * tf.reduce_sum(c * step[..., None, :], -1), -1)
  return step, tf.reduce_sum(grad * step, -1) - 0.5 * curvature_term


def _refine(spectrum, upright, rotation, iterations, active=None, converged_step=None):
  """Newton ascent of the correlation from starts `[n, K, 3, 3]`: (rotations, values) `[n, K(, 3, 3)]`.

  `spectrum` `[n, B, 2B-1, B]` and `upright`, its `so3.row_samples` (on any grid B' >= B): the
  correlation and its derivatives come from `so3.evaluate_rows`. Starts near the poles are refined in
  the quarter-turned frame, whose row samples are made only when some start needs them. `active`
  `[n, K]` (default all): starts to refine; the others stay put and do not hold up convergence.
  `converged_step`: as `CONVERGED_STEP` (its value for the dtype by default).
  """
  real_dtype = spectrum.dtype.real_dtype
  b_max = spectrum.shape[-1]
  rotation = tf.cast(rotation, real_dtype)
  if active is None:
    active = tf.ones(tf.shape(rotation)[:-2], tf.bool)
  near_pole = tf.abs(rotation[..., 2, 2]) > np.cos(np.radians(POLE_ZONE_DEG))  # [n, K]
  quarter = rotations.rotation_y(tf.constant(np.pi / 2, real_dtype))
  frame = tf.where(near_pole[..., None, None], quarter, tf.eye(3, dtype=real_dtype))
  any_near_pole = tf.reduce_any(near_pole & active)
  turned = tf.cond(any_near_pole,
                   lambda: so3.row_samples(_quarter_turn_spectrum(spectrum)),
                   lambda: tuple(tf.zeros([tf.shape(x)[0], x.shape[1], 2 * b_max], x.dtype)
                                 for x in upright))

  def evaluate(angles):
    """Value, gradient, Hessian of each start in its frame: all starts of a pair in one product."""
    upright_result = so3.evaluate_rows(upright, angles, b_max)
    pick = lambda a, b: tf.where(tf.reshape(near_pole, near_pole.shape + [1] * (a.shape.rank - 2)),
                                 b, a)
    return tf.cond(any_near_pole,
                   lambda: tuple(map(pick, upright_result, so3.evaluate_rows(turned, angles, b_max))),
                   lambda: upright_result)

  angles = rotations.matrix_to_euler_zyz(tf.matmul(frame, rotation, transpose_a=True))
  value, grad, hess = evaluate(angles)
  # Steps never exceed the spacing of the bandwidth-B grid, well inside the peak's basin.
  max_step = tf.constant(np.pi / b_max, real_dtype)

  converged = tf.constant(CONVERGED_STEP[real_dtype] if converged_step is None else converged_step,
                          real_dtype)

  def newton_step(angles, value, grad, hess, scale, moving):
    step, _ = _newton_step(grad, hess, max_step)
    step *= tf.where(moving, scale, tf.zeros_like(scale))[..., None]
    candidate = angles + step
    c_value, c_grad, c_hess = evaluate(candidate)
    # Keep only improvements; after a failed step try a quarter of it. A start whose step was
    # shorter than `converged` stops: each start converges on its own, whatever else is in the batch.
    better = c_value >= value
    return (tf.where(better[..., None], candidate, angles), tf.where(better, c_value, value),
            tf.where(better[..., None], c_grad, grad), tf.where(better[..., None, None], c_hess, hess),
            tf.where(better, tf.ones_like(scale), scale / 4),
            moving & (tf.norm(step, axis=-1) > converged))

  # A while loop (not a Python loop) keeps one copy of the evaluation in the graph.
  _, (angles, value, _, _, _, _) = tf.while_loop(
      lambda i, state: (i < iterations) & tf.reduce_any(state[-1]),
      lambda i, state: (i + 1, newton_step(*state)),
      (tf.constant(0), (angles, value, grad, hess, tf.ones_like(value), active)))
  return tf.matmul(frame, rotations.euler_zyz_to_matrix(angles)), value


def _screen(samples, rotation, score, keep, b_max):
  """The `keep` starts `[n, K, 3, 3]` whose refinement can still win: best by predicted peak value.

  Each start's value plus the gain of one Newton step on its quadratic model (in plain ZYZ angles, one
  evaluation of all starts together) predicts its refined value; starts with no peak (score -inf)
  come last. Returns (rotations `[n, keep, 3, 3]`, scores `[n, keep]` as given).
  """
  real_dtype = samples[0].dtype
  value, grad, hess = so3.evaluate_rows(samples, rotations.matrix_to_euler_zyz(rotation), b_max)
  _, gain = _newton_step(grad, hess, tf.constant(np.pi / b_max, real_dtype))
  predicted = tf.where(tf.math.is_finite(score), value + gain, tf.constant(-np.inf, real_dtype))
  chosen = tf.math.top_k(predicted, keep).indices
  return tf.gather(rotation, chosen, batch_dims=1), tf.gather(score, chosen, batch_dims=1)


def _refine_step(spectrum, rotation, iterations, converged_step):
  """`map_steps` step of `refine_peaks`: spectra `[n, B, 2B-1, B]`, starts `[n, K, 3, 3]`."""
  return _refine(spectrum, so3.row_samples(spectrum), rotation, iterations,
                 converged_step=converged_step)


# Newton steps of `refine_peaks` at most (most peaks converge in 3 to 6, see CONVERGED_STEP).
REFINE_ITERATIONS = 8


def refine_peaks(spectrum, rotation, iterations=REFINE_ITERATIONS):
  """Newton ascent of the correlation from starting rotations.

  Args:
    spectrum: cross-spectra `[N, B, 2B-1, B]` (from `so3.spectra`).
    rotation: starting rotations `[N, 3, 3]` or `[N, K, 3, 3]` (K starts per pair: grid peaks).
    iterations: at most this many Newton steps, fewer for a start once its step is shorter than
      `CONVERGED_STEP`; each costs one evaluation of value, gradient and Hessian.
  Returns:
    (rotations, values) of the shapes `[N, (K,) 3, 3]` and `[N, (K)]`: never worse than the start.
  """
  spectrum = tf.convert_to_tensor(spectrum)
  rotation = tf.cast(rotation, spectrum.dtype.real_dtype)
  single = rotation.shape.rank == 3
  starts = rotation[:, None] if single else rotation
  # One pair per step, compiled whole: its coefficients (1 MB per frame at B = 32) stay in cache for
  # all Newton steps of all its starts.
  refined, value = so3.map_steps(_refine_step, (spectrum, starts),
                                 (spectrum.dtype.real_dtype,) * 2, 1, iterations=int(iterations),
                                 converged_step=float(CONVERGED_STEP[spectrum.dtype.real_dtype]))
  return (refined[:, 0], value[:, 0]) if single else (refined, value)


def _grid_peak(f, g, grid_bandwidth, normalize):
  """`map_pairs` step of `align(refine=False)`: the rotations `[n, 3, 3]` of the largest grid values."""
  spectrum = so3.spectra(f, g, normalize)
  volume = so3.volume_from_spectrum(spectrum, grid_bandwidth)
  best = tf.argmax(tf.reshape(volume, [tf.shape(volume)[0], -1]), axis=-1, output_type=tf.int32)
  return (rotations.euler_zyz_to_matrix(_grid_angles(best, grid_bandwidth, volume.dtype)),)


def _zyz_quaternion(angles):
  """Unit quaternions `[..., 4]` (w, x, y, z) of ZYZ angles `[..., 3]`: `Rz(a) Ry(b) Rz(g)`."""
  half_sum = (angles[..., 0] + angles[..., 2]) / 2
  half_difference = (angles[..., 0] - angles[..., 2]) / 2
  cos_b, sin_b = tf.cos(angles[..., 1] / 2), tf.sin(angles[..., 1] / 2)
  return tf.stack([cos_b * tf.cos(half_sum), -sin_b * tf.sin(half_difference),
                   sin_b * tf.cos(half_difference), cos_b * tf.sin(half_sum)], -1)


def _top_k(values, k, row=None):
  """`tf.math.top_k(values [n, V], k)` in two stages: rows of `row` values by their maxima, then the
  values of the k best rows (none of the k best lies in a row whose maximum misses the k best rows).
  On correlation volumes several times faster than one top_k over all values; the same result."""
  row = int(row or 2 * int(round(values.shape[-1]**(1 / 3))))
  if values.shape[-1] % row or values.shape[-1] // row <= k:
    return tf.math.top_k(values, k)
  rows = tf.reshape(values, [tf.shape(values)[0], -1, row])
  best_rows = tf.math.top_k(tf.reduce_max(rows, axis=-1), k).indices       # [n, k]
  best, index = tf.math.top_k(tf.reshape(tf.gather(rows, best_rows, batch_dims=1),
                                         [tf.shape(values)[0], k * row]), k)
  return best, tf.gather(best_rows, index // row, batch_dims=1) * row + index % row


def _distinct_peaks(volume, count, grid_bandwidth, separation_deg):
  """The `count` best grid peaks of volumes `[n, 2B', 2B', 2B']` at least `separation_deg` apart.

  Grid local maxima (the `max(16 count, 64)` largest), then greedy non-maximum suppression by angular
  distance (from quaternions: `cos(angle / 2) = |q1 . q2|`).
  Returns:
    (rotations `[n, count, 3, 3]`, scores `[n, count]` best first, -inf where fewer than `count`
    distinct peaks exist, their flat indices into the volume `[n, count]`).
  """
  real_dtype = volume.dtype
  num_candidates = min(max(16 * count, 64), (2 * grid_bandwidth)**3)
  minus_inf = tf.constant(-np.inf, real_dtype)
  # Materialised first: XLA would otherwise fuse the volume's last transposes into the neighbour
  # maxima and redo them for each of the 27 reads.
  volume = fusion.barrier(volume, fusion.token(volume))
  peaks = tf.where(_local_maxima(volume), volume, minus_inf)
  values, index = _top_k(tf.reshape(peaks, [tf.shape(peaks)[0], -1]), num_candidates,
                         2 * grid_bandwidth)
  angles = _grid_angles(index, grid_bandwidth, real_dtype)                  # [n, candidates, 3]
  quaternions = _zyz_quaternion(angles)
  near = np.cos(np.radians(separation_deg) / 2)
  chosen, scores, indices = [], [], []
  for _ in range(count):
    pick = tf.argmax(values, axis=-1)
    chosen.append(tf.gather(angles, pick, batch_dims=1))                   # [n, 3]
    scores.append(tf.gather(values, pick, batch_dims=1))
    indices.append(tf.gather(index, pick, batch_dims=1))
    pick_q = tf.gather(quaternions, pick, batch_dims=1)
    cos_half = tf.abs(tf.reduce_sum(quaternions * pick_q[:, None], axis=-1))
    values = tf.where(cos_half > near, minus_inf, values)
  return (rotations.euler_zyz_to_matrix(tf.stack(chosen, axis=1)), tf.stack(scores, axis=1),
          tf.stack(indices, axis=1))


def _peaks_step(f, g, grid_bandwidth, normalize, count, separation_deg, refine, keep, refined=None):
  """`map_pairs` step of `align` and `align_top_k`, compiled whole: spectra, volume, distinct peaks.

  With `refine`, the `refined` (default all) peaks that can still win (`_screen`) are refined
  (`_refine`, on row samples from the volume's own Wigner-d products) and re-sorted by refined value.
  Returns the `keep` best: rotations `[n, keep, 3, 3]` and scores `[n, keep]`.
  """
  spectrum = so3.spectra(f, g, normalize)
  if not refine:
    volume = so3.volume_from_spectrum(spectrum, grid_bandwidth)
    rotation, score, _ = _distinct_peaks(volume, count, grid_bandwidth, separation_deg)
    return rotation[:, :keep], score[:, :keep]
  volume, samples = so3.volume_from_spectrum(spectrum, grid_bandwidth, with_samples=True)
  rotation, score, _ = _distinct_peaks(volume, count, grid_bandwidth, separation_deg)
  if refined is not None and refined < count:
    rotation, score = _screen(samples, rotation, score, refined, spectrum.shape[-1])
  found = tf.math.is_finite(score)
  rotation, refined_score = _refine(spectrum, samples, rotation, REFINE_ITERATIONS, found)
  score = tf.where(found, refined_score, score)
  order = tf.argsort(score, axis=-1, direction='DESCENDING', stable=True)[:, :keep]
  return tf.gather(rotation, order, batch_dims=1), tf.gather(score, order, batch_dims=1)


def _default_separation(bandwidth):
  """Four grid steps of the input bandwidth, about the width of a correlation lobe (degrees)."""
  return 4 * 180.0 / bandwidth


# The grid argmax is the global maximum only to within the grid's sampling: of two peaks of nearly
# equal height (a pose and its flip, on a nearly symmetric object), the one sampled nearer its top can
# win on the grid and lose off it. `align` therefore refines this many distinct grid peaks and keeps
# the best refined one. On the default run's test embeddings (B = 16) against refining the grid argmax
# alone: teacher same-instance Acc@10 90.8 -> 96.0%, different-instance median 8.6 -> 5.4 degrees,
# student median 126.6 -> 100.9 degrees; 2 peaks gave about half of that, 8 no more than 4.
CANDIDATE_PEAKS = 4
# Of those, `align` refines the few that can still win (`_screen`, ranked by the value one Newton step
# predicts): with 2, on pure-noise pairs (the nearest to ties) it found the peak that refining all 4
# finds in 24 of 24 pairs, with 1 in 22; band-limited and noisy rotated maps agreed with either.
REFINED_PEAKS = 2


def align(f, g, upsample=1, refine=True, normalize=False, candidates=CANDIDATE_PEAKS):
  """Rotation `R` `[..., 3, 3]` with `g ~= R . f` for maps `[..., 2B, 2B, C]` (argmax of the correlation).

  Args:
    f, g: maps `[..., 2B, 2B, C]`; leading dimensions broadcast.
    upsample, normalize: as in `correlation.correlate`.
    refine: refine off the grid; without it, the grid argmax.
    candidates: distinct grid peaks considered when `refine` (`CANDIDATE_PEAKS`); the
      `REFINED_PEAKS` of them that can still win are refined, and the best refined one wins.
  """
  upsample = so3._check_upsample(upsample)
  if int(candidates) != candidates or candidates < 1:
    raise ValueError(f'align: candidates must be a positive integer, got {candidates!r}')
  f = sht._check_map(f, 'correlation.align (f)')
  b_max = f.shape[-3] // 2
  grid_bandwidth = upsample * b_max
  if refine:
    (rotation, _), batch_shape = so3.map_pairs(
        _peaks_step, f, g, (f.dtype,) * 2, so3.pairs_per_step(grid_bandwidth),
        grid_bandwidth=grid_bandwidth, normalize=normalize, count=int(candidates),
        separation_deg=_default_separation(b_max), refine=True, keep=1,
        refined=min(REFINED_PEAKS, int(candidates)))
    rotation = rotation[:, 0]
  else:
    (rotation,), batch_shape = so3.map_pairs(
        _grid_peak, f, g, (f.dtype,), so3.pairs_per_step(grid_bandwidth),
        grid_bandwidth=grid_bandwidth, normalize=normalize)
  return so3.restore_batch_shape(rotation, batch_shape, [3, 3])


def align_top_k(f, g, k=3, upsample=1, refine=True, normalize=False, min_separation_deg=None):
  """The k best distinct correlation peaks.

  Args:
    f, g: maps `[..., 2B, 2B, C]`.
    k: number of peaks.
    upsample, normalize: as in `correlation.correlate`.
    refine: refine each peak off the grid.
    min_separation_deg: peaks closer than this (angular distance) are one peak; default `4 * 180 / B`
      degrees (four grid steps of the input bandwidth, about the width of a correlation lobe).
  Returns:
    dict with `rotations` `[..., k, 3, 3]`, `scores` `[..., k]` (correlation values, best first; -inf
    where fewer than k distinct peaks exist) and `confidence` `[...]` (best / second-best score).
  """
  if int(k) != k or k < 1:
    raise ValueError(f'align_top_k: k must be a positive integer, got {k!r}')
  upsample = so3._check_upsample(upsample)
  f = sht._check_map(f, 'correlation.align_top_k (f)')
  b_max = f.shape[-3] // 2
  separation = (_default_separation(b_max) if min_separation_deg is None
                else float(min_separation_deg))
  num_peaks = max(int(k), 2)  # the confidence needs a second peak
  (rotation, score), batch_shape = so3.map_pairs(
      _peaks_step, f, g, (f.dtype,) * 2, so3.pairs_per_step(upsample * b_max),
      grid_bandwidth=upsample * b_max, normalize=normalize, count=num_peaks,
      separation_deg=separation, refine=bool(refine), keep=num_peaks)
  confidence = tf.where(tf.math.is_finite(score[:, 1]), score[:, 0] / score[:, 1],
                        tf.constant(np.inf, score.dtype))
  return {
      'rotations': so3.restore_batch_shape(rotation[:, :k], batch_shape, [k, 3, 3]),
      'scores': so3.restore_batch_shape(score[:, :k], batch_shape, [k]),
      'confidence': so3.restore_batch_shape(confidence, batch_shape, []),
  }
