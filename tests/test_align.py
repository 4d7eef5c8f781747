"""align / align_top_k: Haar-random rotations of analytic maps, poles, exactness, symmetric objects."""
import numpy as np
import pytest
import tensorflow as tf

import correlation
from geometry import grids, rotations
from tests.test_rotate import band_limited_map, exact_rotations, von_mises_maps

B = 32
GRID_STEP_DEG = 180.0 / B  # spacing of alpha and gamma on the bandwidth-32 SO(3) grid


def rotated_pairs(n, seed, kappa=6.0):
  """f and `g_i = R_i . f` evaluated analytically (vMF bumps, nearly band-limited at B = 32)."""
  r = exact_rotations(n, seed)
  f = von_mises_maps(B, kappa=kappa, seed=seed, bumps=4)
  return f.astype(np.float32), von_mises_maps(B, r, kappa=kappa, seed=seed, bumps=4).astype(
      np.float32), r


def test_recovers_haar_random_rotations():
  f, g, r = rotated_pairs(12, seed=0)
  coarse = rotations.angular_distance(correlation.align(f, g, refine=False), r).numpy()
  assert np.median(coarse) < GRID_STEP_DEG / 2 and coarse.max() < GRID_STEP_DEG
  refined = rotations.angular_distance(correlation.align(f, g), r).numpy()
  assert np.median(refined) < 1.0 and refined.max() < 1.0
  finer = rotations.angular_distance(correlation.align(f, g, upsample=2, refine=False), r).numpy()
  assert finer.max() < GRID_STEP_DEG / 2


def test_exact_for_band_limited_maps_including_near_the_poles_in_float64():
  # Beta 0.3 and pi - 0.34 rad lie inside alignment.POLE_ZONE_DEG (turned frame), 0.4 just outside.
  f = band_limited_map(16, seed=1, channels=3)
  r0 = np.concatenate([exact_rotations(2, seed=2),
                       rotations.euler_zyz_to_matrix(np.array([[0.3, 0.01, 2.0], [4.0, 3.13, 1.0],
                                                               [1.0, 0.0, 0.5], [2.0, 0.3, 5.0],
                                                               [5.0, 0.4, 1.0], [3.0, 2.8, 0.2]])).numpy()])
  estimate = correlation.align(f, correlation.rotate(f, r0)).numpy()
  assert estimate.dtype == np.float64
  np.testing.assert_array_less(rotations.angular_distance(estimate, r0).numpy(), 1e-4)


def test_refinement_stops_early_only_once_converged(monkeypatch):
  # Stopping when every step is below CONVERGED_STEP must give what running all steps gives, to the
  # float32 noise of the peak (steps of up to 4e-4 rad) and, in float64 on exactly band-limited maps,
  # to 1e-8. Compared entry by entry: float32 angular distances are quantised to about 0.03 deg.
  from correlation import alignment, so3  # pylint: disable=g-import-not-at-top
  cases = [rotated_pairs(16, seed=5)[:2],
           (lambda f, r: (f, correlation.rotate(f, r)))(band_limited_map(16, seed=6, channels=2),
                                                      exact_rotations(8, seed=7))]
  for (f, g), tolerance in zip(cases, (1e-3, 1e-8)):
    spectrum = so3.spectra(f, g)
    start = correlation.align(f, g, refine=False)
    early, early_value = alignment.refine_peaks(spectrum, start, iterations=12)
    monkeypatch.setitem(alignment.CONVERGED_STEP, spectrum.dtype.real_dtype, 0.0)
    full, full_value = alignment.refine_peaks(spectrum, start, iterations=12)
    monkeypatch.undo()
    np.testing.assert_allclose(early, full, atol=tolerance)
    np.testing.assert_allclose(early_value, full_value, rtol=1e-5)


def paired_bumps_map(rotation, mu, flip, weight=1.0, kappa=6.0, bandwidth=B):
  """`rotation . f` for f = vMF bumps at `mu [n, 3]` plus bumps of height `weight` at `flip mu`.

  With weight 1, f is invariant under the rotation `flip`; below 1, nearly so: the correlation of two
  rotated copies then has a second peak, at the flipped pose, nearly as high as the true one.
  """
  points = np.einsum('ji,abj->abi', rotation, grids.sphere_directions(bandwidth))
  bumps = lambda centres: np.exp(kappa * (points @ centres.T - 1)).sum(-1)
  return (bumps(mu) + weight * bumps(mu @ flip.T))[..., None]


def random_directions(n, seed):
  mu = np.random.default_rng(seed).standard_normal((n, 3))
  return mu / np.linalg.norm(mu, axis=-1, keepdims=True)


def test_top_k_finds_both_poses_of_a_two_fold_symmetric_map():
  # Bumps in pairs (mu, Rz(pi) mu): the map is invariant under Rz(pi), so R0 and R0 Rz(pi) both align.
  flip = rotations.rotation_z(np.float64(np.pi)).numpy()
  mu = random_directions(3, seed=3)
  r0 = exact_rotations(1, seed=4)[0]
  f, g = paired_bumps_map(np.eye(3), mu, flip), paired_bumps_map(r0, mu, flip)
  out = correlation.align_top_k(f, g, k=3)
  assert out['rotations'].shape == (3, 3, 3) and out['scores'].shape == (3,)
  errors = rotations.angular_distance(out['rotations'][:2], np.stack([r0, r0 @ flip])).numpy()
  swapped = rotations.angular_distance(out['rotations'][:2], np.stack([r0 @ flip, r0])).numpy()
  assert min(errors.max(), swapped.max()) < 1.0
  np.testing.assert_allclose(out['confidence'], 1.0, atol=1e-6)
  assert out['scores'][0] >= out['scores'][1] > out['scores'][2]


def test_align_keeps_the_best_refined_peak_not_the_best_grid_peak():
  # A nearly symmetric map (flipped bumps at 95% height): for some rotations the flipped pose's peak
  # is sampled nearer its top by the B = 16 grid and wins there, though the true pose's peak is higher.
  bandwidth, flip = 16, np.diag([1.0, -1.0, -1.0])  # Rx(pi)
  mu = random_directions(3, seed=3)
  r0 = exact_rotations(32, seed=11)
  f = paired_bumps_map(np.eye(3), mu, flip, weight=0.95, bandwidth=bandwidth)
  g = np.stack([paired_bumps_map(r, mu, flip, weight=0.95, bandwidth=bandwidth) for r in r0])
  error = lambda estimate, truth: rotations.angular_distance(estimate, truth).numpy()
  grid = correlation.align(f, g, refine=False)
  fooled = error(grid, r0 @ flip) < 180.0 / bandwidth
  assert fooled.sum() >= 2  # the case under test occurs
  assert np.all(error(correlation.align(f, g, candidates=1), r0)[fooled] > 90.0)
  np.testing.assert_array_less(error(correlation.align(f, g), r0), 0.1)
  with pytest.raises(ValueError, match='candidates'):
    correlation.align(f, g, candidates=0)


def test_top_k_confidence_of_a_unique_match_and_batching_in_graph():
  f, g, r = rotated_pairs(3, seed=5)
  top = tf.function(lambda a, b: correlation.align_top_k(a, b, k=2))(f, g)
  assert top['rotations'].shape == (3, 2, 3, 3) and top['confidence'].shape == (3,)
  assert np.all(top['confidence'].numpy() > 1.05)
  errors = rotations.angular_distance(top['rotations'][:, 0], r).numpy()
  assert errors.max() < 1.0
  # Distinct peaks: the second is far from the first.
  separation = rotations.angular_distance(top['rotations'][:, 0], top['rotations'][:, 1]).numpy()
  assert separation.min() >= 4 * 180.0 / B
  # align over leading dimensions [2, 3].
  stacked = correlation.align(np.stack([np.broadcast_to(f, g.shape)] * 2), np.stack([g, g]))
  assert stacked.shape == (2, 3, 3, 3)
  # An unknown batch size in a graph takes the other route to the batch shape: same peaks.
  dynamic = tf.function(lambda a, b: correlation.align_top_k(a, b, k=2),
                        input_signature=[tf.TensorSpec([None, 2 * B, 2 * B, f.shape[-1]])] * 2)
  unknown = dynamic(np.broadcast_to(f, g.shape), g)
  assert unknown['confidence'].shape == (3,)
  np.testing.assert_allclose(unknown['scores'], top['scores'], rtol=1e-5)


def test_newton_step_closed_form_against_numpy():
  from correlation import alignment  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(8)
  a = rng.standard_normal((50, 3, 3))
  symmetric = (a + np.swapaxes(a, -1, -2)) / 2
  largest, smallest = alignment._extreme_eigenvalues(tf.constant(symmetric))
  eigenvalues = np.linalg.eigvalsh(symmetric)
  np.testing.assert_allclose(largest, eigenvalues[:, -1], atol=1e-12)
  np.testing.assert_allclose(smallest, eigenvalues[:, 0], atol=1e-12)
  grad = 0.01 * rng.standard_normal((50, 3))
  # Negative definite (at a maximum): the plain Newton step and its model's gain.
  hess = -(a @ np.swapaxes(a, -1, -2)) - 0.1 * np.eye(3)
  step, gain = alignment._newton_step(tf.constant(grad), tf.constant(hess), tf.constant(10.0, tf.float64))
  newton = np.linalg.solve(-hess, grad[..., None])[..., 0]
  np.testing.assert_allclose(step, newton, atol=1e-12)
  np.testing.assert_allclose(gain, 0.5 * np.sum(grad * newton, -1), atol=1e-14)
  # Indefinite: still uphill, with a positive predicted gain; never longer than the cap.
  step, gain = alignment._newton_step(tf.constant(grad), tf.constant(symmetric),
                                      tf.constant(1e-3, tf.float64))
  assert np.all(np.sum(step * grad, -1) > 0) and np.all(gain > 0)
  assert np.all(np.linalg.norm(step, axis=-1) <= 1e-3 + 1e-15)


def test_screened_align_agrees_with_refining_every_candidate():
  # align refines only the REFINED_PEAKS candidates that can still win; refining all of them
  # (align_top_k) must find the same best peak, also on noise, where peaks are nearly equal (with
  # REFINED_PEAKS = 1 one of these 24 pairs lands on another peak, 106 degrees away).
  rng = np.random.default_rng(0)
  f = rng.standard_normal((24, 2 * B, 2 * B, 16)).astype(np.float32)
  g = rng.standard_normal((24, 2 * B, 2 * B, 16)).astype(np.float32)
  every = correlation.align_top_k(f, g, k=correlation.alignment.CANDIDATE_PEAKS)['rotations'][:, 0]
  distance = rotations.angular_distance(correlation.align(f, g), every).numpy()
  assert np.all(distance < 0.1), distance
