"""Rotations about the camera axis: new training examples from old ones, exactly.

The camera sits on +z and looks at the origin with image up = +y (CONVENTIONS.md), so turning the
object by `Rz(theta)` turns its view by `theta` counter-clockwise on screen, about the image centre;
and every map on the Driscoll-Healy grid of `Rz(theta) R . mesh` is the map of `R . mesh` shifted
in longitude, `(Rz(theta) . f)(beta, alpha) = f(beta, alpha - theta)`, which for
`theta = 2 pi k / 2B` is a roll of the columns by k. So one example at `R` gives the examples at
`Rz(2 pi k / 2B) R` for every k without ray casting: the map's roll is exact, the view's rotation
is a bilinear resampling (the whole object stays in the frame: the unit sphere projects inside the
image's inscribed circle). A spherical CNN teacher commutes with these rolls (its convolutions are
spectral and zonal), so rolling a sphere rolls its embedding.

Used by the students' training (`models.student_task`, `--inplane_rotations`) to show every
instance at many more rotations than were rendered, and to teach the equivariance to this subgroup
of SO(3) directly.
"""
import numpy as np
import tensorflow as tf


def _check_rank4(x, name):
  x = tf.convert_to_tensor(x)
  if x.shape.rank != 4:
    raise ValueError(f'{name}: expected [N, H, W, C], got shape {x.shape}')
  return x


def rotate_views(images, angles):
  """Views `[N, S, S, C]` turned counter-clockwise on screen by `angles` `[N]` (radians): the
  views of `Rz(angle) . object`. Bilinear; pixels from outside the frame are 0 (background)."""
  images = _check_rank4(images, 'rotate_views')
  angles = tf.cast(tf.convert_to_tensor(angles), tf.float32)
  height, width = tf.cast(tf.shape(images)[1], tf.float32), tf.cast(tf.shape(images)[2], tf.float32)
  cx, cy = (width - 1) / 2, (height - 1) / 2
  c, s = tf.cos(angles), tf.sin(angles)
  # The transform maps an output pixel (x right, y down) to the input pixel it samples: the
  # inverse rotation, which in y-down coordinates is [[c, -s], [s, c]] about the centre.
  transforms = tf.stack([c, -s, cx - c * cx + s * cy,
                         s, c, cy - s * cx - c * cy,
                         tf.zeros_like(c), tf.zeros_like(c)], axis=1)
  rotated = tf.raw_ops.ImageProjectiveTransformV3(
      images=tf.cast(images, tf.float32), transforms=transforms,
      output_shape=tf.shape(images)[1:3], fill_value=0.0, interpolation='BILINEAR',
      fill_mode='CONSTANT')
  return tf.cast(rotated, images.dtype)


def roll_longitude(maps, shifts):
  """Maps `[N, 2B, 2B, C]` rolled by `shifts` `[N]` columns: `out[:, :, j] = maps[:, :, j - k]`,
  i.e. `Rz(2 pi k / 2B) . f` (exact)."""
  maps = _check_rank4(maps, 'roll_longitude')
  width = tf.shape(maps)[2]
  columns = tf.math.floormod(tf.range(width)[None, :] - tf.cast(shifts, tf.int32)[:, None], width)
  return tf.gather(maps, columns, axis=2, batch_dims=1)


def random_turns(batch, map_keys=('sphere', 'embedding'), image_key='image', turns=None,
                 seed=None):
  """A batch of examples turned about the camera axis by independent random multiples of
  `2 pi / turns`: images rotated, maps rolled.

  Args:
    batch: dict of batched tensors; `image_key` `[N, S, S, C]` and any of `map_keys`
      `[N, 2B, 2B, C]` (bandwidths may differ); other entries pass unchanged ('rotation' too: it
      then no longer describes the turned example, and training does not read it).
    turns: how many equally spaced angles to draw from; it must divide the width 2B of every map,
      so each roll is a whole number of columns (default: the smallest width present). A map
      computed later from a turned one at a coarser grid (a teacher's pooled block) is exact
      only if `turns` divides its width too.
    seed: optional int for `tf.random.uniform`.
  Returns:
    the new dict.
  """
  present = [k for k in map_keys if k in batch]
  if not present:
    raise ValueError(f'random_turns needs one of {map_keys} in the batch, got {sorted(batch)}')
  widths = [batch[k].shape[2] for k in present]
  if None in widths:
    raise ValueError(f'random_turns needs maps of static width 2B, got {widths}')
  turns = int(turns or min(widths))
  if turns < 1 or any(w % turns for w in widths):
    raise ValueError(f'random_turns: turns={turns} must divide every map width {widths}')
  count = tf.shape(batch[present[0]])[0]
  steps = tf.random.uniform([count], 0, turns, dtype=tf.int32, seed=seed)
  out = dict(batch)
  for key, width in zip(present, widths):
    out[key] = roll_longitude(batch[key], steps * (width // turns))
  if image_key in batch:
    angles = tf.cast(steps, tf.float32) * np.float32(2 * np.pi / turns)
    out[image_key] = rotate_views(batch[image_key], angles)
  return out
