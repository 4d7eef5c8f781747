"""Cost of the exported embedder's symmetry average (`models.embedder_export`), as a ratio.

An untrained student of the default preset's size (32 px views, 16..128 channels, 256-d bottleneck,
embedding 32 x 32 x 64) is exported once per setting of `turns` and `mirror`, reloaded with
`tf.saved_model.load` as the evaluation does, and timed on the same random images: images per
second (best of `--reps` calls after a warm-up) and the slowdown against the plain student
(turns 1, no mirror) timed in the same process. The average runs the student on
`turns * (2 if mirror else 1)` views of every image in one batch, so the ratio is about that
number; what the average buys is in the README (relative pose results).

  .venv/bin/python benchmarks/bench_embedder.py [--images=128] [--reps=5]
"""
import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf

from models import embedder_export
from models import students

SETTINGS = ((1, False), (1, True), (4, False), (8, False), (8, True))


def images_per_second(embedder, images, reps):
  embedder.embed(images)
  best = float('inf')
  for _ in range(reps):
    start = time.perf_counter()
    embedder.embed(images)['embedding'].numpy()
    best = min(best, time.perf_counter() - start)
  return len(images) / best


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--images', type=int, default=128, help='Images per call.')
  parser.add_argument('--reps', type=int, default=5)
  args = parser.parse_args()
  student = students.build_student(32, (32, 32, 64), base_channels=16, max_channels=128,
                                   n_latent=256, layers_per_block=2)
  images = tf.constant(np.random.default_rng(0).random((args.images, 32, 32, 1)), tf.float32)
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    for turns, mirror in SETTINGS:
      path = embedder_export.export_embedder(student, os.path.join(tmp, f'{turns}{mirror}'),
                                             turns=turns, mirror=mirror)
      rate = images_per_second(tf.saved_model.load(path), images, args.reps)
      rows.append((turns, mirror, rate))
  plain = rows[0][2]
  print('| turns | mirror | student passes per image | images/s | time vs plain |')
  print('|---|---|---|---|---|')
  for turns, mirror, rate in rows:
    print(f'| {turns} | {mirror} | {turns * (2 if mirror else 1)} | {rate:.0f} | '
          f'{plain / rate:.1f}x |')


if __name__ == '__main__':
  main()
