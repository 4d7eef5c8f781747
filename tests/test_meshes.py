"""load_mesh / normalize_mesh: every shared mesh, every format, and every kind of bad file."""
import numpy as np
import pytest
import trimesh
from scipy import spatial

import datasets
from datasets import meshes


def _lumpy_mesh(seed, scale=7.0, offset=(100.0, -20.0, 3.0)):
  """An asymmetric watertight mesh far from the origin: a randomly dented icosphere."""
  sphere = trimesh.creation.icosphere(subdivisions=2)
  radius = 1 + 0.3 * np.random.default_rng(seed).random(len(sphere.vertices))
  return trimesh.Trimesh(sphere.vertices * radius[:, None] * scale + offset, sphere.faces,
                         process=False)


def _area_weighted_centroid(mesh):
  # trimesh's own face areas and centres: an independent route to the documented centre.
  return mesh.area_faces @ mesh.triangles_center / mesh.area


def _assert_normalized(mesh):
  assert np.isfinite(mesh.vertices).all() and len(mesh.faces) > 0
  np.testing.assert_allclose(np.linalg.norm(mesh.vertices, axis=1).max(), 1.0, rtol=1e-9)
  np.testing.assert_allclose(_area_weighted_centroid(mesh), 0.0, atol=1e-9)


def _assert_same_surface(a, b, atol=1e-5):
  """Same point sets (both ways, nearest neighbour) and the same area."""
  for p, q in ((a.vertices, b.vertices), (b.vertices, a.vertices)):
    assert spatial.cKDTree(q).query(p)[0].max() < atol
  np.testing.assert_allclose(a.area, b.area, rtol=1e-4)


def test_load_every_shared_mesh(shared_meshes_dir):
  files = sorted(shared_meshes_dir.glob('*/*/*.off'))
  assert len(files) == 70
  for path in files:
    mesh = datasets.load_mesh(path)
    _assert_normalized(mesh)
    assert mesh.metadata['source'] == str(path)


def test_stored_normalization_maps_back_to_the_file(shared_meshes_dir):
  # ModelNet's huge coordinates and two watertight meshes; reading each file twice is slow.
  files = sorted(shared_meshes_dir.glob('modelnet/*/*.off'))[::3]
  files += sorted(shared_meshes_dir.glob('psb/*/*.off'))[:2]
  for path in files:
    mesh = datasets.load_mesh(path)
    raw = trimesh.load(str(path), force='mesh', process=False)
    restored = mesh.vertices * mesh.metadata['normalization']['scale']
    restored += mesh.metadata['normalization']['centre']
    extent = np.ptp(raw.vertices, axis=0).max()
    assert spatial.cKDTree(raw.vertices).query(restored)[0].max() < 1e-9 * extent, path


def test_normalize_mesh_centres_on_area_weighted_centroid_and_scales_to_unit_radius():
  mesh = _lumpy_mesh(0)
  normalized = datasets.normalize_mesh(mesh)
  _assert_normalized(normalized)
  centre = normalized.metadata['normalization']['centre']
  scale = normalized.metadata['normalization']['scale']
  np.testing.assert_allclose(centre, _area_weighted_centroid(mesh), atol=1e-9)
  np.testing.assert_allclose(scale, np.linalg.norm(mesh.vertices - centre, axis=1).max())


def test_normalization_ignores_tessellation_scale_and_translation():
  mesh = _lumpy_mesh(1)
  # Refine only the faces on one side: a vertex mean would move towards them; the surface
  # centroid must not.
  one_side = np.nonzero(mesh.triangles_center[:, 0] > mesh.centroid[0])[0]
  refined = mesh.subdivide(face_index=one_side).subdivide(face_index=None)
  moved = trimesh.Trimesh(refined.vertices * 0.01 - 5, refined.faces, process=False)
  assert len(moved.faces) > 2 * len(mesh.faces)
  a, b = datasets.normalize_mesh(mesh), datasets.normalize_mesh(moved)
  np.testing.assert_allclose(a.area, b.area, rtol=1e-9)
  # Every original vertex lands on the same normalised point in both.
  np.testing.assert_allclose(spatial.cKDTree(b.vertices).query(a.vertices)[0], 0.0, atol=1e-9)


def test_normalize_mesh_is_idempotent_and_drops_unused_vertices():
  mesh = _lumpy_mesh(2)
  far_away = np.vstack([mesh.vertices, [[1e6, 1e6, 1e6]]])  # used by no face
  once = datasets.normalize_mesh(trimesh.Trimesh(far_away, mesh.faces, process=False))
  twice = datasets.normalize_mesh(once)
  _assert_normalized(once)
  np.testing.assert_allclose(twice.vertices, once.vertices, atol=1e-12)
  assert len(once.vertices) == len(mesh.vertices)


def test_normalize_mesh_handles_huge_coordinates():
  mesh = _lumpy_mesh(3, scale=1e3, offset=(1e7, -3e7, 5e6))
  normalized = datasets.normalize_mesh(mesh)
  _assert_normalized(normalized)
  reference = datasets.normalize_mesh(_lumpy_mesh(3))
  np.testing.assert_allclose(normalized.vertices, reference.vertices, atol=1e-6)


def _write_off(path, vertices, faces, header='OFF\n'):
  lines = [f'{len(vertices)} {len(faces)} 0']
  lines += [' '.join(repr(float(c)) for c in v) for v in vertices]
  lines += [f'{len(f)} ' + ' '.join(str(i) for i in f) for f in faces]
  path.write_text(header + '\n'.join(lines) + '\n')
  return path


def test_modelnet_malformed_off_header_reads_like_the_wellformed_file(tmp_path):
  mesh = _lumpy_mesh(4)
  good = _write_off(tmp_path / 'good.off', mesh.vertices, mesh.faces)
  bad = _write_off(tmp_path / 'bad.off', mesh.vertices, mesh.faces, header='OFF')
  assert bad.read_text().startswith(f'OFF{len(mesh.vertices)} {len(mesh.faces)} 0\n')
  a, b = datasets.load_mesh(good), datasets.load_mesh(bad)
  np.testing.assert_array_equal(a.faces, b.faces)
  np.testing.assert_allclose(a.vertices, b.vertices)
  _assert_same_surface(a, datasets.normalize_mesh(mesh))


def test_off_polygons_are_triangulated(tmp_path):
  # A unit cube from six quads, and a square pyramid with a pentagon-free base split as a polygon.
  cube = trimesh.creation.box()
  quads = [[0, 1, 3, 2], [4, 6, 7, 5], [0, 4, 5, 1], [2, 3, 7, 6], [0, 2, 6, 4], [1, 5, 7, 3]]
  path = _write_off(tmp_path / 'quads.off', cube.vertices, quads)
  mesh = datasets.load_mesh(path)
  assert len(mesh.faces) == 12
  np.testing.assert_allclose(mesh.area, 6 * (2 / np.sqrt(3))**2)  # cube of half-size 1/sqrt(3)


def test_read_off_agrees_with_trimesh_reader(shared_meshes_dir):
  # trimesh's own OFF reader is the reference (slow: small files only).
  files = [p for p in sorted(shared_meshes_dir.glob('*/*/*.off')) if p.stat().st_size < 150_000]
  assert len(files) >= 5
  for path in files:
    vertices, faces = meshes.read_off(path)
    reference = trimesh.load(str(path), process=False)
    np.testing.assert_array_equal(vertices, reference.vertices)
    np.testing.assert_array_equal(np.sort(faces, axis=0), np.sort(reference.faces, axis=0))


def test_read_off_variants(tmp_path):
  text = '\n'.join([
      'COFF  # keyword with colours',
      '# a comment line',
      '',
      '5 3 0',
      '0 0 0 255 0 0 255', '1 0 0 255 0 0 255', '1 1 0 255 0 0 255', '0 1 0 255 0 0 255',
      '0 0 1 255 0 0 255',
      '4 0 1 2 3 0.5 0.5 0.5',  # a quad with a float colour
      '3 0 1 4',
      '2 0 4',                  # an edge: not a surface, dropped
  ])
  path = tmp_path / 'variants.off'
  path.write_text(text)
  vertices, faces = meshes.read_off(path)
  np.testing.assert_array_equal(vertices, [[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1]])
  assert sorted(map(tuple, faces)) == [(0, 1, 2), (0, 1, 4), (0, 2, 3)]
  pentagon = tmp_path / 'pentagon.off'
  pentagon.write_text('OFF5 1 0\n' + '\n'.join(
      f'{np.cos(a)} {np.sin(a)} 0' for a in np.arange(5) * 2 * np.pi / 5) + '\n5 0 1 2 3 4\n')
  vertices, faces = meshes.read_off(pentagon)
  np.testing.assert_array_equal(faces, [[0, 1, 2], [0, 2, 3], [0, 3, 4]])
  area = trimesh.Trimesh(vertices, faces).area
  np.testing.assert_allclose(area, 5 / 2 * np.sin(2 * np.pi / 5))  # regular pentagon, radius 1


@pytest.mark.parametrize('suffix', ['obj', 'ply', 'stl', 'glb'])
def test_formats_round_trip(tmp_path, suffix):
  mesh = _lumpy_mesh(5)
  path = tmp_path / f'lumpy.{suffix}'
  mesh.export(str(path))
  loaded = datasets.load_mesh(path)
  _assert_normalized(loaded)
  _assert_same_surface(loaded, datasets.normalize_mesh(mesh))
  assert len(loaded.faces) == len(mesh.faces)


def test_scene_with_several_parts_is_merged_with_its_transforms(tmp_path):
  box, ball = trimesh.creation.box(), trimesh.creation.icosphere(subdivisions=1)
  placed = np.eye(4)
  placed[:3, 3] = [3.0, 5.0, 0.0]
  scene = trimesh.Scene()
  scene.add_geometry(box)
  scene.add_geometry(ball, transform=placed)
  path = tmp_path / 'scene.glb'
  scene.export(str(path))
  loaded = datasets.load_mesh(path)
  expected = datasets.normalize_mesh(
      trimesh.util.concatenate([box, ball.copy().apply_transform(placed)]))
  assert len(loaded.faces) == len(box.faces) + len(ball.faces)
  _assert_same_surface(loaded, expected)


def _bad_files(tmp_path):
  """(path, words the error must contain) for files load_mesh must reject."""
  empty = tmp_path / 'empty.off'
  empty.write_bytes(b'')
  garbage = {}
  for suffix in ('off', 'obj', 'ply', 'stl', 'glb'):
    garbage[suffix] = tmp_path / f'garbage.{suffix}'
    garbage[suffix].write_bytes(b'this is not a mesh \x00\x01\x02\xff' * 3)
  triangle = [[0, 1, 2]]
  nan = _write_off(tmp_path / 'nan.off', [[0, 0, 0], [np.nan, 1, 0], [0, 1, 1]], triangle)
  inf = _write_off(tmp_path / 'inf.off', [[0, 0, 0], [np.inf, 1, 0], [0, 1, 1]], triangle)
  flat = _write_off(tmp_path / 'collinear.off', [[0, 0, 0], [1, 1, 1], [2, 2, 2], [3, 3, 3]],
                    [[0, 1, 2], [1, 2, 3]])
  point = _write_off(tmp_path / 'point.off', [[1, 2, 3]] * 3, triangle)
  index = _write_off(tmp_path / 'index.off', [[0, 0, 0], [1, 0, 0], [0, 1, 0]], [[0, 1, 7]])
  no_faces = _write_off(tmp_path / 'no_faces.off', [[0, 0, 0], [1, 0, 0], [0, 1, 0]], [])
  cloud = tmp_path / 'cloud.ply'
  trimesh.PointCloud(np.random.default_rng(0).random((10, 3))).export(str(cloud))
  truncated = tmp_path / 'truncated.off'
  truncated.write_text('OFF\n4 2 0\n0 0 0\n1 0 0\n0 1 0\n')
  counts = tmp_path / 'counts.off'
  counts.write_text('OFF\nfour two zero\n')
  letters = _write_off(tmp_path / 'letters.off', [[0, 0, 0], [1, 0, 0], [0, 1, 0]], triangle)
  letters.write_text(letters.read_text().replace('1.0', 'x'))
  unknown = tmp_path / 'mesh.xyz'
  unknown.write_text('1 2 3\n')
  return [
      (empty, ''), (nan, 'NaN'), (inf, 'NaN or infinite'), (flat, 'zero area'),
      (point, 'zero area'), (index, ''), (no_faces, ''), (cloud, ''),
      (truncated, 'announced'), (counts, 'count line'), (letters, ''),
      (unknown, 'unsupported'), (tmp_path / 'missing.off', 'no such'),
  ] + [(p, '') for p in garbage.values()]


def test_bad_files_raise_value_error_naming_the_file(tmp_path):
  for path, words in _bad_files(tmp_path):
    with pytest.raises(ValueError, match='load_mesh|normalize_mesh') as error:
      datasets.load_mesh(path)
    assert str(path) in str(error.value), (path, error.value)
    assert words in str(error.value), (path, error.value)


def test_normalize_mesh_rejects_empty_mesh_with_its_source_name():
  with pytest.raises(ValueError, match='procedural cube 7'):
    datasets.normalize_mesh(trimesh.Trimesh(), source='procedural cube 7')
  with pytest.raises(ValueError, match='expected a trimesh.Trimesh'):
    datasets.normalize_mesh(np.zeros((3, 3)))


def test_bad_meshes_are_refused_for_the_right_reason(tmp_path):
  """The reason names what is wrong: a point cloud, bytes that are no glTF/GLB, a glTF whose
  buffer is missing, coordinates whose areas overflow float64."""
  cases = {
      'cloud.ply': (b'ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\n'
                    b'property float z\nend_header\n0 0 0\n1 0 0\n0 1 0\n',
                    r'has no faces \(a point cloud of 3 points\)'),
      'noise.gltf': (bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8)),
                     r'is not a glTF file'),
      'noise.glb': (bytes(np.random.default_rng(1).integers(0, 256, 300, dtype=np.uint8)),
                    r'is not a GLB file'),
      'buffer.gltf': (b'{"asset": {"version": "2.0"}, "buffers": [{"uri": "gone.bin", '
                      b'"byteLength": 12}]}', r'refers to a missing file \(gone.bin\)'),
      'huge.off': (b'OFF\n3 1 0\n0 0 0\n1e200 0 0\n0 1e200 0\n3 0 1 2\n',
                   r'non-finite or overflowing coordinates'),
  }
  for name, (content, reason) in cases.items():
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValueError, match=reason) as error:
      meshes.load_mesh(path)
    assert str(path) in str(error.value)
    assert 'FileNotFoundError' not in str(error.value) and 'zero area' not in str(error.value)
