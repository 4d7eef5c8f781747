"""Per-view diagnostics of fmap-mode relative pose (evaluation.identifiability)."""
import numpy as np
import pytest
import tensorflow as tf

import correlation
from correlation import sht
from evaluation import alignment
from evaluation import identifiability
from geometry import grids
from geometry import rotations
from tests.test_sht import random_coefficients


def _band_limited(rng, num, b, channels):
  return sht.inverse(tf.constant(random_coefficients(rng, b, channels, batch=(num,)))).numpy()


def _inner(f, g, b):
  """`sum_c integral f_c g_c` by the exact Driscoll-Healy quadrature (band-limited products)."""
  weights = grids.quadrature_weights(b)[:, None, None]
  return np.sum(weights * f * g, axis=(-3, -2, -1))


@pytest.mark.parametrize('weight', [0.5, 1.0])
def test_second_peak_of_a_partly_symmetric_map_is_the_half_turn_analytically(weight):
  # f = h + a Rz(pi) h (Rz(pi): a roll by B columns, exact). Its self-correlation at Rz(pi) is
  # (1 + a^2) e + 2 a |h|^2 against (1 + a^2) |h|^2 + 2 a e at the identity, e = <Rz(pi) h, h>:
  # the second peak's value is at least that (the peak may sit a little off Rz(pi)), and for a = 1
  # (an exact symmetry) the two peaks are equal. h has zero means: the ratio is taken without them.
  rng = np.random.default_rng(0)
  b = 16
  h = _band_limited(rng, 3, b, 2)
  weights = grids.quadrature_weights(b)[:, None, None]
  h -= np.sum(weights * h, axis=(1, 2), keepdims=True) / (4 * np.pi)
  half_turn = lambda x: np.roll(x, b, axis=-2)
  f = h + weight * half_turn(h)
  e, norm = _inner(half_turn(h), h, b), _inner(h, h, b)
  expected = ((1 + weight**2) * e + 2 * weight * norm) / ((1 + weight**2) * norm + 2 * weight * e)
  ratios, angles = identifiability.second_peak_ratios(f, batch_size=2)
  assert np.all(ratios >= expected - 1e-3), (ratios, expected)
  assert np.all(ratios <= expected + (1e-3 if weight == 1.0 else 0.03)), (ratios, expected)
  np.testing.assert_allclose(angles, 180.0, atol=1.0 if weight == 1.0 else 6.0)


def test_random_maps_have_a_clear_margin_and_means_do_not_count():
  rng = np.random.default_rng(1)
  maps = _band_limited(rng, 4, 8, 3)
  ratios, angles = identifiability.second_peak_ratios(maps)
  assert np.all(ratios < 0.8), ratios
  assert np.all((angles >= 0) & (angles <= 180))
  shifted = identifiability.second_peak_ratios(maps + np.array([5.0, -3.0, 40.0]))
  np.testing.assert_allclose(shifted[0], ratios, rtol=1e-4)
  np.testing.assert_allclose(shifted[1], angles, atol=0.1)


def test_view_errors_are_the_angles_of_known_rotations():
  rng = np.random.default_rng(2)
  target = _band_limited(rng, 5, 8, 3)
  rotation = rotations.random_rotations(5, seed=3)
  fmap = correlation.rotate(tf.constant(target), tf.constant(rotation)).numpy()  # target = R^T fmap
  errors = identifiability.view_errors_deg(fmap, target, batch_size=2)
  np.testing.assert_allclose(errors, alignment.rotation_errors_deg(rotation, np.eye(3)), atol=1.0)
  assert np.all(identifiability.view_errors_deg(target, target) < 0.5)


def test_far_pose_ratios_match_a_brute_force_self_correlation():
  # Independent of the SO(3) FFT: rotate the map to every grid rotation in the harmonic domain
  # (correlation.rotate, Wigner-D), integrate by quadrature, and take the angles from the matrices.
  rng = np.random.default_rng(4)
  b = 4
  maps = _band_limited(rng, 3, b, 2).astype(np.float64)
  alpha, beta, gamma = grids.so3_grid(b)
  angles = np.stack(np.meshgrid(alpha, beta, gamma, indexing='ij'), -1).reshape(-1, 3)
  matrices = rotations.euler_zyz_to_matrix(tf.constant(angles)).numpy()
  distance = rotations.angular_distance(tf.constant(matrices), tf.eye(3, dtype=tf.float64)).numpy()
  far = distance >= 40.0
  less_means = maps - np.sum(grids.quadrature_weights(b)[:, None, None] * maps, axis=(1, 2),
                             keepdims=True) / (4 * np.pi)
  for f, ratio, angle in zip(less_means, *identifiability.far_pose_ratios(
      maps, min_angle_deg=40.0, upsample=1)):
    rotated = correlation.rotate(tf.constant(np.repeat(f[None], len(matrices), 0)),
                                 tf.constant(matrices)).numpy()
    values = _inner(rotated, f[None], b)
    best = np.argmax(np.where(far, values, -np.inf))
    assert ratio == pytest.approx(values[best] / values.max(), abs=1e-4)
    assert angle == pytest.approx(distance[best], abs=1e-3)


def test_far_pose_ratio_is_one_under_a_symmetry_and_means_and_angles_behave():
  rng = np.random.default_rng(5)
  b = 8
  h = _band_limited(rng, 2, b, 2)
  symmetric = h + np.roll(h, b, axis=-2)  # invariant under Rz(pi)
  beta = grids.sphere_grid(b)[0][:, None, None]
  zonal = np.broadcast_to(np.cos(beta) ** 3 + 0.3 * np.cos(beta), (2 * b, 2 * b, 1))
  ratios, angles = identifiability.far_pose_ratios(symmetric)
  np.testing.assert_allclose(ratios, 1.0, atol=1e-5)
  np.testing.assert_allclose(angles, 180.0, atol=3.0)
  ratio, angle = identifiability.far_pose_ratios(zonal[None])  # every turn about z is a symmetry
  np.testing.assert_allclose(ratio, 1.0, atol=1e-5)
  assert angle[0] >= 30.0
  ratios, angles = identifiability.far_pose_ratios(h)
  assert np.all(ratios < 0.9) and np.all(angles >= 30.0)
  shifted = identifiability.far_pose_ratios(h + np.array([4.0, -7.0]))[0]
  np.testing.assert_allclose(shifted, ratios, rtol=1e-4)
  farther = identifiability.far_pose_ratios(h, min_angle_deg=90.0)
  assert np.all(farther[0] <= ratios + 1e-6) and np.all(farther[1] >= 90.0)


def test_summary_by_group():
  ratios = np.array([0.9, np.nan, 0.5, 0.7, 0.99])
  angles = np.array([179.0, np.nan, 90.0, 170.0, 20.0])
  errors = np.array([10.0, 175.0, 100.0, 29.0, 151.0])
  out = identifiability.summarize_by_group(ratios, angles, errors, ['a', 'a', 'b', 'b', 'b'])
  assert list(out) == ['a', 'b']
  assert out['a'] == {'views': 2, 'second_peak_ratio': 0.9, 'second_peak_flip': 100.0,
                      'views_at_pose': 50.0, 'views_flipped': 50.0}
  assert out['b']['second_peak_ratio'] == pytest.approx(0.7)
  assert out['b']['second_peak_flip'] == pytest.approx(100 / 3)
  assert out['b']['views_at_pose'] == pytest.approx(100 / 3)
  assert out['b']['views_flipped'] == pytest.approx(100 / 3)
  with_far = identifiability.summarize_by_group(ratios, angles, errors, ['a', 'a', 'b', 'b', 'b'],
                                                far_ratios=[0.9, 0.7, 0.1, 0.5, 0.3])
  assert with_far['a']['far_pose_ratio'] == pytest.approx(0.8)
  assert with_far['b']['far_pose_ratio'] == pytest.approx(0.3)
  assert 'far_pose_ratio' not in out['a']
  only_nan = identifiability.summarize_by_group([np.nan], [np.nan], [3.0], ['c'])['c']
  assert np.isnan(only_nan['second_peak_ratio']) and np.isnan(only_nan['second_peak_flip'])


def test_errors_name_the_bad_input():
  with pytest.raises(ValueError, match='second_peak_ratios'):
    identifiability.second_peak_ratios(np.zeros((2, 8, 6, 1)))
  with pytest.raises(ValueError, match='min_angle_deg'):
    identifiability.far_pose_ratios(np.zeros((1, 8, 8, 1)), min_angle_deg=180)
  with pytest.raises(ValueError, match='far_pose_ratios'):
    identifiability.far_pose_ratios(np.zeros((8, 8, 1)))
  with pytest.raises(ValueError, match='differ'):
    identifiability.view_errors_deg(np.zeros((2, 8, 8, 1)), np.zeros((3, 8, 8, 1)))
  with pytest.raises(ValueError, match='one shape'):
    identifiability.summarize_by_group([1.0], [1.0], [1.0, 2.0], ['a'])
  with pytest.raises(ValueError, match='one shape'):
    identifiability.summarize_by_group([1.0], [1.0], [1.0], ['a'], far_ratios=[1.0, 2.0])
