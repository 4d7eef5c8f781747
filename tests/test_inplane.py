"""The camera's symmetries (datasets.inplane): turns about its axis and the mirror, against ray
casting, the Wigner-D rotation, analytic maps and explicit loops."""
import numpy as np
import pytest
import tensorflow as tf

from correlation import rotate, sht
from datasets import inplane, procedural, raycast
from geometry import grids, random_rotations, rotation_z
from models import students


def _band_limited_maps(count, bandwidth, channels, seed=0):
  rng = np.random.default_rng(seed)
  coeffs = (rng.standard_normal((count, bandwidth, bandwidth, channels)) +
            1j * rng.standard_normal((count, bandwidth, bandwidth, channels)))
  coeffs *= np.tril(np.ones((bandwidth, bandwidth)))[None, :, :, None]
  coeffs[:, :, 0].imag = 0
  return sht.inverse(tf.constant(coeffs, tf.complex128)).numpy()


def test_roll_longitude_is_the_wigner_rotation_about_z():
  bandwidth = 8
  maps = _band_limited_maps(3, bandwidth, 2)
  shifts = np.array([1, 5, 15])
  rolled = inplane.roll_longitude(tf.constant(maps), tf.constant(shifts)).numpy()
  angles = 2 * np.pi * shifts / (2 * bandwidth)
  expected = rotate(tf.constant(maps), rotation_z(tf.constant(angles))).numpy()
  np.testing.assert_allclose(rolled, expected, atol=1e-9)
  assert np.abs(rolled - maps).max() > 0.1


@pytest.fixture(scope='module')
def chair():
  return procedural.generate_shape('chair', 3)


def test_turned_sphere_is_the_sphere_of_the_turned_mesh(chair):
  rotation = random_rotations(1, seed=4)[0]
  turn = rotation_z(tf.constant(2 * np.pi * 3 / 32)).numpy()
  sphere = raycast.mesh_to_sphere(chair, rotation, bandwidth=16)
  turned = raycast.mesh_to_sphere(chair, turn @ rotation, bandwidth=16)
  rolled = inplane.roll_longitude(tf.constant(sphere[None]), tf.constant([3])).numpy()[0]
  np.testing.assert_allclose(rolled, turned, atol=1e-5)


@pytest.mark.parametrize('steps', [3, 11])
def test_turned_view_is_the_view_of_the_turned_mesh(chair, steps):
  rotation = random_rotations(1, seed=5)[0]
  angle = 2 * np.pi * steps / 32
  view = raycast.render_view(chair, rotation, size=64)
  turned = raycast.render_view(chair, rotation_z(tf.constant(angle)).numpy() @ rotation, size=64)
  rotated = inplane.rotate_views(tf.constant(view[None]), tf.constant([angle])).numpy()[0]
  wrong_way = inplane.rotate_views(tf.constant(view[None]), tf.constant([-angle])).numpy()[0]
  error = np.abs(rotated - turned).mean()
  # Bilinear resampling blurs edges; turning the wrong way is an order of magnitude worse.
  assert error < 0.03
  assert error < 0.2 * np.abs(wrong_way - turned).mean()


def test_rotate_views_by_zero_and_quarter_turns_is_exact():
  image = np.random.default_rng(0).random((1, 8, 8, 1)).astype(np.float32)
  same = inplane.rotate_views(tf.constant(image), tf.constant([0.0])).numpy()
  np.testing.assert_allclose(same, image, atol=1e-6)
  quarter = inplane.rotate_views(tf.constant(image), tf.constant([np.pi / 2])).numpy()
  np.testing.assert_allclose(quarter[0, ..., 0], np.rot90(image[0, ..., 0]), atol=1e-5)


def test_random_turns_turn_images_and_every_map_together(chair):
  rotations = random_rotations(6, seed=6)
  caster = raycast.MeshRaycaster(chair)
  spheres = caster.spheres(rotations, bandwidth=16)
  coarse = spheres[:, ::2, ::2]  # a map of half the width, as a pooled teacher block would be
  batch = {'image': tf.constant(caster.views(rotations, size=64)), 'sphere': tf.constant(spheres),
           'embedding': tf.constant(coarse), 'label': tf.range(6)}
  out = inplane.random_turns(batch, seed=1)
  np.testing.assert_array_equal(out['label'].numpy(), np.arange(6))
  turned_spheres = out['sphere'].numpy()
  for i in range(6):
    # The roll of each sphere, recovered by matching, must be even (turns = the coarse width).
    errors = [np.abs(np.roll(spheres[i], k, axis=1) - turned_spheres[i]).max() for k in range(32)]
    k = int(np.argmin(errors))
    assert errors[k] < 1e-6 and k % 2 == 0
    np.testing.assert_allclose(out['embedding'].numpy()[i], np.roll(coarse[i], k // 2, axis=1))
    angle = 2 * np.pi * k / 32
    turn = rotation_z(tf.constant(angle)).numpy()
    expected = caster.views((turn @ rotations[i])[None], size=64)[0]
    assert np.abs(out['image'].numpy()[i] - expected).mean() < 0.025


def test_random_turns_refuses_bad_batches():
  with pytest.raises(ValueError, match='needs one of'):
    inplane.random_turns({'image': tf.zeros([1, 8, 8, 1])})
  with pytest.raises(ValueError, match='divide'):
    inplane.random_turns({'sphere': tf.zeros([1, 8, 8, 1])}, turns=3)
  with pytest.raises(ValueError, match=r'\[N, H, W, C\]'):
    inplane.rotate_views(tf.zeros([8, 8, 1]), tf.zeros([1]))


def test_mirror_longitude_reflects_the_grid_through_x():
  directions = grids.sphere_directions(8)                                 # [16, 16, 3]
  x, y, z = directions[..., 0], directions[..., 1], directions[..., 2]
  maps = np.stack([x, y, z, x * y, x**3 + z], axis=-1)[None]
  expected = np.stack([-x, y, z, -x * y, -x**3 + z], axis=-1)[None]     # f(M u), M = diag(-1, 1, 1)
  mirrored = inplane.mirror_longitude(tf.constant(maps)).numpy()
  np.testing.assert_allclose(mirrored, expected, atol=1e-12)
  np.testing.assert_array_equal(inplane.mirror_longitude(tf.constant(mirrored)).numpy(), maps)
  with pytest.raises(ValueError, match='even width'):
    inplane.mirror_longitude(tf.zeros([1, 4, 5, 1]))


def test_mirrored_sphere_and_view_are_those_of_the_mirrored_mesh(chair):
  rotation = random_rotations(1, seed=7)[0]
  posed = chair.copy()
  transform = np.eye(4)
  transform[:3, :3] = rotation
  posed.apply_transform(transform)
  mirrored = posed.copy()
  mirrored.apply_transform(np.diag([-1.0, 1.0, 1.0, 1.0]))
  sphere = raycast.mesh_to_sphere(posed, bandwidth=16)
  np.testing.assert_allclose(inplane.mirror_longitude(tf.constant(sphere[None])).numpy()[0],
                             raycast.mesh_to_sphere(mirrored, bandwidth=16), atol=1e-5)
  view = raycast.render_view(posed, size=64)
  mirrored_view = raycast.render_view(mirrored, size=64)
  np.testing.assert_allclose(inplane.mirror_views(tf.constant(view[None])).numpy()[0],
                             mirrored_view, atol=1e-5)
  assert np.abs(view - mirrored_view).mean() > 0.01  # the pose is not mirror symmetric


def _quarter_turn_reference(embed, images, mirror):
  """mean_g g^-1 embed(g images) over quarter turns (np.rot90, exact) and the mirror, by loops."""
  total, count = 0, 0
  for flip in ([False, True] if mirror else [False]):
    source = images[:, :, ::-1] if flip else images
    for k in range(4):
      out = embed(tf.constant(np.rot90(source, k, axes=(1, 2)).copy()))['map'].numpy()
      width = out.shape[2]
      out = np.roll(out, -k * width // 4, axis=2)
      if flip:
        out = out[:, :, (width // 2 - np.arange(width)) % width]
      total, count = total + out, count + 1
  return total / count


@pytest.mark.parametrize('mirror', [False, True])
def test_symmetry_average_against_loops_and_its_equivariance(mirror):
  student = students.build_student(16, (8, 8, 3), layers_per_block=1, base_channels=8,
                                   max_channels=16, n_latent=16)
  embed = lambda images: {'map': student(images, training=False)['embedding']}
  images = np.random.default_rng(0).random((2, 16, 16, 1)).astype(np.float32)
  averaged = inplane.symmetry_average(embed, tf.constant(images), turns=4, mirror=mirror)
  averaged = averaged['map'].numpy()
  np.testing.assert_allclose(averaged, _quarter_turn_reference(embed, images, mirror), atol=1e-5)
  # The average commutes with the symmetries it averages over; the student alone does not.
  turned = inplane.rotate_views(tf.constant(images), tf.constant([np.pi / 2] * 2))
  np.testing.assert_allclose(inplane.symmetry_average(embed, turned, 4, mirror)['map'].numpy(),
                             np.roll(averaged, 2, axis=2), atol=1e-5)
  assert np.abs(embed(turned)['map'].numpy() - np.roll(embed(images)['map'].numpy(), 2, axis=2)
                ).max() > 1e-3
  if mirror:
    flipped = inplane.mirror_views(tf.constant(images))
    np.testing.assert_allclose(
        inplane.symmetry_average(embed, flipped, 4, True)['map'].numpy(),
        inplane.mirror_longitude(tf.constant(averaged)).numpy(), atol=1e-5)
  plain = inplane.symmetry_average(embed, tf.constant(images))['map'].numpy()
  np.testing.assert_array_equal(plain, embed(tf.constant(images))['map'].numpy())
  with pytest.raises(ValueError, match='divide'):
    inplane.symmetry_average(embed, tf.constant(images), turns=3)
