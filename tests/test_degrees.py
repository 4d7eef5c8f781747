"""Per-degree correlation of predicted and target maps (evaluation.degrees)."""
import numpy as np
import pytest
import tensorflow as tf

import correlation
from correlation import sht
from evaluation import degrees
from geometry import grids
from geometry import rotations
from tests.test_sht import random_coefficients


def _band_limited(rng, num, b, channels):
  return sht.inverse(tf.constant(random_coefficients(rng, b, channels, batch=(num,)))).numpy()


def _degree_part(maps, l):
  c = sht.forward(tf.constant(maps)).numpy()
  keep = np.zeros_like(c)
  keep[:, l] = c[:, l]
  return sht.inverse(tf.constant(keep)).numpy()


def test_matches_inner_products_on_the_grid():
  rng = np.random.default_rng(0)
  b = 8
  target = _band_limited(rng, 6, b, 3)
  pred = 0.5 * target + _band_limited(rng, 6, b, 3)
  got = degrees.degree_correlation(pred, target, max_degree=4, batch_size=4)
  assert got.shape == (5,)
  # Reference: each degree's part synthesised on the grid, inner products by quadrature.
  weights = grids.quadrature_weights(b)[:, None, None]
  p, t = pred - pred.mean(0), target - target.mean(0)
  for l in range(5):
    pl, tl = _degree_part(p, l), _degree_part(t, l)
    inner = lambda a, c: np.sum(weights * a * c)
    np.testing.assert_allclose(got[l], inner(pl, tl) / np.sqrt(inner(pl, pl) * inner(tl, tl)),
                               rtol=1e-5)
  assert np.all((got > 0.1) & (got < 0.9))


def test_scale_sign_independence_and_rotation_invariance():
  rng = np.random.default_rng(1)
  b = 8
  target = _band_limited(rng, 40, b, 2)
  np.testing.assert_allclose(degrees.degree_correlation(3 * target + 1, target), 1, atol=1e-5)
  np.testing.assert_allclose(degrees.degree_correlation(-target, target), -1, atol=1e-5)
  other = _band_limited(rng, 40, b, 2)
  assert np.all(np.abs(degrees.degree_correlation(other, target)) < 0.35)
  # The same rotation of both sets changes nothing.
  pred = target + _band_limited(rng, 40, b, 2)
  rotation = rotations.random_rotations(1, seed=2)[0]
  turned = [correlation.rotate(tf.constant(m), rotation).numpy() for m in (pred, target)]
  np.testing.assert_allclose(degrees.degree_correlation(*turned),
                             degrees.degree_correlation(pred, target), atol=1e-4)


def test_bad_shapes_are_clear_errors():
  with pytest.raises(ValueError, match='same shape'):
    degrees.degree_correlation(np.zeros((2, 8, 8, 1)), np.zeros((2, 8, 8, 2)))


def _odd_scaled(coeffs, weight):
  l = np.arange(coeffs.shape[-3])
  return coeffs * np.where(l % 2 == 1, weight, 1.0)[:, None, None]


def test_antipodal_is_f_at_minus_x():
  b = 8
  x = grids.sphere_directions(b)                                     # [2B, 2B, 3]
  f = lambda d: np.stack([np.exp(d @ [0.3, -1.2, 0.7]), d[..., 0] * d[..., 2]**2], -1)
  np.testing.assert_allclose(degrees.antipodal(f(x)).numpy(), f(-x), atol=1e-6)


@pytest.mark.parametrize('weight', [0.0, 2.0, 3.5])
def test_weight_odd_degrees_scales_the_odd_coefficients(weight):
  rng = np.random.default_rng(3)
  b = 8
  band_limited = _band_limited(rng, 3, b, 2)
  rough = rng.standard_normal((3, 2 * b, 2 * b, 2))   # not band-limited: the claim holds on the grid
  for maps in (band_limited, rough):
    got = sht.forward(degrees.weight_odd_degrees(maps, weight)).numpy()
    want = _odd_scaled(sht.forward(tf.constant(maps)).numpy(), weight)
    np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max())
  # Band-limited maps: the result is the weighted synthesis itself.
  want = sht.inverse(tf.constant(_odd_scaled(sht.forward(tf.constant(band_limited)).numpy(),
                                             weight))).numpy()
  np.testing.assert_allclose(degrees.weight_odd_degrees(band_limited, weight).numpy(), want,
                             atol=1e-4)


def test_weight_odd_degrees_commutes_with_rotation_and_keeps_the_even_part():
  rng = np.random.default_rng(4)
  b = 8
  maps = _band_limited(rng, 2, b, 3)
  rotation = rotations.random_rotations(1, seed=5)[0]
  turned_then_weighted = degrees.weight_odd_degrees(correlation.rotate(tf.constant(maps), rotation),
                                                    2.0)
  weighted_then_turned = correlation.rotate(degrees.weight_odd_degrees(maps, 2.0), rotation)
  np.testing.assert_allclose(turned_then_weighted.numpy(), weighted_then_turned.numpy(), atol=1e-4)
  np.testing.assert_array_equal(degrees.weight_odd_degrees(maps, 1.0).numpy(), maps)
  even = degrees.weight_odd_degrees(maps, 0.0).numpy()
  np.testing.assert_allclose(even, degrees.antipodal(even).numpy(), atol=1e-6)
  with pytest.raises(ValueError, match='weight_odd_degrees'):
    degrees.weight_odd_degrees(np.zeros((4, 6, 1)), 2.0)
