"""Training throughput of a student: images per second of the shared training loop.

The student is the full-size default (64 px images, ResNet v2 encoder-decoder, 2 blocks per stage,
64..512 channels, 1024-d bottleneck) regressing the default teacher embedding (block4 of
`models.build_teacher` at bandwidth 32: 32 x 32 x 64). An untrained teacher is exported and loaded
with hub.load as in training; its targets are cached before timing (`cache_targets='memory'`), so
the rate is the student's step alone (forward, Huber loss, backward, Adam). Inputs are random
images and spheres: the rate does not depend on their content.

  .venv/bin/python benchmarks/bench_students.py [--batch_size=32] [--image_size=64] [--steps=5]
      [--strategy=one_device]
"""
import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf

from models import student_task
from models import teacher as teacher_lib
from models import training


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch_size', type=int, default=32)
  parser.add_argument('--image_size', type=int, default=64)
  parser.add_argument('--bandwidth', type=int, default=32, help="The teacher's input bandwidth.")
  parser.add_argument('--layers_per_block', type=int, default=2)
  parser.add_argument('--max_channels', type=int, default=512)
  parser.add_argument('--steps', type=int, default=5, help='Timed steps (after 2 warm-up steps).')
  parser.add_argument('--strategy', default='one_device', choices=training.STRATEGIES[:2])
  args = parser.parse_args()

  rng = np.random.default_rng(0)
  num = 2 * args.batch_size
  examples = {
      'image': rng.uniform(size=(num, args.image_size, args.image_size, 1)).astype(np.float32),
      'sphere': rng.uniform(size=(num, 2 * args.bandwidth, 2 * args.bandwidth, 2)).astype(
          np.float32)}
  split = lambda _: tf.data.Dataset.from_tensor_slices(examples)
  with tempfile.TemporaryDirectory() as tmp:
    teacher = teacher_lib.build_teacher(args.bandwidth, 2, num_classes=10)
    teacher_dir = teacher_lib.export_teacher(teacher, os.path.join(tmp, 'teacher'))
    task = student_task.StudentTask(
        'student', split, teacher_dir, cache_targets='memory', range_examples=num,
        model_options=dict(layers_per_block=args.layers_per_block,
                           max_channels=args.max_channels))
    config = training.TrainConfig(os.path.join(tmp, 'run'), batch_size=args.batch_size)
    trainer = training.Trainer(task, config, training.make_strategy(args.strategy))
    trainer.train_steps(2)  # tracing, and one pass over the data to fill the target cache
    start = time.perf_counter()
    trainer.train_steps(args.steps)
    elapsed = time.perf_counter() - start
  result = {
      'images_per_sec': round(args.steps * args.batch_size / elapsed, 2),
      'sec_per_step': round(elapsed / args.steps, 3),
      'batch_size': args.batch_size, 'image_size': args.image_size,
      'embedding_shape': list(task.embedding_shape),
      'parameters': int(trainer.model.count_params()),
      'devices': [d.name for d in tf.config.list_logical_devices()],
      'replicas': trainer.strategy.num_replicas_in_sync,
  }
  print(json.dumps(result, indent=2))


if __name__ == '__main__':
  main()
