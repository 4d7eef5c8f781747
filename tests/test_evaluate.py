"""The relative-pose experiment and the view-synthesis evaluation on analytic maps of known pose.

Embeddings here are sums of von Mises-Fisher bumps exp(kappa (mu . x - 1)), evaluated exactly at
R^T x on the grid: the map of a view at rotation R is exactly R . f, so align must recover the
relative pose R_j R_i^T and every error of the pipeline (pairing, orientation, composition order,
statistics) shows up as a large angle.
"""
import csv
import os
import re

import numpy as np
import pytest
import tensorflow as tf

import evaluate
import correlation
from evaluation import alignment, commands, degrees, embeddings_export, plots, results, synthesis
from evaluation.embeddings_io import load_embeddings, save_embeddings
from geometry import random_rotations, rotation_y, sphere_directions

BANDWIDTH = 16
KAPPA = 8.0


def vmf_maps(rotations, centers, bandwidth=BANDWIDTH, kappa=KAPPA):
  """Maps `(R . f)(x) = f(R^T x)` of f = sum of vMF bumps, per rotation.

  Args:
    rotations: `[N, 3, 3]`.
    centers: `[N, C, K, 3]` unit bump centres per row (one object per row) and channel.

  Returns:
    float32 `[N, 2B, 2B, C]`.
  """
  x = sphere_directions(bandwidth)
  rotated_x = np.einsum('hwi,nij->nhwj', x, np.asarray(rotations, np.float64))  # rows of R^T x
  return np.exp(kappa * (np.einsum('nhwj,nckj->nhwck', rotated_x, centers) - 1)).sum(-1).astype(
      np.float32)


def random_centers(n_objects, channels=3, bumps=3, seed=0):
  c = np.random.default_rng(seed).standard_normal((n_objects, channels, bumps, 3))
  return c / np.linalg.norm(c, axis=-1, keepdims=True)


def analytic_embeddings(n_instances=3, views=4, n_classes=1, seed=0):
  """An embeddings file's arrays: per instance an analytic object, views at Haar rotations.

  Instances of one class share their bump centres (like aligned shapes of one category), so that
  different-instance pairs are also solvable; `target` is a second, independent set of bumps.
  """
  n = n_instances * views
  instance = np.repeat([f'obj{k}' for k in range(n_instances)], views)
  label = np.repeat(np.arange(n_instances) % n_classes, views)
  rot = random_rotations(n, seed)
  fmap_centers = random_centers(n_classes, seed=seed + 1)[label]
  target_centers = random_centers(n_classes, channels=2, seed=seed + 2)[label]
  return {'fmap': vmf_maps(rot, fmap_centers), 'target': vmf_maps(rot, target_centers), 'rot': rot,
          'instance': instance, 'label': label}


def test_relative_rotations_and_statistics_against_explicit_formulas():
  rot = random_rotations(5, 3).astype(np.float64)
  pairs = np.array([[0, 1], [3, 2], [4, 0]])
  expected = np.stack([rot[j] @ rot[i].T for i, j in pairs])
  np.testing.assert_allclose(alignment.relative_rotations(rot, pairs), expected, atol=1e-12)
  errors = np.array([1.0, 5.0, 9.99, 10.0, 29.0, 31.0, 179.0])
  stats = alignment.summarize_errors(errors)
  assert stats['n'] == 7
  assert stats['median_deg'] == pytest.approx(10.0)
  assert stats['mean_deg'] == pytest.approx(errors.sum() / 7)
  assert stats['acc10'] == pytest.approx(100 * 3 / 7)
  assert stats['acc30'] == pytest.approx(100 * 5 / 7)
  # Angular distance: a rotation by t about any axis is t degrees from the identity.
  angles = np.radians([0.0, 30.0, 90.0, 179.0])
  r = rotation_y(angles).numpy()
  np.testing.assert_allclose(alignment.rotation_errors_deg(r, np.eye(3)), np.degrees(angles),
                             atol=1e-5)


def test_errors_by_category():
  ids = np.array([b'chair/0001', b'chair/0002', b'mug/0001', b'mug/0001', b'mug/0003', b'plain'])
  categories = alignment.category_of(ids)
  assert categories.tolist() == ['chair', 'chair', 'mug', 'mug', 'mug', 'plain']
  assert alignment.category_of(ids.astype(str)).tolist() == categories.tolist()
  errors = np.array([5.0, 170.0, 1.0, 2.0, 160.0, 40.0])
  stats = alignment.summarize_by_group(errors, categories)
  assert list(stats) == ['chair', 'mug', 'plain']
  assert stats['chair']['n'] == 2 and stats['chair']['median_deg'] == pytest.approx(87.5)
  assert stats['chair']['sym_median_deg'] == pytest.approx(7.5)  # 5 and 180 - 170
  assert stats['mug']['flipped'] == pytest.approx(100 / 3) and stats['mug']['acc10'] == pytest.approx(
      200 / 3)
  assert stats['plain']['flipped'] == 0.0
  with pytest.raises(ValueError, match='differ'):
    alignment.summarize_by_group(errors, categories[:2])


def test_symmetric_fold_is_exact_for_a_flip_about_the_error_axis():
  errors = np.array([0.0, 20.0, 90.0, 160.0, 180.0])
  np.testing.assert_allclose(alignment.fold_symmetric(errors), [0, 20, 90, 20, 0])
  # The docstring's claim: distance to the flipped answer T S is >= 180 - e, equal when the
  # flip axis is the error axis. Checked by brute force on random rotations.
  rng = np.random.default_rng(0)
  true = random_rotations(50, 1).astype(np.float64)
  estimate = random_rotations(50, 2).astype(np.float64)
  e = alignment.rotation_errors_deg(estimate, true)
  for _ in range(3):
    axis = rng.standard_normal(3)
    axis /= np.linalg.norm(axis)
    flip = 2 * np.outer(axis, axis) - np.eye(3)  # 180 degrees about `axis`
    d_flip = alignment.rotation_errors_deg(estimate, true @ flip)
    assert np.all(d_flip >= 180 - e - 1e-6)
  error_rot = estimate @ np.swapaxes(true, 1, 2)
  w, v = np.linalg.eig(error_rot[0])
  axis = np.real(v[:, np.argmin(np.abs(w - 1))])
  flip_world = 2 * np.outer(axis, axis) - np.eye(3)   # flip about the error axis, in world frame
  d = alignment.rotation_errors_deg(estimate[0], flip_world @ true[0])
  assert d == pytest.approx(180 - e[0], abs=1e-4)


@pytest.mark.parametrize('mode', ['fmap', 'target'])
def test_alignment_recovers_known_relative_poses(mode):
  data = analytic_embeddings()
  from evaluation.pairs import make_pairs
  pairs = make_pairs(data['instance'], data['rot'], 'same')
  run = alignment.run_alignment(data, pairs, mode=mode, batch_size=8, progress=False)
  assert run['stats']['n'] == 3 * 6
  assert run['stats']['median_deg'] < 0.5
  assert run['stats']['acc10'] == 100.0
  # The estimate must be R_j R_i^T, not its transpose or R_i R_j^T: a sign/order slip is large.
  wrong = alignment.rotation_errors_deg(np.swapaxes(run['estimated'], 1, 2), run['true'])
  assert np.median(wrong) > 20


def test_odd_degree_weight_applies_to_the_students_maps_only():
  data = analytic_embeddings()
  from evaluation.pairs import make_pairs
  pairs = make_pairs(data['instance'], data['rot'], 'same')
  run = lambda mode, w: alignment.run_alignment(data, pairs, mode=mode, batch_size=8,
                                                progress=False, odd_degree_weight=w)
  weighted = run('fmap', 2.0)
  assert weighted['stats']['median_deg'] < 0.5   # the weighting keeps the maps equivariant
  seen = []

  def recording_align(f, g, **options):
    seen.append(np.asarray(f))
    return correlation.align(f, g, **options)

  for mode in ('fmap', 'target'):
    alignment.run_alignment(data, pairs[:2], mode=mode, align_fn=recording_align, progress=False,
                            odd_degree_weight=0.0)
  # Weight 0 leaves the even degrees: the student's maps became antipodally symmetric.
  np.testing.assert_allclose(seen[0], degrees.antipodal(seen[0]).numpy(), atol=1e-6)
  assert np.abs(data['fmap'][pairs[:2, 0]] - seen[0]).max() > 0.1
  np.testing.assert_array_equal(seen[1], data['target'][pairs[:2, 0]])


def test_graph_mode_alignment_matches_eager():
  # Large experiments run align inside a tf.function; it must give the eager answer, also with
  # a padded last batch (5 pairs in batches of 3).
  data = analytic_embeddings(n_instances=1, views=4)
  pairs = np.array([[0, 1], [0, 2], [1, 3], [2, 3], [3, 0]])
  eager = alignment.align_pairs(data['fmap'], pairs, batch_size=3, progress=False, graph=False)
  graph = alignment.align_pairs(data['fmap'], pairs, batch_size=3, progress=False, graph=True)
  np.testing.assert_allclose(graph, eager, atol=1e-4)
  true = alignment.relative_rotations(data['rot'], pairs)
  assert alignment.rotation_errors_deg(graph, true).max() < 0.5


def test_align_command_end_to_end_csv_records_plot_and_row_order(tmp_path, capsys):
  data = analytic_embeddings(n_instances=3, views=3, n_classes=1)
  path = tmp_path / 'emb.npz'
  save_embeddings(path, **data)
  csv_path = tmp_path / 'out' / 'res.csv'
  rows, table = commands.align_command(str(path), pair_kinds=('same', 'diff'),
                                       modes=('fmap', 'target'), results_csv=str(csv_path),
                                       batch_size=16, progress=False)
  assert len(rows) == 4
  for row in rows:
    assert row['median_deg'] < 0.5 and row['acc30'] == 100.0
  assert {(r['mode'], r['pairs'], r['n']) for r in rows} == {
      ('fmap', 'same', 9), ('target', 'same', 9), ('fmap', 'diff', 27), ('target', 'diff', 27)}
  assert table.splitlines()[0].startswith('| name | mode | pairs | n | median_deg')
  with open(csv_path, newline='') as f:
    lines = list(csv.reader(f))
  assert lines[0] == list(results.ALIGNMENT_HEADER)
  assert len(lines) == 5
  records = np.load(tmp_path / 'out' / 'emb.fmap.diff.pairs.npz')
  assert records['error_deg'].shape == (27,)
  assert np.all(records['instance_1'] != records['instance_2'])
  assert (tmp_path / 'out' / 'emb.cdf.png').stat().st_size > 1000

  # Shuffled rows: the same pairs of views, hence the same errors.
  perm = np.random.default_rng(5).permutation(len(data['rot']))
  save_embeddings(tmp_path / 'shuffled.npz', **{k: v[perm] for k, v in data.items()})
  shuffled, _ = commands.align_command(str(tmp_path / 'shuffled.npz'), pair_kinds=('same',),
                                       results_csv=str(csv_path), progress=False, max_pairs=5,
                                       seed=1)
  original, _ = commands.align_command(str(path), pair_kinds=('same',), results_csv=str(csv_path),
                                       progress=False, max_pairs=5, seed=1)
  for key in ('n', 'median_deg', 'mean_deg', 'acc10'):
    assert shuffled[0][key] == pytest.approx(original[0][key], abs=1e-4)
  a = np.load(tmp_path / 'out' / 'shuffled.fmap.same.pairs.npz')
  b = np.load(tmp_path / 'out' / 'emb.fmap.same.pairs.npz')
  np.testing.assert_allclose(a['true'], b['true'], atol=1e-6)
  np.testing.assert_array_equal(a['instance_1'], b['instance_1'])


def test_symmetric_option_folds_a_flip(tmp_path):
  # One view per instance is embedded as (S R) . f while its recorded rotation is R, with S a
  # 180-degree flip about the world z axis: every pair with that view is off by exactly S.
  data = analytic_embeddings(n_instances=2, views=4)
  flip = np.diag([-1.0, -1.0, 1.0])  # 180 degrees about z
  rot_flipped = data['rot'].astype(np.float64).copy()
  flipped_rows = np.arange(len(rot_flipped)) % 4 == 3
  rot_flipped[flipped_rows] = flip @ rot_flipped[flipped_rows]
  centers = random_centers(1, seed=1)[np.zeros(len(rot_flipped), int)]
  data['fmap'] = vmf_maps(rot_flipped, centers)
  path = tmp_path / 'flip.npz'
  save_embeddings(path, **data)
  raw, _ = commands.align_command(str(path), results_csv=str(tmp_path / 'r.csv'), progress=False)
  sym, _ = commands.align_command(str(path), results_csv=str(tmp_path / 'r.csv'), progress=False,
                                  symmetric=True)
  records = np.load(tmp_path / 'flip+sym.fmap.same.pairs.npz')
  involved = flipped_rows[records['pairs']].any(axis=1)
  # Pairs with one flipped view: the estimate is off by exactly the flip (180 degrees)...
  np.testing.assert_allclose(records['raw_error_deg'][involved], 180.0, atol=1.0)
  np.testing.assert_allclose(records['raw_error_deg'][~involved], 0.0, atol=1.0)
  # ...and the symmetric error forgives it.
  assert np.all(records['error_deg'] < 1.0)
  assert raw[0]['mean_deg'] == pytest.approx(180.0 * involved.mean(), abs=1.0)
  assert sym[0]['median_deg'] < 1.0 and sym[0]['name'] == 'flip+sym'


def test_results_csv_appends_and_refuses_foreign_files(tmp_path):
  path = tmp_path / 'r.csv'
  row = dict(name='a', mode='fmap', pairs='same', n=3, median_deg=1.5, mean_deg=2.0, acc10=100.0,
             acc30=100.0)
  results.append_row(path, row)
  results.append_row(path, dict(row, name='b'))
  text = path.read_text()
  assert text.splitlines()[0] == 'name,mode,pairs,n,median_deg,mean_deg,acc10,acc30'
  assert [r['name'] for r in results.read_rows(path)] == ['a', 'b']
  foreign = tmp_path / 'other.csv'
  foreign.write_text('x,y\n1,2\n')
  with pytest.raises(ValueError, match='other.csv'):
    results.append_row(foreign, row)
  assert foreign.read_text() == 'x,y\n1,2\n'
  with pytest.raises(ValueError, match='lacks columns'):
    results.append_row(path, {'name': 'c'})
  assert len(results.read_rows(path)) == 2
  assert not [p for p in os.listdir(tmp_path) if p.startswith('.tmp-')]


def test_embeddings_file_validation_names_the_file(tmp_path):
  data = analytic_embeddings(n_instances=1, views=2)
  bad = tmp_path / 'bad.npz'
  np.savez(bad, fmap=data['fmap'][:, :, :-1], rot=data['rot'], instance=data['instance'])
  with pytest.raises(ValueError, match='bad.npz.*2B, 2B'):
    load_embeddings(bad)
  np.savez(bad, fmap=data['fmap'], rot=data['rot'][:1], instance=data['instance'])
  with pytest.raises(ValueError, match='rows'):
    load_embeddings(bad)
  np.savez(bad, fmap=data['fmap'], instance=data['instance'])
  with pytest.raises(ValueError, match='missing "rot"'):
    load_embeddings(bad)
  (tmp_path / 'junk.npz').write_bytes(b'not a zip')
  with pytest.raises(ValueError, match='junk.npz'):
    load_embeddings(tmp_path / 'junk.npz')
  with pytest.raises(ValueError, match='no such file'):
    load_embeddings(tmp_path / 'missing.npz')
  np.savez(bad, fmap=data['fmap'], rot=data['rot'], instance=data['instance'])
  with pytest.raises(ValueError, match='no "target"'):
    commands.align_command(str(bad), modes=('target',), progress=False)
  with pytest.raises(ValueError, match='labels'):
    commands.align_command(str(bad), pair_kinds=('diff',), progress=False)


def test_evaluate_cli_in_process(tmp_path, capsys):
  save_embeddings(tmp_path / 'e.npz', **analytic_embeddings(n_instances=2, views=3))
  code = evaluate.run(['evaluate.py', f'--embeddings={tmp_path / "e.npz"}', '--mode=fmap,target',
                       '--noprogress', '--upsample=2', '--normalize'])
  assert code == 0
  out = capsys.readouterr().out
  assert '| e+norm+up2 | fmap | same | 6 |' in out
  rows = results.read_rows(tmp_path / 'results.csv')
  assert [r['mode'] for r in rows] == ['fmap', 'target']
  assert all(float(r['median_deg']) < 1.0 for r in rows)
  with pytest.raises(evaluate.app.UsageError, match='--mode'):
    evaluate.run(['evaluate.py', f'--embeddings={tmp_path / "e.npz"}', '--mode=student'])
  with pytest.raises(evaluate.app.UsageError, match='--embeddings'):
    evaluate.run(['evaluate.py', '--pairs=same'])
  assert evaluate.run(['evaluate.py', f'--embeddings={tmp_path / "none.npz"}']) == 1
  assert 'none.npz: no such file' in capsys.readouterr().err
  from datasets import builders  # --data_config's key=value form
  assert builders.parse_key_values('bandwidth=16,scale=0.5,source=folder,force=True') == {
      'bandwidth': 16, 'scale': 0.5, 'source': 'folder', 'force': True}
  with pytest.raises(ValueError, match='key=value'):
    builders.parse_key_values('bandwidth')


def test_error_cdf_and_image_grid(tmp_path):
  x, y = plots.empirical_cdf([3.0, 1.0, 2.0, 2.0])
  np.testing.assert_array_equal(x, [1, 2, 2, 3])
  np.testing.assert_allclose(y, [0.25, 0.5, 0.75, 1.0])
  columns = [np.full((2, 4, 5, 1), v, np.float32) for v in (0.0, 0.5, 1.0)]
  grid = plots.image_grid(columns, scale=2, gap=1)
  assert grid.shape == (2 * (8 + 1) + 1, 3 * (10 + 1) + 1)
  assert grid[1, 1] == 0 and grid[1, 1 + 11] == 128 and grid[1, 1 + 22] == 255
  plots.save_image_grid(tmp_path / 'g.png', columns)
  from PIL import Image
  assert Image.open(tmp_path / 'g.png').size == (3 * (10 + 2) + 2, 2 * (8 + 2) + 2)


def test_image_metrics_against_numpy():
  rng = np.random.default_rng(0)
  truth = rng.uniform(size=(3, 16, 16, 1)).astype(np.float32)
  noisy = np.clip(truth + rng.normal(0, 0.1, truth.shape), 0, 1).astype(np.float32)
  m = synthesis.image_metrics(noisy, truth)
  np.testing.assert_allclose(m['l1'], np.abs(noisy - truth).mean(axis=(1, 2, 3)), rtol=1e-5)
  mse = ((noisy.astype(np.float64) - truth) ** 2).mean(axis=(1, 2, 3))
  np.testing.assert_allclose(m['psnr_db'], 10 * np.log10(1 / mse), rtol=1e-4)
  same = synthesis.image_metrics(truth, truth)
  np.testing.assert_allclose(same['ssim'], 1.0, atol=1e-5)
  assert np.all(m['ssim'] < 0.99)
  assert np.all(np.isinf(same['psnr_db']))
  assert synthesis.summarize_metrics(dict(same, l1=same['l1']))['psnr_db'] == float('inf')


class LookupSynthesizer:
  """Stand-in decoder: the stored image whose embedding is nearest (L2) to the input map."""

  def __init__(self, maps, images):
    self.maps = maps.reshape(len(maps), -1).astype(np.float64)
    self.images = images

  def __call__(self, embeddings):
    flat = np.asarray(embeddings, np.float64).reshape(len(embeddings), -1)
    d = ((flat[:, None] - self.maps[None]) ** 2).sum(-1)
    return self.images[np.argmin(d, axis=1)]


def test_synthesis_command_with_a_lookup_decoder(tmp_path):
  # Views are random textures; the decoder maps an embedding to the view with the nearest
  # embedding. Rotating the embedding of view 1 by R2 R1^T must land on view 2 exactly.
  data = analytic_embeddings(n_instances=2, views=3)
  # One instance's bumps differ from the other's so the lookup cannot confuse instances.
  data['fmap'] = vmf_maps(data['rot'], random_centers(2, seed=9)[np.repeat([0, 1], 3)])
  data['image'] = np.random.default_rng(0).uniform(size=(6, 16, 16, 1)).astype(np.float32)
  save_embeddings(tmp_path / 's.npz', **data)
  decoder = LookupSynthesizer(data['fmap'], data['image'])
  rows, table = commands.synthesis_command(str(tmp_path / 's.npz'), decoder, grid_rows=3)
  assert rows[0]['n'] == 6 and rows[0]['l1'] < 1e-6 and rows[0]['ssim'] > 0.9999
  assert '| s | fmap | same | 6 |' in table
  assert results.read_rows(tmp_path / 'synthesis_results.csv')[0]['psnr_db'] == 'inf'
  assert (tmp_path / 's.fmap.same.grid.png').exists()
  # Without the rotation (identity instead of R2 R1^T) the decoder returns the wrong views.
  wrong = synthesis.rotate_and_decode(data['fmap'][[0, 1]], np.eye(3), decoder)
  assert np.abs(wrong - data['image'][[1, 2]]).mean() > 0.1


def test_export_embeddings_from_a_dataset(tmp_path):
  n, size = 5, 8
  rng = np.random.default_rng(0)
  rot = random_rotations(n, 0)
  images = rng.uniform(size=(n, size, size, 1)).astype(np.float32)
  spheres = rng.uniform(size=(n, 2 * BANDWIDTH, 2 * BANDWIDTH, 2)).astype(np.float32)
  dataset = tf.data.Dataset.from_tensor_slices({
      'image': images, 'sphere': spheres, 'rotation': rot, 'label': np.arange(n) % 2,
      'instance': np.array([b'a', b'a', b'b', b'b', b'c']), 'view': np.arange(n)})
  # Stand-ins with an output each example can be traced back to (its value at [0, 0, 0]); the
  # ramp makes the maps non-constant, which export requires (models_io.check_embedding).
  ramp = 1.0 + np.linspace(0.0, 1.0, 2 * BANDWIDTH)[None, :, None, None]
  embedder = lambda v: np.repeat(v.mean(axis=(1, 2, 3))[:, None, None, None], 2 * BANDWIDTH,
                                 1).repeat(2 * BANDWIDTH, 2).repeat(3, 3) * ramp
  teacher = lambda s: s * 2.0
  path = tmp_path / 'sub' / 'emb.npz'
  arrays, _ = embeddings_export.export_embeddings(path, dataset.as_numpy_iterator(), embedder,
                                                  teacher=teacher, batch_size=2,
                                                  include_images=True, progress=False)
  loaded = load_embeddings(path)
  assert sorted(loaded) == ['fmap', 'image', 'instance', 'label', 'rot', 'target']
  np.testing.assert_allclose(loaded['fmap'][:, 0, 0, 0], images.mean(axis=(1, 2, 3)), rtol=1e-6)
  np.testing.assert_allclose(loaded['target'], spheres * 2.0)
  np.testing.assert_array_equal(loaded['instance'], ['a', 'a', 'b', 'b', 'c'])
  np.testing.assert_allclose(loaded['rot'], rot)
  np.testing.assert_allclose(loaded['image'], images)
  bad_embedder = lambda v: np.zeros((len(v), 4, 6, 1), np.float32)
  with pytest.raises(ValueError, match='embedder returned'):
    embeddings_export.compute_embeddings(dataset.as_numpy_iterator(), bad_embedder, progress=False)


@pytest.mark.slow  # ~30 s: builds a tiny data set and exports three models
def test_export_command_on_a_built_dataset_then_both_experiments(tmp_path, capsys):
  # Plumbing across the project: datasets.builders -> evaluate.py export (student embedder and
  # hub teacher, untrained) -> the embeddings file -> align and synthesis. Numbers are meaningless.
  from datasets import builders
  from models import (build_student, build_synthesis, build_teacher, export_embedder,
                      export_synthesizer, export_teacher)
  config = dict(bandwidth=8, image_size=16, views_per_instance=2, instances_per_category=2)
  builders.make_builder(str(tmp_path / 'data'), **config).download_and_prepare()
  teacher = build_teacher(bandwidth=8, in_channels=2, num_classes=10, filters=(4, 4, 4, 4),
                          pool_blocks=(3,), embedding_block='block2')
  export_teacher(teacher, tmp_path / 'teacher')
  shape = tuple(teacher.output['embedding'].shape[1:])
  small = dict(layers_per_block=1, base_channels=8, max_channels=16, n_latent=32)
  export_embedder(build_student(image_size=16, embedding_shape=shape, **small), tmp_path / 'emb')
  export_synthesizer(build_synthesis(embedding_shape=shape, image_size=16, **small),
                     tmp_path / 'syn')
  out = tmp_path / 'eval' / 'test.npz'
  dataset_config = ','.join(f'{k}={v}' for k, v in config.items())
  assert evaluate.run(['evaluate.py', 'export', f'--embedder={tmp_path / "emb"}',
                       f'--teacher={tmp_path / "teacher"}', f'--data_dir={tmp_path / "data"}',
                       '--split=test', f'--data_config={dataset_config}', '--include_images',
                       f'--output={out}', '--noprogress']) == 0
  data = load_embeddings(out)
  n = len(data['rot'])
  assert n >= 4 and data['fmap'].shape == (n,) + shape and data['target'].shape == (n,) + shape
  assert data['image'].shape == (n, 16, 16, 1) and data['label'].shape == (n,)
  assert data['instance'].dtype.kind == 'U'
  assert evaluate.run(['evaluate.py', f'--embeddings={out}', '--mode=fmap,target',
                       '--noprogress']) == 0
  assert len(results.read_rows(tmp_path / 'eval' / 'results.csv')) == 2
  assert evaluate.run(['evaluate.py', '--synthesis', f'--embeddings={out}',
                       f'--synthesizer={tmp_path / "syn"}']) == 0
  assert len(results.read_rows(tmp_path / 'eval' / 'synthesis_results.csv')) == 1
  assert evaluate.run(['evaluate.py', 'export', f'--embedder={tmp_path / "emb"}',
                       f'--data_dir={tmp_path / "nothing"}', f'--output={out}']) == 1
  assert 'nothing' in capsys.readouterr().err


@pytest.mark.parametrize('damage,reason', [
    (lambda m: m * np.float32(1e30), r'scale 1.*e\+30 outside'),
    (lambda m: np.zeros_like(m), 'all zeros'),
    (lambda m: np.full_like(m, 0.5), r'constant \(no pose information\)'),
    (lambda m: m * np.float32(1e-30), r'scale 1.*e-30 outside'),
])
def test_maps_float32_cannot_correlate_are_refused_not_aligned(tmp_path, capsys, damage, reason):
  """A file of maps scaled by 1e30 (finite in float32), all zeros or constant gave every pair
  the same rotation with exit 0: now a one-line refusal naming the file, and nothing written."""
  arrays = analytic_embeddings(n_instances=2, views=3)
  arrays['fmap'] = damage(arrays['fmap']).astype(np.float32)
  path = tmp_path / 'in' / 'e.npz'
  save_embeddings(path, **arrays)
  out = tmp_path / 'out' / 'results.csv'
  code = evaluate.run(['evaluate.py', f'--embeddings={path}', '--mode=target,fmap',
                       '--noprogress', f'--results_csv={out}'])
  assert code == 1
  error = capsys.readouterr().err.strip().splitlines()
  assert len(error) == 1 and 'e.npz, "fmap"' in error[0], error
  assert re.search(reason, error[0]), error[0]
  assert not out.parent.exists()  # not even the target rows, computed first
  with pytest.raises(ValueError, match=reason):  # relpose and export check embedders' outputs
    from evaluation import models_io  # pylint: disable=g-import-not-at-top
    models_io.check_embedding(arrays['fmap'], 'embedder')
  models_io.check_embedding(analytic_embeddings(n_instances=1, views=2)['fmap'], 'embedder')


def test_a_failing_pair_kind_writes_nothing(tmp_path, capsys):
  """--pairs=same,diff on a file without different-instance pairs wrote the same rows and their
  records before failing; now it fails before writing anything."""
  path = tmp_path / 'e.npz'
  save_embeddings(path, **analytic_embeddings(n_instances=1, views=3))
  before = sorted(os.listdir(tmp_path))
  code = evaluate.run(['evaluate.py', f'--embeddings={path}', '--pairs=same,diff',
                       '--noprogress'])
  assert code == 1
  error = capsys.readouterr().err.strip().splitlines()
  assert len(error) == 1 and 'diff' in error[0], error
  assert sorted(os.listdir(tmp_path)) == before
  # The same for the view synthesis, before its synthesizer runs.
  code = evaluate.run(['evaluate.py', 'synthesis', f'--embeddings={path}', '--pairs=same,diff',
                       f'--synthesizer={tmp_path / "none"}'])
  assert code == 1 and sorted(os.listdir(tmp_path)) == before
