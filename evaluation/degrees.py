"""How well predicted spherical maps match their targets, degree by degree.

The relative pose of two embeddings rests on their low spherical-harmonic degrees, and on the odd
ones for telling a pose from its 180-degree flips (`models/student_task.py`), while a map loss
weighs each degree by its energy. This per-degree view shows what a student has learnt even while
its relative pose is still at chance.

`weight_odd_degrees` is the knob that follows from it: a student's maps correlated with their odd
degrees scaled up, so that the flip-telling part has more say against the errors of the larger even
part (`evaluate.py align|relpose --odd_degree_weight`).
"""
import numpy as np
import tensorflow as tf

from correlation import sht


def degree_correlation(pred, target, max_degree=6, batch_size=256):
  """Per-degree correlation of predicted and target maps, over examples and channels.

  `rho_l = Re sum <P_l p, P_l t> / sqrt(sum ||P_l p||^2 sum ||P_l t||^2)`, the sums over examples
  and channels, after removing each map set's mean over examples (so degree 0 measures how the
  per-example means vary, not their common level). 1: the degree's part is right up to a positive
  scale; 0: unrelated. Invariant to rotating both sets alike.

  Args:
    pred, target: real maps `[N, 2B, 2B, C]` (numpy or tensors).
    max_degree: degrees 0..max_degree (at most B - 1) are reported.
    batch_size: maps per transform (bounds the memory).

  Returns:
    float64 `[max_degree + 1]`.
  """
  pred, target = np.asarray(pred, np.float32), np.asarray(target, np.float32)
  if pred.shape != target.shape or pred.ndim != 4:
    raise ValueError(f'degree_correlation: pred {pred.shape} and target {target.shape} must be '
                     'maps [N, 2B, 2B, C] of the same shape')
  degrees = min(int(max_degree), pred.shape[1] // 2 - 1) + 1
  pred, target = pred - pred.mean(axis=0), target - target.mean(axis=0)
  cross, power_p, power_t = np.zeros(degrees), np.zeros(degrees), np.zeros(degrees)
  total = lambda per_degree: tf.reduce_sum(per_degree, axis=[0, 2]).numpy()[:degrees]
  for start in range(0, len(pred), batch_size):
    cp = sht.forward(tf.constant(pred[start:start + batch_size]))
    ct = sht.forward(tf.constant(target[start:start + batch_size]))
    cross += total(sht.degree_inner(cp, ct))
    power_p += total(sht.degree_power(cp))
    power_t += total(sht.degree_power(ct))
  return cross / np.maximum(np.sqrt(power_p * power_t), 1e-30)


def antipodal(maps):
  """`f(-x)` on the Driscoll-Healy grid: `[..., 2B, 2B, C]` -> same shape.

  The antipode of `(beta_j, alpha_k)` is `(pi - beta_j, alpha_k + pi)`, which is the grid point
  `(2B - 1 - j, k + B mod 2B)`, so this is an exact permutation of the samples.
  """
  maps = tf.convert_to_tensor(maps)
  return tf.roll(tf.reverse(maps, axis=[-3]), shift=maps.shape[-2] // 2, axis=-2)


def weight_odd_degrees(maps, weight):
  """Maps whose odd spherical-harmonic degrees are scaled by `weight`, the even ones kept.

  `Y_l^m(-x) = (-1)^l Y_l^m(x)`, so the even-degree part of `f` is `(f(x) + f(-x)) / 2` and the odd
  part `(f(x) - f(-x)) / 2`, and the result is `(1 + w) / 2 f + (1 - w) / 2 f(-x)`: a few
  elementwise operations, no transform. On the grid it holds for the harmonic coefficients that
  `correlation` computes from the samples (`sht.forward`), band-limited maps or not, because the
  quadrature is symmetric under the antipodal permutation: the correlation of two weighted maps is
  the unweighted one with its odd-degree cross-spectra scaled by `weight ** 2`.

  Args:
    maps: real `[..., 2B, 2B, C]`.
    weight: scale of the odd degrees (1: the maps unchanged; 0: their even part).
  Returns:
    float32 (float64 for float64 input) tensor of the shape of `maps`.
  """
  maps = sht._check_map(maps, 'weight_odd_degrees')  # pylint: disable=protected-access
  weight = float(weight)
  if weight == 1.0:
    return maps
  return (0.5 * (1.0 + weight)) * maps + (0.5 * (1.0 - weight)) * antipodal(maps)
