"""Layers of the spherical CNN (Esteves, Allen-Blanchette, Makadia, Daniilidis, ECCV 2018).

Every layer takes and returns spherical maps `[N, 2B, 2B, C]` on the Driscoll-Healy grid (see
docs/conventions.md) and commutes with rotations: `layer(R . f) = R . layer(f)`, exactly for
the convolution and up to sampling (aliasing of the nonlinearity) for the rest.

- `SphericalConv`: spherical convolution with zonal filters, computed exactly in the spectral
  domain, `(f * h)_l^m = 2 pi sqrt(4 pi / (2l + 1)) f_l^m h_l^0`. In space this is
  `(f * h)(x) = 2 pi integral_{S^2} f(y) h(x . y) dy` (the `2 pi` is the integral over the rotations
  about the filter's axis in the SO(3) definition of spherical-cnn). The filter spectrum `h_l^0` of
  each (input, output) channel pair is interpolated linearly over the degree `l` from a few anchor
  values: a smooth spectrum is a spatially localised filter, and the parameter count does not grow
  with the bandwidth. With `pool=True` the layer also performs spectral pooling: the coefficients
  are truncated to bandwidth `B/2` and the inverse transform runs on the coarser `B x B` grid.
- `SphericalBatchNormalization`: batch normalisation whose statistics are area-weighted means over
  the sphere (`sin(beta)` weights), so every region of the sphere counts alike.
- `SphericalGlobalAveragePooling`: area-weighted mean over the sphere, `[N, 2B, 2B, C] -> [N, C]`;
  rotation invariant.
- `WeightedAveragePooling`: spatial 2x2 pooling to bandwidth `B/2` that weighs each cell by its
  area (`sin(beta)`), the default pooling of the spherical-cnn repository (`--pool=wap`; spectral
  pooling is its option `--spectral_pool`, off in its params/model-64.txt).

The harmonic transforms are `correlation.sht.forward / inverse` (orthonormal, Condon-Shortley
phase, coefficients `[..., B (l), B (m >= 0), C]`): each convolution runs one forward and one
inverse transform; the filter is a per-degree matrix applied by an einsum over channels.
"""
import functools

import keras
import numpy as np
import tensorflow as tf

from correlation import sht
from geometry import grids


def map_bandwidth(shape, what='input'):
  """Bandwidth `B` of a map of static shape `[..., 2B, 2B, C]`; a clear error otherwise."""
  if len(shape) < 3:
    raise ValueError(f'{what}: expected spherical maps [..., 2B, 2B, C], got shape {tuple(shape)}')
  rows, cols = shape[-3], shape[-2]
  if rows is None or cols is None or rows != cols or rows % 2:
    raise ValueError(f'{what}: expected spherical maps [..., 2B, 2B, C] with a static even 2B, '
                     f'got shape {tuple(shape)}')
  return rows // 2


@functools.lru_cache(maxsize=None)
def filter_interpolation_matrix(bandwidth, n_filter_params):
  """Linear interpolation from filter anchors to degrees, float64 `[B, P]` (read-only).

  The `P` anchors sit at evenly spaced degrees from `0` to `B - 1` (the first and the last degree
  included), so `h[l] = sum_p M[l, p] anchor[p]` is piecewise linear in `l`. `P` is capped at `B`.
  """
  b, p = int(bandwidth), min(int(n_filter_params), int(bandwidth))
  if p < 1:
    raise ValueError(f'n_filter_params must be >= 1, got {n_filter_params!r}')
  degrees = np.linspace(0.0, 1.0, b)
  if p == 1:
    matrix = np.ones((b, 1))
  else:
    anchors = np.linspace(0.0, 1.0, p)
    # Column p is the hat function centred at anchor p: the weights of every row sum to one.
    matrix = np.stack([np.interp(degrees, anchors, np.eye(p)[k]) for k in range(p)], axis=1)
  matrix.flags.writeable = False
  return matrix


@functools.lru_cache(maxsize=None)
def convolution_degree_factors(bandwidth):
  """`2 pi sqrt(4 pi / (2l + 1))` for `l = 0..B-1`, float64 `[B]` (spectral convolution theorem)."""
  degrees = np.arange(int(bandwidth))
  factors = 2 * np.pi * np.sqrt(4 * np.pi / (2 * degrees + 1))
  factors.flags.writeable = False
  return factors


def spectral_filter(coeffs, filters):
  """Applies per-degree channel-mixing filters to harmonic coefficients.

  Args:
    coeffs: complex `[N, L, M, C_in]` coefficients (degree `l`, order `m`).
    filters: real `[L, C_in, C_out]`, the filter of every degree (convolution factor included).

  Returns:
    complex `[N, L, M, C_out]`: `out[n, l, m, o] = sum_i coeffs[n, l, m, i] filters[l, i, o]`.
  """
  # A real filter acts on the real and imaginary parts alike; two real einsums cost half of one
  # complex einsum with a complex-cast filter.
  real = tf.einsum('nlmi,lio->nlmo', tf.math.real(coeffs), filters)
  imag = tf.einsum('nlmi,lio->nlmo', tf.math.imag(coeffs), filters)
  return tf.complex(real, imag)


class SphericalConv(keras.layers.Layer):
  """Spherical convolution with localised zonal filters, optionally with spectral pooling.

  Input `[N, 2B, 2B, C_in]`, output `[N, 2B', 2B', filters]` with `B' = B` or, with `pool=True`,
  `B' = B / 2`. Weights: `anchors [P, C_in, filters]` (the filter spectrum at `P` degrees) and an
  optional per-channel bias (the bias is a constant map, hence rotation invariant).
  """

  def __init__(self, filters, n_filter_params=8, pool=False, use_bias=True,
               kernel_regularizer=None, **kwargs):
    super().__init__(**kwargs)
    if int(filters) != filters or filters < 1:
      raise ValueError(f'SphericalConv: filters must be a positive integer, got {filters!r}')
    self.filters = int(filters)
    self.n_filter_params = int(n_filter_params)
    self.pool = bool(pool)
    self.use_bias = bool(use_bias)
    self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

  def build(self, input_shape):
    b = map_bandwidth(input_shape, f'{self.name} input')
    if self.pool and b % 2:
      raise ValueError(f'{self.name}: spectral pooling needs an even bandwidth, got B={b}')
    if input_shape[-1] is None:
      raise ValueError(f'{self.name}: the number of input channels must be static')
    self.bandwidth = b
    self.output_bandwidth = b // 2 if self.pool else b
    c_in = int(input_shape[-1])
    p = min(self.n_filter_params, b)
    # Initialisation of spherical-cnn's sphconv: keeps the activations' scale through the layer,
    # counting the B degrees and C_in channels summed and the 2 pi gain of the SO(3) integral.
    stddev = 2.0 / (2 * np.pi * np.sqrt(b * c_in))
    self.anchors = self.add_weight(
        name='anchors', shape=(p, c_in, self.filters),
        initializer=keras.initializers.TruncatedNormal(stddev=stddev),
        regularizer=self.kernel_regularizer, trainable=True)
    self.bias = (self.add_weight(name='bias', shape=(self.filters,), initializer='zeros',
                                 trainable=True) if self.use_bias else None)
    # Interpolation and the convolution factor fold into one constant [B', P] matrix; degrees
    # above the output bandwidth are never computed (spectral pooling truncates them anyway).
    b_out = self.output_bandwidth
    degree_matrix = (filter_interpolation_matrix(b, p) *
                     convolution_degree_factors(b)[:, None])[:b_out]
    self._degree_matrix = degree_matrix.astype(np.float32)

  def degree_filters(self):
    """The filter of every output degree, float32 `[B', C_in, filters]` (conv factor included)."""
    return tf.einsum('lp,pio->lio', self._degree_matrix, tf.convert_to_tensor(self.anchors))

  def call(self, inputs):
    b_out = self.output_bandwidth
    coeffs = sht.forward(inputs)[..., :b_out, :b_out, :]
    maps = sht.inverse(spectral_filter(coeffs, self.degree_filters()))
    if self.use_bias:
      maps = maps + self.bias
    return maps

  def compute_output_shape(self, input_shape):
    b = map_bandwidth(input_shape, f'{self.name} input')
    b_out = b // 2 if self.pool else b
    return (input_shape[0], 2 * b_out, 2 * b_out, self.filters)

  def get_config(self):
    return {**super().get_config(), 'filters': self.filters,
            'n_filter_params': self.n_filter_params, 'pool': self.pool,
            'use_bias': self.use_bias,
            'kernel_regularizer': keras.regularizers.serialize(self.kernel_regularizer)}


def _area_weights_tensor(bandwidth, dtype):
  """`sin(beta_j)` weights shaped `[1, 2B, 1, 1]` for broadcasting over maps `[N, 2B, 2B, C]`."""
  return tf.constant(grids.area_weights(bandwidth).reshape(1, -1, 1, 1), dtype)


class SphericalBatchNormalization(keras.layers.BatchNormalization):
  """Batch normalisation of spherical maps `[N, 2B, 2B, C]` with area-weighted statistics.

  The per-channel mean and variance over the batch and the sphere weigh every row by
  `sin(beta_j)` (geometry.area_weights), so that they do not change when the maps rotate. Everything
  else (moving averages, `center`, `scale`, inference mode) is Keras' BatchNormalization.
  """

  def __init__(self, **kwargs):
    kwargs.setdefault('axis', -1)
    if kwargs['axis'] not in (-1, 3):
      raise ValueError('SphericalBatchNormalization normalises the channel axis (-1) only')
    super().__init__(**kwargs)

  def _moments(self, inputs, mask):
    if mask is not None:
      raise ValueError(f'{self.name}: masks are not supported on spherical maps')
    weights = _area_weights_tensor(map_bandwidth(inputs.shape, self.name), inputs.dtype)
    # tf.nn.weighted_moments divides by the weights summed over the broadcast shape.
    return tf.nn.weighted_moments(inputs, axes=[0, 1, 2], frequency_weights=weights)


class SphericalGlobalAveragePooling(keras.layers.Layer):
  """Area-weighted mean over the sphere: `[N, 2B, 2B, C] -> [N, C]`, invariant to rotations."""

  def call(self, inputs):
    weights = _area_weights_tensor(map_bandwidth(inputs.shape, self.name), inputs.dtype)
    # area_weights have mean 1, so the weighted mean is a plain mean of the weighted map.
    return tf.reduce_mean(inputs * weights, axis=[1, 2])

  def compute_output_shape(self, input_shape):
    return (input_shape[0], input_shape[-1])


class WeightedAveragePooling(keras.layers.Layer):
  """Area-weighted 2x2 average pooling: `[N, 2B, 2B, C] -> [N, B, B, C]`.

  `out = avgpool_2x2(sin(beta) f) / sin(beta')`, with `beta` the colatitudes of the input grid and
  `beta'` those of the output grid (both Driscoll-Healy, unnormalised sines): the spherical-cnn
  repository's `wap` pooling (its `area_weights(avg_pool(area_weights(x)), invert=True)`, whose
  maps are `[N, longitude, colatitude, C]`; ours are `[N, colatitude, longitude, C]`, so the sines
  run along rows). Equivariant only approximately, like any spatial pooling.
  """

  def call(self, inputs):
    b = map_bandwidth(inputs.shape, self.name)
    if b % 2:
      raise ValueError(f'{self.name}: pooling needs an even bandwidth, got B={b}')
    fine = tf.constant(np.sin(grids.sphere_grid(b)[0]).reshape(1, -1, 1, 1), inputs.dtype)
    coarse = tf.constant(np.sin(grids.sphere_grid(b // 2)[0]).reshape(1, -1, 1, 1), inputs.dtype)
    pooled = tf.nn.avg_pool2d(inputs * fine, ksize=2, strides=2, padding='VALID')
    return pooled / coarse

  def compute_output_shape(self, input_shape):
    return (input_shape[0], input_shape[1] // 2, input_shape[2] // 2, input_shape[3])
