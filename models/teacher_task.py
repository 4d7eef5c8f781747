"""The teacher's training task: spherical maps of rotated shapes -> category, for models.training.

`train.py --model=teacher` calls `build_task(FLAGS)`; the shared loop (models/training.py) does the
rest (Adam with a piecewise-constant learning rate, checkpoints and resume, TensorBoard, eval) and
finally calls `TeacherTask.export`, which writes the TF-Hub module the students load
(`teacher.export_teacher`).

Data: `datasets.builders.load_split` examples; the teacher reads `sphere [2B, 2B, C]` (the spherical
map of the shape under the example's Haar-random rotation) and `label`. Every view of an instance is
a differently rotated copy, so the classifier learns from SO(3)-rotated inputs.

Loss: softmax cross-entropy of `logits`, plus `teacher_aux_loss_weight` times that of `aux_logits`
(spherical-cnn's `--extra_loss` on the last branch). Metrics: `accuracy`, `cross_entropy`.

spherical-cnn's schedule (params/training.txt) over 48 epochs: learning rate 1e-3, then 2e-4
from epoch 32 and 4e-5 from epoch 40; with E steps per epoch:
`--max_steps=48E --lr_boundaries=32E,40E --lr_values=1e-3,2e-4,4e-5` (e.g. E=80 for the procedural
default, 1280 training examples, at `--batch_size=16`).
"""
from absl import flags
import tensorflow as tf

from models import teacher
from models import training

flags.DEFINE_list('teacher_filters', [str(f) for f in teacher.DEFAULT_FILTERS],
                  'Teacher: output channels of every block of every branch.')
flags.DEFINE_list('teacher_pool_blocks', [str(i) for i in teacher.DEFAULT_POOL_BLOCKS],
                  'Teacher: 1-based blocks that halve the bandwidth (spectral pooling).')
flags.DEFINE_integer('teacher_n_filter_params', 8,
                     'Teacher: filter anchors over the degrees per channel pair.')
flags.DEFINE_bool('teacher_split_channels', True,
                  'Teacher: one branch per input channel (spherical-cnn\'s two_branch model).')
flags.DEFINE_bool('teacher_batch_norm', True, 'Teacher: area-weighted batch norm in every block.')
flags.DEFINE_float('teacher_batch_norm_momentum', 0.9,
                   'Teacher: momentum of the batch norm moving statistics (spherical-cnn: 0.99).')
flags.DEFINE_string('teacher_embedding_block', teacher.DEFAULT_EMBEDDING_BLOCK,
                    'Teacher: the block exported as the default `embedding` (e.g. block4).')
flags.DEFINE_float('teacher_aux_loss_weight', 1.0,
                   'Teacher: weight of the auxiliary classifier loss on the last branch '
                   '(0 removes the auxiliary classifier).')
flags.DEFINE_float('teacher_weight_decay', 0.0, 'Teacher: L2 factor on the filter anchors.')
flags.DEFINE_enum('teacher_pooling', 'spectral', list(teacher.POOLINGS),
                  "Teacher: 'spectral' truncates the spectrum in the pooling blocks' convolution; "
                  "'wap' pools 2x2 with area weights after the block (spherical-cnn's default).")
flags.DEFINE_bool('teacher_batch_norm_area_weighted', True,
                  "Teacher: area-weighted batch norm statistics; false: plain batch norm "
                  "(spherical-cnn's).")
flags.DEFINE_integer('teacher_shuffle_buffer', 2048, 'Teacher: examples in the shuffle buffer.')


def sphere_features(example):
  """The teacher's part of an example: `{'sphere': [2B, 2B, C] float32, 'label': [] int64}`."""
  return {'sphere': tf.cast(example['sphere'], tf.float32), 'label': example['label']}


def classification_loss_and_metrics(outputs, labels, aux_loss_weight=1.0):
  """Per-example loss and metrics of a teacher output dict.

  Args:
    outputs: the teacher's output dict (`logits [N, K]`, optionally `aux_logits [N, K]`).
    labels: int `[N]` class indices.
    aux_loss_weight: weight of the auxiliary cross-entropy (ignored without `aux_logits`).

  Returns:
    (loss `[N]`, {'accuracy': [N], 'cross_entropy': [N]}).
  """
  labels = tf.cast(labels, tf.int32)
  logits = outputs['logits']
  cross_entropy = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
  loss = cross_entropy
  if aux_loss_weight and 'aux_logits' in outputs:
    loss += aux_loss_weight * tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=labels, logits=outputs['aux_logits'])
  correct = tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), labels), tf.float32)
  return loss, {'accuracy': correct, 'cross_entropy': cross_entropy}


class TeacherTask(training.Task):
  """Classification of spherical maps of rotated shapes (see the module docstring).

  Args:
    datasets: `(split, batch_size, input_context) -> tf.data.Dataset` of examples, unbatched, e.g.
      `lambda split, *_: builders.load_split(split, data_dir, **config)`.
    num_classes, bandwidth, in_channels: the data's.
    model_options: keyword options of `teacher.build_teacher`.
    aux_loss_weight: weight of the auxiliary classifier's loss (0 also drops the classifier).
    shuffle_buffer: examples in the training shuffle buffer.
    train_split, eval_split: split names passed to `datasets`.
  """

  name = 'teacher'
  # Its spectral layers are many small transforms that XLA fuses: on the default preset (2 cores,
  # batch 16, B = 16) 85 -> 231 training examples per second.
  jit_compile = True

  def __init__(self, datasets, num_classes, bandwidth=32, in_channels=2, model_options=None,
               aux_loss_weight=1.0, shuffle_buffer=2048, train_split='train', eval_split='test'):
    self.datasets = datasets
    self.num_classes = int(num_classes)
    self.bandwidth = int(bandwidth)
    self.in_channels = int(in_channels)
    self.model_options = dict(model_options or {})
    self.aux_loss_weight = float(aux_loss_weight)
    self.shuffle_buffer = int(shuffle_buffer)
    self.train_split, self.eval_split = train_split, eval_split

  def make_model(self):
    return teacher.build_teacher(self.bandwidth, self.in_channels, self.num_classes,
                                 aux_classifier=self.aux_loss_weight > 0, **self.model_options)

  def _examples(self, split, input_context):
    dataset = self.datasets(split, input_context)
    if input_context is not None and input_context.num_input_pipelines > 1:
      dataset = dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    return dataset.map(sphere_features, num_parallel_calls=tf.data.AUTOTUNE)

  def train_dataset(self, batch_size, input_context=None):
    dataset = self._examples(self.train_split, input_context)
    dataset = dataset.shuffle(self.shuffle_buffer).repeat()
    return dataset.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)

  def eval_dataset(self, batch_size, input_context=None):
    dataset = self._examples(self.eval_split, input_context)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)

  def loss_and_metrics(self, model, batch, training):
    outputs = model(batch['sphere'], training=training)
    return classification_loss_and_metrics(outputs, batch['label'], self.aux_loss_weight)

  def image_summaries(self, model, batch, max_images=4):
    """A few input spheres and their `embedding` maps (first channels, each scaled to [0, 1])."""
    spheres = batch['sphere'][:max_images]
    embedding = model(spheres, training=False)['embedding']
    return {'input_sphere': training.channel_images(spheres),
            'embedding': training.channel_images(embedding)}

  def export(self, model, export_dir):
    teacher.export_teacher(model, export_dir)


def model_options_from_flags(flag_values):
  """`build_teacher` options from the `teacher_*` flags."""
  return {
      'filters': [int(f) for f in flag_values.teacher_filters],
      'pool_blocks': [int(i) for i in flag_values.teacher_pool_blocks],
      'n_filter_params': flag_values.teacher_n_filter_params,
      'split_channels': flag_values.teacher_split_channels,
      'batch_norm': flag_values.teacher_batch_norm,
      'batch_norm_momentum': flag_values.teacher_batch_norm_momentum,
      'embedding_block': flag_values.teacher_embedding_block,
      'weight_decay': flag_values.teacher_weight_decay,
      'pooling': flag_values.teacher_pooling,
      'batch_norm_area_weighted': flag_values.teacher_batch_norm_area_weighted,
  }


def build_task(flag_values):
  """The TeacherTask of train.py's flags `--data_dir`, `--data_config` and the `teacher_*` flags."""
  # Imported here: the data builders pull in TFDS, which the model code does not need.
  from datasets import builders  # pylint: disable=g-import-not-at-top
  if not flag_values.data_dir:
    raise ValueError('--model=teacher needs --data_dir (where datasets.builders built the data)')
  data_config = training.parse_data_config(flag_values.data_config)
  config = builders.make_config(**data_config)
  data_dir = flag_values.data_dir

  def datasets(split, input_context):
    del input_context  # sharded by TeacherTask
    return builders.load_split(split, data_dir, **data_config)

  return TeacherTask(
      datasets, num_classes=len(builders.category_names(config)), bandwidth=config.bandwidth,
      in_channels=config.sphere_channels, model_options=model_options_from_flags(flag_values),
      aux_loss_weight=flag_values.teacher_aux_loss_weight,
      shuffle_buffer=flag_values.teacher_shuffle_buffer)
