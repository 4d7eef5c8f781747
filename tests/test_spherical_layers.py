"""Tests of models/spherical_layers.py against independent references.

The references here do not use the project's harmonic transform: band-limited maps are synthesised
and rotated with scipy's spherical harmonics, and the convolution is checked against a brute-force
spatial quadrature of `2 pi integral f(y) h(x . y) dy` with the zonal filter built from Legendre
polynomials.
"""
import numpy as np
import pytest
import scipy.special
import tensorflow as tf

from geometry import grids
from geometry import rotations
from models import spherical_layers


def random_coefficients(rng, bandwidth, channels):
  """Random coefficients of a real map, complex `[B (l), B (m >= 0), C]`, zero for m > l."""
  c = rng.standard_normal((bandwidth, bandwidth, channels)) + 1j * rng.standard_normal(
      (bandwidth, bandwidth, channels))
  c[:, 0, :] = c[:, 0, :].real
  c *= np.tril(np.ones((bandwidth, bandwidth)))[..., None]
  return c


def synthesize(coeffs, points):
  """Real map of coefficients `[B, B (m >= 0), C]` at unit vectors `points [..., 3]` -> `[..., C]`.

  `f = sum_l (c_l0 Y_l0 + 2 Re sum_{m>0} c_lm Y_lm)`: the m < 0 half of a real map's spectrum is the
  conjugate of the m > 0 half (Condon-Shortley phase, as in scipy).
  """
  b = coeffs.shape[0]
  beta = np.arccos(np.clip(points[..., 2], -1, 1))
  alpha = np.arctan2(points[..., 1], points[..., 0])
  out = 0
  for l in range(b):
    for m in range(l + 1):
      y = scipy.special.sph_harm_y(l, m, beta, alpha)[..., None]
      term = coeffs[l, m] * y
      out = out + (term.real if m == 0 else 2 * term.real)
  return out


def grid_points(bandwidth):
  return np.asarray(grids.sphere_directions(bandwidth))


def rotated_grid_points(bandwidth, rotation):
  """`R^T x` for every grid point `x`: where `R . f` reads `f`."""
  return grid_points(bandwidth) @ np.asarray(rotation, np.float64)


def zonal_filter_values(h, cos_angle):
  """Zonal filter of spectrum `h [B, ...]` (the `h_l^0`) at `cos_angle [...]` -> `[cos..., ...]`."""
  b = h.shape[0]
  out = 0
  for l in range(b):
    legendre = scipy.special.eval_legendre(l, cos_angle) * np.sqrt((2 * l + 1) / (4 * np.pi))
    out = out + legendre[(...,) + (None,) * (h.ndim - 1)] * h[l]
  return out


def brute_force_convolution(maps, h, out_bandwidth):
  """`2 pi integral_{S^2} f_i(y) h_io(x . y) dy` by DH quadrature at the grid of `out_bandwidth`.

  Args:
    maps: `[2B, 2B, C_in]` band-limited input.
    h: `[B, C_in, C_out]` filter spectra.
  """
  b = maps.shape[0] // 2
  y = grid_points(b).reshape(-1, 3)
  x = grid_points(out_bandwidth).reshape(-1, 3)
  weights = np.repeat(grids.quadrature_weights(b), 2 * b)                       # [Y]
  kernel = zonal_filter_values(h, np.clip(x @ y.T, -1, 1))                      # [X, Y, Ci, Co]
  out = 2 * np.pi * np.einsum('xyio,y,yi->xo', kernel, weights, maps.reshape(-1, maps.shape[-1]))
  return out.reshape(2 * out_bandwidth, 2 * out_bandwidth, -1)


def layer_filter_spectra(layer):
  """The `h_l^0` of a built SphericalConv, `[B, C_in, C_out]`, without the convolution factor."""
  p = layer.anchors.shape[0]
  return filter_matrix(layer.bandwidth, p) @ np.asarray(layer.anchors).reshape(p, -1)


def filter_matrix(b, p):
  return np.asarray(spherical_layers.filter_interpolation_matrix(b, p))


def relative_error(a, b):
  return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


# ------------------------------------------------------------------------------------------------
# Filter parameterisation.


def test_interpolation_reproduces_linear_spectra_and_hits_anchors():
  b, p = 16, 6
  m = filter_matrix(b, p)
  assert m.shape == (b, p)
  np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-12)
  # Hat functions reproduce any affine function of the degree exactly.
  anchor_degrees = np.linspace(0, b - 1, p)
  np.testing.assert_allclose(m @ (3.0 - 0.5 * anchor_degrees), 3.0 - 0.5 * np.arange(b), atol=1e-12)
  # The first and last degrees are anchors; every weight lies in [0, 1].
  np.testing.assert_allclose(m[0], np.eye(p)[0])
  np.testing.assert_allclose(m[-1], np.eye(p)[-1])
  assert m.min() >= 0 and m.max() <= 1


def test_interpolation_caps_anchors_at_bandwidth():
  np.testing.assert_allclose(filter_matrix(4, 8), np.eye(4), atol=1e-12)
  with pytest.raises(ValueError, match='n_filter_params'):
    spherical_layers.filter_interpolation_matrix(4, 0)


# ------------------------------------------------------------------------------------------------
# Spherical convolution.


def _conv_and_input(b, c_in, c_out, pool, seed=0):
  rng = np.random.default_rng(seed)
  maps = synthesize(random_coefficients(rng, b, c_in), grid_points(b)).astype(np.float32)
  layer = spherical_layers.SphericalConv(c_out, n_filter_params=4, pool=pool, use_bias=False)
  layer.build((None, 2 * b, 2 * b, c_in))
  return layer, maps


@pytest.mark.parametrize('pool', [False, True])
def test_conv_matches_brute_force_spatial_convolution(pool):
  b = 8
  layer, maps = _conv_and_input(b, c_in=2, c_out=3, pool=pool)
  h = layer_filter_spectra(layer).reshape(b, 2, 3)
  out_b = b // 2 if pool else b
  if pool:
    h[out_b:] = 0  # spectral pooling keeps the degrees below the output bandwidth
  expected = brute_force_convolution(maps.astype(np.float64), h, out_b)
  got = layer(maps[None])[0].numpy()
  assert got.shape == (2 * out_b, 2 * out_b, 3)
  assert relative_error(got, expected) < 1e-4


def test_conv_bias_is_a_constant_map():
  b = 4
  layer = spherical_layers.SphericalConv(2, use_bias=True)
  layer.build((None, 2 * b, 2 * b, 1))
  layer.bias.assign([1.5, -2.0])
  out = layer(np.zeros((1, 2 * b, 2 * b, 1), np.float32)).numpy()
  np.testing.assert_allclose(out[..., 0], 1.5, atol=1e-6)
  np.testing.assert_allclose(out[..., 1], -2.0, atol=1e-6)


def test_conv_is_equivariant_to_arbitrary_rotations():
  b = 8
  rng = np.random.default_rng(1)
  coeffs = random_coefficients(rng, b, 2)
  layer = spherical_layers.SphericalConv(3, n_filter_params=4, use_bias=False)
  layer.build((None, 2 * b, 2 * b, 2))
  rotation = rotations.random_rotations(1, seed=3)[0]
  maps = synthesize(coeffs, grid_points(b)).astype(np.float32)
  rotated_maps = synthesize(coeffs, rotated_grid_points(b, rotation)).astype(np.float32)
  out = layer(np.stack([maps, rotated_maps]))
  # The output of a band-limited input is band-limited: its coefficients, read back by a
  # least-squares fit independent of the project's transform, give the rotated output exactly.
  out_coeffs = _fit_coefficients(out[0].numpy(), b)
  expected = synthesize(out_coeffs, rotated_grid_points(b, rotation))
  assert relative_error(out[1].numpy(), expected) < 1e-4
  # Against an unrelated rotation the error is of order one: the test can fail.
  other = rotations.random_rotations(1, seed=4)[0]
  assert relative_error(out[1].numpy(), synthesize(out_coeffs, rotated_grid_points(b, other))) > 0.3


def _fit_coefficients(maps, b):
  """Least-squares coefficients `[B, B, C]` of a band-limited real map `[2B, 2B, C]` (scipy)."""
  points = grid_points(b).reshape(-1, 3)
  beta = np.arccos(np.clip(points[:, 2], -1, 1))
  alpha = np.arctan2(points[:, 1], points[:, 0])
  columns, index = [], []
  for l in range(b):
    for m in range(l + 1):
      y = scipy.special.sph_harm_y(l, m, beta, alpha)
      if m == 0:
        columns.append(y.real)
        index.append((l, m, 1.0))
      else:  # 2 Re(c Y) = 2 Re(c) Re(Y) - 2 Im(c) Im(Y)
        columns += [2 * y.real, -2 * y.imag]
        index += [(l, m, 1.0), (l, m, 1j)]
  design = np.stack(columns, axis=1)
  solution, *_ = np.linalg.lstsq(design, maps.reshape(len(points), -1), rcond=None)
  coeffs = np.zeros((b, b, maps.shape[-1]), np.complex128)
  for (l, m, unit), row in zip(index, solution):
    coeffs[l, m] += unit * row
  return coeffs


def test_conv_commutes_with_longitude_shifts_exactly():
  # A rotation about z by a grid step is a roll of the columns: exact for any map.
  b = 8
  layer = spherical_layers.SphericalConv(4, pool=True)
  maps = np.random.default_rng(2).standard_normal((1, 2 * b, 2 * b, 3)).astype(np.float32)
  out = layer(maps).numpy()
  shifted = layer(np.roll(maps, 4, axis=2)).numpy()
  np.testing.assert_allclose(shifted, np.roll(out, 2, axis=2), atol=1e-4 * np.abs(out).max())


def test_conv_rejects_bad_shapes():
  with pytest.raises(ValueError, match='2B, 2B'):
    spherical_layers.SphericalConv(2)(np.zeros((1, 8, 6, 1), np.float32))
  with pytest.raises(ValueError, match='even bandwidth'):
    spherical_layers.SphericalConv(2, pool=True)(np.zeros((1, 6, 6, 1), np.float32))
  with pytest.raises(ValueError, match='filters'):
    spherical_layers.SphericalConv(0)


def test_conv_gradients_reach_the_anchors():
  b = 4
  layer = spherical_layers.SphericalConv(2, n_filter_params=3)
  maps = tf.constant(np.random.default_rng(5).standard_normal((2, 2 * b, 2 * b, 1)), tf.float32)
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(tf.square(layer(maps)))
  grads = tape.gradient(loss, layer.trainable_variables)
  assert all(g is not None and np.all(np.isfinite(g.numpy())) for g in grads)
  assert np.abs(grads[0].numpy()).max() > 0


# ------------------------------------------------------------------------------------------------
# Batch norm and pooling.


def _weighted_moments(maps):
  w = np.asarray(grids.area_weights(maps.shape[1]// 2))[None, :, None, None] * np.ones_like(maps)
  mean = (w * maps).sum(axis=(0, 1, 2)) / w.sum(axis=(0, 1, 2))
  var = (w * (maps - mean) ** 2).sum(axis=(0, 1, 2)) / w.sum(axis=(0, 1, 2))
  return mean, var


def test_batch_norm_uses_area_weighted_statistics():
  b = 8
  rng = np.random.default_rng(6)
  maps = (rng.standard_normal((3, 2 * b, 2 * b, 2)) * [1.0, 3.0] + [0.5, -2.0])
  # A latitude-dependent offset makes the plain pixel mean differ from the area mean.
  maps += 4 * np.cos(np.asarray(grids.sphere_grid(b)[0]))[None, :, None, None] ** 2
  maps = maps.astype(np.float32)
  layer = spherical_layers.SphericalBatchNormalization(center=False, scale=False, epsilon=1e-6,
                                                       momentum=0.5)
  out = layer(maps, training=True).numpy()
  mean, var = _weighted_moments(out.astype(np.float64))
  np.testing.assert_allclose(mean, 0.0, atol=1e-5)
  np.testing.assert_allclose(var, 1.0, atol=1e-4)
  in_mean, in_var = _weighted_moments(maps.astype(np.float64))
  np.testing.assert_allclose(layer.moving_mean.numpy(), 0.5 * in_mean, rtol=1e-5)
  np.testing.assert_allclose(layer.moving_variance.numpy(), 0.5 + 0.5 * in_var, rtol=1e-5)
  # The plain mean would have been visibly different: the weighting matters here.
  assert np.abs(maps.mean(axis=(0, 1, 2)) - in_mean).min() > 0.1


def test_global_pooling_is_the_area_weighted_mean_and_rotation_invariant():
  b = 8
  rng = np.random.default_rng(7)
  coeffs = random_coefficients(rng, b, 2)
  rotation = rotations.random_rotations(1, seed=8)[0]
  maps = np.stack([synthesize(coeffs, grid_points(b)),
                   synthesize(coeffs, rotated_grid_points(b, rotation))]).astype(np.float32)
  pooled = spherical_layers.SphericalGlobalAveragePooling()(maps).numpy()
  np.testing.assert_allclose(pooled[:1], _weighted_moments(maps[:1])[0][None], rtol=1e-5, atol=1e-6)
  # The exact mean over the sphere is c_00 Y_00 = c_00 / sqrt(4 pi); sin-weighted sampling of the
  # grid is close to it, and so is the pooled rotated map.
  exact = coeffs[0, 0].real / np.sqrt(4 * np.pi)
  scale = np.abs(maps).mean()
  np.testing.assert_allclose(pooled, np.stack([exact, exact]), atol=0.01 * scale)
