"""rotate(f, R): analytic rotation of smooth maps, exactness on band-limited maps, broadcasting."""
import numpy as np
import pytest
import tensorflow as tf

import correlation
from correlation import sht
from geometry import grids, rotations


def von_mises_maps(bandwidth, rotation=None, kappa=4.0, seed=0, channels=2, bumps=3):
  """Channels of sums of von Mises-Fisher bumps `exp(kappa (mu.x - 1))`, evaluated exactly at `R^T x`.

  Returns float64 `[2B, 2B, C]` (or `[N, 2B, 2B, C]` for rotations `[N, 3, 3]`): `R . f` on the grid.
  Smooth, so nearly band-limited for moderate kappa.
  """
  rng = np.random.default_rng(seed)
  mu = rng.standard_normal((channels, bumps, 3))
  mu /= np.linalg.norm(mu, axis=-1, keepdims=True)
  weight = rng.uniform(0.5, 1.5, (channels, bumps))
  x = grids.sphere_directions(bandwidth)
  if rotation is not None:
    x = np.einsum('...ji,abj->...abi', np.asarray(rotation, np.float64), x)  # R^T x
  return np.einsum('cb,...cb->...c', weight, np.exp(kappa * (np.einsum('...i,cbi->...cb', x, mu) - 1)))


def exact_rotations(n, seed):
  """Haar-random rotations made orthogonal to float64 precision (the float32 ones are only ~1e-7 so)."""
  u, _, vt = np.linalg.svd(rotations.random_rotations(n, seed).astype(np.float64))
  return u @ vt


def band_limited_map(bandwidth, seed, channels=2):
  rng = np.random.default_rng(seed)
  return sht.inverse(sht.forward(rng.standard_normal((2 * bandwidth, 2 * bandwidth, channels)))).numpy()


def test_matches_analytic_rotation():
  b = 32
  r = exact_rotations(4, seed=5)
  rotated = correlation.rotate(von_mises_maps(b), r).numpy()
  expected = von_mises_maps(b, r)
  assert rotated.shape == (4, 2 * b, 2 * b, 2)
  np.testing.assert_allclose(rotated, expected, atol=1e-9 * np.abs(expected).max())


def test_rotation_about_z_by_one_grid_step_shifts_columns():
  b = 16
  f = band_limited_map(b, seed=1)
  shifted = correlation.rotate(f, rotations.rotation_z(np.float64(2 * np.pi / (2 * b))).numpy()).numpy()
  np.testing.assert_allclose(shifted, np.roll(f, 1, axis=1), atol=1e-12)


def test_exact_group_action_on_band_limited_maps():
  b = 16
  f = band_limited_map(b, seed=2)
  r1, r2 = exact_rotations(2, seed=3)
  # Inverse, composition and the identity hold exactly (to rounding) for band-limited maps.
  back = correlation.rotate(correlation.rotate(f, r1), r1.T).numpy()
  np.testing.assert_allclose(back, f, atol=1e-11)
  composed = correlation.rotate(correlation.rotate(f, r2), r1).numpy()
  np.testing.assert_allclose(composed, correlation.rotate(f, r1 @ r2).numpy(), atol=1e-11)
  np.testing.assert_allclose(correlation.rotate(f, np.eye(3)).numpy(), f, atol=1e-12)
  # Rotation preserves the integral of f^2.
  w = grids.quadrature_weights(b)[:, None, None]
  np.testing.assert_allclose(np.sum(w * composed**2), np.sum(w * f**2), rtol=1e-11)


def test_broadcasts_and_runs_in_graph_in_float32():
  b = 16
  f = band_limited_map(b, seed=4)
  r = rotations.random_rotations(3, seed=6)
  expected = correlation.rotate(f, r.astype(np.float64)).numpy()
  batch_maps = np.broadcast_to(f, (3,) + f.shape)
  graph = tf.function(correlation.rotate, jit_compile=True)
  for maps, rots in [(f, r), (batch_maps, r), (batch_maps[:, None], r[:, None])]:
    out = graph(tf.constant(maps, tf.float32), tf.constant(rots)).numpy()
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.reshape(expected.shape), expected, atol=1e-4)
  single = correlation.rotate(batch_maps, r[1]).numpy()
  np.testing.assert_allclose(single[0], expected[1], atol=1e-11)


def test_rejects_bad_rotation_shape():
  with pytest.raises(ValueError, match='rotation'):
    correlation.rotate(np.zeros((16, 16, 1)), np.eye(4))
