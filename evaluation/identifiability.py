"""How well a view's embedding pins down its pose: the teacher's margin and the student's match.

Two per-view diagnostics of fmap-mode relative pose, for the teacher's maps `t` and the student's
maps `f` of the same views:

- `second_peak_ratios(t)`: `t` (less each channel's mean over the sphere, a constant of the
  correlation) correlated with itself over SO(3) peaks at the identity; the best distinct other
  peak (`correlation.align_top_k`, k = 2) over that peak says how nearly another pose ties with the
  view's own in the teacher's space: 1 for an exact symmetry of the map. A student's map that misses
  the teacher's by more than that margin can land on the other pose, however well it matches the
  rest of the map. The other peak's rotation angle tells a 180-degree flip (angle above
  `alignment.FLIPPED_DEG`) from other near-symmetries.
- `far_pose_ratios(t)`: the best value of that self-correlation at any rotation at least
  `min_angle_deg` (30) from the identity, over its best value. It also sees near-symmetries that
  are not separate peaks: a mug's turns about its axis are a ridge that falls slowly from the
  identity's peak (0.98 of it 30 degrees away for a mug with a thin handle), with no second peak.
  A shape whose sphere scores near 1 cannot have its pose recovered to better than that angle by
  anything that looks at the sphere; `datasets.procedural` is sized with it.
- `view_errors_deg(f, t)`: the angle of the rotation between the student's map of a view and the
  teacher's map of the same view (`correlation.align`): 0 for a student that puts each view at its
  own pose; below `AT_POSE_DEG` counts as at its pose, above `alignment.FLIPPED_DEG` as at a
  180-degree flip.

Relative pose of two views is right when both views' maps are at their pose, or both at the same
flip; these numbers say which of the two sides (teacher's maps, student's match) sets the error.
"""
import functools

import numpy as np
import tensorflow as tf

from evaluation import alignment
from geometry import grids

# A view whose student map is within this of the teacher's is at its pose (the Acc@30 threshold).
AT_POSE_DEG = 30.0


def _check_maps(maps, name):
  maps = np.asarray(maps, np.float32)
  if maps.ndim != 4 or maps.shape[1] != maps.shape[2] or maps.shape[1] % 2:
    raise ValueError(f'{name}: expected maps [N, 2B, 2B, C], got shape {maps.shape}')
  return maps


def _less_means(maps):
  """Maps less each channel's mean over the sphere: a constant of every self-correlation, it moves
  no peak but would pull every ratio towards 1."""
  weights = grids.quadrature_weights(maps.shape[1] // 2)[:, None, None]
  return maps - np.sum(weights * maps, axis=(1, 2), keepdims=True) / (4 * np.pi)


def second_peak_ratios(maps, batch_size=64):
  """Per map: the best distinct non-identity peak of its self-correlation over the identity's.

  Args:
    maps: `[N, 2B, 2B, C]` (the teacher's maps of N views).
    batch_size: maps per call.
  Returns:
    (ratio float64 `[N]`, second-peak angle in degrees float64 `[N]`): the second-best peak's
    correlation value over the best (NaN where the self-correlation has a single peak) and the
    angle of the other peak's rotation (of the two best, the one farther from the identity:
    under an exact symmetry the two tie).
  """
  import correlation  # pylint: disable=g-import-not-at-top  (heavy tables, only when used)
  maps = _less_means(_check_maps(maps, 'second_peak_ratios'))
  ratios, angles = np.full(len(maps), np.nan), np.full(len(maps), np.nan)
  for start in range(0, len(maps), batch_size):
    t = tf.constant(maps[start:start + batch_size])
    peaks = correlation.align_top_k(t, t, k=2)
    scores = peaks['scores'].numpy().astype(np.float64)
    second = np.isfinite(scores[:, 1])
    ratios[start:start + len(t)] = np.where(second, scores[:, 1] / scores[:, 0], np.nan)
    # The identity is a best peak (Cauchy-Schwarz), tied under an exact symmetry: the other peak
    # is whichever of the two lies farther from it.
    top_two = alignment.rotation_errors_deg(peaks['rotations'].numpy()[:, :2], np.eye(3))
    angles[start:start + len(t)] = np.where(second, top_two.max(axis=1), np.nan)
  return ratios, angles


@functools.lru_cache(maxsize=None)
def _grid_rotation_angles_deg(grid_bandwidth):
  """Rotation angle (degrees) of every point of `geometry.so3_grid(B')`, `[2B', 2B', 2B']` float64.

  The quaternion of `Rz(alpha) Ry(beta) Rz(gamma)` has scalar part `cos(beta/2) cos((alpha+gamma)/2)`,
  and the angle is twice the arccosine of its absolute value.
  """
  alpha, beta, gamma = grids.so3_grid(grid_bandwidth)
  a, b, g = np.meshgrid(alpha, beta, gamma, indexing='ij')
  scalar = np.abs(np.cos(b / 2) * np.cos((a + g) / 2))
  return np.degrees(2 * np.arccos(np.clip(scalar, 0.0, 1.0)))


def far_pose_ratios(maps, min_angle_deg=30.0, upsample=2, normalize=False, batch_size=16):
  """Per map: the best self-correlation `min_angle_deg` or more from the identity, over the best.

  Args:
    maps: `[N, 2B, 2B, C]`; each channel's mean is removed first (as in `second_peak_ratios`).
    min_angle_deg: rotations at least this far from the identity count as other poses.
    upsample: the correlation is read on the grid of bandwidth `upsample * B` (2: grid steps of
      90 / B degrees, so the best value near a ridge or a peak is close to its true maximum).
    normalize: also scale each channel to unit norm (`correlation.correlate`'s `normalize`), so that
      channels count alike whatever their units.
    batch_size: maps per call (a volume is `(4B)^3` floats at upsample 2: 1 MB at B = 16).
  Returns:
    (ratio float64 `[N]`, angle in degrees float64 `[N]` of the grid rotation that attains it).
    The ratio is at most 1 (its denominator is the best over all grid rotations), and 1 for a map
    with an exact symmetry of angle at least `min_angle_deg` on the grid.
  """
  import correlation  # pylint: disable=g-import-not-at-top  (heavy tables, only when used)
  if not 0.0 < float(min_angle_deg) < 180.0:
    raise ValueError(f'far_pose_ratios: min_angle_deg must be in (0, 180), got {min_angle_deg!r}')
  maps = _less_means(_check_maps(maps, 'far_pose_ratios'))
  angles_deg = _grid_rotation_angles_deg(upsample * (maps.shape[1] // 2)).ravel()
  far = angles_deg >= float(min_angle_deg)
  ratios, angles = np.empty(len(maps)), np.empty(len(maps))
  for start in range(0, len(maps), batch_size):
    t = tf.constant(maps[start:start + batch_size])
    volume = correlation.correlate(t, t, upsample=upsample, normalize=normalize).numpy()
    volume = volume.reshape(len(t), -1).astype(np.float64)
    best_far = np.argmax(np.where(far, volume, -np.inf), axis=1)
    rows = np.arange(len(t))
    ratios[start:start + len(t)] = volume[rows, best_far] / volume.max(axis=1)
    angles[start:start + len(t)] = angles_deg[best_far]
  return ratios, angles


def view_errors_deg(fmap, target, batch_size=64):
  """Per view: the angle (degrees, `[N]` float64) of `align(fmap[i], target[i])`.

  Args:
    fmap, target: `[N, 2B, 2B, C]`, the student's and the teacher's maps of the same N views.
  """
  fmap = _check_maps(fmap, 'view_errors_deg (fmap)')
  target = _check_maps(target, 'view_errors_deg (target)')
  if fmap.shape != target.shape:
    raise ValueError(f'view_errors_deg: fmap {fmap.shape} and target {target.shape} differ')
  count = len(fmap)
  pairs = np.stack([np.arange(count), count + np.arange(count)], axis=1)
  estimated = alignment.align_pairs(np.concatenate([fmap, target]), pairs, batch_size=batch_size,
                                    progress=False)
  return alignment.rotation_errors_deg(estimated, np.eye(3))


def summarize_by_group(ratios, second_angles, view_errors, groups, far_ratios=None):
  """Per group (for example per category): the medians and rates of the diagnostics.

  Args:
    ratios, second_angles: from `second_peak_ratios`, `[N]`.
    view_errors: from `view_errors_deg`, `[N]`.
    groups: `[N]` group of each view.
    far_ratios: optional, from `far_pose_ratios`, `[N]`.
  Returns:
    dict group -> {'views', 'second_peak_ratio' (median, NaNs left out), 'second_peak_flip' (% of
    second peaks that are 180-degree flips), 'views_at_pose' (% of view errors below
    `AT_POSE_DEG`), 'views_flipped' (% above `alignment.FLIPPED_DEG`), and with `far_ratios`
    'far_pose_ratio' (median)}, in sorted group order.
  """
  arrays = [np.asarray(a, np.float64) for a in (ratios, second_angles, view_errors)]
  if far_ratios is not None:
    arrays.append(np.asarray(far_ratios, np.float64))
  groups = np.asarray(groups)
  if any(a.shape != groups.shape for a in arrays):
    raise ValueError('summarize_by_group: ratios, angles, errors and groups must have one shape, '
                     f'got {[a.shape for a in arrays]} and {groups.shape}')
  ratios, second_angles, view_errors = arrays[:3]
  out = {}
  for group in np.unique(groups):
    chosen = groups == group
    has_second = chosen & np.isfinite(ratios)
    flips = second_angles[has_second] > alignment.FLIPPED_DEG
    row = out[group.item() if hasattr(group, 'item') else group] = {
        'views': int(chosen.sum()),
        'second_peak_ratio': float(np.median(ratios[has_second])) if has_second.any() else np.nan,
        'second_peak_flip': float(100.0 * np.mean(flips)) if has_second.any() else np.nan,
        'views_at_pose': float(100.0 * np.mean(view_errors[chosen] < AT_POSE_DEG)),
        'views_flipped': float(100.0 * np.mean(view_errors[chosen] > alignment.FLIPPED_DEG)),
    }
    if far_ratios is not None:
      row['far_pose_ratio'] = float(np.median(arrays[3][chosen]))
  return out
