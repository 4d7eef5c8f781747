"""Rotation conversions through tensorflow-graphics (tfg): quaternion and axis-angle <-> matrix.

Conventions (docs/conventions.md): matrices act on column vectors; quaternions here are
(w, x, y, z), scalar first, where tfg's are (x, y, z, w), so every function reorders; axis-angle
is a unit axis `[..., 3]` and an angle `[...]` in radians.

What tfg does not give: ZYZ Euler angles. `tensorflow_graphics.geometry.transformation.euler`
and `rotation_matrix_3d.from_euler` use the XYZ convention only (`from_euler([a, b, c]) =
Rz(c) Ry(b) Rx(a)`), so the project's ZYZ angles stay `geometry.rotations.euler_zyz_to_matrix` and
`matrix_to_euler_zyz` (tested against a composition of tfg's single-axis rotations). Nor do we
route `geometry.quaternion_to_matrix` through tfg: the data sets' Haar-random rotations are
made with it, and a change in the last bits would change seeded data (its formula is tested
against tfg's instead). Importing this module imports tfg's transformation package only, which
does not import tensorflow_addons (tests/test_geometry.py checks it).
"""
import tensorflow as tf
from tensorflow_graphics.geometry.transformation import axis_angle as tfg_axis_angle
from tensorflow_graphics.geometry.transformation import quaternion as tfg_quaternion
from tensorflow_graphics.geometry.transformation import rotation_matrix_3d as tfg_matrix


def _xyzw(q_wxyz):
  return tf.concat([q_wxyz[..., 1:], q_wxyz[..., :1]], axis=-1)


def quaternion_to_matrix(quaternion_wxyz):
  """Quaternions `[..., 4]` (w, x, y, z; normalised here) -> rotation matrices `[..., 3, 3]`."""
  q = tf.convert_to_tensor(quaternion_wxyz)
  q = q / tf.norm(q, axis=-1, keepdims=True)
  return tfg_matrix.from_quaternion(_xyzw(q))


def matrix_to_quaternion(matrix):
  """Rotation matrices `[..., 3, 3]` -> unit quaternions `[..., 4]` (w, x, y, z) with w >= 0."""
  q = tfg_quaternion.from_rotation_matrix(tf.convert_to_tensor(matrix))  # (x, y, z, w)
  q = tf.concat([q[..., 3:], q[..., :3]], axis=-1)
  return tf.where(q[..., :1] < 0, -q, q)


def axis_angle_to_matrix(axis, angle):
  """Axes `[..., 3]` (normalised here) and angles `[...]` in radians -> matrices `[..., 3, 3]`."""
  axis = tf.convert_to_tensor(axis)
  axis = axis / tf.norm(axis, axis=-1, keepdims=True)
  angle = tf.cast(tf.convert_to_tensor(angle), axis.dtype)
  return tfg_matrix.from_axis_angle(axis, angle[..., None])


def matrix_to_axis_angle(matrix):
  """Rotation matrices `[..., 3, 3]` -> (unit axes `[..., 3]`, angles `[...]` in [0, pi]).

  The identity has no axis; it gets (0, 0, 1), and angles below 1e-9 are 0.
  """
  axis, angle = tfg_axis_angle.from_rotation_matrix(tf.convert_to_tensor(matrix))
  angle = angle[..., 0]
  small = tf.abs(angle) < 1e-9
  fallback = tf.broadcast_to(tf.constant([0.0, 0.0, 1.0], axis.dtype), tf.shape(axis))
  axis = tf.where(small[..., None] | tf.math.is_nan(axis), fallback, axis)
  return axis, tf.where(small, tf.zeros_like(angle), angle)


def euler_xyz_to_matrix(angles):
  """tfg's own Euler convention, for reference: `[..., 3]` (a, b, c) -> `Rz(c) Ry(b) Rx(a)`."""
  return tfg_matrix.from_euler(tf.convert_to_tensor(angles))


__all__ = ['quaternion_to_matrix', 'matrix_to_quaternion', 'axis_angle_to_matrix',
           'matrix_to_axis_angle', 'euler_xyz_to_matrix']
