"""Pairs from ids: brute-force enumeration, row-order invariance, uniform sampling, errors."""
import itertools

import numpy as np
import pytest

from evaluation import pairs as pairs_lib
from geometry import random_rotations


def _dataset(instances_per_class=(3, 2, 1), views=(3, 2, 4, 1, 3, 2), seed=0):
  """Rows of a toy embeddings file: string instance ids, int labels, random rotations."""
  instance, label = [], []
  k = 0
  for c, count in enumerate(instances_per_class):
    for _ in range(count):
      instance += [f'inst{k}'] * views[k]
      label += [c] * views[k]
      k += 1
  instance, label = np.array(instance), np.array(label)
  return instance, label, random_rotations(len(instance), seed)


def _brute_force(instance, label, kind):
  """Every unordered pair of rows that qualifies, as a set of frozensets."""
  out = set()
  for i, j in itertools.combinations(range(len(instance)), 2):
    same = instance[i] == instance[j]
    if (kind == 'same' and same) or (kind == 'diff' and not same and label[i] == label[j]):
      out.add(frozenset((i, j)))
  return out


def _as_views(pairs, instance, rotations):
  """Pairs of rows -> set of pairs of view identities (instance, rounded rotation), row-free."""
  key = lambda i: (instance[i], tuple(np.round(rotations[i].ravel(), 5)))
  return {frozenset((key(i), key(j))) for i, j in pairs}


@pytest.mark.parametrize('kind', ['same', 'diff'])
def test_all_pairs_match_brute_force(kind):
  instance, label, rot = _dataset()
  pairs = pairs_lib.make_pairs(instance, rot, kind=kind, label=label)
  got = {frozenset(map(int, p)) for p in pairs}
  assert len(got) == len(pairs)  # no duplicates, no (i, i)
  assert all(len(p) == 2 for p in got)
  assert got == _brute_force(instance, label, kind)
  assert pairs_lib.count_pairs(instance, kind, label) == len(pairs)


@pytest.mark.parametrize('kind,max_pairs', [('same', 0), ('diff', 0), ('same', 5), ('diff', 7)])
def test_pairs_do_not_depend_on_row_order(kind, max_pairs):
  instance, label, rot = _dataset()
  pairs = pairs_lib.make_pairs(instance, rot, kind, label, max_pairs=max_pairs, seed=3)
  perm = np.random.default_rng(1).permutation(len(instance))
  shuffled = pairs_lib.make_pairs(instance[perm], rot[perm], kind, label[perm],
                                  max_pairs=max_pairs, seed=3)
  assert _as_views(pairs, instance, rot) == _as_views(shuffled, instance[perm], rot[perm])
  # Orientation (which view is view 1) is also independent of the row order.
  first = lambda p, inst, r: [(inst[i], tuple(np.round(r[i].ravel(), 5))) for i, _ in p]
  assert sorted(first(pairs, instance, rot)) == sorted(first(shuffled, instance[perm], rot[perm]))


@pytest.mark.parametrize('kind', ['same', 'diff'])
def test_sampling_is_a_deterministic_subset(kind):
  instance, label, rot = _dataset()
  everything = {frozenset(map(int, p)) for p in pairs_lib.make_pairs(instance, rot, kind, label)}
  a = pairs_lib.make_pairs(instance, rot, kind, label, max_pairs=4, seed=7)
  b = pairs_lib.make_pairs(instance, rot, kind, label, max_pairs=4, seed=7)
  np.testing.assert_array_equal(a, b)
  assert len({frozenset(map(int, p)) for p in a}) == 4
  assert {frozenset(map(int, p)) for p in a} <= everything
  others = [pairs_lib.make_pairs(instance, rot, kind, label, max_pairs=4, seed=s) for s in range(5)]
  assert any(not np.array_equal(a, o) for o in others)
  # max_pairs above the total gives all pairs.
  assert len(pairs_lib.make_pairs(instance, rot, kind, label, max_pairs=10**6)) == len(everything)


def test_diff_sampling_is_uniform():
  # The rejection sampler (class by pair count, then two views) must be uniform over all pairs,
  # although classes differ in size and instances in view count.
  instance, label, rot = _dataset()
  everything = sorted(_brute_force(instance, label, 'diff'), key=sorted)
  counts = dict.fromkeys(everything, 0)
  trials, draw = 300, len(everything) // 2
  for seed in range(trials):
    for p in pairs_lib.make_pairs(instance, rot, 'diff', label, max_pairs=draw, seed=seed):
      counts[frozenset(map(int, p))] += 1
  freq = np.array(list(counts.values())) / trials
  expected = draw / len(everything)
  # Binomial(300, ~0.5): 5 standard deviations is about +-0.14.
  assert np.all(np.abs(freq - expected) < 0.15), (freq, expected)


def test_errors_are_clear():
  instance, label, rot = _dataset()
  with pytest.raises(ValueError, match='labels'):
    pairs_lib.make_pairs(instance, rot, 'diff')
  with pytest.raises(ValueError, match='kind'):
    pairs_lib.make_pairs(instance, rot, 'other', label)
  with pytest.raises(ValueError, match='no instance has two views'):
    pairs_lib.make_pairs(np.arange(4), random_rotations(4, 0), 'same')
  with pytest.raises(ValueError, match='no class has two instances'):
    pairs_lib.make_pairs(np.array([1, 1, 2]), random_rotations(3, 0), 'diff', np.array([0, 0, 1]))
  with pytest.raises(ValueError, match='rows'):
    pairs_lib.make_pairs(instance, rot[:-1], 'same')


def test_integer_ids_and_large_sample_counts():
  # 200 instances x 5 views, 4 classes: about 120k diff pairs, sampled without enumeration.
  instance = np.repeat(np.arange(200), 5)
  label = instance % 4
  rot = random_rotations(len(instance), 2)
  total = pairs_lib.count_pairs(instance, 'diff', label)
  assert total == 4 * ((250 ** 2 - 50 * 25) // 2)
  pairs = pairs_lib.make_pairs(instance, rot, 'diff', label, max_pairs=5000, seed=0)
  assert len(pairs) == 5000
  assert np.all(instance[pairs[:, 0]] != instance[pairs[:, 1]])
  assert np.all(label[pairs[:, 0]] == label[pairs[:, 1]])
  assert len({tuple(p) for p in np.sort(pairs, 1)}) == 5000
