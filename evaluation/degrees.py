"""How well predicted spherical maps match their targets, degree by degree.

The relative pose of two embeddings rests on their low spherical-harmonic degrees, and on the odd
ones for telling a pose from its 180-degree flips (`models/student_task.py`), while a map loss
weighs each degree by its energy. This per-degree view shows what a student has learnt even while
its relative pose is still at chance.
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
