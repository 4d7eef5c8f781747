"""View synthesis from embeddings: rotate an embedding, decode it, compare with the true view.

For a pair of views (1, 2) of one object at rotations R1, R2, the embedding of view 1 rotated by
the relative pose `R2 R1^T` (correlation.rotate) should be the embedding of view 2; the synthesiser
decodes it to an image that is compared with view 2 by
  L1   = mean |prediction - truth| over pixels (images in [0, 1]);
  PSNR = 10 log10(1 / MSE) in dB (tf.image.psnr, max_val 1; infinite for a perfect prediction);
  SSIM = tf.image.ssim, max_val 1, Gaussian window of size min(11, H, W), sigma 1.5.
"""
import time

import numpy as np
import tensorflow as tf

from evaluation.alignment import relative_rotations


def rotate_and_decode(embeddings, rotations, synthesizer, rotate_fn=None, batch_size=32):
  """Images decoded from `rotations[i] . embeddings[i]`.

  Args:
    embeddings: float32 `[P, 2B, 2B, C]`.
    rotations: `[P, 3, 3]` or one `[3, 3]` for all.
    synthesizer: `f(embeddings [n, 2B, 2B, C]) -> images [n, H, W, 1]` (numpy in, numpy out).
    rotate_fn: `rotate(f, R) -> R . f`; default correlation.rotate.
    batch_size: embeddings per call.

  Returns:
    float32 `[P, H, W, 1]`.
  """
  if rotate_fn is None:
    import correlation  # pylint: disable=g-import-not-at-top
    rotate_fn = correlation.rotate
  embeddings = np.asarray(embeddings, np.float32)
  rotations = np.broadcast_to(np.asarray(rotations, np.float32), (len(embeddings), 3, 3))
  outputs = []
  for start in range(0, len(embeddings), batch_size):
    stop = start + batch_size
    rotated = rotate_fn(tf.constant(embeddings[start:stop]), tf.constant(rotations[start:stop]))
    outputs.append(np.asarray(synthesizer(np.asarray(rotated, np.float32)), np.float32))
  return np.concatenate(outputs)


def image_metrics(predictions, truths):
  """Per-image L1, PSNR (dB) and SSIM of `[P, H, W, 1]` float images in [0, 1] -> dict of `[P]`."""
  p = tf.constant(np.asarray(predictions, np.float32))
  t = tf.constant(np.asarray(truths, np.float32))
  if p.shape != t.shape or p.shape.rank != 4:
    raise ValueError(f'image_metrics: predictions {p.shape} and truths {t.shape} must be equal '
                     '[P, H, W, C]')
  filter_size = int(min(11, p.shape[1], p.shape[2]))
  return {'l1': tf.reduce_mean(tf.abs(p - t), axis=[1, 2, 3]).numpy().astype(np.float64),
          'psnr_db': tf.image.psnr(p, t, max_val=1.0).numpy().astype(np.float64),
          'ssim': tf.image.ssim(p, t, max_val=1.0, filter_size=filter_size).numpy()
                  .astype(np.float64)}


def summarize_metrics(metrics):
  """Means over pairs -> dict(n, l1, psnr_db, ssim); PSNR's mean is over finite values."""
  psnr = metrics['psnr_db']
  finite = psnr[np.isfinite(psnr)]
  return {'n': int(len(metrics['l1'])), 'l1': float(np.mean(metrics['l1'])),
          'psnr_db': float(np.mean(finite)) if finite.size else float('inf'),
          'ssim': float(np.mean(metrics['ssim']))}


def run_synthesis(embeddings, pairs, synthesizer, mode='fmap', rotate_fn=None, batch_size=32):
  """The view-synthesis evaluation on pairs of an embeddings file.

  Args:
    embeddings: dict from embeddings_io.load_embeddings with `image`, `rot` and `mode`.
    pairs: int `[P, 2]` (view 1, view 2) row indices.
    synthesizer: embeddings -> images (see rotate_and_decode).
    mode: which embeddings to rotate and decode, 'fmap' or 'target'.

  Returns:
    dict with `stats` (summarize_metrics plus pairs_per_s), per-pair `l1`, `psnr_db`, `ssim`,
    `pairs`, and `predictions` float32 `[P, H, W, 1]`.
  """
  for key in (mode, 'image', 'rot'):
    if key not in embeddings:
      raise ValueError(f'view synthesis needs "{key}" in the embeddings file '
                       f'(has {sorted(embeddings)})')
  start = time.perf_counter()
  relative = relative_rotations(embeddings['rot'], pairs)
  predictions = rotate_and_decode(embeddings[mode][pairs[:, 0]], relative, synthesizer,
                                  rotate_fn=rotate_fn, batch_size=batch_size)
  truths = embeddings['image'][pairs[:, 1]]
  if predictions.shape != truths.shape:
    raise ValueError(f'the synthesiser returns images {list(predictions.shape[1:])} but the views '
                     f'in the embeddings file are {list(truths.shape[1:])}')
  metrics = image_metrics(predictions, truths)
  stats = summarize_metrics(metrics)
  stats['pairs_per_s'] = len(pairs) / max(time.perf_counter() - start, 1e-9)
  return dict(metrics, stats=stats, pairs=np.asarray(pairs, np.int64), predictions=predictions)
