"""Rotation of spherical maps in the harmonic domain: `(R . f)(x) = f(R^T x)`, exact for band-limited maps.

With `R = Rz(alpha) Ry(beta) Rz(gamma)` (ZYZ), `(R . f)_l^m = sum_n exp(-i m alpha) d^l_{mn}(beta)
exp(-i n gamma) f_l^n` (see `correlation.wigner`), where the negative orders of the real map come from
`f_l^{-n} = (-1)^n conj(f_l^n)`.
"""
import numpy as np
import tensorflow as tf

from correlation import sht
from correlation import wigner
from geometry import rotations


def all_orders(coeffs):
  """Coefficients `[..., B, B (m >= 0), C]` of a real map -> `[..., B, 2B-1 (m = -(B-1)..B-1), C]`."""
  b_max = coeffs.shape[-2]
  sign = tf.constant((-1.0) ** np.arange(b_max - 1, 0, -1), coeffs.dtype)[:, None]
  negative = sign * tf.math.conj(tf.reverse(coeffs[..., 1:, :], axis=[-2]))
  return tf.concat([negative, coeffs], axis=-2)


def _check_rotations(rotation, dtype):
  rotation = tf.cast(tf.convert_to_tensor(rotation), dtype)
  if rotation.shape.rank is None or rotation.shape.rank < 2 or rotation.shape[-2:] != (3, 3):
    raise ValueError(f'expected rotation matrices [..., 3, 3], got shape {rotation.shape}')
  return rotation


def rotate_coefficients(coeffs, rotation):
  """`R . f` on coefficients `[..., B, B (m >= 0), C]` (complex), rotations `[..., 3, 3]` (broadcast)."""
  coeffs = tf.convert_to_tensor(coeffs)
  real_dtype = tf.float64 if coeffs.dtype == tf.complex128 else tf.float32
  rotation = _check_rotations(rotation, real_dtype)
  b_max = coeffs.shape[-3]
  angles = rotations.matrix_to_euler_zyz(rotation)
  alpha, beta, gamma = angles[..., 0], angles[..., 1], angles[..., 2]
  m_orders, n_orders = np.meshgrid(np.arange(b_max), np.arange(-(b_max - 1), b_max), indexing='ij')
  d = wigner.wigner_d(b_max, beta, m_orders, n_orders)                     # [..., l, B * (2B-1)]
  d = tf.reshape(d, tf.concat([tf.shape(d)[:-1], [b_max, 2 * b_max - 1]], 0))  # [..., l, m, n]
  orders = tf.range(-(b_max - 1), b_max, dtype=real_dtype)
  phase_n = tf.exp(tf.complex(tf.zeros_like(gamma[..., None]), -gamma[..., None] * orders))
  phase_m = tf.exp(tf.complex(tf.zeros_like(alpha[..., None]),
                              -alpha[..., None] * orders[b_max - 1:]))
  full = all_orders(coeffs) * phase_n[..., None, :, None]                  # [..., l, n, C]
  rotated = tf.matmul(tf.cast(d, coeffs.dtype), full)                      # [..., l, m, C]
  return rotated * phase_m[..., None, :, None]


def rotate(maps, rotation):
  """`R . f` for real maps `[..., 2B, 2B, C]` and rotations `[..., 3, 3]` or `[3, 3]` (broadcast)."""
  maps = sht._check_map(maps, 'correlation.rotate')
  return sht.inverse(rotate_coefficients(sht.forward(maps), rotation))
