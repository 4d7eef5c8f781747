"""Training throughput of a student: images per second of the shared training loop.

The student is the full-size default (64 px images, ResNet v2 encoder-decoder, 2 blocks per stage,
64..512 channels, 1024-d bottleneck) regressing the default teacher embedding (block4 of
`models.build_teacher` at bandwidth 32: 32 x 32 x 64). An untrained teacher is exported and loaded
with hub.load as in training; its targets are cached before timing (`cache_targets='memory'`), so
the rate is the student's step alone (forward, Huber loss, backward, Adam). Inputs are random
images and spheres: the rate does not depend on their content.

`--losses` times one student per entry in the same process and reports each rate as a ratio to the
first: `map` (the map loss alone), `degree` (plus the degree loss), `pose` (plus the degree and pose
losses, the default preset's student). `--preset=default` takes the sizes of the default preset
(32 px, teacher block3 at B = 16 with 32 channels, 16..128 channels, 256 latents, batch 16).

  .venv/bin/python benchmarks/bench_students.py [--batch_size=32] [--image_size=64] [--steps=5]
      [--strategy=one_device] [--preset=default --losses=map,degree,pose --steps=50]
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
from pipeline import presets

_LOSS_TERMS = {'map': {}, 'degree': dict(degree_loss_weight=1.0),
               'pose': dict(degree_loss_weight=1.0, pose_loss_weight=1.0)}


def _time_student(args, split, teacher_dir, num, model_options, terms, jit, tmp):
  """(images/s, s/step, embedding shape, parameters, trainer) of one student with `terms`,
  its loss and gradients compiled with XLA if `jit`."""
  task = student_task.StudentTask('student', split, teacher_dir, cache_targets='memory',
                                  range_examples=num, model_options=model_options, **terms)
  config = training.TrainConfig(tmp, batch_size=args.batch_size, jit_compile=jit)
  trainer = training.Trainer(task, config, training.make_strategy(args.strategy))
  trainer.train_steps(2)  # tracing, and one pass over the data to fill the target cache
  start = time.perf_counter()
  trainer.train_steps(args.steps)
  elapsed = time.perf_counter() - start
  return (args.steps * args.batch_size / elapsed, elapsed / args.steps, task.embedding_shape,
          int(trainer.model.count_params()), trainer)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch_size', type=int, default=32)
  parser.add_argument('--image_size', type=int, default=64)
  parser.add_argument('--bandwidth', type=int, default=32, help="The teacher's input bandwidth.")
  parser.add_argument('--layers_per_block', type=int, default=2)
  parser.add_argument('--max_channels', type=int, default=512)
  parser.add_argument('--steps', type=int, default=5, help='Timed steps (after 2 warm-up steps).')
  parser.add_argument('--strategy', default='one_device', choices=training.STRATEGIES[:2])
  parser.add_argument('--preset', choices=['default'], default=None,
                      help="The default preset's sizes instead of the flags above.")
  parser.add_argument('--losses', default='map',
                      help=f'Comma-separated loss terms, each of {sorted(_LOSS_TERMS)}; '
                      "'+xla' after one (pose+xla) compiles its loss and gradients with XLA.")
  args = parser.parse_args()
  loss_names = args.losses.split(',')
  unknown = [n for n in loss_names if n.removesuffix('+xla') not in _LOSS_TERMS]
  if unknown:
    parser.error(f'--losses: unknown {unknown}; choose from {sorted(_LOSS_TERMS)}, '
                 "each optionally with '+xla'")
  model_options = dict(layers_per_block=args.layers_per_block, max_channels=args.max_channels)
  teacher_options = {}
  if args.preset:
    p = presets.PRESETS[args.preset]
    args.batch_size, args.image_size = p['student_batch_size'], p['image_size']
    args.bandwidth = p['bandwidth']
    model_options = {k: p[k] for k in ('layers_per_block', 'base_channels', 'max_channels',
                                       'n_latent')}
    teacher_options = dict(filters=p['teacher_filters'], pool_blocks=p['teacher_pool_blocks'],
                           embedding_block=p['teacher_embedding_block'])

  rng = np.random.default_rng(0)
  num = 2 * args.batch_size
  examples = {
      'image': rng.uniform(size=(num, args.image_size, args.image_size, 1)).astype(np.float32),
      'sphere': rng.uniform(size=(num, 2 * args.bandwidth, 2 * args.bandwidth, 2)).astype(
          np.float32)}
  split = lambda _: tf.data.Dataset.from_tensor_slices(examples)
  with tempfile.TemporaryDirectory() as tmp:
    teacher = teacher_lib.build_teacher(args.bandwidth, 2, num_classes=10, **teacher_options)
    teacher_dir = teacher_lib.export_teacher(teacher, os.path.join(tmp, 'teacher'))
    runs = {name: _time_student(args, split, teacher_dir, num, model_options,
                                _LOSS_TERMS[name.removesuffix('+xla')], name.endswith('+xla'),
                                os.path.join(tmp, name))
            for name in loss_names}
  first = runs[loss_names[0]]
  baseline = first[0]
  result = {
      'images_per_sec': {n: round(r[0], 2) for n, r in runs.items()},
      'sec_per_step': {n: round(r[1], 4) for n, r in runs.items()},
      f'rate_relative_to_{loss_names[0]}': {n: round(r[0] / baseline, 3) for n, r in runs.items()},
      'batch_size': args.batch_size, 'image_size': args.image_size,
      'embedding_shape': list(first[2]),
      'parameters': first[3],
      'devices': [d.name for d in tf.config.list_logical_devices()],
      'replicas': first[4].strategy.num_replicas_in_sync,
  }
  print(json.dumps(result, indent=2))


if __name__ == '__main__':
  main()
