"""The numpy SOFT baseline (benchmarks/numpy_so3.py) against brute force, scipy and its own symmetries.

Test maps are sums of von Mises-Fisher bumps `a exp(kappa mu . x)`: smooth, so their spectra beyond
degree B are negligible (< 1e-10 at kappa = 3, B = 16), and `R . f` is known in closed form
(`f(R^T x) = sum a exp(kappa (R mu) . x)`), which makes brute-force quadrature an independent check.
"""
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from scipy.special import sph_harm_y

import geometry
from benchmarks import numpy_so3

KAPPA = 3.0


def _bumps(rng, channels, count=4):
  mu = rng.standard_normal((channels, count, 3))
  mu /= np.linalg.norm(mu, axis=-1, keepdims=True)
  return mu, rng.uniform(0.5, 1.5, (channels, count))


def _vmf_map(bumps, xyz, rotation=np.eye(3)):
  """`(R . f)(x)` at points `xyz [..., 3]` -> `[..., C]` for f = sum of bumps."""
  mu, weight = bumps
  rotated_mu = mu @ rotation.T
  return np.einsum('ck,...ck->...c', weight,
                   np.exp(KAPPA * np.einsum('ckd,...d->...ck', rotated_mu, xyz)))


def _rotation(alpha, beta, gamma):
  return geometry.euler_zyz_to_matrix(np.array([alpha, beta, gamma], np.float64)).numpy()


def _full_wigner_d(l, level, bandwidth):
  """`d^l_{nm}` for all -l <= n, m <= l from a level of `wigner_d_levels` -> `[2l+1, 2l+1, nbeta]`."""
  n = np.arange(-l, l + 1)[:, None]
  m = np.arange(-l, l + 1)[None, :]
  # m < 0 from d^l_{nm} = (-1)^(n - m) d^l_{-n,-m}.
  direct = level[n + bandwidth - 1, np.abs(m)]
  mirrored = ((-1.0) ** (n - m))[..., None] * level[-n + bandwidth - 1, np.abs(m)]
  return np.where((m >= 0)[..., None], direct, mirrored)


def test_wigner_d_is_orthogonal_and_a_one_parameter_group():
  bandwidth = 12
  b1, b2 = 0.7, 1.9
  levels = numpy_so3.wigner_d_levels(bandwidth, [0.0, b1, b2, b1 + b2])
  for l, level in levels:
    d = _full_wigner_d(l, level, bandwidth)
    eye = np.eye(2 * l + 1)
    np.testing.assert_allclose(d[..., 0], eye, atol=1e-12)
    np.testing.assert_allclose(d[..., 1] @ d[..., 1].T, eye, atol=1e-12)
    # exp(-i b1 J_y) exp(-i b2 J_y) = exp(-i (b1 + b2) J_y).
    np.testing.assert_allclose(d[..., 1] @ d[..., 2], d[..., 3], atol=1e-12)


def test_harmonics_from_wigner_d_match_scipy():
  bandwidth = 10
  beta = np.linspace(0.05, 3.1, 7)
  for l, level in numpy_so3.wigner_d_levels(bandwidth, beta):
    for m in range(l + 1):
      ours = np.sqrt((2 * l + 1) / (4 * np.pi)) * level[m + bandwidth - 1, 0]
      np.testing.assert_allclose(ours, sph_harm_y(l, m, beta, 0.0).real, atol=1e-12)


def test_forward_transform_recovers_coefficients_of_scipy_harmonics():
  bandwidth = 8
  rng = np.random.default_rng(3)
  beta, alpha = geometry.sphere_grid(bandwidth)
  bb, aa = np.meshgrid(beta, alpha, indexing='ij')
  coeffs = np.zeros((bandwidth, bandwidth), np.complex128)
  signal = np.zeros_like(bb)
  for l in range(bandwidth):
    for m in range(l + 1):
      c = rng.standard_normal() + (1j * rng.standard_normal() if m else 0)
      coeffs[l, m] = c
      y = sph_harm_y(l, m, bb, aa)
      # A real map: c Y_l^m + its mirror conj(c) conj(Y_l^m) = 2 Re(c Y_l^m) for m > 0.
      signal += (c * y).real if m == 0 else 2 * (c * y).real
  ours = numpy_so3.sht_forward(signal[..., None])[..., 0]
  np.testing.assert_allclose(ours, coeffs, atol=1e-11)


def test_correlation_equals_brute_force_quadrature_at_grid_rotations():
  bandwidth = 16
  rng = np.random.default_rng(0)
  f_bumps, g_bumps = _bumps(rng, 3), _bumps(rng, 3)
  xyz = geometry.sphere_directions(bandwidth)
  volume = numpy_so3.correlate(_vmf_map(f_bumps, xyz), _vmf_map(g_bumps, xyz))
  assert volume.shape == (32, 32, 32) and volume.dtype == np.float64

  # Brute force on a finer grid, where the quadrature of these smooth products is exact to ~1e-15.
  fine = 32
  fine_xyz, weights = geometry.sphere_directions(fine), geometry.quadrature_weights(fine)
  alpha, beta, gamma = geometry.so3_grid(bandwidth)
  for i, j, k in [(0, 0, 0), (3, 7, 11), (31, 20, 5), (10, 31, 17)]:
    rotated_f = _vmf_map(f_bumps, fine_xyz, _rotation(alpha[i], beta[j], gamma[k]))
    expected = np.sum(weights[:, None, None] * rotated_f * _vmf_map(g_bumps, fine_xyz))
    assert volume[i, j, k] == pytest.approx(expected, rel=1e-11)


def test_upsampled_volume_equals_brute_force_on_the_finer_grid():
  bandwidth = 16
  rng = np.random.default_rng(1)
  f_bumps, g_bumps = _bumps(rng, 2), _bumps(rng, 2)
  xyz = geometry.sphere_directions(bandwidth)
  volume = numpy_so3.correlate(_vmf_map(f_bumps, xyz), _vmf_map(g_bumps, xyz), upsample=2)
  assert volume.shape == (64, 64, 64)
  fine_xyz, weights = geometry.sphere_directions(32), geometry.quadrature_weights(32)
  alpha, beta, gamma = geometry.so3_grid(32)
  for i, j, k in [(1, 2, 3), (63, 40, 9)]:
    rotated_f = _vmf_map(f_bumps, fine_xyz, _rotation(alpha[i], beta[j], gamma[k]))
    expected = np.sum(weights[:, None, None] * rotated_f * _vmf_map(g_bumps, fine_xyz))
    assert volume[i, j, k] == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize('upsample, index', [(1, (5, 9, 27)), (1, (30, 0, 1)), (2, (11, 40, 2))])
def test_align_recovers_a_grid_rotation_exactly(upsample, index):
  bandwidth = 16
  rng = np.random.default_rng(7)
  f_bumps = _bumps(rng, 3)
  alpha, beta, gamma = geometry.so3_grid(bandwidth * upsample)
  r0 = _rotation(alpha[index[0]], beta[index[1]], gamma[index[2]])
  xyz = geometry.sphere_directions(bandwidth)
  f, g = _vmf_map(f_bumps, xyz), _vmf_map(f_bumps, xyz, r0)
  volume = numpy_so3.correlate(f, g, upsample)
  assert np.unravel_index(volume.argmax(), volume.shape) == index
  np.testing.assert_allclose(numpy_so3.align(f, g, upsample), r0, atol=1e-12)


def test_rotating_about_z_rolls_the_volume():
  # c_{f, Rz(t) g}(R) = c_{f,g}(Rz(-t) R): alpha shifts by t. c_{Rz(t) f, g}(R) = c_{f,g}(R Rz(t)).
  bandwidth = 8
  rng = np.random.default_rng(5)
  f_bumps, g_bumps = _bumps(rng, 2), _bumps(rng, 2)
  xyz = geometry.sphere_directions(bandwidth)
  f, g = _vmf_map(f_bumps, xyz), _vmf_map(g_bumps, xyz)
  step = 2 * np.pi / (2 * bandwidth)
  base = numpy_so3.correlate(f, g)
  g_turned = _vmf_map(g_bumps, xyz, _rotation(3 * step, 0, 0))
  np.testing.assert_allclose(numpy_so3.correlate(f, g_turned), np.roll(base, 3, axis=0), atol=1e-9)
  f_turned = _vmf_map(f_bumps, xyz, _rotation(5 * step, 0, 0))
  np.testing.assert_allclose(numpy_so3.correlate(f_turned, g), np.roll(base, -5, axis=2),
                             atol=1e-9)


def test_batched_correlation_matches_one_pair_at_a_time():
  bandwidth = 8
  rng = np.random.default_rng(9)
  f = rng.standard_normal((2, 3, 16, 16, 4))
  g = rng.standard_normal((2, 3, 16, 16, 4))
  batched = numpy_so3.correlate(f, g)
  assert batched.shape == (2, 3, 16, 16, 16)
  for a in range(2):
    for b in range(3):
      np.testing.assert_allclose(batched[a, b], numpy_so3.correlate(f[a, b], g[a, b]), atol=1e-10)
  spectra = numpy_so3.cross_spectra(numpy_so3.sht_forward(f.reshape(6, 16, 16, 4)),
                                    numpy_so3.sht_forward(g.reshape(6, 16, 16, 4)))
  np.testing.assert_allclose(numpy_so3.inverse_so3(spectra, pair_chunk=4),
                             batched.reshape(6, 16, 16, 16), atol=1e-10)


def test_table_bytes_counts_the_cached_tables():
  tables = numpy_so3.wigner_d_tables(8, 8)
  expected = sum(t.nbytes for t in tables) + numpy_so3.legendre_table(8).nbytes
  assert numpy_so3.table_bytes(8) == expected


def test_bad_input_is_a_clear_error():
  with pytest.raises(ValueError, match='same shape'):
    numpy_so3.correlate(np.zeros((16, 16, 2)), np.zeros((16, 16, 3)))
  with pytest.raises(ValueError, match=r'\[\.\.\., 2B, 2B, C\]'):
    numpy_so3.correlate(np.zeros((16, 15, 2)), np.zeros((16, 15, 2)))
  with pytest.raises(ValueError, match='upsample'):
    numpy_so3.correlate(np.zeros((16, 16, 1)), np.zeros((16, 16, 1)), upsample=0)


def test_agrees_with_the_tensorflow_correlation_to_float32_precision():
  correlation = pytest.importorskip('correlation')
  if not hasattr(correlation, 'correlate'):
    pytest.skip('correlation.correlate is not available yet')
  bandwidth = 16
  rng = np.random.default_rng(11)
  xyz = geometry.sphere_directions(bandwidth)
  f = np.stack([_vmf_map(_bumps(rng, 4), xyz) for _ in range(2)]).astype(np.float32)
  g = np.stack([_vmf_map(_bumps(rng, 4), xyz) for _ in range(2)]).astype(np.float32)
  for upsample in (1, 2):
    ours = numpy_so3.correlate(f, g, upsample)
    theirs = np.asarray(correlation.correlate(f, g, upsample=upsample))
    assert theirs.shape == ours.shape
    scale = np.abs(ours).max()
    np.testing.assert_allclose(theirs / scale, ours / scale, atol=2e-5)


BENCH_PYTHON = pathlib.Path(__file__).resolve().parent.parent / '.venv-bench' / 'bin' / 'python'


@pytest.mark.slow
@pytest.mark.skipif(not BENCH_PYTHON.exists(), reason='no .venv-bench (see benchmarks/README.md)')
def test_benchmark_harness_maps_every_peer_onto_our_conventions(tmp_path):
  # The whole harness at a small size: each peer's volume, mapped to our layout, must agree with
  # numpy_so3 where the grids meet and put its argmax at R0 (s2fft: the nearest rotation of its grid).
  out = tmp_path / 'rows.json'
  script = pathlib.Path(__file__).resolve().parent.parent / 'benchmarks' / 'bench_correlation_peers.py'
  proc = subprocess.run(
      [sys.executable, str(script), '--bandwidths=8', '--channels=2', '--batches=1',
       '--peers=numpy,tf_eager,pysofft,s2fft', '--min_time=0', '--max_repeats=2',
       f'--json_output={out}'], capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  result = json.loads(out.read_text())
  if result['failures']:
    pytest.skip(f'a peer is not installed in .venv-bench: {result["failures"]}')
  rows = {row['peer']: row for row in result['rows']}
  assert set(rows) == {'numpy', 'tf_eager', 'pysofft', 's2fft'}
  for peer in ('numpy', 'pysofft', 's2fft'):
    assert rows[peer]['max_rel_diff'] < 1e-12, peer
  assert rows['tf_eager']['max_rel_diff'] < 1e-5
  for peer in ('numpy', 'tf_eager', 'pysofft'):
    assert rows[peer]['argmax_error_deg'] < 1e-3, peer
  # s2fft's alpha/gamma grid has 2B - 1 steps: its best rotation is within half a step of R0's angles.
  assert rows['s2fft']['argmax_error_deg'] < 360 / (2 * 8 - 1)
