"""Spherical harmonic transform: scipy reference, dense quadrature, round trips to B = 128, properties."""
import numpy as np
import pytest
import tensorflow as tf
from scipy.special import sph_harm_y

from correlation import rotation
from correlation import sht
from geometry import grids
from geometry import rotations


def random_coefficients(rng, b, channels, batch=()):
  """Coefficients of a random real band-limited map: `m = 0` real, zeros where `m > l`."""
  shape = batch + (b, b, channels)
  c = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
  c[..., :, 0, :] = c[..., :, 0, :].real
  return c * np.tril(np.ones((b, b)))[:, :, None]


def synthesize_with_scipy(coeffs, b):
  """Real map `sum_lm f_l^m Y_l^m` on the DH grid, harmonics from scipy (complex, Condon-Shortley)."""
  beta, alpha = np.meshgrid(*grids.sphere_grid(b), indexing='ij')
  out = np.zeros((2 * b, 2 * b, coeffs.shape[-1]))
  for l in range(coeffs.shape[0]):
    for m in range(l + 1):
      y = sph_harm_y(l, m, beta, alpha)[..., None]
      term = coeffs[l, m] * y
      out += term.real if m == 0 else 2 * term.real  # f_l^-m Y_l^-m is the conjugate of f_l^m Y_l^m
  return out


def test_forward_matches_scipy_harmonics():
  rng = np.random.default_rng(0)
  b = 10
  coeffs = random_coefficients(rng, b, 2)
  maps = synthesize_with_scipy(coeffs, b)
  np.testing.assert_allclose(sht.forward(maps).numpy(), coeffs, atol=1e-12)
  np.testing.assert_allclose(sht.inverse(coeffs).numpy(), maps, atol=1e-12)


def test_forward_equals_dense_quadrature_for_any_map():
  # Not band-limited: the transform is still exactly the DH quadrature sum of f conj(Y).
  b = 8
  x = grids.sphere_directions(b)
  maps = np.stack([np.exp(3 * x[..., 0]) * np.cos(5 * x[..., 2]), np.abs(x[..., 1])], -1)
  beta, alpha = np.meshgrid(*grids.sphere_grid(b), indexing='ij')
  weights = grids.quadrature_weights(b)[:, None, None]
  ref = np.zeros((b, b, 2), complex)
  for l in range(b):
    for m in range(l + 1):
      ref[l, m] = np.sum(weights * maps * np.conj(sph_harm_y(l, m, beta, alpha))[..., None], (0, 1))
  np.testing.assert_allclose(sht.forward(maps).numpy(), ref, atol=1e-12)


@pytest.mark.parametrize('dtype,tolerance', [(np.float32, 1e-5), (np.float64, 1e-10)])
@pytest.mark.parametrize('b', [5, 8, 32, 128])
def test_round_trip_is_exact_for_band_limited_maps(b, dtype, tolerance):
  rng = np.random.default_rng(b)
  coeffs = random_coefficients(rng, b, 2 if b < 128 else 1)
  complex_dtype = np.complex64 if dtype == np.float32 else np.complex128
  maps = sht.inverse(coeffs.astype(complex_dtype))
  assert maps.dtype == dtype
  back = sht.forward(maps).numpy()
  assert back.dtype == complex_dtype
  assert np.linalg.norm(back - coeffs) <= tolerance * np.linalg.norm(coeffs)
  again = sht.inverse(back).numpy()
  assert np.linalg.norm(again - maps.numpy()) <= tolerance * np.linalg.norm(maps.numpy())


def test_linear_batched_and_parseval():
  rng = np.random.default_rng(1)
  b = 16
  f = rng.standard_normal((2, 3, 2 * b, 2 * b, 4))
  g = rng.standard_normal((2 * b, 2 * b, 4))
  cf, cg = sht.forward(f).numpy(), sht.forward(g).numpy()
  assert cf.shape == (2, 3, b, b, 4)
  np.testing.assert_allclose(sht.forward(2 * f + g).numpy(), 2 * cf + cg, atol=1e-11)
  np.testing.assert_allclose(cf[1, 2], sht.forward(f[1, 2]).numpy(), atol=1e-13)
  assert np.all(np.triu(np.ones((b, b)), 1)[:, :, None] * cg == 0)
  # Parseval for a band-limited map: integral f^2 = sum over all orders of |f_l^m|^2.
  band_limited = sht.inverse(cg).numpy()
  integral = np.sum(grids.quadrature_weights(b)[:, None, None] * band_limited**2, (0, 1))
  order_weight = np.where(np.arange(b) == 0, 1.0, 2.0)[None, :, None]
  np.testing.assert_allclose(integral, np.sum(order_weight * np.abs(cg)**2, (0, 1)), rtol=1e-10)


def test_degree_inner_and_power_are_each_degrees_inner_product_and_rotation_invariant():
  rng = np.random.default_rng(4)
  b = 8
  coeffs, other = random_coefficients(rng, b, 3), random_coefficients(rng, b, 3)
  power = sht.degree_power(tf.constant(coeffs)).numpy()
  inner = sht.degree_inner(tf.constant(coeffs), tf.constant(other)).numpy()
  assert power.shape == inner.shape == (b, 3)
  weights = grids.quadrature_weights(b)[:, None, None]

  def part(c, l):  # P_l f on the grid, by an independent synthesis
    only_l = np.zeros_like(c)
    only_l[l] = c[l]
    return synthesize_with_scipy(only_l, b)

  for l in (0, 1, 5):
    np.testing.assert_allclose(power[l], np.sum(weights * part(coeffs, l)**2, (0, 1)), rtol=1e-9)
    np.testing.assert_allclose(
        inner[l], np.sum(weights * part(coeffs, l) * part(other, l), (0, 1)), rtol=1e-9)
  # Wigner-D mixes orders within a degree and keeps each degree's norm.
  turned = rotation.rotate_coefficients(tf.constant(coeffs),
                                        rotations.random_rotations(1, seed=0)[0].astype(np.float64))
  np.testing.assert_allclose(sht.degree_power(turned).numpy(), power, rtol=1e-9)


def test_spectral_pooling_samples_the_low_degrees_on_the_coarse_grid():
  rng = np.random.default_rng(2)
  b = 16
  coeffs = random_coefficients(rng, b, 1)
  pooled = sht.inverse(sht.forward(sht.inverse(coeffs))[..., :b // 2, :b // 2, :]).numpy()
  np.testing.assert_allclose(pooled, synthesize_with_scipy(coeffs[:b // 2, :b // 2], b // 2),
                             atol=1e-11)


@pytest.mark.parametrize('degrees', [1, 3, 8, 12])
def test_forward_low_degrees_is_the_dense_quadrature_of_those_degrees(degrees):
  # Not band-limited, batched: the low-degree route is the same DH quadrature sum, degree by degree.
  rng = np.random.default_rng(7)
  b = 12
  x = grids.sphere_directions(b)
  maps = np.stack([np.exp(3 * x[..., 0]) * np.cos(5 * x[..., 2]), np.abs(x[..., 1])], -1)
  maps = np.stack([maps, rng.standard_normal(maps.shape)])                 # [2, 2B, 2B, 2]
  beta, alpha = np.meshgrid(*grids.sphere_grid(b), indexing='ij')
  weights = grids.quadrature_weights(b)[:, None, None]
  ref = np.zeros((2, degrees, degrees, 2), complex)
  for l in range(degrees):
    for m in range(l + 1):
      ref[:, l, m] = np.sum(weights * maps * np.conj(sph_harm_y(l, m, beta, alpha))[..., None],
                            (1, 2))
  got = sht.forward(maps, degrees=degrees)
  assert got.shape == (2, degrees, degrees, 2) and got.dtype == tf.complex128
  np.testing.assert_allclose(got.numpy(), ref, atol=1e-12)
  # The full route agrees (float32 too), and so does a round trip of degrees below L.
  full = sht.forward(tf.constant(maps, tf.float32)).numpy()[:, :degrees, :degrees]
  np.testing.assert_allclose(sht.forward(tf.constant(maps, tf.float32), degrees).numpy(), full,
                             atol=2e-5)
  coeffs = np.zeros((b, b, 3), complex)
  coeffs[:degrees, :degrees] = random_coefficients(rng, degrees, 3)
  np.testing.assert_allclose(sht.forward(sht.inverse(coeffs), degrees).numpy(),
                             coeffs[:degrees, :degrees], atol=1e-12)
  with pytest.raises(ValueError, match='degrees'):
    sht.forward(maps, degrees=b + 1)
  with pytest.raises(ValueError, match='degrees'):
    sht.forward(maps, degrees=0)


def test_runs_in_xla_graph():
  rng = np.random.default_rng(3)
  maps = tf.constant(rng.standard_normal((2, 32, 32, 3)), tf.float32)
  round_trip = tf.function(lambda x: sht.inverse(sht.forward(x)), jit_compile=True)
  np.testing.assert_allclose(round_trip(maps).numpy(), sht.inverse(sht.forward(maps)).numpy(),
                             atol=1e-4)


@pytest.mark.parametrize('compiled', [False, True])
def test_a_non_finite_first_value_leaves_the_other_maps_alone(compiled):
  # `forward`'s fusion barrier branches on whether the batch's first value is finite; both branches
  # must pass the data through unchanged.
  rng = np.random.default_rng(4)
  maps = rng.standard_normal((3, 16, 16, 2)).astype(np.float32)
  maps[0, 0, 0, 0] = np.inf
  forward = tf.function(sht.forward, jit_compile=True) if compiled else sht.forward
  coeffs = forward(tf.constant(maps)).numpy()
  assert not np.isfinite(coeffs[0]).all()
  for i in (1, 2):
    np.testing.assert_allclose(coeffs[i], sht.forward(maps[i]).numpy(), atol=1e-6)


def test_rejects_bad_shapes():
  with pytest.raises(ValueError, match='sht.forward'):
    sht.forward(np.zeros((32, 30, 1)))
  with pytest.raises(ValueError, match='sht.forward'):
    sht.forward(np.zeros((32, 32)))
  with pytest.raises(ValueError, match='sht.inverse'):
    sht.inverse(np.zeros((16, 15, 1), np.complex64))
