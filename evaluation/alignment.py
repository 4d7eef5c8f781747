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

Options of the gist's MATLAB experiment (align.m, spherical_correlation.m), each beside ours:
- peaks (`PEAKS`): 'argmax' is spherical_correlation.m's maximum of the correlation grid
  (`correlation.align(..., refine=False)`); 'refined' (ours) refines the four best distinct grid
  peaks off the grid and keeps the best.
- upsampling (`UPSAMPLE_METHODS`): 'bicubic' is align.m's `imresize(im, upsample)` of each map
  (MATLAB's bicubic kernel with a = -0.5 and mirrored borders, `imresize_matrix`) followed by the
  correlation of the larger maps as maps of bandwidth `upsample * B`; 'spectral' (ours) evaluates
  the correlation of the maps as they are on the grid of bandwidth `upsample * B` (zero padding of
  the spectrum, what align.m's TODO suggests).
- normalisation (`NORMALIZE_METHODS`): 'matrix_norm' is align.m's `im(:,:,k) / norm(im(:,:,k))`,
  MATLAB's matrix 2-norm (the largest singular value; the mean is kept), after the resizing;
  'spectral' (ours, `correlation.align(normalize=True)`) scales each channel's coefficients.
"""
import functools
import time

import numpy as np
import tensorflow as tf

from evaluation import degrees
from geometry import angular_distance

ACCURACY_THRESHOLDS_DEG = (10, 30)
PEAKS = ('refined', 'argmax')
UPSAMPLE_METHODS = ('spectral', 'bicubic')
NORMALIZE_METHODS = ('spectral', 'matrix_norm')


def _matlab_cubic(x):
  """MATLAB imresize's cubic kernel (Keys, a = -0.5) at `x`."""
  ax = np.abs(x)
  return ((1.5 * ax**3 - 2.5 * ax**2 + 1) * (ax <= 1) +
          (-0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2)))


@functools.lru_cache(maxsize=None)
def imresize_matrix(in_length, scale):
  """The 1-D linear map of MATLAB's `imresize(x, scale)` (bicubic) for an integer `scale >= 1`:
  float64 `[scale * in_length, in_length]` (read-only).

  Output sample `o` (1-based) sits at input coordinate `u = o / scale + (1 - 1 / scale) / 2`; its
  weights are the cubic kernel at `u - k` for the taps `k = floor(u - 2) .. floor(u - 2) + 5`,
  divided by their sum, and a tap beyond the border reads its mirror image with the edge sample
  repeated (MATLAB's `[1:n, n:-1:1]` indexing). No antialiasing: it only acts when shrinking.
  """
  if int(scale) != scale or scale < 1 or int(in_length) != in_length or in_length < 1:
    raise ValueError(f'imresize_matrix: needs a positive length and an integer scale >= 1, got '
                     f'{in_length!r}, {scale!r}')
  n, s = int(in_length), int(scale)
  u = np.arange(1, s * n + 1) / s + 0.5 * (1 - 1 / s)
  taps = np.floor(u - 2)[:, None] + np.arange(6)[None, :]
  weights = _matlab_cubic(u[:, None] - taps)
  weights /= weights.sum(axis=1, keepdims=True)
  mirror = np.concatenate([np.arange(n), np.arange(n)[::-1]])
  index = mirror[np.mod(taps.astype(np.int64) - 1, 2 * n)]
  matrix = np.zeros((s * n, n))
  np.add.at(matrix, (np.repeat(np.arange(s * n), 6), index.ravel()), weights.ravel())
  matrix.flags.writeable = False
  return matrix


def resize_bicubic(maps, scale):
  """MATLAB's `imresize(maps, scale)` of maps `[N, H, W, C]` (each channel alike): float32
  `[N, scale H, scale W, C]`."""
  maps = np.asarray(maps, np.float64)
  rows = imresize_matrix(maps.shape[1], scale)
  cols = imresize_matrix(maps.shape[2], scale)
  return np.einsum('ih,nhwc,jw->nijc', rows, maps, cols).astype(np.float32)


def matrix_norm_normalize(maps):
  """Each channel of maps `[N, H, W, C]` divided by its matrix 2-norm (largest singular value),
  as MATLAB's `im(:,:,k) / norm(im(:,:,k))`; the mean is kept. A zero channel stays zero."""
  maps = np.asarray(maps, np.float32)
  norms = np.linalg.norm(np.moveaxis(maps, -1, 1).astype(np.float64), ord=2, axis=(-2, -1))
  norms = np.where(norms > 0, norms, 1.0)
  return (maps / norms[:, None, None, :]).astype(np.float32)


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


@functools.lru_cache(maxsize=None)
def grid_argmax_align(align_fn):
  """`align_fn` (like `correlation.align`) with `refine=False`: the grid's argmax (one function
  per `align_fn`, so the traced graph is reused)."""
  return functools.partial(align_fn, refine=False)


def run_alignment(embeddings, pairs, mode='fmap', symmetric=False, align_fn=None, batch_size=64,
                  upsample=1, normalize=False, progress=True, odd_degree_weight=1.0,
                  peaks='refined', upsample_method='spectral', normalize_method='spectral'):
  """The experiment on one set of pairs.

  Args:
    embeddings: dict from `embeddings_io.load_embeddings` (needs `mode` and `rot`).
    pairs: int `[P, 2]` row indices from `pairs.make_pairs`.
    mode: 'fmap' (student embeddings) or 'target' (teacher embeddings).
    symmetric: fold errors with `fold_symmetric`.
    align_fn, batch_size, upsample, normalize, progress: see `align_pairs`.
    odd_degree_weight: in 'fmap' mode, the student's maps are correlated with their odd degrees
      scaled by this (`degrees.weight_odd_degrees`); the teacher's maps are used as they are.
    peaks, upsample_method, normalize_method: one of `PEAKS`, `UPSAMPLE_METHODS`,
      `NORMALIZE_METHODS` (module docstring); `peaks` is ignored with an `align_fn`.

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
  for what, value, choices in (('peaks', peaks, PEAKS),
                               ('upsample_method', upsample_method, UPSAMPLE_METHODS),
                               ('normalize_method', normalize_method, NORMALIZE_METHODS)):
    if value not in choices:
      raise ValueError(f'{what} must be one of {choices}, got {value!r}')
  maps = embeddings[mode]
  if mode == 'fmap' and odd_degree_weight != 1.0:
    maps = degrees.weight_odd_degrees(maps, odd_degree_weight).numpy()
  if upsample_method == 'bicubic' and upsample > 1:  # align.m: imresize, then normalize
    maps, upsample = resize_bicubic(maps, upsample), 1
  if normalize and normalize_method == 'matrix_norm':
    maps, normalize = matrix_norm_normalize(maps), False
  if align_fn is None and peaks == 'argmax':
    import correlation  # pylint: disable=g-import-not-at-top  (heavy tables, only when used)
    align_fn = grid_argmax_align(correlation.align)
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
