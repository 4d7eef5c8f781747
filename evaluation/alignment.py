"""The relative-pose experiment: align the embeddings of two views, compare with the true pose.

For views i and j at rotations R_i and R_j, the relative pose is `R_j R_i^T` (it takes the object
from pose i to pose j) and `correlation.align(e_i, e_j)` estimates it (docs/conventions.md).
The error of a pair is the angular distance, in degrees, between the estimate and `R_j R_i^T`.

Symmetric error (`symmetric=True`), as in the original study: the error `e` in [0, 180] is folded
to `min(e, 180 - e)`, in [0, 90]. It forgives a two-fold flip: an object with a two-fold rotational
symmetry S (180 degrees about an axis u) has two right answers, T and T S. The exact distance to
the nearer one is `min(e, d(estimate, T S))`, and `d(estimate, T S) >= 180 - e` for every axis u,
with equality when the error rotation's axis is the symmetry axis (quaternion algebra:
cos(d/2) = sin(e/2) |v . u'|, v the error axis, u' = T u). So the folded error is exact for a flip
about the error's own axis and otherwise a lower bound of the error modulo any two-fold symmetry;
it is what the original reported, not a general symmetry-aware metric.

Statistics: median and mean error, Acc@10 and Acc@30 = percent of pairs with error < 10 and < 30
degrees.
"""
import functools
import time

import numpy as np
import tensorflow as tf

from evaluation import degrees
from geometry import angular_distance

ACCURACY_THRESHOLDS_DEG = (10, 30)


def relative_rotations(rotations, pairs):
  """True relative poses `R_j R_i^T` of pairs `[P, 2]` of rows of `rotations [N, 3, 3]`."""
  r = np.asarray(rotations, np.float64)
  return r[pairs[:, 1]] @ np.swapaxes(r[pairs[:, 0]], -1, -2)


def rotation_errors_deg(estimated, true):
  """Angular distance in degrees between rotation stacks `[..., 3, 3]` -> float64 `[...]`."""
  return angular_distance(np.asarray(estimated, np.float64), np.asarray(true, np.float64),
                          degrees=True).numpy()


def fold_symmetric(errors_deg):
  """The symmetric error of the module docstring: `min(e, 180 - e)` for errors in [0, 180]."""
  e = np.asarray(errors_deg, np.float64)
  return np.minimum(e, 180.0 - e)


def summarize_errors(errors_deg):
  """Statistics of pair errors -> dict(n, median_deg, mean_deg, acc10, acc30); acc in percent."""
  e = np.asarray(errors_deg, np.float64)
  if e.size == 0:
    raise ValueError('summarize_errors: no errors to summarize')
  stats = {'n': int(e.size), 'median_deg': float(np.median(e)), 'mean_deg': float(np.mean(e))}
  for t in ACCURACY_THRESHOLDS_DEG:
    stats[f'acc{t}'] = float(100.0 * np.mean(e < t))
  return stats


# An error above this is a pose taken for one of its 180-degree flips (or near one), not a near miss.
FLIPPED_DEG = 150.0


def category_of(instance_ids):
  """Category of each instance id `<category>/<name>` (datasets.sources): `[N]` str; ids without a
  slash are their own category."""
  ids = np.asarray(instance_ids)
  ids = np.char.decode(ids, 'utf-8') if ids.dtype.kind == 'S' else ids.astype(str)
  return np.char.partition(ids, '/')[..., 0]


def summarize_by_group(errors_deg, groups):
  """`summarize_errors` per group (for example per category), plus `sym_median_deg` (median of
  `fold_symmetric`) and `flipped` (percent of errors above FLIPPED_DEG).

  Args:
    errors_deg: `[P]` plain (unfolded) errors in degrees.
    groups: `[P]` group of each error.
  Returns:
    dict group -> stats, in sorted group order.
  """
  e = np.asarray(errors_deg, np.float64)
  groups = np.asarray(groups)
  if e.shape != groups.shape:
    raise ValueError(f'summarize_by_group: errors {e.shape} and groups {groups.shape} differ')
  out = {}
  for group in np.unique(groups):
    chosen = e[groups == group]
    stats = summarize_errors(chosen)
    stats['sym_median_deg'] = float(np.median(fold_symmetric(chosen)))
    stats['flipped'] = float(100.0 * np.mean(chosen > FLIPPED_DEG))
    out[group.item() if hasattr(group, 'item') else group] = stats
  return out


def _batches(count, batch_size):
  for start in range(0, count, batch_size):
    yield start, min(start + batch_size, count)


# Graph mode runs correlation.align 1.3-1.7 times faster than eager execution (0.68 against 1.13 ms per
# pair at B = 16, 3.2 against 4.0 at B = 32; C = 32, batches of 64, 2 CPU cores; the correlation's steps
# are XLA-compiled either way), for 0.3-0.4 s more tracing on the first call. It pays off from about
# this many pairs on; smaller experiments run eagerly.
GRAPH_MIN_PAIRS = 512


@functools.lru_cache(maxsize=None)
def _graph_align(align_fn, upsample, normalize):
  """`align_fn` with its options fixed, as one tf.function (one trace per batch and map shape;
  no shape relaxation: the correlation needs static map sizes)."""
  return tf.function(lambda f, g: align_fn(f, g, upsample=upsample, normalize=normalize))


def align_pairs(maps, pairs, align_fn=None, batch_size=64, upsample=1, normalize=False,
                progress=True, description='align', graph='auto'):
  """Estimated relative rotations `align(maps[i], maps[j])` of pairs `[P, 2]`: float32 `[P, 3, 3]`.

  Args:
    maps: `[N, 2B, 2B, C]` embeddings.
    pairs: int `[P, 2]` row indices (view 1, view 2).
    align_fn: `align(f, g, upsample=..., normalize=...) -> [..., 3, 3]` (TF-traceable when run
      in graph mode); default `correlation.align` (with its sub-grid refinement).
    batch_size: pairs per call (at most the number of pairs). The last batch is padded to full
      size by repeating its first pair, so that a traced align sees one shape only.
    upsample, normalize: passed to `align_fn` (feature-map upsampling of the correlation and
      per-channel normalisation, see correlation.align).
    progress: show a tqdm bar with the pair rate.
    graph: run `align_fn` inside a tf.function: True, False, or 'auto' (from GRAPH_MIN_PAIRS
      pairs on).
  """
  if align_fn is None:
    import correlation  # pylint: disable=g-import-not-at-top  (heavy tables, only when used)
    align_fn = correlation.align
  maps = np.asarray(maps, np.float32)
  pairs = np.asarray(pairs, np.int64)
  if pairs.ndim != 2 or pairs.shape[1] != 2:
    raise ValueError(f'pairs must be [P, 2], got {pairs.shape}')
  if batch_size < 1:
    raise ValueError(f'batch_size must be >= 1, got {batch_size}')
  batch_size = max(1, min(batch_size, len(pairs)))  # no padding work for a small experiment
  if graph == 'auto':
    graph = len(pairs) >= GRAPH_MIN_PAIRS
  if graph:
    call = _graph_align(align_fn, int(upsample), bool(normalize))
  else:
    call = lambda f, g: align_fn(f, g, upsample=upsample, normalize=normalize)
  out = np.zeros((len(pairs), 3, 3), np.float32)
  bar = None
  if progress:
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top
    bar = tqdm(total=len(pairs), desc=description, unit='pair', dynamic_ncols=True)
  try:
    for start, stop in _batches(len(pairs), batch_size):
      chunk = pairs[start:stop]
      padded = np.concatenate([chunk, np.repeat(chunk[:1], batch_size - len(chunk), 0)])
      f = tf.constant(maps[padded[:, 0]])
      g = tf.constant(maps[padded[:, 1]])
      rot = call(f, g)
      out[start:stop] = np.asarray(rot)[:len(chunk)]
      if bar is not None:
        bar.update(len(chunk))
  finally:
    if bar is not None:
      bar.close()
  return out


def run_alignment(embeddings, pairs, mode='fmap', symmetric=False, align_fn=None, batch_size=64,
                  upsample=1, normalize=False, progress=True, odd_degree_weight=1.0):
  """The experiment on one set of pairs.

  Args:
    embeddings: dict from `embeddings_io.load_embeddings` (needs `mode` and `rot`).
    pairs: int `[P, 2]` row indices from `pairs.make_pairs`.
    mode: 'fmap' (student embeddings) or 'target' (teacher embeddings).
    symmetric: fold errors with `fold_symmetric`.
    align_fn, batch_size, upsample, normalize, progress: see `align_pairs`.
    odd_degree_weight: in 'fmap' mode, the student's maps are correlated with their odd degrees
      scaled by this (`degrees.weight_odd_degrees`); the teacher's maps are used as they are.

  Returns:
    dict with `stats` (see `summarize_errors`, plus `pairs_per_s`), and per-pair arrays `pairs`,
    `estimated` [P, 3, 3], `true` [P, 3, 3], `raw_error_deg` [P], `error_deg` [P] (folded when
    symmetric).
  """
  if mode not in ('fmap', 'target'):
    raise ValueError(f'mode must be "fmap" or "target", got {mode!r}')
  if mode not in embeddings:
    raise ValueError(f'mode "{mode}": the embeddings have no "{mode}" array '
                     f'(keys: {sorted(embeddings)})')
  maps = embeddings[mode]
  if mode == 'fmap' and odd_degree_weight != 1.0:
    maps = degrees.weight_odd_degrees(maps, odd_degree_weight).numpy()
  start = time.perf_counter()
  estimated = align_pairs(maps, pairs, align_fn=align_fn, batch_size=batch_size,
                          upsample=upsample, normalize=normalize, progress=progress,
                          description=f'align {mode}')
  seconds = time.perf_counter() - start
  true = relative_rotations(embeddings['rot'], pairs)
  raw = rotation_errors_deg(estimated, true)
  errors = fold_symmetric(raw) if symmetric else raw
  stats = summarize_errors(errors)
  stats['pairs_per_s'] = len(pairs) / max(seconds, 1e-9)
  return {'stats': stats, 'pairs': np.asarray(pairs, np.int64), 'estimated': estimated,
          'true': true.astype(np.float32), 'raw_error_deg': raw, 'error_deg': errors}
