"""Rotation helpers: ZYZ Euler angles, quaternions, Haar-random rotations, angular distance.

Matrices act on column vectors (`x -> R x`). Euler angles are ZYZ:
`R(a, b, c) = Rz(a) Ry(b) Rz(c)`. The functions taking angles or matrices are TensorFlow ops (they
accept numpy input eagerly and run inside `tf.function`), so the correlation code can use them in
graph; `random_rotations` is numpy and deterministic by seed.
"""
import numpy as np
import tensorflow as tf


def rotation_z(t):
  """`Rz(t)` for angles `[...]` -> `[..., 3, 3]`."""
  t = tf.convert_to_tensor(t)
  c, s = tf.cos(t), tf.sin(t)
  o, z = tf.ones_like(t), tf.zeros_like(t)
  return tf.reshape(tf.stack([c, -s, z, s, c, z, z, z, o], axis=-1),
                    tf.concat([tf.shape(t), [3, 3]], 0))


def rotation_y(t):
  """`Ry(t)` for angles `[...]` -> `[..., 3, 3]`."""
  t = tf.convert_to_tensor(t)
  c, s = tf.cos(t), tf.sin(t)
  o, z = tf.ones_like(t), tf.zeros_like(t)
  return tf.reshape(tf.stack([c, z, s, z, o, z, -s, z, c], axis=-1),
                    tf.concat([tf.shape(t), [3, 3]], 0))


def euler_zyz_to_matrix(angles):
  """ZYZ Euler angles `[..., 3]` (alpha, beta, gamma) in radians -> rotation matrices `[..., 3, 3]`."""
  angles = tf.convert_to_tensor(angles)
  if angles.shape.rank is not None and angles.shape[-1] not in (None, 3):
    raise ValueError(f'euler_zyz_to_matrix expects angles [..., 3], got shape {angles.shape}')
  return rotation_z(angles[..., 0]) @ rotation_y(angles[..., 1]) @ rotation_z(angles[..., 2])


def matrix_to_euler_zyz(matrix):
  """Rotation matrices `[..., 3, 3]` -> ZYZ angles `[..., 3]`: alpha, gamma in [0, 2pi), beta in [0, pi].

  At the gimbal-lock poles (beta = 0 or pi) only alpha + gamma (or alpha - gamma) is defined; we then
  put all of it in alpha and set gamma = 0.
  """
  r = tf.convert_to_tensor(matrix)
  two_pi = tf.constant(2 * np.pi, r.dtype)
  beta = tf.acos(tf.clip_by_value(r[..., 2, 2], -1.0, 1.0))
  sin_beta = tf.sqrt(tf.square(r[..., 0, 2]) + tf.square(r[..., 1, 2]))
  regular = sin_beta > 1e-6
  # At beta = 0, R = Rz(alpha + gamma); at beta = pi, the top-left block is [[-cos a, -sin a], ...].
  alpha_pole = tf.where(r[..., 2, 2] > 0, tf.atan2(r[..., 1, 0], r[..., 0, 0]),
                        tf.atan2(-r[..., 1, 0], -r[..., 0, 0]))
  alpha = tf.where(regular, tf.atan2(r[..., 1, 2], r[..., 0, 2]), alpha_pole)
  gamma = tf.where(regular, tf.atan2(r[..., 2, 1], -r[..., 2, 0]), tf.zeros_like(beta))
  return tf.stack([tf.math.floormod(alpha, two_pi), beta, tf.math.floormod(gamma, two_pi)], -1)


def quaternion_to_matrix(quaternion):
  """Unit quaternions `[..., 4]` in (w, x, y, z) order -> rotation matrices `[..., 3, 3]`."""
  q = tf.convert_to_tensor(quaternion)
  q = q / tf.norm(q, axis=-1, keepdims=True)
  w, x, y, z = tf.unstack(q, axis=-1)
  m = [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
       2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
       2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]
  return tf.reshape(tf.stack(m, -1), tf.concat([tf.shape(w), [3, 3]], 0))


def random_rotations(n, seed):
  """`n` rotations drawn from the Haar measure on SO(3), float32 numpy `[n, 3, 3]`.

  Normalised 4-D Gaussian quaternions are uniform on S^3, hence Haar on SO(3); uniform Euler angles
  would not be. Deterministic for a given `seed`.
  """
  if int(n) != n or n < 0:
    raise ValueError(f'random_rotations: n must be a non-negative integer, got {n!r}')
  q = np.random.default_rng(seed).standard_normal((int(n), 4))
  q /= np.linalg.norm(q, axis=-1, keepdims=True)
  return quaternion_to_matrix(q).numpy().astype(np.float32)


def angular_distance(r1, r2, degrees=True):
  """Angle of `R1 R2^T`: `arccos((trace(R1 R2^T) - 1) / 2)` for `[..., 3, 3]` inputs -> `[...]`."""
  r1 = tf.convert_to_tensor(r1)
  r2 = tf.cast(tf.convert_to_tensor(r2), r1.dtype)
  trace = tf.linalg.trace(tf.matmul(r1, r2, transpose_b=True))
  angle = tf.acos(tf.clip_by_value((trace - 1) / 2, -1.0, 1.0))
  return angle * (180.0 / np.pi) if degrees else angle
