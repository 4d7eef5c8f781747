"""SO(3) correlation: brute-force integrals, upsampling, normalisation, float32/64, derivatives."""
import os

import numpy as np
import pytest
import tensorflow as tf

import correlation
from correlation import so3
from correlation import wigner
from geometry import grids, rotations
from tests.test_rotate import band_limited_map, von_mises_maps

KAPPA = 1.5  # smooth enough that bandwidth 8 captures the bumps to ~1e-10


def brute_force_correlation(angles, bandwidth=40):
  """`sum_c integral (R . f_c) g_c` by exact-weight quadrature on a fine grid, R from ZYZ angles."""
  weights = grids.quadrature_weights(bandwidth)[:, None, None]
  g = von_mises_maps(bandwidth, kappa=KAPPA, seed=1)
  values = []
  for angle in angles:
    r = rotations.euler_zyz_to_matrix(np.asarray(angle, np.float64)).numpy()
    values.append(np.sum(weights * von_mises_maps(bandwidth, r, kappa=KAPPA, seed=0) * g))
  return np.array(values)


@pytest.fixture(scope='module')
def smooth_pair():
  b = 8
  return von_mises_maps(b, kappa=KAPPA, seed=0), von_mises_maps(b, kappa=KAPPA, seed=1)


def test_volume_matches_brute_force_integrals(smooth_pair):
  f, g = smooth_pair
  volume = correlation.correlate(f, g).numpy()
  assert volume.shape == (16, 16, 16)
  alpha, beta, gamma = grids.so3_grid(8)
  index = [(0, 0, 0), (3, 5, 7), (15, 15, 1), (9, 2, 12), (4, 8, 0)]
  expected = brute_force_correlation([(alpha[i], beta[j], gamma[k]) for i, j, k in index])
  np.testing.assert_allclose([volume[i] for i in index], expected, rtol=1e-9)


def test_upsampled_volume_matches_brute_force_integrals(smooth_pair):
  f, g = smooth_pair
  volume = correlation.correlate(f, g, upsample=3).numpy()
  assert volume.shape == (48, 48, 48)
  alpha, beta, gamma = grids.so3_grid(24)
  index = [(0, 0, 0), (13, 30, 41), (47, 47, 2)]
  expected = brute_force_correlation([(alpha[i], beta[j], gamma[k]) for i, j, k in index])
  np.testing.assert_allclose([volume[i] for i in index], expected, rtol=1e-9)


def test_peak_of_self_correlation_at_a_grid_rotation():
  b = 16
  f = band_limited_map(b, seed=0, channels=3)
  alpha, beta, gamma = grids.so3_grid(b)
  r0 = rotations.euler_zyz_to_matrix(np.array([alpha[5], beta[20], gamma[30]])).numpy()
  volume = correlation.correlate(f, correlation.rotate(f, r0)).numpy()
  assert np.unravel_index(np.argmax(volume), volume.shape) == (5, 20, 30)
  # The peak value is integral f^2 (rotation-invariant).
  w = grids.quadrature_weights(b)[:, None, None]
  np.testing.assert_allclose(volume[5, 20, 30], np.sum(w * f**2), rtol=1e-10)


def test_linear_in_each_argument_and_batched():
  b = 8
  f1, f2, g = (band_limited_map(b, seed=s) for s in range(3))
  c = lambda a, bb: correlation.correlate(a, bb).numpy()
  np.testing.assert_allclose(c(2 * f1 - f2, g), 2 * c(f1, g) - c(f2, g), atol=1e-11)
  batched = correlation.correlate(np.stack([f1, f2]), g).numpy()  # g broadcasts
  assert batched.shape == (2, 16, 16, 16)
  np.testing.assert_allclose(batched[1], c(f2, g), atol=1e-12)
  # Summed over channels.
  np.testing.assert_allclose(c(f1, g), c(f1[..., :1], g[..., :1]) + c(f1[..., 1:], g[..., 1:]),
                             atol=1e-11)


def test_normalize_is_invariant_to_channel_offsets_and_scales():
  b = 8
  f, g = band_limited_map(b, seed=3, channels=3), band_limited_map(b, seed=4, channels=3)
  scale, offset = np.array([0.1, 3.0, 20.0]), np.array([5.0, -1.0, 0.3])
  plain = correlation.correlate(f, g, normalize=True).numpy()
  np.testing.assert_allclose(correlation.correlate(f * scale + offset, g / scale - offset,
                                                   normalize=True).numpy(), plain, atol=1e-10)
  # Each channel contributes a cosine similarity: c(identity) of f with itself is C, the maximum.
  identity_value, _, _ = so3.evaluate(
      so3.fourier_coefficients(so3.spectra(f, f, normalize=True)), np.zeros((1, 3)))
  np.testing.assert_allclose(identity_value, [3.0], rtol=1e-12)
  assert correlation.correlate(f, f, normalize=True).numpy().max() <= 3.0 and plain.max() < 3.0


def test_float32_agrees_with_float64_in_xla_graph():
  b = 16
  f, g = band_limited_map(b, seed=5, channels=4), band_limited_map(b, seed=6, channels=4)
  reference = correlation.correlate(f, g, upsample=2).numpy()
  graph = tf.function(lambda a, bb: correlation.correlate(a, bb, upsample=2), jit_compile=True)
  volume = graph(tf.constant(f, tf.float32), tf.constant(g, tf.float32)).numpy()
  assert volume.dtype == np.float32
  np.testing.assert_allclose(volume, reference, atol=1e-5 * np.abs(reference).max())


def direct_evaluation(spectrum, angles):
  """Reference for `so3.evaluate`: `Re sum_mn w_n exp(-i(m alpha + n gamma)) sum_l d^l_mn(beta) X^l_mn`
  with Wigner-d from the recursion at beta itself, derivatives from `wigner_d_derivative`."""
  b = spectrum.shape[-1]
  out = []
  for x, (alpha, beta, gamma) in zip(np.asarray(spectrum), np.asarray(angles)):
    d = wigner.wigner_d_matrices(b, np.float64(beta)).numpy()               # [l, m, n], all n
    d1 = wigner.wigner_d_derivative(d).numpy()
    d2 = wigner.wigner_d_derivative(d1).numpy()
    m = np.arange(-(b - 1), b)[:, None]
    n = np.arange(b)[None, :]
    e = np.where(n > 0, 2.0, 1.0) * np.exp(-1j * (m * alpha + n * gamma))
    s0, s1, s2 = ((x * dd[:, :, b - 1:]).sum(0) for dd in (d, d1, d2))     # n >= 0 columns
    total = lambda s, factor: np.real(np.sum(e * s * factor))
    value = total(s0, 1)
    grad = [total(s0, -1j * m), total(s1, 1), total(s0, -1j * n)]
    hess = [[total(s0, -m * m), total(s1, -1j * m), total(s0, -m * n)],
            [total(s1, -1j * m), total(s2, 1), total(s1, -1j * n)],
            [total(s0, -m * n), total(s1, -1j * n), total(s0, -n * n)]]
    out.append((value, grad, hess))
  return [np.array(v) for v in zip(*out)]


def test_continuous_evaluation_matches_brute_force_and_direct_sums(smooth_pair):
  f, g = smooth_pair
  rng = np.random.default_rng(11)
  angles = np.stack([rng.uniform(0, 2 * np.pi, 5), rng.uniform(0, np.pi, 5),
                     rng.uniform(0, 2 * np.pi, 5)], -1)
  spectrum = so3.spectra(np.stack([f] * 5), np.stack([g] * 5))
  coefficients = so3.fourier_coefficients(spectrum)
  assert coefficients.shape == (5, 15, 8, 15)
  # Five sets of coefficients at one point each, and all five points on the first set.
  value, grad, hess = so3.evaluate(coefficients, angles[:, None])
  assert value.shape == (5, 1) and grad.shape == (5, 1, 3) and hess.shape == (5, 1, 3, 3)
  shared = so3.evaluate(coefficients[0], angles)
  reference = brute_force_correlation(angles)
  np.testing.assert_allclose(value[:, 0], reference, atol=1e-8 * np.abs(reference).max())
  for ours, ours_shared, direct in zip((value, grad, hess), shared,
                                       direct_evaluation(spectrum, angles)):
    np.testing.assert_allclose(ours[:, 0], direct, atol=1e-11 * np.abs(direct).max())
    np.testing.assert_allclose(ours_shared, direct, atol=1e-11 * np.abs(direct).max())
  # The real-map symmetry of the beta polynomial: Y_{m n, -k} = (-1)^(m - n) Y_{m n k}.
  y = coefficients.numpy()
  m, n = np.arange(-7, 8)[:, None, None], np.arange(8)[None, :, None]
  np.testing.assert_allclose(y[..., ::-1], (-1.0)**(m - n) * y, atol=1e-12 * np.abs(y).max())


def test_evaluation_from_row_samples_matches_direct_sums_and_brute_force(smooth_pair):
  # The refinement's evaluator: exact interpolation of the volume's own beta rows, on the input grid
  # and on finer and odd grids (upsampled volumes); points at and next to the poles.
  f, g = smooth_pair
  rng = np.random.default_rng(12)
  angles = np.stack([rng.uniform(0, 2 * np.pi, 6), np.r_[0.0, np.pi, 1e-3, rng.uniform(0, np.pi, 3)],
                     rng.uniform(0, 2 * np.pi, 6)], -1)
  spectrum = so3.spectra(f[None], g[None])
  direct = direct_evaluation(tf.tile(spectrum, [6, 1, 1, 1]), angles)
  for grid_bandwidth in (8, 11, 16):
    samples = so3.row_samples(spectrum, grid_bandwidth)
    result = so3.evaluate_rows(samples, angles[None], 8)
    assert result[0].shape == (1, 6) and result[2].shape == (1, 6, 3, 3)
    for ours, reference in zip(result, direct):
      np.testing.assert_allclose(ours[0], reference, atol=1e-11 * np.abs(reference).max())
  np.testing.assert_allclose(result[0][0], brute_force_correlation(angles),
                             atol=1e-8 * np.abs(direct[0]).max())
  # The samples come from the volume's own products: both from one call equal both apart.
  volume, together = so3.volume_from_spectrum(spectrum, 11, with_samples=True)
  np.testing.assert_array_equal(volume, so3.volume_from_spectrum(spectrum, 11))
  for a, b in zip(together, so3.row_samples(spectrum, 11)):
    np.testing.assert_array_equal(a, b)


def test_evaluation_from_row_samples_in_float32_and_xla():
  b = 16
  spectrum = so3.spectra(band_limited_map(b, seed=3, channels=2)[None],
                         band_limited_map(b, seed=4, channels=2)[None])
  angles = np.random.default_rng(5).uniform([0, 0, 0], [2 * np.pi, np.pi, 2 * np.pi], (1, 7, 3))
  reference = so3.evaluate(so3.fourier_coefficients(spectrum), angles)
  graph = tf.function(lambda x, a: so3.evaluate_rows(so3.row_samples(x), a, b), jit_compile=True)
  result = graph(tf.cast(spectrum, tf.complex64), tf.constant(angles, tf.float32))
  for ours, expected in zip(result, reference):
    assert ours.dtype == tf.float32
    np.testing.assert_allclose(ours, expected, atol=2e-5 * np.abs(expected).max())


def test_continuous_evaluation_matches_grid_and_its_derivatives():
  b = 8
  spectrum = so3.spectra(band_limited_map(b, seed=7), band_limited_map(b, seed=8))
  volume = so3.volume_from_spectrum(spectrum).numpy()
  coefficients = so3.fourier_coefficients(spectrum)
  alpha, beta, gamma = grids.so3_grid(b)
  angles = np.array([[alpha[i], beta[j], gamma[k]] for i, j, k in [(1, 2, 3), (15, 0, 9)]])
  value, grad, hess = so3.evaluate(coefficients, angles)
  np.testing.assert_allclose(value, [volume[1, 2, 3], volume[15, 0, 9]], rtol=1e-11)
  h = 1e-5
  for axis in range(3):
    step = np.zeros(3); step[axis] = h
    v_plus, g_plus, _ = so3.evaluate(coefficients, angles + step)
    v_minus, g_minus, _ = so3.evaluate(coefficients, angles - step)
    np.testing.assert_allclose(grad[:, axis], (v_plus - v_minus) / (2 * h), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(hess[:, axis], (g_plus - g_minus) / (2 * h), rtol=1e-5, atol=1e-7)


def test_rejects_mismatched_maps_and_bad_upsample():
  with pytest.raises(ValueError, match='same'):
    correlation.correlate(np.zeros((16, 16, 2)), np.zeros((16, 16, 3)))
  with pytest.raises(ValueError, match='upsample'):
    correlation.correlate(np.zeros((16, 16, 2)), np.zeros((16, 16, 2)), upsample=0)
  with pytest.raises(ValueError, match='broadcast'):
    correlation.correlate(np.zeros((2, 16, 16, 2)), np.zeros((3, 16, 16, 2)))


def test_leading_dimensions_broadcast_like_numpy():
  b = 8
  f = np.stack([band_limited_map(b, seed=s) for s in range(2)])[:, None]    # [2, 1, 2B, 2B, C]
  g = np.stack([band_limited_map(b, seed=10 + s) for s in range(3)])       # [3, 2B, 2B, C]
  volumes = correlation.correlate(f, g).numpy()
  assert volumes.shape == (2, 3, 16, 16, 16)
  np.testing.assert_allclose(volumes[1, 2], correlation.correlate(f[1, 0], g[2]).numpy(), atol=1e-12)
  assert correlation.correlate(f[0, 0], g[0]).shape == (16, 16, 16)
  # 2 x 3 pairs take two steps of up to 4 at B = 8; 1 x 3 (and 3 x 1) fit one, broadcast inside it.
  one_step = correlation.correlate(f[1], g).numpy()
  assert one_step.shape == (3, 16, 16, 16)
  np.testing.assert_allclose(one_step, volumes[1], atol=1e-12)
  np.testing.assert_allclose(correlation.correlate(g, f[1]).numpy()[2],
                             correlation.correlate(g[2], f[1, 0]).numpy(), atol=1e-12)


def test_batches_in_steps_of_a_few_pairs_match_single_pairs():
  b = 8
  f = np.stack([band_limited_map(b, seed=s) for s in range(5)])
  g = np.stack([band_limited_map(b, seed=10 + s) for s in range(5)])
  singles = np.stack([correlation.correlate(f[i], g[i]).numpy() for i in range(5)])
  # 5 pairs run as steps of 4 (the last one padded); also with an unknown batch size in a graph.
  np.testing.assert_allclose(correlation.correlate(f, g).numpy(), singles, atol=1e-12)
  dynamic = tf.function(correlation.correlate,
                        input_signature=[tf.TensorSpec([None, 16, 16, 2], tf.float64)] * 2)
  np.testing.assert_allclose(dynamic(f, g).numpy(), singles, atol=1e-12)
  np.testing.assert_allclose(dynamic(f[:1], g[:1]).numpy(), singles[:1], atol=1e-12)


def test_a_non_finite_map_leaves_the_other_pairs_of_its_step_alone():
  # The fusion barriers of `so3` branch on whether the step's first spectrum value is finite (those
  # of `sht.forward` on its first map value); both branches must pass the data through unchanged.
  b = 8
  f = np.stack([band_limited_map(b, seed=s) for s in range(3)])
  g = np.stack([band_limited_map(b, seed=10 + s) for s in range(3)])
  f[0, 3, 5, 1] = np.nan
  volumes = correlation.correlate(f, g).numpy()                 # one step of 3 pairs at B = 8
  assert np.isnan(volumes[0]).all()
  for i in (1, 2):
    np.testing.assert_allclose(volumes[i], correlation.correlate(f[i], g[i]).numpy(), atol=1e-12)


def test_compilation_cache_directory_is_checked_before_use(tmp_path, monkeypatch):
  monkeypatch.delenv('TF_XLA_FLAGS', raising=False)
  blocker = tmp_path / 'a_file'
  blocker.write_text('')
  # TensorFlow fails every compiled call on a directory it cannot write: such a one is not set.
  assert correlation.enable_compilation_cache(str(blocker / 'cache')) is None
  assert 'TF_XLA_FLAGS' not in os.environ
  directory = correlation.enable_compilation_cache(str(tmp_path / 'cache'))
  assert directory == str(tmp_path / 'cache') and (tmp_path / 'cache').is_dir()
  assert os.environ['TF_XLA_FLAGS'] == f'--tf_xla_persistent_cache_directory={directory}'
  # A directory already in the flags wins; nothing is added twice.
  assert correlation.enable_compilation_cache(str(tmp_path / 'other')) == directory
  assert os.environ['TF_XLA_FLAGS'].count('persistent_cache') == 1
