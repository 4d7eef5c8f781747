"""Per-example losses and metrics between predicted and target maps.

Spherical maps `[N, 2B, 2B, C]` are averaged with the `sin(beta)` area weights of
`geometry.area_weights` (normalised to mean 1), so every area of the sphere counts alike;
images are averaged plainly. Every function returns one value per example, `[N]`, which the
training loop averages over the global batch.

Two ways to weigh a map loss by area (`AREA_WEIGHTINGS`, `student_task --area_weighting`):
- 'loss' (ours, `map_loss`): the elementwise loss of the raw difference, averaged with the
  normalised weights;
- 'values' (the gist machc/spherical_embeddings, `weighted_values_loss`): its `embedding_loss`
  multiplies target and prediction by the unnormalised `sin(beta)` (spherical-cnn's
  `area_weights`) and takes the plain mean of the elementwise loss of the weighted values. The
  quadratic part then weighs a pixel by `sin^2(beta)`, and the Huber knee sits at
  `|d| = delta / sin(beta)`. The gist selects the loss with `losses[huber]`, a dictionary indexed
  by the function `huber` (a KeyError as written); the evident intent is a key, and we take the
  one our `--loss` names (default 'huber').
"""

import math

import numpy as np
import tensorflow as tf

from correlation import sht
from correlation import so3
from geometry import area_weights
from geometry import sphere_grid

LOSSES = ('huber', 'l1', 'l2')
AREA_WEIGHTINGS = ('loss', 'values')


def huber(pred, target, delta):
  """Elementwise Huber: `d^2 / 2` for `|d| <= delta`, `delta (|d| - delta / 2)` beyond, d = p - t."""
  if delta <= 0:
    raise ValueError(f'--huber_delta must be positive, got {delta}')
  d = tf.abs(pred - target)
  quadratic = tf.minimum(d, delta)
  return 0.5 * tf.square(quadratic) + delta * (d - quadratic)


def elementwise_loss(pred, target, kind='huber', delta=1.0):
  """`kind` in LOSSES: 'huber' (with `delta`), 'l1' (|d|) or 'l2' (d^2), elementwise."""
  if kind == 'huber':
    return huber(pred, target, delta)
  if kind == 'l1':
    return tf.abs(pred - target)
  if kind == 'l2':
    return tf.square(pred - target)
  raise ValueError(f'--loss must be one of {LOSSES}, got {kind!r}')


def sphere_mean(values):
  """Area-weighted mean of spherical maps `[N, 2B, 2B, C]` over the sphere and channels -> `[N]`.

  A discretisation of `(1 / 4 pi) int_{S^2} f dx`, averaged over channels.
  """
  if values.shape.rank != 4 or values.shape[1] != values.shape[2]:
    raise ValueError(f'sphere_mean expects maps [N, 2B, 2B, C], got shape {values.shape}')
  weights = tf.constant(area_weights(values.shape[1] // 2), values.dtype)[:, None, None]
  return tf.reduce_mean(values * weights, axis=[1, 2, 3])


def image_mean(values):
  """Plain mean of `[N, ...]` over everything but the batch -> `[N]`."""
  return tf.reduce_mean(tf.reshape(values, [tf.shape(values)[0], -1]), axis=1)


def map_loss(pred, target, kind='huber', delta=1.0, spherical=True):
  """Per-example loss `[N]`: the elementwise loss, area-weighted on spheres, plain on images."""
  reduce = sphere_mean if spherical else image_mean
  return reduce(elementwise_loss(pred, target, kind, delta))


def sine_colatitude(bandwidth):
  """Unnormalised `sin(beta_j)` of the Driscoll-Healy rows, float64 `[2B]` (spherical-cnn's
  `area_weights` factor; `geometry.area_weights` is the same divided by its mean)."""
  return np.sin(sphere_grid(bandwidth)[0])


def weighted_values_loss(pred, target, kind='huber', delta=1.0):
  """Per-example loss `[N]` of the gist: the plain mean over the sphere and channels of the
  elementwise loss between `sin(beta) pred` and `sin(beta) target` (module docstring).

  Args:
    pred, target: spherical maps `[N, 2B, 2B, C]` (rows are colatitudes).
    kind, delta: as `elementwise_loss`.
  """
  if pred.shape.rank != 4 or pred.shape[1] != pred.shape[2]:
    raise ValueError(f'weighted_values_loss expects maps [N, 2B, 2B, C], got shape {pred.shape}')
  weights = tf.constant(sine_colatitude(pred.shape[1] // 2), pred.dtype)[:, None, None]
  return image_mean(elementwise_loss(weights * pred, weights * tf.cast(target, pred.dtype), kind,
                                     delta))


def relative_error(pred, target, spherical=True, eps=1e-6):
  """Per-example mean of `|p - t| / (|p| + |t| + eps)` `[N]` (in [0, 1]; 0 when equal);
  area-weighted on spheres. The gist's `rel_err` is the plain mean with `eps = 1e-8`
  (`spherical=False, eps=1e-8`)."""
  reduce = sphere_mean if spherical else image_mean
  return reduce(tf.abs(pred - target) / (tf.abs(pred) + tf.abs(target) + eps))


def degree_loss(pred, target, degree_weights):
  """Per-example `sum_l w_l mean_c ||P_l (pred - target)||^2 / (4 pi)` `[N]`, on spheres.

  `P_l` keeps the degree-l part of a map (`correlation.sht.degree_power`), so each term is the
  mean squared error over the sphere of one degree's part, rotation invariant like the map loss.

  Args:
    pred, target: spherical maps `[N, 2B, 2B, C]`.
    degree_weights: `[B]` weights `w_l` (0 leaves a degree out).
  """
  weights = np.asarray(degree_weights, np.float64)
  if weights.shape != (pred.shape[1] // 2,):
    raise ValueError(f'degree_weights: one weight per degree < B = {pred.shape[1] // 2} expected, '
                     f'got shape {weights.shape}')
  difference = pred - target
  return _weighted_degree_power(difference, tf.constant(weights / (4 * math.pi), difference.dtype))


# XLA fuses the transform's reshuffles: 13 -> 6 ms for the loss and its gradient on a default
# student batch (16 maps of 32 x 32 x 32), 6% of a training step.
@tf.function(jit_compile=True)
def _weighted_degree_power(difference, weights):
  """`mean_c sum_l weights_l ||P_l difference||^2` `[N]`: maps `[N, 2B, 2B, C]`, weights `[B]`."""
  power = sht.degree_power(sht.forward(difference))                         # [N, B, C]
  return tf.reduce_mean(tf.reduce_sum(power * weights[:, None], axis=1), axis=1)


def pose_loss(pred, target, bandwidth, temperature):
  """Per-example `KL(q || p)` between two distributions over rotations `[N]`, on spheres.

  `p(R) ~ sin(beta) exp(c(R) / T)` with `c` the SO(3) correlation of `pred` against `target` (`c(R)`
  compares `R . pred` with `target`), `q` the same for `target` against itself (no gradient), both
  on the SOFT grid of `bandwidth`: the student is asked to put its correlation peaks where the
  teacher's own are, so a pose and its near-symmetric flips are told apart by how much more the
  right one scores, not by their few percent of the maps' energy. Both maps are cut to degrees
  `1 <= l < bandwidth`, and each channel is scaled to unit norm (`correlation.so3.
  normalize_coefficients`), so `c / C` is a mean cosine similarity in [-1, 1] and `temperature`
  is in its units; `sin(beta)` makes the grid's cells a uniform measure on SO(3).

  Args:
    pred, target: spherical maps `[N, 2B, 2B, C]`.
    bandwidth: `L <= B`; the grid has `(2L)^3` rotations.
    temperature: `T > 0`.
  """
  if pred.shape.rank != 4 or pred.shape[1:] != target.shape[1:]:
    raise ValueError(f'pose_loss expects maps [N, 2B, 2B, C] alike, got {pred.shape}, {target.shape}')
  b_max = pred.shape[1] // 2
  if not 1 < bandwidth <= b_max:
    raise ValueError(f'pose loss bandwidth must be in [2, {b_max}], got {bandwidth}')
  if temperature <= 0:
    raise ValueError(f'pose loss temperature must be positive, got {temperature}')
  return _pose_divergence(pred, tf.cast(target, pred.dtype), int(bandwidth),
                          tf.constant(1.0 / temperature, pred.dtype))


@tf.function(jit_compile=True)
def _pose_divergence(pred, target, bandwidth, inverse_temperature):
  """`pose_loss` after its checks; `bandwidth` is a Python int (one trace per value)."""
  coeffs = sht.forward(tf.concat([pred, target], axis=0), degrees=bandwidth)
  coeffs = so3.normalize_coefficients(coeffs)
  pred_coeffs, target_coeffs = tf.split(coeffs, 2, axis=0)
  spectra = tf.concat([so3.cross_spectrum(pred_coeffs, target_coeffs),
                       so3.cross_spectrum(target_coeffs, target_coeffs)], axis=0)
  volumes = so3.volume_from_spectrum(spectra) / pred.shape[-1]             # [2N, a, b, g]
  # The Haar measure of the grid's cells, sin(beta_j), up to a constant that the softmax drops.
  log_measure = tf.constant(np.log(area_weights(bandwidth)), pred.dtype)[:, None]
  logits = tf.reshape(volumes * inverse_temperature + log_measure, [2, tf.shape(pred)[0], -1])
  log_p = tf.nn.log_softmax(logits[0])
  log_q = tf.stop_gradient(tf.nn.log_softmax(logits[1]))
  return tf.reduce_sum(tf.exp(log_q) * (log_q - log_p), axis=-1)
