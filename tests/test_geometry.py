"""Grids and rotation helpers: properties from docs/conventions.md, against independent formulas."""
import numpy as np
import pytest

import geometry


def test_sphere_grid_matches_driscoll_healy_definition():
  beta, alpha = geometry.sphere_grid(4)
  np.testing.assert_allclose(beta, [np.pi * (2 * j + 1) / 16 for j in range(8)])
  np.testing.assert_allclose(alpha, [2 * np.pi * k / 8 for k in range(8)])
  assert beta.min() > 0 and beta.max() < np.pi  # no sample on a pole


def test_sphere_directions_are_unit_vectors_in_row_beta_column_alpha_layout():
  xyz = geometry.sphere_directions(8)
  assert xyz.shape == (16, 16, 3)
  np.testing.assert_allclose(np.linalg.norm(xyz, axis=-1), 1.0, atol=1e-12)
  beta, alpha = geometry.sphere_grid(8)
  np.testing.assert_allclose(xyz[3, 5], [np.sin(beta[3]) * np.cos(alpha[5]),
                                         np.sin(beta[3]) * np.sin(alpha[5]), np.cos(beta[3])])
  assert xyz[0, 0, 2] > 0 > xyz[-1, 0, 2]  # row 0 is the north


@pytest.mark.parametrize('bandwidth', [2, 8, 32])
def test_quadrature_integrates_polynomials_of_degree_below_2b_exactly(bandwidth):
  xyz = geometry.sphere_directions(bandwidth)
  w = geometry.quadrature_weights(bandwidth)
  rng = np.random.default_rng(bandwidth)
  # Monomials x^a y^b z^c with a + b + c < 2B, integrated analytically over the sphere:
  # integral = 2 G(a') G(b') G(c') / G(a' + b' + c') with a' = (a + 1) / 2, zero if any exponent is odd.
  from math import gamma
  for _ in range(20):
    a, b, c = rng.integers(0, 2 * bandwidth, size=3)
    while a + b + c >= 2 * bandwidth:
      a, b, c = a // 2, b // 2, c // 2
    f = xyz[..., 0] ** a * xyz[..., 1] ** b * xyz[..., 2] ** c
    numeric = np.sum(w[:, None] * f)
    if a % 2 or b % 2 or c % 2:
      exact = 0.0
    else:
      ap, bp, cp = (a + 1) / 2, (b + 1) / 2, (c + 1) / 2
      exact = 2 * gamma(ap) * gamma(bp) * gamma(cp) / gamma(ap + bp + cp)
    assert numeric == pytest.approx(exact, abs=1e-12)


def test_area_weights_are_sin_beta_with_mean_one():
  beta, _ = geometry.sphere_grid(16)
  w = geometry.area_weights(16)
  assert w.mean() == pytest.approx(1.0)
  np.testing.assert_allclose(w / w.max(), np.sin(beta) / np.sin(beta).max())


def test_so3_grid_shares_sphere_grid_angles():
  alpha, beta, gamma = geometry.so3_grid(8)
  np.testing.assert_array_equal(alpha, gamma)
  np.testing.assert_array_equal(beta, geometry.sphere_grid(8)[0])


def test_bad_bandwidth_is_a_clear_error():
  with pytest.raises(ValueError, match='bandwidth'):
    geometry.sphere_grid(0)


def test_euler_zyz_matches_the_product_of_elementary_rotations():
  a, b, c = 0.3, 1.1, -2.0
  rz = lambda t: np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
  ry = lambda t: np.array([[np.cos(t), 0, np.sin(t)], [0, 1, 0], [-np.sin(t), 0, np.cos(t)]])
  np.testing.assert_allclose(geometry.euler_zyz_to_matrix(np.array([a, b, c])),
                             rz(a) @ ry(b) @ rz(c), atol=1e-12)


def test_euler_round_trip_including_gimbal_lock():
  rotations = geometry.random_rotations(500, seed=1).astype(np.float64)
  poles = geometry.euler_zyz_to_matrix(np.array([[0.4, 0.0, 1.3], [2.0, np.pi, 0.5]]))
  rotations = np.concatenate([rotations, poles.numpy()])
  angles = geometry.matrix_to_euler_zyz(rotations).numpy()
  assert np.all((angles[:, 1] >= 0) & (angles[:, 1] <= np.pi))
  np.testing.assert_allclose(geometry.euler_zyz_to_matrix(angles), rotations, atol=1e-6)


def test_random_rotations_are_proper_deterministic_and_haar():
  r = geometry.random_rotations(20000, seed=7)
  assert r.dtype == np.float32 and r.shape == (20000, 3, 3)
  np.testing.assert_allclose(r @ r.transpose(0, 2, 1), np.broadcast_to(np.eye(3), r.shape),
                             atol=1e-5)
  np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-5)
  np.testing.assert_array_equal(r[:5], geometry.random_rotations(5, seed=7))
  assert not np.allclose(r[:5], geometry.random_rotations(5, seed=8))
  # Haar: the rotation angle has density (1 - cos t) / pi on [0, pi]; its CDF is (t - sin t) / pi.
  angle = np.sort(geometry.angular_distance(r, np.eye(3, dtype=np.float32), degrees=False).numpy())
  empirical = np.arange(1, len(angle) + 1) / len(angle)
  assert np.max(np.abs(empirical - (angle - np.sin(angle)) / np.pi)) < 0.015  # KS, n = 20000
  # Uniform Euler angles would fail the same test: the statistic sees the difference.
  euler = np.random.default_rng(0).uniform([0, 0, 0], [2 * np.pi, np.pi, 2 * np.pi], (20000, 3))
  angle_e = np.sort(geometry.angular_distance(geometry.euler_zyz_to_matrix(euler), np.eye(3),
                                              degrees=False).numpy())
  assert np.max(np.abs(empirical - (angle_e - np.sin(angle_e)) / np.pi)) > 0.05


def test_angular_distance_of_a_known_rotation_and_symmetry():
  r1 = geometry.euler_zyz_to_matrix(np.array([0.2, 0.0, 0.0]))
  r2 = geometry.euler_zyz_to_matrix(np.array([0.9, 0.0, 0.0]))
  assert float(geometry.angular_distance(r1, r2)) == pytest.approx(np.degrees(0.7), abs=1e-6)
  r = geometry.random_rotations(10, seed=3)
  np.testing.assert_allclose(geometry.angular_distance(r, r[::-1]),
                             geometry.angular_distance(r[::-1], r), atol=1e-3)
  np.testing.assert_allclose(geometry.angular_distance(r, r), 0.0, atol=0.05)


def test_quaternion_to_matrix_rotates_about_its_axis():
  t = 0.8
  q = np.array([np.cos(t / 2), 0, 0, np.sin(t / 2)])  # about +z by t, (w, x, y, z)
  np.testing.assert_allclose(geometry.quaternion_to_matrix(q), geometry.rotation_z(t), atol=1e-12)


# tensorflow-graphics (geometry.conversions) against our formulas.

def _haar(n=200, seed=7):
  return geometry.random_rotations(n, seed).astype(np.float64)


def test_tfg_quaternions_match_our_formula_both_ways():
  from geometry import conversions  # pylint: disable=g-import-not-at-top
  q = np.random.default_rng(0).normal(size=(100, 4))
  np.testing.assert_allclose(conversions.quaternion_to_matrix(q), geometry.quaternion_to_matrix(q),
                             atol=1e-12)
  r = _haar()
  back = conversions.matrix_to_quaternion(r).numpy()
  assert np.all(back[:, 0] >= 0)
  np.testing.assert_allclose(np.linalg.norm(back, axis=-1), 1.0, atol=1e-12)
  np.testing.assert_allclose(geometry.quaternion_to_matrix(back), r, atol=1e-6)  # r: float32


def test_tfg_axis_angle_matches_rodrigues_including_half_turns():
  from geometry import conversions  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(1)
  axis = rng.normal(size=(50, 3))
  axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
  angle = np.concatenate([rng.uniform(0, np.pi, 47), [np.pi, np.pi - 1e-5, 0.0]])
  k = np.zeros((50, 3, 3))
  k[:, 0, 1], k[:, 0, 2], k[:, 1, 2] = -axis[:, 2], axis[:, 1], -axis[:, 0]
  k -= np.swapaxes(k, 1, 2)
  rodrigues = (np.eye(3) + np.sin(angle)[:, None, None] * k +
               (1 - np.cos(angle))[:, None, None] * k @ k)
  np.testing.assert_allclose(conversions.axis_angle_to_matrix(axis, angle), rodrigues, atol=1e-12)
  got_axis, got_angle = (v.numpy() for v in conversions.matrix_to_axis_angle(rodrigues))
  np.testing.assert_allclose(got_angle, angle, atol=1e-6)
  np.testing.assert_allclose(conversions.axis_angle_to_matrix(got_axis, got_angle), rodrigues,
                             atol=1e-6)
  np.testing.assert_allclose(got_axis[-1], [0, 0, 1])  # the identity's conventional axis


def test_tfg_euler_is_xyz_only_and_our_zyz_is_its_single_axis_composition():
  """The evidence for docs/deviations.md: tfg's from_euler([a, b, c]) is Rz(c) Ry(b) Rx(a), not
  ZYZ; our ZYZ equals the product of tfg's single-axis rotations."""
  from geometry import conversions  # pylint: disable=g-import-not-at-top
  a, b, c = 0.3, 1.1, -2.0
  rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
  xyz = conversions.euler_xyz_to_matrix([a, b, c]).numpy()
  np.testing.assert_allclose(xyz, geometry.rotation_z(c) @ geometry.rotation_y(b) @ rx, atol=1e-12)
  assert np.abs(xyz - geometry.euler_zyz_to_matrix([a, b, c]).numpy()).max() > 0.1
  single = lambda axis, t: conversions.euler_xyz_to_matrix(np.eye(3)[axis] * t).numpy()
  np.testing.assert_allclose(geometry.euler_zyz_to_matrix([a, b, c]),
                             single(2, a) @ single(1, b) @ single(2, c), atol=1e-12)


def test_importing_the_project_does_not_import_tensorflow_addons():
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  packages = ('import sys, correlation, datasets, evaluation, geometry, models, pipeline\n'
              'import geometry.conversions, evaluation.rotation_formats, evaluation.commands\n'
              'import models.student_task, models.teacher_task, models.training\n')
  report = ("print(sorted(m for m in sys.modules if m.startswith('tensorflow_addons')))\n"
            "print('tensorflow_graphics' in sys.modules)")
  root = str(__import__('pathlib').Path(__file__).resolve().parent.parent)
  for programs in ('import evaluate, main\n', 'import train\n'):  # main and train share flags
    out = subprocess.run([sys.executable, '-c', packages + programs + report], capture_output=True,
                         text=True, check=True, cwd=root)
    lines = out.stdout.strip().splitlines()
    assert lines[-2] == '[]' and lines[-1] == 'True'
