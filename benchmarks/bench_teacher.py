"""Training throughput of the spherical CNN teacher: forward + backward + Adam update, examples/s.

  python benchmarks/bench_teacher.py [--bandwidth=32] [--batch_sizes=16,32] [--steps=5]
      [--num_classes=10] [--jit_compile] [--profile_layers]

Random input spheres (the throughput does not depend on the values). The first step (tracing) is
excluded; the median of `--steps` timed steps is reported. `--profile_layers` also times the
forward pass of one spherical convolution per block shape, split into its transforms and its filter.
"""
import os
import sys
import time

from absl import app
from absl import flags
import keras
import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from correlation import sht  # pylint: disable=g-import-not-at-top,wrong-import-position
from models import spherical_layers  # pylint: disable=g-import-not-at-top,wrong-import-position
from models import teacher  # pylint: disable=g-import-not-at-top,wrong-import-position
from models import teacher_task  # pylint: disable=g-import-not-at-top,wrong-import-position

flags.DEFINE_integer('bandwidth', 32, 'Input bandwidth B (maps 2B x 2B).')
flags.DEFINE_list('batch_sizes', ['16', '32'], 'Batch sizes to time.')
flags.DEFINE_integer('steps', 5, 'Timed training steps per batch size.')
flags.DEFINE_integer('num_classes', 10, 'Classes of the classifier.')
flags.DEFINE_bool('jit_compile', False, 'Compile the training step with XLA.')
flags.DEFINE_bool('profile_layers', False,
                  'Also time the parts of one convolution per block shape.')
FLAGS = flags.FLAGS


def time_call(fn, steps):
  """Median seconds of `fn()` over `steps` calls after one warm-up call."""
  fn()
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def bench_training(bandwidth, batch_size, steps, num_classes, jit_compile=False):
  """Examples/s of a full training step of the default teacher (with its auxiliary loss)."""
  model = teacher.build_teacher(bandwidth, 2, num_classes)
  optimizer = keras.optimizers.Adam(1e-3)
  rng = np.random.default_rng(0)
  spheres = tf.constant(rng.random((batch_size, 2 * bandwidth, 2 * bandwidth, 2)), tf.float32)
  labels = tf.constant(rng.integers(0, num_classes, batch_size))

  @tf.function(jit_compile=jit_compile)
  def step():
    with tf.GradientTape() as tape:
      per_example, _ = teacher_task.classification_loss_and_metrics(
          model(spheres, training=True), labels)
      loss = tf.reduce_mean(per_example)
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss

  seconds = time_call(lambda: step().numpy(), steps)
  return batch_size / seconds, seconds


def profile_layers(bandwidth, batch_size, steps):
  """Forward milliseconds of SHT, filter and inverse SHT for each block shape of the teacher."""
  rows = []
  shapes = [(bandwidth, 1, 16, False), (bandwidth, 16, 16, False), (bandwidth, 32, 32, True),
            (bandwidth // 2, 32, 32, False), (bandwidth // 2, 64, 64, True),
            (bandwidth // 4, 64, 64, False), (bandwidth // 4, 128, 128, True),
            (bandwidth // 8, 128, 128, False)]
  for b, c_in, c_out, pool in shapes:
    layer = spherical_layers.SphericalConv(c_out, pool=pool, use_bias=False)
    maps = tf.random.normal((batch_size, 2 * b, 2 * b, c_in))
    layer.build(maps.shape)
    b_out = layer.output_bandwidth
    coeffs = sht.forward(maps)[:, :b_out, :b_out]
    filters = layer.degree_filters()
    filtered = spherical_layers.spectral_filter(coeffs, filters)
    parts = {
        'forward': tf.function(lambda: sht.forward(maps)),
        'filter': tf.function(lambda: spherical_layers.spectral_filter(coeffs, filters)),
        'inverse': tf.function(lambda: sht.inverse(filtered)),
        'layer': tf.function(lambda: layer(maps)),
    }
    ms = {k: 1e3 * time_call(lambda f=f: f().numpy(), steps) for k, f in parts.items()}
    rows.append((b, c_in, c_out, pool, ms))
  return rows


def main(argv):
  del argv
  print(f'TensorFlow {tf.__version__}, {os.cpu_count()} CPUs visible, bandwidth {FLAGS.bandwidth}')
  for batch_size in [int(b) for b in FLAGS.batch_sizes]:
    rate, seconds = bench_training(FLAGS.bandwidth, batch_size, FLAGS.steps, FLAGS.num_classes,
                                   FLAGS.jit_compile)
    print(f'train step  batch {batch_size:3d}: {seconds * 1e3:8.1f} ms  {rate:7.1f} examples/s')
  if FLAGS.profile_layers:
    batch_size = int(FLAGS.batch_sizes[0])
    print(f'per-layer forward, batch {batch_size} (ms):')
    for b, c_in, c_out, pool, ms in profile_layers(FLAGS.bandwidth, batch_size, FLAGS.steps):
      parts = '  '.join(f'{k} {v:6.1f}' for k, v in ms.items())
      print(f'  B={b:2d} {c_in:3d}->{c_out:3d}{" pool" if pool else "     "}  {parts}')


if __name__ == '__main__':
  app.run(main)
