"""The user tools: relative pose between two photos, and a novel view of one photo.

Relative pose, one computation behind every entry point (and `evaluate.py relpose`):

  relative_pose_from_files(embedder, 'photo1.jpg', 'photo2.png')  # what the CLI prints
  relative_poses_from_files(embedder, [(a, b), (a, c), ...])      # many pairs, batched
  relative_pose(embedder, view1, view2)                           # views [H, W, 1] in [0, 1]
  relative_pose_from_embeddings(e1, e2)                           # maps [2B, 2B, C] (or [P, ...])

`embedder` is a SavedModel folder (or a loaded `models_io.load_embedder`, or any callable images
`[N, H, W, 1]` -> maps `[N, 2B, 2B, C]`). The maps are correlated with their odd
spherical-harmonic degrees scaled by `odd_degree_weight` (default 2, as `evaluate.py relpose` and
the fmap evaluation: `degrees.weight_odd_degrees`; pass 1 for teacher maps), and
`correlation.align_top_k(e1, e2)` gives the rotation R with e2 ~= R . e1 -- the rotation that takes
the object from its pose in image 1 to its pose in image 2 (CONVENTIONS: R2 R1^T) -- with the
correlation peak's score, the confidence (peak over the second-best distinct peak; near 1 means an
ambiguous, e.g. symmetric, object) and the top-k distinct peaks. Each result is a dict:
`rotation` (`rotation_formats.describe_rotation`: matrix, quaternion_wxyz, euler_zyz_deg, axis,
angle_deg), `score`, `confidence`, `alternatives` (describe_rotation plus `score`, best first).
Many pairs are embedded once per distinct image and aligned in batches of `batch_size` pairs.

novel_view: the embedding of the image is rotated by R (correlation.rotate) and decoded by the
synthesiser: the object as it would look after rotating it by R.

Both take callables (see models_io) so they run on any embedder/synthesiser with those shapes.
"""
import os

import numpy as np
import tensorflow as tf

from evaluation import degrees
from evaluation import images
from evaluation import models_io
from evaluation.models_io import check_embedding
from evaluation.rotation_formats import describe_rotation
from evaluation.synthesis import rotate_and_decode

# The CLI's and the fmap evaluation's weight of the student maps' odd degrees (README).
ODD_DEGREE_WEIGHT = 2.0


def embed_views(embedder, views, source='embedder'):
  """Embeddings of views `[N, H, W, 1]` with a shape check -> float32 `[N, 2B, 2B, C]`."""
  maps = np.asarray(embedder(np.asarray(views, np.float32)), np.float32)
  check_embedding(maps, source)
  return maps


def _result(rotations, scores, confidence):
  """One pair's result dict from its `[k, 3, 3]` peaks, `[k]` scores and confidence."""
  rotations = np.asarray(rotations, np.float64)
  scores = np.asarray(scores, np.float64)
  # Fewer than top_k distinct peaks come back with score -inf: not candidates.
  alternatives = [dict(describe_rotation(r), score=float(s))
                  for r, s in zip(rotations, scores) if np.isfinite(s)]
  return {'rotation': describe_rotation(rotations[0]), 'score': float(scores[0]),
          'confidence': float(confidence), 'alternatives': alternatives}


def relative_pose_from_embeddings(e1, e2, top_k=3, upsample=1, normalize=False,
                                  odd_degree_weight=ODD_DEGREE_WEIGHT, batch_size=64,
                                  align_top_k_fn=None):
  """Relative rotation from the map `e1` to the map `e2` (e2 ~= R . e1).

  Args:
    e1, e2: float32 `[2B, 2B, C]` (one pair) or `[P, 2B, 2B, C]` (P pairs), e.g. the embedder's
      `embedding` of two views.
    top_k: number of distinct candidate rotations reported.
    upsample, normalize: options of the correlation (see correlation.align).
    odd_degree_weight: the odd degrees of both maps are scaled by this before correlating
      (degrees.weight_odd_degrees); 2 for student maps, 1 leaves the maps alone (teacher maps).
    batch_size: pairs per correlation call.
    align_top_k_fn: default correlation.align_top_k.

  Returns:
    one result dict (module docstring) for one pair, a list of P of them for P pairs.
  """
  e1, e2 = np.asarray(e1, np.float32), np.asarray(e2, np.float32)
  single = e1.ndim == 3
  if single:
    e1, e2 = e1[None], e2[None]
  if e1.shape != e2.shape:
    raise ValueError(f'relative pose: the maps differ in shape, {list(e1.shape)} and '
                     f'{list(e2.shape)}')
  check_embedding(e1, 'relative pose (maps)')
  if align_top_k_fn is None:
    import correlation  # pylint: disable=g-import-not-at-top
    align_top_k_fn = correlation.align_top_k
  results = []
  for start in range(0, len(e1), int(batch_size)):
    stop = start + int(batch_size)
    maps1 = degrees.weight_odd_degrees(e1[start:stop], odd_degree_weight)
    maps2 = degrees.weight_odd_degrees(e2[start:stop], odd_degree_weight)
    peaks = align_top_k_fn(tf.constant(np.asarray(maps1, np.float32)),
                           tf.constant(np.asarray(maps2, np.float32)), k=top_k,
                           upsample=upsample, normalize=normalize)
    rotations = np.asarray(peaks['rotations'])
    scores = np.asarray(peaks['scores'])
    confidence = np.asarray(peaks['confidence']).reshape(-1)
    results += [_result(r, s, c) for r, s, c in zip(rotations, scores, confidence)]
  return results[0] if single else results


def relative_pose(embedder, view1, view2, top_k=3, upsample=1, normalize=False,
                  align_top_k_fn=None, odd_degree_weight=ODD_DEGREE_WEIGHT):
  """Relative rotation from view 1 to view 2.

  Args:
    embedder: images `[N, H, W, 1]` -> embeddings `[N, 2B, 2B, C]`.
    view1, view2: float32 `[H, W, 1]` in [0, 1] (see images.load_view).
    top_k, upsample, normalize, odd_degree_weight: see relative_pose_from_embeddings.
    align_top_k_fn: default correlation.align_top_k.

  Returns:
    the result dict of the module docstring.
  """
  maps = embed_views(embedder, np.stack([view1, view2]), getattr(embedder, 'path', 'embedder'))
  return relative_pose_from_embeddings(maps[0], maps[1], top_k=top_k, upsample=upsample,
                                       normalize=normalize, odd_degree_weight=odd_degree_weight,
                                       align_top_k_fn=align_top_k_fn)


def as_embedder(embedder, batch_size=32):
  """A SavedModel folder -> `models_io.load_embedder(folder)`; a callable is returned as it is."""
  if isinstance(embedder, (str, os.PathLike)):
    return models_io.load_embedder(embedder, batch_size)
  return embedder


def view_size(embedder, image_size=None):
  """(H, W) of the views for `embedder`: its signature's, else `image_size`."""
  if hasattr(embedder, 'input_shape'):
    return models_io.image_size_of(embedder, image_size)
  if image_size is None:
    raise ValueError('the image size of the embedder is unknown: pass image_size (--image_size)')
  return int(image_size), int(image_size)


def relative_poses_from_files(embedder, pairs, top_k=3, upsample=1, normalize=False,
                              image_size=None, odd_degree_weight=ODD_DEGREE_WEIGHT,
                              batch_size=64, align_top_k_fn=None):
  """Relative poses of many image pairs: each distinct image is read and embedded once, and the
  pairs are aligned in batches.

  Args:
    embedder: a SavedModel folder or an embedder callable (module docstring).
    pairs: sequence of (image 1, image 2) paths (PNG, JPEG, ...: images.load_view).
    image_size: the view size when the embedder's signature does not fix it.
    top_k, upsample, normalize, odd_degree_weight, batch_size: relative_pose_from_embeddings.

  Returns:
    list of result dicts (module docstring), each with `image1` and `image2`.

  Raises:
    ValueError naming a missing or unreadable image, or a bad embedder.
  """
  pairs = [(os.fspath(a), os.fspath(b)) for a, b in pairs]
  if not pairs:
    raise ValueError('relative pose: no image pairs given')
  embedder = as_embedder(embedder)
  size = view_size(embedder, image_size)
  paths = sorted({p for pair in pairs for p in pair})
  index = {p: i for i, p in enumerate(paths)}
  maps = embed_views(embedder, np.stack([images.load_view(p, size) for p in paths]),
                     getattr(embedder, 'path', 'embedder'))
  first = maps[[index[a] for a, _ in pairs]]
  second = maps[[index[b] for _, b in pairs]]
  results = relative_pose_from_embeddings(first, second, top_k=top_k, upsample=upsample,
                                          normalize=normalize,
                                          odd_degree_weight=odd_degree_weight,
                                          batch_size=batch_size, align_top_k_fn=align_top_k_fn)
  for result, (a, b) in zip(results, pairs):
    result.update(image1=a, image2=b)
  return results


def relative_pose_from_files(embedder, image1, image2, top_k=3, upsample=1, normalize=False,
                             image_size=None, odd_degree_weight=ODD_DEGREE_WEIGHT,
                             align_top_k_fn=None):
  """Relative pose between two image files: exactly what `evaluate.py relpose` computes and
  prints (format_relative_pose). Returns the result dict with `image1` and `image2`."""
  return relative_poses_from_files(embedder, [(image1, image2)], top_k=top_k, upsample=upsample,
                                   normalize=normalize, image_size=image_size,
                                   odd_degree_weight=odd_degree_weight,
                                   align_top_k_fn=align_top_k_fn)[0]


def read_pair_list(path):
  """Pairs of image paths from a text file: one pair a line, two paths separated by whitespace
  or a comma; blank lines and lines starting with '#' are skipped; relative paths are relative
  to the file's folder.

  Raises:
    ValueError naming the file and line of a bad entry.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise ValueError(f'pair list {path}: no such file')
  base = os.path.dirname(os.path.abspath(path))
  pairs = []
  with open(path) as f:
    for number, line in enumerate(f, start=1):
      line = line.strip()
      if not line or line.startswith('#'):
        continue
      fields = line.replace(',', ' ').split()
      if len(fields) != 2:
        raise ValueError(f'pair list {path}:{number}: expected two image paths, got {line!r}')
      pairs.append(tuple(os.path.join(base, p) for p in fields))
  if not pairs:
    raise ValueError(f'pair list {path}: no pairs')
  return pairs


def glob_pairs(pattern):
  """Pairs (first, other) for the sorted files matching `pattern`: the pose of every image
  relative to the first one.

  Raises:
    ValueError when fewer than two files match.
  """
  import glob  # pylint: disable=g-import-not-at-top
  paths = sorted(p for p in glob.glob(pattern) if os.path.isfile(p))
  if len(paths) < 2:
    raise ValueError(f'{pattern}: matches {len(paths)} image file(s), need at least two')
  return [(paths[0], p) for p in paths[1:]]


def format_pose_table(results):
  """One line per pair: images, angle, ZYZ Euler degrees, confidence (many-pair relpose)."""
  rows = ['| image 1 | image 2 | angle (deg) | ZYZ Euler (deg) | confidence |',
          '|---|---|---|---|---|']
  for r in results:
    euler = ', '.join(f'{v:.2f}' for v in r['rotation']['euler_zyz_deg'])
    rows.append(f"| {r['image1']} | {r['image2']} | {r['rotation']['angle_deg']:.2f} | {euler} "
                f"| {r['confidence']:.4f} |")
  return '\n'.join(rows)


def format_relative_pose(result):
  """Human-readable text of a relative_pose result."""
  r = result['rotation']
  rows = ['relative rotation (image 1 -> image 2, acts on column vectors):']
  rows += ['  [' + ', '.join(f'{v: .6f}' for v in row) + ']' for row in r['matrix']]
  rows.append('quaternion (w, x, y, z): ' + ', '.join(f'{v:.6f}' for v in r['quaternion_wxyz']))
  rows.append('ZYZ Euler (deg): ' + ', '.join(f'{v:.3f}' for v in r['euler_zyz_deg']))
  rows.append('axis-angle: axis (' + ', '.join(f'{v:.4f}' for v in r['axis'])
              + f'), angle {r["angle_deg"]:.3f} deg')
  rows.append(f'confidence (peak / second peak): {result["confidence"]:.4f}')
  rows.append(f'top {len(result["alternatives"])} peaks:')
  for k, alt in enumerate(result['alternatives']):
    rows.append(f'  {k + 1}. score {alt["score"]:.6g}  ZYZ (deg) '
                + ', '.join(f'{v:.2f}' for v in alt['euler_zyz_deg'])
                + f'  angle {alt["angle_deg"]:.2f} deg')
  return '\n'.join(rows)


def novel_view(embedder, synthesizer, view, rotation, rotate_fn=None):
  """The view of the object after rotating it by `rotation`.

  Args:
    embedder: images -> embeddings; synthesizer: embeddings -> images.
    view: float32 `[H, W, 1]` in [0, 1].
    rotation: `[3, 3]` rotation matrix.
    rotate_fn: default correlation.rotate.

  Returns:
    float32 `[H', W', 1]`, the synthesiser's output size.

  Raises:
    ValueError when the synthesiser's input does not match the embedder's output.
  """
  maps = embed_views(embedder, view[None], getattr(embedder, 'path', 'embedder'))
  if hasattr(synthesizer, 'check_input'):
    synthesizer.check_input(maps)
  return rotate_and_decode(maps, np.asarray(rotation, np.float32)[None], synthesizer,
                           rotate_fn=rotate_fn)[0]
