"""The user tools: relative pose between two photos, and a novel view of one photo.

relative_pose: both images are embedded, `correlation.align_top_k(e1, e2)` gives the rotation R
with e2 ~= R . e1 -- the rotation that takes the object from its pose in image 1 to its pose in
image 2 (CONVENTIONS: R2 R1^T) -- with the correlation peak's score, the confidence (peak over the
second-best distinct peak; near 1 means an ambiguous, e.g. symmetric, object) and the other peaks.

novel_view: the embedding of the image is rotated by R (correlation.rotate) and decoded by the
synthesiser: the object as it would look after rotating it by R.

Both take callables (see models_io) so they run on any embedder/synthesiser with those shapes.
"""
import numpy as np
import tensorflow as tf

from evaluation import degrees
from evaluation.models_io import check_embedding
from evaluation.rotation_formats import describe_rotation
from evaluation.synthesis import rotate_and_decode


def embed_views(embedder, views, source='embedder'):
  """Embeddings of views `[N, H, W, 1]` with a shape check -> float32 `[N, 2B, 2B, C]`."""
  maps = np.asarray(embedder(np.asarray(views, np.float32)), np.float32)
  check_embedding(maps, source)
  return maps


def relative_pose(embedder, view1, view2, top_k=3, upsample=1, normalize=False,
                  align_top_k_fn=None, odd_degree_weight=1.0):
  """Relative rotation from view 1 to view 2.

  Args:
    embedder: images `[N, H, W, 1]` -> embeddings `[N, 2B, 2B, C]`.
    view1, view2: float32 `[H, W, 1]` in [0, 1] (see images.load_view).
    top_k: number of distinct candidate rotations reported.
    upsample, normalize: options of the correlation (see correlation.align).
    align_top_k_fn: default correlation.align_top_k.
    odd_degree_weight: the embeddings are correlated with their odd degrees scaled by this
      (degrees.weight_odd_degrees; `evaluate.py relpose` uses 2).

  Returns:
    dict: `rotation` (describe_rotation of the best peak), `score`, `confidence`, and
    `alternatives`: list of dicts (describe_rotation plus `score`) for the top_k distinct peaks,
    best first (fewer when the correlation has fewer peaks).
  """
  if align_top_k_fn is None:
    import correlation  # pylint: disable=g-import-not-at-top
    align_top_k_fn = correlation.align_top_k
  maps = embed_views(embedder, np.stack([view1, view2]), getattr(embedder, 'path', 'embedder'))
  maps = np.asarray(degrees.weight_odd_degrees(maps, odd_degree_weight))
  peaks = align_top_k_fn(tf.constant(maps[:1]), tf.constant(maps[1:]), k=top_k,
                         upsample=upsample, normalize=normalize)
  rotations = np.asarray(peaks['rotations'], np.float64)[0]
  scores = np.asarray(peaks['scores'], np.float64)[0]
  # Fewer than top_k distinct peaks come back with score -inf: not candidates.
  alternatives = [dict(describe_rotation(r), score=float(s))
                  for r, s in zip(rotations, scores) if np.isfinite(s)]
  return {'rotation': describe_rotation(rotations[0]), 'score': float(scores[0]),
          'confidence': float(np.asarray(peaks['confidence']).reshape(-1)[0]),
          'alternatives': alternatives}


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
