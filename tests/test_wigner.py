"""Wigner-d recursion: closed forms, unitarity to B = 128, orthogonality in beta, derivatives, symmetry."""
import math

import numpy as np
import pytest
import tensorflow as tf

from correlation import wigner
from geometry import grids


def wigner_sum(l, m, n, beta):
  """Wigner's explicit formula for `d^l_{mn}(beta)` (an independent reference)."""
  total = 0.0
  for s in range(2 * l + 1):
    if min(l + n - s, m - n + s, l - m - s) < 0:
      continue
    total += ((-1)**(m - n + s) * math.sqrt(
        math.factorial(l + m) * math.factorial(l - m) * math.factorial(l + n) * math.factorial(l - n)) /
              (math.factorial(l + n - s) * math.factorial(s) * math.factorial(m - n + s) *
               math.factorial(l - m - s)) *
              math.cos(beta / 2)**(2 * l + n - m - 2 * s) * math.sin(beta / 2)**(m - n + 2 * s))
  return total


def test_matches_wigner_formula_for_small_degrees():
  b = 7
  beta = np.array([0.0, 0.3, 1.7, 2.9, np.pi])
  d = wigner.wigner_d_matrices(b, beta).numpy()
  ref = np.zeros_like(d)
  for i, angle in enumerate(beta):
    for l in range(b):
      for m in range(-l, l + 1):
        for n in range(-l, l + 1):
          ref[i, l, m + b - 1, n + b - 1] = wigner_sum(l, m, n, angle)
  np.testing.assert_allclose(d, ref, atol=1e-13)


def test_degree_one_closed_form():
  beta = np.linspace(0.1, 3.0, 5)
  d1 = wigner.wigner_d_matrices(2, beta).numpy()[:, 1]  # m, n in -1..1
  c, s = np.cos(beta), np.sin(beta)
  ref = np.stack([np.stack([(1 + c) / 2, s / np.sqrt(2), (1 - c) / 2], -1),
                  np.stack([-s / np.sqrt(2), c, s / np.sqrt(2)], -1),
                  np.stack([(1 - c) / 2, -s / np.sqrt(2), (1 + c) / 2], -1)], -2)
  np.testing.assert_allclose(d1, ref, atol=1e-15)


def test_unitary_at_bandwidth_128_without_overflow():
  b = 128
  beta, _ = grids.sphere_grid(b)
  d = wigner.wigner_d_matrices(b, beta[[0, 77]]).numpy()  # a near-pole and a generic colatitude
  assert np.all(np.isfinite(d))
  eye = np.eye(2 * b - 1)
  for l in (0, 1, 31, 64, 100, 127):
    block = slice(b - 1 - l, b + l)
    for i in range(2):
      dl = d[i, l][block, block]
      np.testing.assert_allclose(dl @ dl.T, eye[:2 * l + 1, :2 * l + 1], atol=1e-10)


def test_orthogonal_over_beta():
  # int_0^pi d^l_mn d^l'_mn sin(beta) dbeta = 2 / (2l+1) delta_ll', by Gauss-Legendre in cos(beta).
  b = 12
  x, w = np.polynomial.legendre.leggauss(2 * b)
  d = wigner.wigner_d_matrices(b, np.arccos(x)).numpy()  # [j, l, m, n]
  for m, n in [(0, 0), (3, -2), (5, 5), (-7, 1)]:
    values = d[:, :, m + b - 1, n + b - 1]
    gram = np.einsum('j,jl,jk->lk', w, values, values)
    l0 = max(abs(m), abs(n))
    expected = np.diag([2 / (2 * l + 1) if l >= l0 else 0.0 for l in range(b)])
    np.testing.assert_allclose(gram, expected, atol=1e-12)


def test_derivative_matches_finite_differences():
  b, h = 9, 1e-6
  beta = np.array([0.4, 1.3, 2.5])
  d = wigner.wigner_d_matrices(b, beta)
  numeric = (wigner.wigner_d_matrices(b, beta + h) - wigner.wigner_d_matrices(b, beta - h)) / (2 * h)
  np.testing.assert_allclose(wigner.wigner_d_derivative(d), numeric, atol=1e-8)
  second = wigner.wigner_d_derivative(wigner.wigner_d_derivative(d)).numpy()
  numeric2 = (wigner.wigner_d_matrices(b, beta + 1e-4) - 2 * d +
              wigner.wigner_d_matrices(b, beta - 1e-4)) / 1e-8
  np.testing.assert_allclose(second, numeric2, atol=1e-5)
  # A truncated range of n (from -2) gives the same derivative wherever its neighbours exist.
  truncated = wigner.wigner_d_matrices(b, beta, first_n=-2)
  np.testing.assert_allclose(truncated, d[..., b - 3:], atol=1e-15)
  np.testing.assert_allclose(wigner.wigner_d_derivative(truncated, first_n=-2)[..., 1:],
                             wigner.wigner_d_derivative(d)[..., b - 2:], atol=1e-14)


def test_reflection_symmetry_used_by_the_correlation():
  b = 10
  beta = np.array([0.2, 1.1])
  d = wigner.wigner_d_matrices(b, beta).numpy()
  mirrored = wigner.wigner_d_matrices(b, np.pi - beta).numpy()
  l = np.arange(b)[:, None, None]
  n = np.arange(-(b - 1), b)[None, None, :]
  np.testing.assert_allclose(mirrored, (-1.0)**(l - n) * d[:, :, ::-1, :], atol=1e-13)


def test_float32_agrees_with_float64_and_runs_in_graph():
  b = 32
  beta, _ = grids.sphere_grid(b)
  d64 = wigner.wigner_d_matrices(b, beta[::7]).numpy()
  graph = tf.function(lambda t: wigner.wigner_d_matrices(b, t), jit_compile=True)
  d32 = graph(tf.constant(beta[::7], tf.float32)).numpy()
  assert d32.dtype == np.float32
  np.testing.assert_allclose(d32, d64, atol=2e-5)


def test_rejects_orders_outside_the_bandwidth():
  with pytest.raises(ValueError, match='bandwidth'):
    wigner.wigner_d(4, [0.5], [4], [0])
  with pytest.raises(ValueError, match='orders'):
    wigner.wigner_d(4, [0.5], [1, 2], [0])
