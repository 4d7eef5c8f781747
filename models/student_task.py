"""Training tasks of the students (image -> teacher embedding) and of the synthesis model
(embedding -> image), for `train.py --model=student|synthesis`.

Targets come from the teacher, a reusable SavedModel written by `models.hub_export` and loaded with
`tensorflow_hub` (`--tgt_embed_dir`): its output `--tgt_embed_key` (default 'embedding') on the
example's sphere. They are computed in every training step from the dataset's spheres, or once and
cached with `--cache_targets=memory|PATH` (the teacher then runs in the input pipeline before the
cache; a PATH keeps the cache across runs, as tf.data cache files).

Scaling (see `models.students`): the per-channel range of the teacher's embeddings is fitted once,
on the first `--target_range_examples` training examples, stored in `model_dir/target_range.npz`
(reused on resume) and in the model's weights, and maps targets to [0, 1] for the sigmoid output.

Loss: `--loss` (huber with `--huber_delta`, l1 or l2) on the [0, 1]-scaled maps, plain for
images; for embeddings area-weighted by `--area_weighting`: 'loss' (ours: the elementwise loss of
the raw difference averaged with normalised sin(beta) weights) or 'values' (the gist's
`embedding_loss`: the loss of sin(beta)-weighted prediction and target; `models.losses`). Metric:
`relative_error` `|p - t| / (|p| + |t| + eps)` on the same maps (area-weighted with 'loss'; the
gist's plain mean with 'values'). `--architecture` picks the encoder-decoder layout
(`models.students`: 'ours' or the gist's).

Degree loss (students only, `--degree_loss_weight` > 0): the map loss is ruled by the degrees that
hold the teacher's energy (l = 0, 2, 4: 60-70% of it in the default preset's block3), while the
relative pose of two embeddings rests on the low degrees, and on the odd ones (about 1% at l = 1)
for telling a pose from its 180-degree flips. So a second term weighs each degree of
`--degree_loss_degrees` alike: the squared error of that degree's part of the map
(`losses.degree_loss`), divided by what predicting the mean map would cost at that degree, averaged
over the degrees and multiplied by the weight and by the mean predictor's map loss, so a weight of
1 makes the two terms equal for a predictor that has learnt nothing. Measured with the default
preset's data and teacher (4000 steps, held-out views; correlation of the predicted degree-1 and
degree-2 harmonics with the teacher's): 0.44 and 0.57 with degrees 1-4 at weight 1, 0.01 and 0.06
without; the map loss fell faster too (0.75 against 0.78 of a mean predictor's).

Pose loss (students only, `--pose_loss_weight` > 0): relative pose is read off the peaks of SO(3)
correlations, and the teacher's maps of a shape score a pose and its near-symmetric flips close
(median best flip 0.88 against 0.98 at the pose, mean cosine over channels, degrees below 8); a
student that gets the even degrees right and the small odd ones nearly right scores them alike, and
the map and degree losses hardly tell it apart. So a third term compares where the correlations
peak: the KL divergence between the distribution over rotations `softmax(c_tt / T)` of the teacher's
map correlated with itself and `softmax(c_pt / T)` of the prediction correlated with the teacher's
map, on the SO(3) grid of `--pose_loss_bandwidth` with degrees below it (`losses.pose_loss`). It is
scaled by the weight, by the mean predictor's map loss and by `1 / log(number of rotations)`, what a
predictor with a flat correlation would score.

The synthesis model's input is the teacher's embedding of the view (`--synthesis_input=teacher`) or
a trained student's (`--synthesis_input=student` with `--student_embedder_dir`, an export of
`models.embedder_export`); its target is the view itself.
"""
import io
import os

from absl import flags
import numpy as np
import tensorflow as tf

from correlation import sht
from datasets import inplane
from models import embedder_export
from models import hub_export
from models import losses
from models import students
from models import training

flags.DEFINE_string('tgt_embed_dir', None,
                    'The teacher: a reusable SavedModel (models.hub_export), loaded by hub.load.')
flags.DEFINE_string('tgt_embed_key', 'embedding', 'Output of the teacher used as the target map.')
flags.DEFINE_integer('layers_per_block', 2, 'Residual blocks per stage of encoder and decoder.')
flags.DEFINE_integer('base_channels', 64, 'Channels of the largest feature maps.')
flags.DEFINE_integer('max_channels', 512, 'Cap on the channels of any feature map.')
flags.DEFINE_integer('n_latent', 1024, 'Size of the 1-D bottleneck.')
flags.DEFINE_enum('loss', 'huber', losses.LOSSES, 'Elementwise loss on the [0, 1]-scaled maps.')
flags.DEFINE_enum('area_weighting', 'loss', list(losses.AREA_WEIGHTINGS),
                  "How the embedding loss weighs area: 'loss' (normalised sin(beta) weights on "
                  "the loss) or 'values' (the gist: sin(beta) on prediction and target).")
flags.DEFINE_enum('architecture', 'ours', list(students.ARCHITECTURES),
                  "Encoder-decoder layout: 'ours' or 'gist' (model.py of the gist).")
flags.DEFINE_float('huber_delta', 0.1, 'Delta of the Huber loss (targets are in [0, 1]).')
flags.DEFINE_bool('augment', False, 'Random brightness and contrast of the student input images.')
flags.DEFINE_bool('inplane_rotations', True,
                  'Turn every training example about the camera axis by a random multiple of '
                  '2 pi / 2B (views rotated, spherical maps rolled: datasets.inplane).')
flags.DEFINE_string('cache_targets', '',
                    "'' computes the teacher's targets in every step; 'memory' caches them in RAM "
                    'after the first epoch; any other value is a tf.data cache file prefix.')
flags.DEFINE_integer('target_range_examples', 256,
                     'Training examples whose teacher embeddings set the [0, 1] scaling.')
flags.DEFINE_float('target_range_percentile', 0.5,
                   'The [0, 1] scaling maps this percentile of each channel to 0 and '
                   '100 minus it to 1 (0: minimum and maximum).')
flags.DEFINE_float('degree_loss_weight', 0.0,
                   'Weight of the degree loss (students; module docstring), relative to the map '
                   'loss; 0 turns it off.')
flags.DEFINE_list('degree_loss_degrees', ['1', '2', '3', '4'],
                  'Degrees the degree loss weighs alike (each >= 0 and < the bandwidth).')
flags.DEFINE_float('pose_loss_weight', 0.0,
                   'Weight of the pose loss (students; module docstring), relative to the map '
                   'loss; 0 turns it off.')
flags.DEFINE_integer('pose_loss_bandwidth', 8,
                     'The pose loss compares correlations of the degrees 1..L-1 on the SO(3) grid '
                     'of bandwidth L ((2L)^3 rotations); at most the maps\' bandwidth.')
flags.DEFINE_float('pose_loss_temperature', 0.02,
                   'Temperature of the pose loss, in units of the mean cosine similarity.')
flags.DEFINE_integer('embedder_turns', 1,
                     'The exported embedder averages the student over this many turns about the '
                     'camera axis (1: none; it must divide 2B): models.embedder_export.')
flags.DEFINE_bool('embedder_mirror', False,
                  'The exported embedder also averages the student over the left-right mirror.')
flags.DEFINE_enum('synthesis_input', 'teacher', ['teacher', 'student'],
                  "Embeddings fed to the synthesis model: the teacher's or a student's.")
flags.DEFINE_string('student_embedder_dir', None,
                    'Student embedder (models.embedder_export) for --synthesis_input=student.')
flags.DEFINE_string('npz_dir', None,
                    'Read the splits from NPZ_DIR/{train,test}.npz (arrays named like the example '
                    'fields) instead of the TFDS data set in --data_dir.')

KINDS = ('student', 'synthesis')
_EXAMPLE_KEYS = ('image', 'sphere')
_SHUFFLE_BUFFER = 1024


def load_npz_split(path):
  """A tf.data.Dataset of examples from an `.npz` with arrays `image` [M, S, S, 1] and
  `sphere` [M, 2B, 2B, C] (other arrays are passed along)."""
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f'--npz_dir: no file {path}')
  with tf.io.gfile.GFile(path, 'rb') as f:
    arrays = dict(np.load(f))
  missing = [k for k in _EXAMPLE_KEYS if k not in arrays]
  if missing:
    raise ValueError(f'{path}: missing arrays {missing}, has {sorted(arrays)}')
  return tf.data.Dataset.from_tensor_slices(arrays)


def augment_image(image):
  """Random brightness (+-0.1) and contrast (x0.8..1.2) of an image `[S, S, C]` in [0, 1].

  Photometric only: a geometric change (flip, shift, rotation) would change the pose the
  embedding must encode.
  """
  image = tf.image.random_brightness(image, 0.1)
  image = tf.image.random_contrast(image, 0.8, 1.2)
  return tf.clip_by_value(image, 0.0, 1.0)


def _tile_channels(pred, target, max_channels=3):
  """Side-by-side `[pred | target]` of the first channels, stacked vertically:
  `[k, 2B, 2B, C]` x2 -> `[k, n 2B, 4B, 1]`, each row normalised to [0, 1] jointly."""
  rows = []
  for c in range(min(max_channels, pred.shape[-1])):
    pair = tf.concat([pred[..., c:c + 1], target[..., c:c + 1]], axis=2)
    low = tf.reduce_min(pair, axis=[1, 2, 3], keepdims=True)
    high = tf.reduce_max(pair, axis=[1, 2, 3], keepdims=True)
    rows.append((pair - low) / tf.maximum(high - low, 1e-12))
  return tf.concat(rows, axis=1)


def _save_npz_atomic(path, **arrays):
  tf.io.gfile.makedirs(os.path.dirname(path) or '.')
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  tmp = f'{path}.tmp{os.getpid()}.npz'
  with tf.io.gfile.GFile(tmp, 'wb') as f:
    f.write(buffer.getvalue())
  tf.io.gfile.rename(tmp, path, overwrite=True)


class StudentTask(training.Task):
  """`kind='student'`: images -> teacher embeddings; `kind='synthesis'`: embeddings -> images.

  Args:
    kind: one of KINDS.
    load_split: function `split -> tf.data.Dataset` of unbatched example dicts with at least
      `image` `[S, S, 1]` in [0, 1] and `sphere` `[2B, 2B, C]`.
    teacher_dir: the teacher export (`--tgt_embed_dir`).
    teacher_key: the teacher's output used as the embedding.
    model_options: keyword arguments of `build_student` / `build_synthesis` (layers_per_block,
      base_channels, max_channels, n_latent).
    loss, huber_delta: the elementwise loss.
    augment: photometric augmentation of the student's input images (student only).
    inplane_rotations: turn each training example about the camera axis by a random multiple of
      `2 pi / 2B` (`datasets.inplane.random_turns`): exact new examples at new rotations.
    cache_targets: '' (compute in every step), 'memory', or a cache file prefix.
    range_examples: examples used to fit the [0, 1] scaling.
    range_percentile: its robust extremes (`students.fit_range`).
    range_file: where the fitted scaling is kept (reused if it exists); None: not kept.
    student_embedder_dir: for synthesis from a student's embeddings instead of the teacher's.
    degree_loss_weight, degree_loss_degrees: the degree loss (module docstring; students only).
    pose_loss_weight, pose_loss_bandwidth, pose_loss_temperature: the pose loss (module
      docstring; students only).
    embedder_turns, embedder_mirror: the symmetry average of the exported embedder
      (`models.embedder_export`; students only).
    area_weighting: one of `losses.AREA_WEIGHTINGS` (module docstring).
  """

  def __init__(self, kind, load_split, teacher_dir, teacher_key='embedding', model_options=None,
               loss='huber', huber_delta=0.1, augment=False, inplane_rotations=False,
               cache_targets='', range_examples=256, range_file=None,
               student_embedder_dir=None, range_percentile=0.5, degree_loss_weight=0.0,
               degree_loss_degrees=(1, 2, 3, 4), embedder_turns=1, embedder_mirror=False,
               pose_loss_weight=0.0, pose_loss_bandwidth=8, pose_loss_temperature=0.02,
               area_weighting='loss'):
    if kind not in KINDS:
      raise ValueError(f'--model must be one of {KINDS} for the student task, got {kind!r}')
    if augment and kind != 'student':
      raise ValueError('--augment changes the input images of a student; it is not for '
                       '--model=synthesis, whose images are targets')
    if not teacher_dir:
      raise ValueError('--tgt_embed_dir (the teacher export) is required')
    losses.elementwise_loss(tf.zeros([1]), tf.zeros([1]), loss, huber_delta)  # validates flags
    self.name = kind
    self.kind = kind
    self._load_split = load_split
    self.teacher_key = teacher_key
    self.teacher = hub_export.load(teacher_dir)
    self.student = (tf.saved_model.load(student_embedder_dir) if student_embedder_dir else None)
    self.model_options = dict(model_options or {})
    self.loss, self.huber_delta = loss, huber_delta
    if area_weighting not in losses.AREA_WEIGHTINGS:
      raise ValueError(f'--area_weighting must be one of {losses.AREA_WEIGHTINGS}, '
                       f'got {area_weighting!r}')
    self.area_weighting = area_weighting
    self.augment, self.cache_targets = augment, cache_targets
    self.inplane_rotations = inplane_rotations
    self.embedder_turns, self.embedder_mirror = embedder_turns, embedder_mirror
    self.range_percentile = range_percentile
    spec = load_split('train').element_spec
    missing = [k for k in _EXAMPLE_KEYS if k not in spec]
    if missing:
      raise ValueError(f'the training examples lack {missing}; they have {sorted(spec)}')
    self.image_shape = tuple(spec['image'].shape)
    if degree_loss_weight < 0:
      raise ValueError(f'--degree_loss_weight must be >= 0, got {degree_loss_weight}')
    if degree_loss_weight and kind != 'student':
      raise ValueError('--degree_loss_weight is for --model=student (spherical targets)')
    if pose_loss_weight < 0:
      raise ValueError(f'--pose_loss_weight must be >= 0, got {pose_loss_weight}')
    if pose_loss_weight and kind != 'student':
      raise ValueError('--pose_loss_weight is for --model=student (spherical targets)')
    if pose_loss_weight and pose_loss_temperature <= 0:
      raise ValueError(f'--pose_loss_temperature must be positive, got {pose_loss_temperature}')
    if (embedder_turns != 1 or embedder_mirror) and kind != 'student':
      raise ValueError('--embedder_turns and --embedder_mirror are for --model=student')
    stats = self._fit_range(range_examples, range_file)
    self.range_low, self.range_high = stats['low'], stats['high']
    self.embedding_shape = tuple(int(s) for s in stats['shape'])
    self.degree_weights = None
    if degree_loss_weight:
      self.degree_weights = _degree_weights(stats, degree_loss_degrees, degree_loss_weight)
    self.pose_loss_scale = 0.0
    if pose_loss_weight:
      bandwidth_limit = self.embedding_shape[0] // 2
      if not 1 < pose_loss_bandwidth <= bandwidth_limit:
        raise ValueError(f'--pose_loss_bandwidth must be in [2, {bandwidth_limit}] (the '
                         f"teacher's embeddings have B = {bandwidth_limit}), "
                         f'got {pose_loss_bandwidth}')
      # A predictor whose correlation is flat scores about log(number of rotations).
      self.pose_loss_scale = (pose_loss_weight * float(stats['mean_loss']) /
                              (3 * np.log(2 * pose_loss_bandwidth)))
    self.pose_loss_bandwidth = pose_loss_bandwidth
    self.pose_loss_temperature = pose_loss_temperature

  # The embedding a step needs: the target of a student, the input of the synthesis model.
  def embedding_of(self, batch):
    """Embeddings `[N, 2B, 2B, C]` in the teacher's units of a batch of examples."""
    if self.student is not None:
      return self.student.embed(tf.cast(batch['image'], tf.float32))['embedding']
    outputs = self.teacher(tf.cast(batch['sphere'], tf.float32), training=False)
    if self.teacher_key not in outputs:
      raise ValueError(f'--tgt_embed_key={self.teacher_key!r} is not an output of the teacher; '
                       f'it has {sorted(outputs)}')
    return outputs[self.teacher_key]

  def _fit_range(self, num_examples, range_file):
    """The target scaling and, for the degree loss, the scaled targets' statistics (a dict).

    Keys: low, high `[C]`, shape `[3]`; for students also degree_power `[B]` (mean over examples
    and channels of each degree's mean square over the sphere, `||P_l f||^2 / (4 pi)`, of the
    scaled, mean-removed targets) and mean_loss (the map loss of predicting the mean scaled map).
    Kept in `range_file`; a file without the students' keys (an older run) is refitted.
    """
    if range_file and tf.io.gfile.exists(range_file):
      with tf.io.gfile.GFile(range_file, 'rb') as f:
        saved = dict(np.load(f))
      if self.kind != 'student' or 'degree_power' in saved:
        return saved
    sample = self._load_split('train').take(max(int(num_examples), 1)).batch(64)
    embeddings = np.concatenate([self.embedding_of(b).numpy() for b in sample])
    low, high = students.fit_range(embeddings, self.range_percentile)
    stats = dict(low=low, high=high, shape=np.asarray(embeddings.shape[1:]))
    if self.kind == 'student':
      scaler = students.AffineRange(embeddings.shape[-1])
      scaler.set_range(low, high)
      unit = scaler.to_unit(tf.constant(embeddings, tf.float32)).numpy()
      mean_map = np.broadcast_to(unit.mean(axis=0), unit.shape)
      # Per area, like losses.degree_loss: ||P_l f||^2 / (4 pi).
      stats['degree_power'] = tf.reduce_mean(
          sht.degree_power(sht.forward(unit - mean_map)), axis=[0, 2]).numpy() / (4 * np.pi)
      stats['mean_loss'] = np.float32(tf.reduce_mean(
          self.map_loss(tf.constant(mean_map), tf.constant(unit), spherical=True)).numpy())
    if range_file:
      _save_npz_atomic(range_file, **stats)
    return stats

  def make_model(self):
    options = dict(self.model_options, image_channels=self.image_shape[-1])
    if self.kind == 'student':
      model = students.build_student(self.image_shape[0], self.embedding_shape, **options)
      model.get_layer('target_range').set_range(self.range_low, self.range_high)
    else:
      model = students.build_synthesis(self.embedding_shape, self.image_shape[0], **options)
      model.get_layer('input_range').set_range(self.range_low, self.range_high)
    return model

  def _examples(self, split, input_context):
    ds = self._load_split(split)
    if input_context is not None and input_context.num_input_pipelines > 1:
      ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    return ds.map(lambda ex: {k: ex[k] for k in _EXAMPLE_KEYS},
                  num_parallel_calls=tf.data.AUTOTUNE)

  def _with_cached_embeddings(self, ds, split):
    if not self.cache_targets:
      return ds
    ds = ds.batch(64).map(lambda b: dict(b, embedding=self.embedding_of(b))).unbatch()
    if self.cache_targets == 'memory':
      return ds.cache()
    return ds.cache(f'{self.cache_targets}_{self.kind}_{split}')

  def train_dataset(self, batch_size, input_context=None):
    ds = self._with_cached_embeddings(self._examples('train', input_context), 'train')
    ds = ds.shuffle(_SHUFFLE_BUFFER).repeat()
    # The random maps run one element at a time: parallel calls would draw from the random
    # stream in whatever order they are scheduled, so a seeded run (train.py --seed) would not
    # repeat. They are cheap next to a training step.
    if self.augment:
      ds = ds.map(lambda ex: dict(ex, image=augment_image(ex['image'])))
    ds = ds.batch(batch_size, drop_remainder=True)
    if self.inplane_rotations:
      # Whole columns of the embedding too, also when the teacher computes it from a turned sphere.
      turns = min(self.embedding_shape[1], ds.element_spec['sphere'].shape[2])
      ds = ds.map(lambda b: inplane.random_turns(b, turns=turns))
    return ds.prefetch(tf.data.AUTOTUNE)

  def eval_dataset(self, batch_size, input_context=None):
    ds = self._with_cached_embeddings(self._examples('test', input_context), 'test')
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)

  def _predict(self, model, batch, training):
    """(prediction, target) in [0, 1] for a batch."""
    embedding = batch['embedding'] if 'embedding' in batch else self.embedding_of(batch)
    if self.kind == 'student':
      pred = model(batch['image'], training=training)['embedding_unit']
      return pred, model.get_layer('target_range').to_unit(embedding)
    return model(embedding, training=training)['image'], batch['image']

  def map_loss(self, pred, target, spherical):
    """Per-example map loss `[N]` under `--loss` and, on spheres, `--area_weighting`."""
    if spherical and self.area_weighting == 'values':
      return losses.weighted_values_loss(pred, target, self.loss, self.huber_delta)
    return losses.map_loss(pred, target, self.loss, self.huber_delta, spherical=spherical)

  def loss_and_metrics(self, model, batch, training):
    pred, target = self._predict(model, batch, training)
    spherical = self.kind == 'student'
    loss = self.map_loss(pred, target, spherical)
    if self.area_weighting == 'values':  # the gist's rel_err: a plain mean
      error = losses.relative_error(pred, target, spherical=False, eps=1e-8)
    else:
      error = losses.relative_error(pred, target, spherical=spherical)
    metrics = {'relative_error': error}
    if self.degree_weights is not None:
      metrics['degree_loss'] = losses.degree_loss(pred, target, self.degree_weights)
      loss += metrics['degree_loss']
    if self.pose_loss_scale:
      metrics['pose_loss'] = losses.pose_loss(pred, target, self.pose_loss_bandwidth,
                                              self.pose_loss_temperature)
      loss += self.pose_loss_scale * metrics['pose_loss']
    return loss, metrics

  def image_summaries(self, model, batch, max_images=4):
    batch = {k: v[:max_images] for k, v in batch.items()}
    pred, target = self._predict(model, batch, training=False)
    if self.kind == 'student':
      return {'input_view': batch['image'],
              'embedding_pred_vs_target': _tile_channels(pred, target)}
    return {'synthesised_vs_true_view': tf.concat([pred, target], axis=2)}

  def export(self, model, export_dir):
    if self.kind == 'student':
      embedder_export.export_embedder(model, export_dir, self.embedder_turns,
                                      self.embedder_mirror)
    else:
      embedder_export.export_synthesizer(model, export_dir)


def _degree_weights(stats, degrees, weight):
  """`[B]` weights of `losses.degree_loss` (module docstring) from `_fit_range`'s statistics."""
  power = np.asarray(stats['degree_power'], np.float64)
  try:
    degrees = sorted({int(l) for l in degrees})
  except ValueError as e:
    raise ValueError(f'--degree_loss_degrees: {e}') from None
  if not degrees or degrees[0] < 0 or degrees[-1] >= len(power):
    raise ValueError(f'--degree_loss_degrees must be degrees in [0, {len(power)}), got {degrees}')
  weights = np.zeros(len(power))
  for l in degrees:
    weights[l] = weight * float(stats['mean_loss']) / (len(degrees) * max(power[l], 1e-12))
  return weights


def build_task(flags_values):
  """The task of `--model=student|synthesis` from the parsed flags (train.py's entry point)."""
  f = flags_values
  if f.npz_dir:
    load_split = lambda split: load_npz_split(os.path.join(f.npz_dir, f'{split}.npz'))
  else:
    from datasets import builders  # pylint: disable=g-import-not-at-top
    config = training.parse_data_config(f.data_config)
    load_split = lambda split: builders.load_split(split, f.data_dir, **config)
  if f.distribution_strategy == 'tpu' and not f.cache_targets:
    raise ValueError('--distribution_strategy=tpu needs --cache_targets: the teacher (a host '
                     'SavedModel) cannot run inside a TPU step')
  if f.synthesis_input == 'student' and not f.student_embedder_dir:
    raise ValueError('--synthesis_input=student needs --student_embedder_dir')
  return StudentTask(
      f.model, load_split, f.tgt_embed_dir, f.tgt_embed_key,
      model_options=dict(layers_per_block=f.layers_per_block, base_channels=f.base_channels,
                         max_channels=f.max_channels, n_latent=f.n_latent,
                         architecture=f.architecture),
      area_weighting=f.area_weighting,
      loss=f.loss, huber_delta=f.huber_delta, augment=f.augment,
      inplane_rotations=f.inplane_rotations, range_percentile=f.target_range_percentile,
      cache_targets=f.cache_targets,
      range_examples=f.target_range_examples,
      range_file=os.path.join(f.model_dir, 'target_range.npz'),
      student_embedder_dir=f.student_embedder_dir if f.synthesis_input == 'student' else None,
      degree_loss_weight=f.degree_loss_weight if f.model == 'student' else 0.0,
      degree_loss_degrees=f.degree_loss_degrees,
      embedder_turns=f.embedder_turns if f.model == 'student' else 1,
      embedder_mirror=f.embedder_mirror and f.model == 'student',
      pose_loss_weight=f.pose_loss_weight if f.model == 'student' else 0.0,
      pose_loss_bandwidth=f.pose_loss_bandwidth, pose_loss_temperature=f.pose_loss_temperature)
