"""Procedural shapes: determinism, valid normalised meshes, and poses that can be told apart."""
import numpy as np
import pytest
import trimesh

from datasets import meshes
from datasets import procedural
from datasets import raycast
from evaluation import identifiability
from geometry import grids

# Half turns about x, y and z: the rotations that would map most of these shapes to themselves
# if they were box- or cylinder-like.
_HALF_TURNS = np.array([np.diag([1.0, -1.0, -1.0]), np.diag([-1.0, 1.0, -1.0]),
                        np.diag([-1.0, -1.0, 1.0])])


def _half_turn_differences(mesh, bandwidth=16):
  """Area-weighted mean |sphere(R . mesh) - sphere(mesh)| for each half turn R, shape [3]."""
  rotations = np.concatenate([np.eye(3)[None], _HALF_TURNS])
  spheres = raycast.MeshRaycaster(mesh).spheres(rotations, bandwidth=bandwidth)
  weights = grids.area_weights(bandwidth)[:, None, None]
  return np.array([np.mean(weights * np.abs(s - spheres[0])) for s in spheres[1:]])


def test_categories_are_an_ordered_list_of_at_least_ten_names():
  assert len(procedural.CATEGORIES) >= 10
  assert list(procedural.CATEGORIES) == sorted(set(procedural.CATEGORIES))


@pytest.mark.parametrize('category', procedural.CATEGORIES)
def test_same_seed_gives_the_same_mesh_and_other_seeds_differ(category):
  a, b = procedural.generate_shape(category, 5), procedural.generate_shape(category, 5)
  np.testing.assert_array_equal(a.vertices, b.vertices)
  np.testing.assert_array_equal(a.faces, b.faces)
  for other in (6, 7):
    c = procedural.generate_shape(category, other)
    assert c.vertices.shape != a.vertices.shape or not np.allclose(c.vertices, a.vertices)


@pytest.mark.parametrize('category', procedural.CATEGORIES)
def test_every_category_gives_valid_normalised_meshes(category):
  for seed in range(4):
    mesh = procedural.generate_shape(category, seed)
    assert isinstance(mesh, trimesh.Trimesh)
    assert np.isfinite(mesh.vertices).all()
    np.testing.assert_allclose(np.linalg.norm(mesh.vertices, axis=1).max(), 1.0, atol=1e-9)
    assert mesh.area > 0.1  # a real surface, not slivers (a unit sphere has 12.6)
    assert 60 <= len(mesh.faces) <= 5000
    # Normalised in its canonical pose: the area-weighted centroid is the origin.
    centroid = mesh.area_faces @ mesh.triangles_center / mesh.area
    np.testing.assert_allclose(centroid, 0.0, atol=1e-9)


def test_half_turn_metric_is_zero_for_a_symmetric_shape():
  # The reference that makes the next test meaningful: a box is invariant under all three half
  # turns and the grid maps onto itself under them, so the metric must vanish.
  box = meshes.normalize_mesh(trimesh.creation.box((1.0, 0.5, 0.3)))
  np.testing.assert_allclose(_half_turn_differences(box), 0.0, atol=1e-6)


@pytest.mark.parametrize('category', procedural.CATEGORIES)
def test_no_half_turn_maps_a_shape_to_itself(category):
  # The smallest difference over 8 instances x 3 half turns was 0.011 (guitar, about y) when
  # this test was written; a symmetric shape gives 0 (previous test).
  for seed in range(3):
    differences = _half_turn_differences(procedural.generate_shape(category, seed))
    assert differences.min() > 0.005, (category, seed, differences)


def test_bad_category_or_seed_is_a_clear_error():
  with pytest.raises(ValueError, match='spaceship'):
    procedural.generate_shape('spaceship', 0)
  with pytest.raises(ValueError, match='seed'):
    procedural.generate_shape('chair', -1)


# Builder 1.4.0 made these categories' fronts plainer: now 0.57-0.81 on seeds 0-5, where builder
# 1.3.0's lamps were at 0.91 (and its airplanes and lamps at 0.86 and 0.90 on seeds 8-15).
_FAR_POSE_BOUNDS = {'airplane': 0.85, 'bench': 0.85, 'lamp': 0.85, 'table': 0.85}


@pytest.mark.parametrize('category', procedural.CATEGORIES)
def test_no_rotation_30_degrees_away_nearly_ties_a_shapes_pose(category):
  # What "pose recoverable from the shape" means for the spheres the models see (B = 16, channels
  # alike): the self-correlation at rotations >= 30 degrees from the identity stays clearly below
  # its peak. With the thin breakers of builder 1.2.0 the medians were 0.94-0.98 for mugs, guitars,
  # bottles, beds and lamps (seeds 0-7); now at most 0.91 (lamps), most categories 0.7-0.87.
  spheres = np.stack([
      raycast.MeshRaycaster(procedural.generate_shape(category, seed)).spheres(
          np.eye(3)[None], bandwidth=16, oversample=2)[0] for seed in range(6)])
  ratios, angles = identifiability.far_pose_ratios(spheres, normalize=True)
  assert np.all(angles >= 30.0)
  assert np.median(ratios) <= _FAR_POSE_BOUNDS.get(category, 0.93), (category, ratios)
