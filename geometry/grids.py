"""Driscoll-Healy sampling of the sphere and the SOFT sampling of SO(3).

A spherical map of bandwidth `B` is an array `[..., 2B, 2B, C]`: rows are colatitudes
`beta_j = pi (2j + 1) / (4B)` from north to south, columns are longitudes `alpha_k = 2 pi k / (2B)`.
No sample sits on a pole. The SO(3) grid of bandwidth `B` uses the same `beta_j` and
`alpha_k = gamma_k = 2 pi k / (2B)`.

Everything here is numpy float64 and cached per bandwidth: these are tables, built once.
"""
import functools

import numpy as np


def _check_bandwidth(bandwidth):
  if int(bandwidth) != bandwidth or bandwidth < 1:
    raise ValueError(f'bandwidth must be a positive integer, got {bandwidth!r}')
  return int(bandwidth)


@functools.lru_cache(maxsize=None)
def sphere_grid(bandwidth):
  """Colatitudes and longitudes of the Driscoll-Healy grid.

  Returns:
    (beta [2B], alpha [2B]) float64 arrays, read-only.
  """
  b = _check_bandwidth(bandwidth)
  j = np.arange(2 * b)
  beta = np.pi * (2 * j + 1) / (4 * b)
  alpha = 2 * np.pi * j / (2 * b)
  beta.flags.writeable = False
  alpha.flags.writeable = False
  return beta, alpha


@functools.lru_cache(maxsize=None)
def sphere_directions(bandwidth):
  """Unit vectors `x(beta_j, alpha_k)` of the grid, float64 `[2B, 2B, 3]` (rows beta, columns alpha)."""
  beta, alpha = sphere_grid(bandwidth)
  b, a = np.meshgrid(beta, alpha, indexing='ij')
  xyz = np.stack([np.sin(b) * np.cos(a), np.sin(b) * np.sin(a), np.cos(b)], axis=-1)
  xyz.flags.writeable = False
  return xyz


@functools.lru_cache(maxsize=None)
def quadrature_weights(bandwidth):
  """Exact Driscoll-Healy quadrature weights over colatitude, float64 `[2B]`.

  With these weights, `sum_j w_j sum_k f(beta_j, alpha_k)` equals the surface integral
  `int_{S^2} f dx` exactly for every function of bandwidth `B` (degree < B), and for products of two
  such functions (degree < 2B). The longitude factor `2 pi / (2B)` is folded in.
  """
  b = _check_bandwidth(bandwidth)
  beta, _ = sphere_grid(b)
  k = np.arange(b)
  # Driscoll & Healy (1994), eq. (9): weights that integrate cos(l beta) sin(beta)-type terms exactly.
  inner = np.sum(np.sin(np.outer(2 * np.arange(2 * b) + 1, 2 * k + 1) * np.pi / (4 * b)) /
                 (2 * k + 1), axis=1)
  w = (2.0 / b) * np.sin(beta) * inner  # integrates over beta in [0, pi] with the sin(beta) measure
  w = w * (2 * np.pi / (2 * b))         # longitude: plain rectangle rule, exact for trigonometric terms
  w.flags.writeable = False
  return w


@functools.lru_cache(maxsize=None)
def area_weights(bandwidth):
  """`sin(beta_j)` area weights over colatitude, float64 `[2B]`, normalised to mean 1.

  For losses on spherical maps: a weighted mean with these weights treats every area of the sphere
  alike, where a plain pixel mean would over-count the poles.
  """
  beta, _ = sphere_grid(bandwidth)
  w = np.sin(beta)
  w = w / w.mean()
  w.flags.writeable = False
  return w


@functools.lru_cache(maxsize=None)
def so3_grid(bandwidth):
  """The SOFT grid of SO(3): `(alpha [2B], beta [2B], gamma [2B])`, float64.

  A correlation volume of bandwidth `B` has shape `[..., 2B (alpha), 2B (beta), 2B (gamma)]`; the
  rotation at index `(i, j, k)` is `R(alpha_i, beta_j, gamma_k) = Rz(alpha_i) Ry(beta_j) Rz(gamma_k)`.
  """
  beta, alpha = sphere_grid(bandwidth)
  return alpha, beta, alpha
