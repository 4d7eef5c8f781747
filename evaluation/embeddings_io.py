"""The embeddings file: read, validate and write it (format of docs/conventions.md).

A `.npz` with
  fmap      float32 [N, 2B, 2B, C]  predicted (student) embeddings of N views;
  target    float32 [N, 2B, 2B, C]  teacher embeddings of the same views (optional);
  rot       float32 [N, 3, 3]       rotation of each view (the view shows `rot . mesh`);
  instance  [N] int or str          instance id of each view;
  label     [N] int or str          class of each view (optional);
  image     float32 [N, H, W, 1]    the views themselves, in [0, 1] (optional; the view-synthesis
                                    evaluation needs them).
Rows carry no meaning beyond these ids: pairs are formed from `instance` and `label`.

Files are read with `allow_pickle=False` (ids must be plain numeric or unicode arrays) and written
atomically (temp file in the same folder, then `os.replace`).
"""
import os

import numpy as np

from evaluation.files import atomic_write_npz

MAP_KEYS = ('fmap', 'target')
OPTIONAL_KEYS = ('target', 'label', 'image')


# Largest |value| of a map that float32 correlation handles: products of two maps, summed over
# the grid and the spectrum, must stay far from float32's overflow (3e38) and underflow (1e-38).
MAX_MAP_AMPLITUDE = 1e12
MIN_MAP_AMPLITUDE = 1e-12
# A channel whose spread over the grid is below this fraction of the map's largest value varies
# by less than float32 can resolve next to it (eps 1.2e-7): it carries no pose.
MIN_RELATIVE_SPREAD = 1e-6


def map_scale_problems(maps):
  """Per map, why float32 correlation of it would be meaningless, or None when it is usable.

  Args:
    maps: `[N, 2B, 2B, C]` finite values.

  Returns:
    list of N entries: None, or a reason: 'all zeros', 'constant (no pose information)', or
    'scale X outside [MIN_MAP_AMPLITUDE, MAX_MAP_AMPLITUDE]' (X its largest |value|).
  """
  maps = np.asarray(maps, np.float64)
  if maps.ndim != 4 or not len(maps):
    return [None] * len(maps)
  amplitude = np.abs(maps).max(axis=(1, 2, 3))
  spread = maps.std(axis=(1, 2)).max(axis=-1)
  problems = []
  for top, variation in zip(amplitude, spread):
    if top == 0:
      problems.append('all zeros')
    elif not MIN_MAP_AMPLITUDE <= top <= MAX_MAP_AMPLITUDE:
      problems.append(f'scale {top:.3g} outside [{MIN_MAP_AMPLITUDE:g}, '
                      f'{MAX_MAP_AMPLITUDE:g}] (float32 correlation over- or underflows)')
    elif variation <= MIN_RELATIVE_SPREAD * top:
      problems.append('constant (no pose information)')
    else:
      problems.append(None)
  return problems


def check_map_scales(maps, what, rows=None):
  """Raises ValueError naming `what` when any map (of `rows`, default all) is unusable for
  float32 correlation (`map_scale_problems`): e.g. 'embeddings file x.npz, "fmap"'."""
  maps = np.asarray(maps)
  rows = np.arange(len(maps)) if rows is None else np.unique(np.asarray(rows, np.int64))
  problems = map_scale_problems(maps[rows]) if len(rows) else []
  bad = [(int(r), p) for r, p in zip(rows, problems) if p is not None]
  if bad:
    shown = '; '.join(f'row {r}: {p}' for r, p in bad[:3])
    more = f' (and {len(bad) - 3} more)' if len(bad) > 3 else ''
    raise ValueError(f'{what}: {len(bad)} of {len(rows)} maps cannot be aligned in float32: '
                     f'{shown}{more}')


def _fail(path, message):
  raise ValueError(f'embeddings file {path}: {message}')


def validate_embeddings(arrays, path='<memory>'):
  """Checks the arrays of an embeddings file; returns them as a new dict with canonical dtypes.

  Args:
    arrays: mapping with the keys of the module docstring.
    path: used in error messages only.

  Returns:
    dict: maps and images as float32, `rot` float32, ids as numpy arrays; absent optional keys are
    left out.

  Raises:
    ValueError naming `path` for a missing key, a wrong shape, a row-count mismatch or
    non-finite values.
  """
  if 'fmap' not in arrays and 'target' not in arrays:
    _fail(path, f'needs "fmap" or "target"; has {sorted(arrays)}')
  for key in ('rot', 'instance'):
    if key not in arrays:
      _fail(path, f'missing "{key}"; has {sorted(arrays)}')
  out = {}
  rot = np.asarray(arrays['rot'], np.float32)
  if rot.ndim != 3 or rot.shape[1:] != (3, 3):
    _fail(path, f'"rot" must be [N, 3, 3], got {rot.shape}')
  n = rot.shape[0]
  if not np.all(np.isfinite(rot)):
    _fail(path, '"rot" has non-finite values')
  orthogonality = np.abs(rot @ np.swapaxes(rot, 1, 2) - np.eye(3)).max() if n else 0.0
  if orthogonality > 1e-3:
    _fail(path, f'"rot" is not a stack of rotations (|R R^T - I| = {orthogonality:.2g})')
  out['rot'] = rot
  for key in ('fmap', 'target'):
    if key not in arrays:
      continue
    maps = np.asarray(arrays[key], np.float32)
    if maps.ndim != 4 or maps.shape[1] != maps.shape[2] or maps.shape[1] % 2:
      _fail(path, f'"{key}" must be [N, 2B, 2B, C], got {maps.shape}')
    if maps.shape[0] != n:
      _fail(path, f'"{key}" has {maps.shape[0]} rows but "rot" has {n}')
    if not np.all(np.isfinite(maps)):
      _fail(path, f'"{key}" has non-finite values')
    out[key] = maps
  if 'fmap' in out and 'target' in out and out['fmap'].shape[1:3] != out['target'].shape[1:3]:
    _fail(path, f'"fmap" {out["fmap"].shape} and "target" {out["target"].shape} differ in grid '
          'size')
  for key in ('instance', 'label'):
    if key not in arrays:
      continue
    ids = np.asarray(arrays[key])
    if ids.dtype == object:
      ids = ids.astype(str)
    if ids.shape != (n,):
      _fail(path, f'"{key}" must be [N] = [{n}], got {ids.shape}')
    out[key] = ids
  if 'image' in arrays:
    images = np.asarray(arrays['image'])
    if images.ndim != 4 or images.shape[0] != n or images.shape[-1] != 1:
      _fail(path, f'"image" must be [N={n}, H, W, 1], got {images.shape}')
    out['image'] = (images.astype(np.float32) / 255.0 if images.dtype == np.uint8
                    else images.astype(np.float32))
  return out


def load_embeddings(path):
  """Reads and validates an embeddings file -> dict of arrays (see `validate_embeddings`)."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise ValueError(f'embeddings file {path}: no such file')
  try:
    with np.load(path, allow_pickle=False) as data:
      arrays = {key: data[key] for key in data.files}
  except Exception as e:  # zipfile, pickle and format errors all mean "not an embeddings file"
    raise ValueError(f'embeddings file {path}: cannot read it as .npz ({e})') from e
  return validate_embeddings(arrays, path)


def save_embeddings(path, **arrays):
  """Validates the arrays as an embeddings file and writes them atomically to `path`."""
  clean = validate_embeddings(arrays, path)
  atomic_write_npz(path, **clean)
  return clean
