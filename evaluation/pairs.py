"""Pairs of views for the relative-pose and view-synthesis experiments, formed from ids.

Two kinds (ours, `enumeration='all'`):
  'same': two different views of the same instance;
  'diff': views of two different instances of the same class (needs labels). Their relative pose
          is still R_j R_i^T because the instances of a class share a canonical orientation
          (aligned datasets such as ModelNet and ShapeNet, and the procedural shapes).
Pairs are unordered (i, j) with i != j; each pair is evaluated once, in a fixed orientation
(the view that comes first in the canonical order below is view 1).

The MATLAB experiment of the gist (align.m, called by run_alignment_experiment.m) forms its pairs
differently (`enumeration='first_view'`, `first_view_pairs`): for every instance, its first view
against each of its other views ('same', `nrots - 1` pairs per instance) or, for 'diff', against as
many second rows drawn uniformly from all rows of the file (`partner='random'`: `randi(ntotal)`,
with replacement, any class, even the same instance) or from the views of other instances of the
same class (`partner='same_class'`). align.m reads the first view of instance `i` as row `i`
(its files hold all first views, then all second views, ...); here the first view of an instance
is the first of its rows in the file, which is the same row for a file in that layout and makes
the enumeration depend on the row order (the one exception to the rule below).

The result never depends on the order of the rows: rows are first put in a canonical order (by
label, instance, then the rotation's entries), pairs are enumerated or sampled in that order, and
the canonical indices are mapped back to row indices. Shuffling the rows of an embeddings file
therefore selects the same views, pair for pair, even when pairs are sampled.
"""
import numpy as np

PAIR_KINDS = ('same', 'diff')
ENUMERATIONS = ('all', 'first_view')
PARTNERS = ('same_class', 'random')


def canonical_order(instance, rotations, label=None):
  """Row indices sorted by (label, instance, rotation entries): `int64 [N]`.

  Args:
    instance: `[N]` instance ids (int or str).
    rotations: `[N, 3, 3]` view rotations; they break ties between views of one instance.
    label: optional `[N]` class ids.
  """
  instance = np.asarray(instance)
  rotations = np.asarray(rotations, np.float64).reshape(len(instance), 9)
  # Rounded so that float noise from a save/load round trip cannot reorder views.
  keys = [np.round(rotations[:, k], 6) for k in reversed(range(9))]
  keys.append(instance)
  if label is not None:
    keys.append(np.asarray(label))
  return np.lexsort(keys)


def _groups(ids):
  """Positions sharing an id, one increasing index array per distinct id."""
  _, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
  positions = np.argsort(inverse.ravel(), kind='stable')
  return np.split(positions, np.cumsum(counts)[:-1])


def _same_pairs_canonical(instance):
  """All (i < j) canonical positions with equal instance: `[P, 2]`."""
  parts = []
  for members in _groups(instance):
    if len(members) > 1:
      i, j = np.triu_indices(len(members), k=1)
      parts.append(np.stack([members[i], members[j]], -1))
  return np.concatenate(parts) if parts else np.zeros((0, 2), np.int64)


def _diff_pair_counts(instance, label):
  """Per class: (positions, number of different-instance pairs in it)."""
  classes = []
  for members in _groups(label):
    _, sizes = np.unique(instance[members], return_counts=True)
    count = (len(members) ** 2 - np.sum(sizes.astype(np.int64) ** 2)) // 2
    classes.append((members, int(count)))
  return classes


def _diff_pairs_canonical(instance, label):
  """All (i < j) canonical positions with equal label and different instance: `[P, 2]`."""
  parts = []
  for members, count in _diff_pair_counts(instance, label):
    if count:
      i, j = np.triu_indices(len(members), k=1)
      keep = instance[members[i]] != instance[members[j]]
      parts.append(np.stack([members[i[keep]], members[j[keep]]], -1))
  return np.concatenate(parts) if parts else np.zeros((0, 2), np.int64)


def _sample_diff_pairs_canonical(instance, label, n, rng):
  """`n` distinct different-instance pairs drawn uniformly without enumerating all of them.

  A class is drawn with probability proportional to its number of pairs, then two of its views
  uniformly; a pair of the same instance is rejected. That is uniform over all valid pairs;
  duplicates are dropped and drawing continues until `n` distinct pairs are found.
  """
  classes = [(m, c) for m, c in _diff_pair_counts(instance, label) if c]
  weights = np.array([c for _, c in classes], np.float64)
  chosen = set()
  result = []
  while len(result) < n:
    draws = max(2 * (n - len(result)), 64)
    which = rng.choice(len(classes), size=draws, p=weights / weights.sum())
    for c in which:
      members = classes[c][0]
      a, b = rng.choice(len(members), size=2, replace=False)
      i, j = sorted((members[a], members[b]))
      if instance[i] == instance[j] or (i, j) in chosen:
        continue
      chosen.add((i, j))
      result.append((i, j))
      if len(result) == n:
        break
  return _sorted_pairs(np.array(result, np.int64).reshape(-1, 2))


def _sorted_pairs(pairs):
  """Pairs in lexicographic order of (i, j)."""
  return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]


def count_pairs(instance, kind, label=None):
  """Number of pairs of `kind` ('same' or 'diff') the ids allow, without enumerating them."""
  instance = np.asarray(instance)
  if kind == 'same':
    _, sizes = np.unique(instance, return_counts=True)
    return int(np.sum(sizes.astype(np.int64) * (sizes - 1) // 2))
  if kind == 'diff':
    if label is None:
      raise ValueError('pairs of kind "diff" need class labels')
    return sum(c for _, c in _diff_pair_counts(instance, np.asarray(label)))
  raise ValueError(f'pair kind must be one of {PAIR_KINDS}, got {kind!r}')


def make_pairs(instance, rotations, kind='same', label=None, max_pairs=None, seed=0,
               enumeration='all', partner='same_class'):
  """Pairs of row indices `(i, j)` for the experiment: int64 `[P, 2]`.

  `enumeration='first_view'` gives align.m's pairs (`first_view_pairs` with `partner`), sampled
  down to `max_pairs` like the others; `'all'` (ours) the pairs below, where 'diff' pairs are
  always of one class (`partner` must be 'same_class').

  Args:
    instance: `[N]` instance id of each row.
    rotations: `[N, 3, 3]` rotation of each row (only to order views canonically).
    kind: 'same' (two views of one instance) or 'diff' (two instances of one class).
    label: `[N]` class of each row; required for 'diff'.
    max_pairs: None or 0 for all pairs; otherwise at most this many, drawn uniformly without
      replacement (deterministic by `seed`, independent of the row order).
    seed: seed of the sampling.

  Returns:
    int64 `[P, 2]` row indices, view 1 in column 0 and view 2 in column 1.

  Raises:
    ValueError for an unknown kind, missing labels, mismatched lengths, or no pair at all.
  """
  if kind not in PAIR_KINDS:
    raise ValueError(f'pair kind must be one of {PAIR_KINDS}, got {kind!r}')
  instance = np.asarray(instance)
  n = len(instance)
  if np.shape(rotations)[:1] != (n,):
    raise ValueError(f'instance has {n} rows but rotations has shape {np.shape(rotations)}')
  if kind == 'diff' and label is None and not (enumeration == 'first_view' and
                                               partner == 'random'):
    raise ValueError('pairs of kind "diff" (different instances of one class) need class labels')
  if label is not None and np.shape(label) != (n,):
    raise ValueError(f'instance has {n} rows but label has shape {np.shape(label)}')
  if max_pairs is not None and max_pairs < 0:
    raise ValueError(f'max_pairs must be >= 0, got {max_pairs}')
  if enumeration not in ENUMERATIONS:
    raise ValueError(f'pair enumeration must be one of {ENUMERATIONS}, got {enumeration!r}')
  if enumeration == 'first_view':
    pairs = first_view_pairs(instance, kind, label, partner, seed)
    if max_pairs and max_pairs < len(pairs):
      keep = np.sort(np.random.default_rng(seed).choice(len(pairs), size=max_pairs, replace=False))
      pairs = pairs[keep]
    return pairs
  if partner != 'same_class':
    raise ValueError(f'diff partner {partner!r} needs the first_view enumeration (align.m); '
                     "enumeration 'all' pairs instances of one class")
  order = canonical_order(instance, rotations, label)
  inst = instance[order]
  lab = None if label is None else np.asarray(label)[order]
  total = count_pairs(inst, kind, lab)
  if total == 0:
    raise ValueError(f'no pairs of kind "{kind}" in {n} views: '
                     + ('no instance has two views' if kind == 'same'
                        else 'no class has two instances'))
  rng = np.random.default_rng(seed)
  if kind == 'diff' and max_pairs and max_pairs < total:
    canonical = _sample_diff_pairs_canonical(inst, lab, max_pairs, rng)
  else:
    canonical = _same_pairs_canonical(inst) if kind == 'same' else _diff_pairs_canonical(inst, lab)
    if max_pairs and max_pairs < len(canonical):
      keep = np.sort(rng.choice(len(canonical), size=max_pairs, replace=False))
      canonical = canonical[keep]
  return order[canonical].astype(np.int64)


def first_view_pairs(instance, kind='same', label=None, partner='random', seed=0):
  """The pairs of align.m (module docstring): int64 `[P, 2]` row indices.

  Instances are taken in the order of their first row; for each, its first row `i` is view 1 of
  `v - 1` pairs (`v` its number of rows), in row order. 'same': view 2 runs over the instance's
  other rows. 'diff': each view 2 is drawn, by `seed`, uniformly from all rows (`partner='random'`)
  or from the rows of the same class and another instance (`'same_class'`, needs labels).

  Raises:
    ValueError for an unknown kind or partner, missing labels, or no pair at all.
  """
  if kind not in PAIR_KINDS:
    raise ValueError(f'pair kind must be one of {PAIR_KINDS}, got {kind!r}')
  if partner not in PARTNERS:
    raise ValueError(f'diff partner must be one of {PARTNERS}, got {partner!r}')
  instance = np.asarray(instance)
  n = len(instance)
  _, first, inverse = np.unique(instance, return_index=True, return_inverse=True)
  inverse = inverse.ravel()
  rng = np.random.default_rng(seed)
  if kind == 'diff' and partner == 'same_class':
    if label is None:
      raise ValueError('pairs of kind "diff" with partner "same_class" need class labels')
    label = np.asarray(label)
  pairs = []
  for group in np.argsort(first, kind='stable'):  # instances in the order of their first row
    rows = np.flatnonzero(inverse == group)
    view1, others = rows[0], rows[1:]
    if kind == 'same':
      partners = others
    elif partner == 'random':
      partners = rng.integers(0, n, size=len(others))
    else:
      pool = np.flatnonzero((label == label[view1]) & (instance != instance[view1]))
      partners = rng.choice(pool, size=len(others)) if len(pool) else np.zeros(0, np.int64)
    pairs += [(view1, j) for j in partners]
  if not pairs:
    raise ValueError(f'no first-view pairs of kind "{kind}" in {n} views: no instance has two '
                     'views' + ('' if kind == 'same' else ' or no class has two instances'))
  return np.asarray(pairs, np.int64).reshape(-1, 2)
