"""Per-example losses: Huber, l1/l2, area-weighted means on the sphere, relative error, degree loss."""
import numpy as np
import pytest
import tensorflow as tf

from benchmarks import numpy_so3
import correlation
from correlation import sht
from geometry import grids
from geometry import rotations
from geometry import sphere_grid
from models import losses
from tests.test_sht import random_coefficients
from tests.test_sht import synthesize_with_scipy

RNG = np.random.default_rng(0)


def test_huber_matches_the_piecewise_definition():
  p, t = RNG.normal(size=1000), RNG.normal(size=1000)
  d = np.abs(p - t)
  for delta in (0.1, 1.0):
    expected = np.where(d <= delta, 0.5 * d ** 2, delta * (d - 0.5 * delta))
    np.testing.assert_allclose(losses.huber(p, t, delta), expected, rtol=1e-12)
  # Keras' Huber (mean over the last axis) agrees.
  keras_huber = tf.keras.losses.Huber(delta=0.3, reduction=None)(t[:, None], p[:, None])
  np.testing.assert_allclose(losses.huber(p, t, 0.3), keras_huber, rtol=1e-5, atol=1e-8)
  with pytest.raises(ValueError, match='huber_delta'):
    losses.huber(p, t, 0.0)


def test_l1_l2_and_unknown_loss():
  p, t = RNG.normal(size=50), RNG.normal(size=50)
  np.testing.assert_allclose(losses.elementwise_loss(p, t, 'l1'), np.abs(p - t))
  np.testing.assert_allclose(losses.elementwise_loss(p, t, 'l2'), (p - t) ** 2)
  with pytest.raises(ValueError, match='--loss'):
    losses.elementwise_loss(p, t, 'l3')


@pytest.mark.parametrize('bandwidth', [8, 32])
def test_sphere_mean_is_the_mean_over_the_sphere(bandwidth):
  """(1 / 4 pi) int cos^2(beta) dx = 1/3 and int 1 dx / 4 pi = 1, where a plain pixel mean of
  cos^2 on the grid gives about 1/2."""
  beta, _ = sphere_grid(bandwidth)
  n = 2 * bandwidth
  cos2 = np.broadcast_to((np.cos(beta) ** 2)[:, None, None], (n, n, 2))[None]
  mean = losses.sphere_mean(tf.constant(cos2)).numpy()
  np.testing.assert_allclose(mean, [1 / 3], atol=0.5 / bandwidth ** 2)
  assert abs(cos2.mean() - 0.5) < 0.05
  np.testing.assert_allclose(losses.sphere_mean(tf.ones([3, n, n, 1], tf.float64)), np.ones(3))


def test_sphere_mean_is_invariant_to_longitude_rolls_and_per_example():
  x = RNG.uniform(size=(3, 16, 16, 2))
  mean = losses.sphere_mean(tf.constant(x)).numpy()
  np.testing.assert_allclose(losses.sphere_mean(tf.constant(np.roll(x, 5, axis=2))), mean)
  np.testing.assert_allclose(losses.sphere_mean(tf.constant(x[1:2])), mean[1:2])
  with pytest.raises(ValueError, match='2B, 2B'):
    losses.sphere_mean(tf.zeros([2, 8, 4, 1]))


def test_map_loss_weights_equator_over_poles():
  """An error at the equator costs more than the same error at a pole (sin(beta) weights)."""
  t = np.zeros((1, 16, 16, 1))
  pole, equator = t.copy(), t.copy()
  pole[0, 0] = 1.0
  equator[0, 8] = 1.0
  assert (losses.map_loss(equator, t, 'l1').numpy() > 5 * losses.map_loss(pole, t, 'l1').numpy())
  np.testing.assert_allclose(losses.map_loss(equator, t, 'l1', spherical=False),
                             losses.map_loss(pole, t, 'l1', spherical=False))


def test_relative_error():
  p = RNG.uniform(0.1, 1, size=(2, 8, 8, 3))
  np.testing.assert_allclose(losses.relative_error(p, p), [0, 0], atol=1e-12)
  np.testing.assert_allclose(losses.relative_error(p, np.zeros_like(p)), [1, 1], atol=1e-5)
  np.testing.assert_allclose(losses.relative_error(p, 3 * p, spherical=False), [0.5, 0.5],
                             rtol=1e-5)
  q = RNG.uniform(size=p.shape)
  np.testing.assert_allclose(losses.relative_error(p, q), losses.relative_error(q, p))


def _band_limited_maps(rng, num, b, channels):
  coeffs = random_coefficients(rng, b, channels, batch=(num,))
  return coeffs, sht.inverse(tf.constant(coeffs)).numpy()


def test_degree_loss_is_the_weighted_squared_error_of_each_degrees_part():
  rng = np.random.default_rng(3)
  b, channels = 8, 2
  pred_c, pred = _band_limited_maps(rng, 3, b, channels)
  target_c, target = _band_limited_maps(rng, 3, b, channels)
  weights = np.zeros(b)
  weights[[1, 2, 5]] = rng.uniform(0.5, 2.0, 3)
  got = losses.degree_loss(tf.constant(pred), tf.constant(target), weights).numpy()
  # Reference: synthesise each degree's part of the error and integrate its square numerically.
  quadrature = grids.quadrature_weights(b)[:, None, None] / (4 * np.pi)
  expected = np.zeros(3)
  for l in np.flatnonzero(weights):
    only_l = np.zeros_like(pred_c)
    only_l[:, l] = pred_c[:, l] - target_c[:, l]
    part = sht.inverse(tf.constant(only_l)).numpy()
    expected += weights[l] * np.mean(np.sum(quadrature * part**2, axis=(1, 2)), axis=-1)
  np.testing.assert_allclose(got, expected, rtol=1e-9)
  # Rotating both maps alike changes nothing (Wigner-D keeps each degree's norm).
  rotation = rotations.random_rotations(1, seed=5)[0]
  turned = [correlation.rotate(tf.constant(m), rotation).numpy() for m in (pred, target)]
  np.testing.assert_allclose(losses.degree_loss(*map(tf.constant, turned), weights).numpy(), got,
                             rtol=1e-8)
  with pytest.raises(ValueError, match='one weight per degree'):
    losses.degree_loss(tf.constant(pred), tf.constant(target), weights[:4])


def _pose_loss_reference(pred_c, target_c, bandwidth, temperature):
  """`losses.pose_loss` from the numpy SOFT baseline on maps synthesised by scipy: per example,
  degrees 1..L-1 on the grid of L, channels scaled to unit norm by quadrature, then the KL."""
  weights = grids.quadrature_weights(bandwidth)[:, None, None]
  log_measure = np.log(np.sin(sphere_grid(bandwidth)[0]))[None, :, None]
  result = []
  for p_c, t_c in zip(pred_c, target_c):
    unit = []
    for coeffs in (p_c, t_c):
      cut = coeffs[:bandwidth, :bandwidth].copy()
      cut[0] = 0
      grid_map = synthesize_with_scipy(cut, bandwidth)
      unit.append(grid_map / np.sqrt(np.sum(weights * grid_map**2, axis=(0, 1))))
    channels = unit[0].shape[-1]
    logits = [numpy_so3.correlate(f, unit[1]) / channels / temperature + log_measure
              for f in unit]
    log_p, log_q = [z.ravel() - z.max() - np.log(np.sum(np.exp(z - z.max()))) for z in logits]
    result.append(np.sum(np.exp(log_q) * (log_q - log_p)))
  return np.array(result)


def test_pose_loss_matches_a_numpy_reference():
  rng = np.random.default_rng(4)
  b, bandwidth, channels, temperature = 8, 4, 3, 0.05
  target_c, target = _band_limited_maps(rng, 2, b, channels)
  noise_c, noise = _band_limited_maps(rng, 2, b, channels)
  pred_c, pred = target_c + 0.7 * noise_c, target + 0.7 * noise
  got = losses.pose_loss(tf.constant(pred), tf.constant(target), bandwidth, temperature).numpy()
  expected = _pose_loss_reference(pred_c, target_c, bandwidth, temperature)
  assert np.all(expected > 0.05)  # far from the trivial zero of equal maps
  np.testing.assert_allclose(got, expected, rtol=1e-8)
  # float32, the training dtype, agrees.
  np.testing.assert_allclose(
      losses.pose_loss(tf.constant(pred, tf.float32), tf.constant(target, tf.float32), bandwidth,
                       temperature).numpy(), expected, rtol=2e-3)


def test_pose_loss_properties():
  rng = np.random.default_rng(5)
  b, channels = 8, 4
  _, target = _band_limited_maps(rng, 3, b, channels)
  loss = lambda pred: losses.pose_loss(tf.constant(pred), tf.constant(target), 4, 0.02).numpy()
  # Zero for the target itself, also after a positive scaling and shift per channel (the mean and
  # the norm of each channel are removed); positive otherwise.
  scale, shift = rng.uniform(0.5, 2.0, channels), rng.normal(size=channels)
  np.testing.assert_allclose(loss(target * scale + shift), 0.0, atol=1e-9)
  _, noise = _band_limited_maps(rng, 3, b, channels)
  noisy = loss(target + 0.3 * noise)
  assert np.all(noisy > 0)
  # The target turned half a turn (a flip) scores worse than a noisy target: the loss is about
  # where the correlation peaks, which a map's energy per degree cannot tell.
  flip = rotations.rotation_y(np.pi)
  flipped = correlation.rotate(tf.constant(target), flip).numpy()
  assert np.all(loss(flipped) > 10 * noisy)
  # ... while each degree's energy, all the map loss's degree terms see, is the target's.
  np.testing.assert_allclose(sht.degree_power(sht.forward(flipped)),
                             sht.degree_power(sht.forward(target)), rtol=1e-8)
  for args, message in (((1, 0.02), 'bandwidth'), ((9, 0.02), 'bandwidth'),
                        ((4, 0.0), 'temperature')):
    with pytest.raises(ValueError, match=message):
      losses.pose_loss(tf.constant(target), tf.constant(target), *args)
