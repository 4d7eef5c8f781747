"""The camera's exact symmetries: turns about its axis and the left-right mirror.

The camera sits on +z and looks at the origin with image up = +y (docs/conventions.md), so turning the
object by `Rz(theta)` turns its view by `theta` counter-clockwise on screen, about the image centre;
and every map on the Driscoll-Healy grid of `Rz(theta) R . mesh` is the map of `R . mesh` shifted
in longitude, `(Rz(theta) . f)(beta, alpha) = f(beta, alpha - theta)`, which for
`theta = 2 pi k / 2B` is a roll of the columns by k. So one example at `R` gives the examples at
`Rz(2 pi k / 2B) R` for every k without ray casting: the map's roll is exact, the view's rotation
is a bilinear resampling (the whole object stays in the frame: the unit sphere projects inside the
image's inscribed circle). A spherical CNN teacher commutes with these rolls (its convolutions are
spectral and zonal), so rolling a sphere rolls its embedding.

Likewise the mirror `M = diag(-1, 1, 1)` (x -> -x, a reflection, not a rotation): the view of
`M . mesh` is the view of `mesh` with its columns reversed, and its maps are `f(M x)`, on the grid
the column `(B - j) mod 2B` put at column j (`alpha -> pi - alpha`); both exact. The teacher's zonal
filters and pointwise non-linearities commute with reflections too.

Used by the students' training (`models.student_task`, `--inplane_rotations`) to show every
instance at many more rotations than were rendered, and to teach the equivariance to this subgroup
of SO(3) directly; and by the exported embedder (`models.embedder_export`) to average the student
over these symmetries.
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


def mirror_views(images):
  """Views `[N, S, S, C]` of the mirrored objects `M . object`: columns reversed (exact)."""
  return tf.reverse(_check_rank4(images, 'mirror_views'), axis=[2])


def mirror_longitude(maps):
  """Maps `[N, 2B, 2B, C]` of the mirrored objects, `f(M x)`: `out[:, :, j] = maps[:, :, (B - j)
  mod 2B]` (exact; M is its own inverse, so mirroring twice gives the maps back)."""
  maps = _check_rank4(maps, 'mirror_longitude')
  width = maps.shape[2]
  if width is None or width % 2:
    raise ValueError(f'mirror_longitude: expected maps of static even width 2B, got {maps.shape}')
  return tf.gather(maps, (width // 2 - np.arange(width)) % width, axis=2)


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


def symmetry_average(embed, images, turns=1, mirror=False):
  """`embed` averaged over the camera's symmetries: `mean_g g^-1 . embed(g . images)`.

  g runs over the turns by `2 pi k / turns`, k < turns, and, with `mirror`, each of them after the
  mirror M. For an `embed` that commutes with these symmetries the average changes nothing; a learnt
  one (a student) nearly commutes with them, and its average does (exactly for quarter turns and
  the mirror; other turns resample the view bilinearly): a test-time average over new views of the
  same objects whose maps are known exactly.

  Args:
    embed: images `[n, S, S, C]` -> dict of maps `[n, 2B, 2B, C']` (every width divisible by turns).
    images: `[N, S, S, C]`.
    turns: number of equally spaced turns (1: none).
    mirror: also average over the mirrored views.
  Returns:
    dict like `embed`'s output, each map the mean over the `turns * (2 if mirror else 1)` views,
    computed in one call of `embed` on all of them.
  """
  images = _check_rank4(images, 'symmetry_average')
  turns = int(turns)
  if turns < 1:
    raise ValueError(f'symmetry_average: turns must be a positive integer, got {turns}')
  if turns == 1 and not mirror:
    return embed(images)
  count = tf.shape(images)[0]
  variants = [images, mirror_views(images)] if mirror else [images]
  angles = np.float32(2 * np.pi / turns) * tf.cast(tf.repeat(tf.range(turns), count), tf.float32)
  views = [rotate_views(tf.tile(v, [turns, 1, 1, 1]), angles) for v in variants]
  outputs = embed(tf.concat(views, axis=0))
  averaged = {}
  for key, maps in outputs.items():
    width = maps.shape[2]
    if width is None or width % turns:
      raise ValueError(f'symmetry_average: turns={turns} must divide the width of output {key!r}, '
                       f'got shape {maps.shape}')
    steps = tf.repeat(tf.range(turns), count) * (width // turns)
    parts = tf.split(maps, len(variants), axis=0)
    back = [roll_longitude(part, -steps) for part in parts]  # undo each turn...
    if mirror:
      back[1] = mirror_longitude(back[1])                     # ...then the mirror
    total = tf.add_n([tf.reduce_sum(tf.reshape(b, tf.concat([[turns, count], tf.shape(b)[1:]], 0)),
                                    axis=0) for b in back])
    averaged[key] = total / tf.cast(turns * len(variants), total.dtype)
  return averaged
