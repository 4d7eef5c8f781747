"""One rotation, every common way of writing it (for the two-image tool and its inputs).

Matrices act on column vectors; ZYZ Euler angles follow geometry (R = Rz(a) Ry(b) Rz(c)).
Quaternions are (w, x, y, z), scalar first, with w >= 0 (the two signs are the same rotation).
Axis-angle is a unit axis and an angle in [0, 180] degrees (axis (0, 0, 1) for the identity).
Quaternion and axis-angle conversions go through tensorflow-graphics (`geometry.conversions`);
ZYZ Euler angles through `geometry` (tfg has XYZ Euler angles only).
"""
import numpy as np

from geometry import conversions
from geometry import euler_zyz_to_matrix, matrix_to_euler_zyz


def _check_matrix(matrix):
  m = np.asarray(matrix, np.float64)
  if m.shape != (3, 3):
    raise ValueError(f'expected a 3x3 rotation matrix, got shape {m.shape}')
  if abs(np.linalg.det(m) - 1) > 1e-3 or np.abs(m @ m.T - np.eye(3)).max() > 1e-3:
    raise ValueError(f'not a rotation matrix: {m.tolist()}')
  return m


def describe_rotation(matrix):
  """A 3x3 rotation -> dict(matrix, quaternion_wxyz, euler_zyz_deg, axis, angle_deg); lists."""
  m = _check_matrix(matrix)
  q = conversions.matrix_to_quaternion(m).numpy()
  axis, angle = (v.numpy() for v in conversions.matrix_to_axis_angle(m))
  euler = np.degrees(matrix_to_euler_zyz(m).numpy())
  return {'matrix': m.tolist(), 'quaternion_wxyz': q.tolist(), 'euler_zyz_deg': euler.tolist(),
          'axis': axis.tolist(), 'angle_deg': float(np.degrees(angle))}


def parse_floats(text, count, name):
  """'1, 2, 3' -> float64 [count]; a ValueError naming the flag `name` otherwise."""
  try:
    values = [float(v) for v in str(text).replace(' ', '').split(',') if v != '']
  except ValueError as e:
    raise ValueError(f'--{name}={text!r}: expected {count} comma-separated numbers') from e
  if len(values) != count:
    raise ValueError(f'--{name}={text!r}: expected {count} comma-separated numbers, '
                     f'got {len(values)}')
  return np.array(values, np.float64)


def rotation_from_flags(euler_zyz_deg=None, quaternion_wxyz=None, axis_angle_deg=None):
  """Exactly one textual rotation -> float64 3x3 matrix.

  Args:
    euler_zyz_deg: 'a,b,c' ZYZ Euler angles in degrees.
    quaternion_wxyz: 'w,x,y,z' (normalised here; must not be zero).
    axis_angle_deg: 'x,y,z,angle': axis (normalised here) and angle in degrees.
  """
  given = {k: v for k, v in (('euler_zyz_deg', euler_zyz_deg), ('quaternion', quaternion_wxyz),
                             ('axis_angle_deg', axis_angle_deg)) if v not in (None, '')}
  if len(given) != 1:
    raise ValueError('give exactly one of --euler_zyz_deg, --quaternion, --axis_angle_deg; got '
                     f'{sorted(given) or "none"}')
  (name, text), = given.items()
  if name == 'euler_zyz_deg':
    return euler_zyz_to_matrix(np.radians(parse_floats(text, 3, name))).numpy()
  if name == 'quaternion':
    q = parse_floats(text, 4, name)
    if np.linalg.norm(q) < 1e-12:
      raise ValueError(f'--quaternion={text!r}: the zero quaternion is not a rotation')
    return conversions.quaternion_to_matrix(q).numpy()
  values = parse_floats(text, 4, name)
  axis = values[:3]
  if np.linalg.norm(axis) < 1e-12:
    raise ValueError(f'--axis_angle_deg={text!r}: the axis must not be zero')
  return conversions.axis_angle_to_matrix(axis, np.radians(values[3])).numpy()
