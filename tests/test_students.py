"""Students, synthesis model, target scaling, the student task and the SavedModel exports."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from datasets import inplane
from models import embedder_export
from models import students
from models import student_task

TINY = dict(layers_per_block=1, base_channels=8, max_channels=16, n_latent=16)


class TeacherStandIn(tf.Module):
  """A fixed nonlinear map spheres `[N, 2B, 2B, C_in]` -> `{'embedding': [N, B, B, C]}` (2x2
  average pooling, a channel mix, a ReLU, a shift), with the reusable SavedModel call signature
  `obj(inputs, training=False)` of models.hub_export. Values are not in [0, 1] on purpose."""

  def __init__(self, bandwidth, in_channels=2, channels=3, seed=0):
    super().__init__()
    rng = np.random.default_rng(seed)
    self.mix = tf.Variable(rng.normal(size=(in_channels, channels)).astype(np.float32))
    self.shift = tf.Variable(rng.uniform(1, 3, size=channels).astype(np.float32))
    spec = tf.TensorSpec([None, 2 * bandwidth, 2 * bandwidth, in_channels], tf.float32)
    self.__call__.get_concrete_function(spec, training=False)
    self.__call__.get_concrete_function(spec, training=True)

  @tf.function
  def __call__(self, inputs, training=False):
    del training
    pooled = tf.nn.avg_pool2d(inputs, 2, 2, 'VALID')
    mixed = tf.einsum('nhwc,cd->nhwd', pooled, self.mix)
    return {'embedding': 5.0 * tf.nn.relu(mixed) - self.shift, 'pooled': pooled}


def save_teacher_standin(path, bandwidth=4, in_channels=2, channels=3):
  tf.saved_model.save(TeacherStandIn(bandwidth, in_channels, channels), path)
  return path


def make_examples(num, image_size=16, bandwidth=4, in_channels=2, seed=0):
  """Examples whose image and sphere are both smooth functions of one random parameter vector,
  so a student can learn the map from one to the other."""
  rng = np.random.default_rng(seed)
  params = rng.uniform(0.2, 1.0, size=(num, 3)).astype(np.float32)
  u = np.linspace(0, 1, image_size, dtype=np.float32)
  image = (params[:, 0, None, None] * np.sin(3 * u)[None, :, None]
           + params[:, 1, None, None] * u[None, None, :] ** 2) / 2
  beta = np.linspace(0, np.pi, 2 * bandwidth, dtype=np.float32)
  sphere = params[:, :, None, None] * np.cos(beta)[None, None, :, None]
  sphere = np.broadcast_to(sphere[:, :in_channels], (num, in_channels, 2 * bandwidth,
                                                      2 * bandwidth))
  return {'image': np.clip(image, 0, 1)[..., None].astype(np.float32),
          'sphere': np.ascontiguousarray(np.moveaxis(sphere, 1, -1)).astype(np.float32),
          'label': rng.integers(0, 3, size=num).astype(np.int64)}


def write_npz_splits(directory, num_train=32, num_test=8, **kwargs):
  os.makedirs(directory, exist_ok=True)
  np.savez(os.path.join(directory, 'train.npz'), **make_examples(num_train, seed=0, **kwargs))
  np.savez(os.path.join(directory, 'test.npz'), **make_examples(num_test, seed=1, **kwargs))
  return directory


@pytest.fixture(scope='module')
def teacher_dir(tmp_path_factory):
  return save_teacher_standin(str(tmp_path_factory.mktemp('teacher') / 'teacher'))


def in_memory_split(examples):
  return lambda split: tf.data.Dataset.from_tensor_slices(examples[split])


@pytest.mark.parametrize('image_size,embedding_shape', [(16, (8, 8, 3)), (32, (16, 16, 5)),
                                                        (64, (4, 4, 2)), (8, (32, 32, 1))])
def test_student_shapes(image_size, embedding_shape):
  model = students.build_student(image_size, embedding_shape, **TINY)
  out = model(np.random.rand(2, image_size, image_size, 1).astype(np.float32))
  assert out['embedding_unit'].shape == (2,) + embedding_shape
  assert out['embedding'].shape == (2,) + embedding_shape
  assert out['latent'].shape == (2, 16)
  assert np.all((out['embedding_unit'] >= 0) & (out['embedding_unit'] <= 1))


@pytest.mark.parametrize('embedding_shape,image_size', [((8, 8, 3), 16), ((16, 16, 4), 64),
                                                        ((4, 4, 2), 8)])
def test_synthesis_shapes(embedding_shape, image_size):
  model = students.build_synthesis(embedding_shape, image_size, **TINY)
  out = model(np.random.rand(3, *embedding_shape).astype(np.float32))
  assert out['image'].shape == (3, image_size, image_size, 1)
  assert np.all((out['image'] >= 0) & (out['image'] <= 1))


def test_full_size_student_of_recipe_ours():
  """64 px images, 1024-d bottleneck, a bandwidth-16 teacher map (32 x 32 x 64)."""
  model = students.build_student(64, (32, 32, 64))
  assert model.get_layer('latent').output.shape == (None, 1024)
  assert model.get_layer('encoder_stem').output.shape == (None, 32, 32, 64)
  assert model.get_layer('encoder_final_relu').output.shape == (None, 2, 2, 512)
  assert model.output['embedding'].shape == (None, 32, 32, 64)


@pytest.mark.parametrize('bad', [(24, (8, 8, 3)), (16, (6, 6, 3)), (16, (8, 4, 3)), (2, (8, 8, 3))])
def test_sizes_not_powers_of_two_are_refused(bad):
  with pytest.raises(ValueError, match='power of two|2B, 2B'):
    students.build_student(*bad, **TINY)


def test_affine_range_round_trip_and_clipping():
  layer = students.AffineRange(3)
  targets = np.random.default_rng(0).normal(size=(5, 4, 4, 3)).astype(np.float32) * [1, 5, 0.1]
  low, high = students.fit_range(targets, percentile=0)
  np.testing.assert_allclose(low, targets.reshape(-1, 3).min(0))
  layer.set_range(low, high)
  unit = layer.to_unit(tf.constant(targets)).numpy()
  assert unit.min() == 0.0 and unit.max() == 1.0
  np.testing.assert_allclose(layer.from_unit(tf.constant(unit)).numpy(), targets, atol=1e-5)
  assert np.all(layer.to_unit(tf.constant(high + 10.0)).numpy() == 1.0)
  layer.set_range([1, 1, 1], [1, 0, 2])  # degenerate channels get a unit-width range
  np.testing.assert_allclose(layer.high.numpy(), [2, 2, 2])


def test_robust_range_ignores_rare_extremes():
  rng = np.random.default_rng(1)
  targets = rng.normal(size=(4000, 2)).astype(np.float32)
  targets[0] = [50.0, -50.0]  # one outlier per channel
  low, high = students.fit_range(targets)  # 0.5th and 99.5th percentiles
  np.testing.assert_allclose(low, np.sort(targets, axis=0)[20], atol=0.05)
  assert np.all(np.abs(low + 2.58) < 0.2) and np.all(np.abs(high - 2.58) < 0.2)
  full_low, full_high = students.fit_range(targets, percentile=0)
  assert full_high[0] == 50.0 and full_low[1] == -50.0
  with pytest.raises(ValueError, match='percentile'):
    students.fit_range(targets, percentile=50)


def test_task_turns_training_examples_about_the_camera_axis(teacher_dir):
  examples = {'train': make_examples(8), 'test': make_examples(4, seed=1)}
  # Spheres that vary in longitude, so that every roll is visible.
  examples['train']['sphere'] = np.random.default_rng(2).random(
      examples['train']['sphere'].shape).astype(np.float32)
  task = student_task.StudentTask('student', in_memory_split(examples), teacher_dir,
                                  model_options=TINY, range_examples=8, inplane_rotations=True)
  spheres = examples['train']['sphere']
  shifts = []
  for batch in task.train_dataset(8).take(3):
    for sphere in batch['sphere'].numpy():
      matches = [(i, k) for i in range(len(spheres)) for k in range(sphere.shape[1])
                 if np.allclose(np.roll(spheres[i], k, axis=1), sphere)]
      assert matches, 'a turned sphere must be a longitude roll of a training sphere'
      shifts.append(matches[0][1])
  assert len(set(shifts)) > 1
  plain = student_task.StudentTask('student', in_memory_split(examples), teacher_dir,
                                   model_options=TINY, range_examples=8)
  for batch in plain.train_dataset(8).take(1):
    assert all(any(np.array_equal(s, t) for t in spheres) for s in batch['sphere'].numpy())


def test_task_targets_scaling_and_loss(teacher_dir, tmp_path):
  examples = {'train': make_examples(16), 'test': make_examples(4, seed=1)}
  range_file = str(tmp_path / 'range.npz')
  task = student_task.StudentTask('student', in_memory_split(examples), teacher_dir,
                                  model_options=TINY, range_examples=16, range_file=range_file)
  teacher = TeacherStandIn(4)
  expected = teacher(tf.constant(examples['train']['sphere']))['embedding'].numpy()
  flat = expected.reshape(-1, 3)
  np.testing.assert_allclose(task.range_low, np.percentile(flat, 0.5, axis=0), rtol=1e-5)
  np.testing.assert_allclose(task.range_high, np.percentile(flat, 99.5, axis=0), rtol=1e-5)
  assert task.embedding_shape == (4, 4, 3)
  assert os.path.exists(range_file)
  model = task.make_model()
  batch = next(iter(task.train_dataset(8)))
  loss, metrics = task.loss_and_metrics(model, batch, training=False)
  assert loss.shape == (8,) and metrics['relative_error'].shape == (8,)
  # The loss compares the sigmoid output with the teacher's embedding mapped to [0, 1].
  from models import losses
  pred = model(batch['image'])['embedding_unit']
  target = (task.embedding_of(batch) - task.range_low) / (task.range_high - task.range_low)
  np.testing.assert_allclose(loss, losses.map_loss(pred, np.clip(target, 0, 1), 'huber', 0.1),
                             rtol=1e-5)
  # A second task reuses the stored range instead of refitting it.
  again = student_task.StudentTask('student', in_memory_split(examples), teacher_dir,
                                   model_options=TINY, range_examples=2, range_file=range_file)
  np.testing.assert_array_equal(again.range_high, task.range_high)
  images = task.image_summaries(model, batch)
  assert images['input_view'].shape == (4, 16, 16, 1)
  assert images['embedding_pred_vs_target'].shape == (4, 12, 8, 1)


def test_task_degree_loss_term(teacher_dir, tmp_path):
  examples = {'train': make_examples(16), 'test': make_examples(4, seed=1)}
  range_file = str(tmp_path / 'range.npz')
  task = student_task.StudentTask('student', in_memory_split(examples), teacher_dir,
                                  model_options=TINY, range_examples=16, range_file=range_file,
                                  degree_loss_weight=2.0, degree_loss_degrees=('1', '1'))
  # The stand-in teacher's maps are 4 x 4: bandwidth 2, degrees 0 and 1.
  assert task.degree_weights.shape == (2,)
  assert task.degree_weights[0] == 0 and task.degree_weights[1] > 0
  assert {'degree_power', 'mean_loss'} <= set(np.load(range_file).files)
  from models import losses
  model = task.make_model()
  batch = next(iter(task.eval_dataset(4)))
  loss, metrics = task.loss_and_metrics(model, batch, training=False)
  pred = model(batch['image'])['embedding_unit']
  target = model.get_layer('target_range').to_unit(task.embedding_of(batch))
  np.testing.assert_allclose(metrics['degree_loss'],
                             losses.degree_loss(pred, target, task.degree_weights), rtol=1e-5)
  np.testing.assert_allclose(loss, losses.map_loss(pred, target, 'huber', 0.1) +
                             metrics['degree_loss'], rtol=1e-5)
  # Calibration: predicting the sample's mean map costs weight x the mean predictor's map loss,
  # in the degree term as in the map term.
  sample = model.get_layer('target_range').to_unit(
      task.embedding_of({'sphere': tf.constant(examples['train']['sphere'])}))
  mean_map = tf.broadcast_to(tf.reduce_mean(sample, axis=0), sample.shape)
  np.testing.assert_allclose(
      tf.reduce_mean(losses.degree_loss(mean_map, sample, task.degree_weights)),
      2.0 * tf.reduce_mean(losses.map_loss(mean_map, sample, 'huber', 0.1)), rtol=1e-4)
  _assert_rejected(examples, teacher_dir, (
      (dict(degree_loss_weight=-1.0), 'degree_loss_weight'),
      (dict(degree_loss_weight=1.0, degree_loss_degrees=(1, 2)), 'degree_loss_degrees'),
      (dict(degree_loss_weight=1.0, degree_loss_degrees=('x',)), 'degree_loss_degrees')),
      'degree_loss_weight')


def _assert_rejected(examples, teacher_dir, student_cases, students_only):
  """Each (kwargs, message) of `student_cases` is a clear error for a student, and a non-zero
  `students_only` weight one for the synthesis model."""
  for kwargs, message in student_cases:
    with pytest.raises(ValueError, match=message):
      student_task.StudentTask('student', in_memory_split(examples), teacher_dir,
                               model_options=TINY, range_examples=4, **kwargs)
  with pytest.raises(ValueError, match=students_only):
    student_task.StudentTask('synthesis', in_memory_split(examples), teacher_dir,
                             model_options=TINY, range_examples=4, **{students_only: 1.0})


def test_task_pose_loss_term(teacher_dir, tmp_path):
  from models import losses
  examples = {'train': make_examples(16), 'test': make_examples(4, seed=1)}
  range_file = str(tmp_path / 'range.npz')
  task = student_task.StudentTask('student', in_memory_split(examples), teacher_dir,
                                  model_options=TINY, range_examples=16, range_file=range_file,
                                  pose_loss_weight=2.0, pose_loss_bandwidth=2,
                                  pose_loss_temperature=0.1)
  model = task.make_model()
  batch = next(iter(task.eval_dataset(4)))
  loss, metrics = task.loss_and_metrics(model, batch, training=False)
  pred = model(batch['image'])['embedding_unit']
  target = model.get_layer('target_range').to_unit(task.embedding_of(batch))
  expected = losses.pose_loss(pred, target, 2, 0.1)
  np.testing.assert_allclose(metrics['pose_loss'], expected, rtol=1e-5)
  assert np.all(expected.numpy() > 0)
  # The weight is relative to the mean predictor's map loss, per nat of log(number of rotations).
  scale = 2.0 * float(np.load(range_file)['mean_loss']) / np.log(4**3)
  np.testing.assert_allclose(loss, losses.map_loss(pred, target, 'huber', 0.1) + scale * expected,
                             rtol=1e-5)
  _assert_rejected(examples, teacher_dir, (
      (dict(pose_loss_weight=-1.0), 'pose_loss_weight'),
      (dict(pose_loss_weight=1.0, pose_loss_bandwidth=3), 'pose_loss_bandwidth'),
      (dict(pose_loss_weight=1.0, pose_loss_temperature=0.0), 'pose_loss_temperature')),
      'pose_loss_weight')


def test_cached_targets_equal_computed_ones(teacher_dir):
  examples = {'train': make_examples(8), 'test': make_examples(4, seed=1)}
  task = student_task.StudentTask('student', in_memory_split(examples), teacher_dir,
                                  model_options=TINY, cache_targets='memory')
  batch = next(iter(task.eval_dataset(4)))
  np.testing.assert_allclose(batch['embedding'], task.embedding_of(batch), rtol=1e-6)


def test_bad_teacher_key_is_a_clear_error(teacher_dir):
  examples = {'train': make_examples(4), 'test': make_examples(4)}
  with pytest.raises(ValueError, match='tgt_embed_key'):
    student_task.StudentTask('student', in_memory_split(examples), teacher_dir,
                             teacher_key='block9', model_options=TINY)


def test_missing_npz_split_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match='npz_dir'):
    student_task.load_npz_split(str(tmp_path / 'train.npz'))


def test_embedder_and_synthesizer_export_reload_identically(teacher_dir, tmp_path):
  model = students.build_student(16, (8, 8, 3), **TINY)
  model.get_layer('target_range').set_range([-1, 0, 2], [1, 3, 5])
  images = np.random.default_rng(0).integers(0, 256, size=(3, 16, 16, 1)).astype(np.uint8)
  floats = images.astype(np.float32) / 255
  path = embedder_export.export_embedder(model, str(tmp_path / 'embedder'))
  loaded = tf.saved_model.load(path)
  expected = model(floats, training=False)
  for key in ('embedding', 'embedding_unit'):
    np.testing.assert_allclose(loaded.embed(floats)[key], expected[key], atol=1e-6)
    np.testing.assert_allclose(loaded.embed_uint8(images)[key], expected[key], atol=1e-6)
    np.testing.assert_allclose(loaded.signatures['serving_default'](images=floats)[key],
                               expected[key], atol=1e-6)
  # Re-export over an existing one replaces it atomically.
  embedder_export.export_embedder(model, path)
  assert not [p for p in os.listdir(tmp_path) if '.tmp' in p or '.old' in p]

  synth = students.build_synthesis((8, 8, 3), 16, **TINY)
  embeddings = np.random.default_rng(1).normal(size=(2, 8, 8, 3)).astype(np.float32)
  path = embedder_export.export_synthesizer(synth, str(tmp_path / 'synthesizer'))
  loaded = tf.saved_model.load(path)
  np.testing.assert_allclose(loaded.synthesize(embeddings)['image'],
                             synth(embeddings, training=False)['image'], atol=1e-6)
  with pytest.raises(ValueError, match='build_student'):
    embedder_export.export_embedder(synth, str(tmp_path / 'wrong'))


def test_embedder_export_averages_over_the_camera_symmetries(tmp_path):
  model = students.build_student(16, (8, 8, 3), **TINY)
  images = np.random.default_rng(2).random((3, 16, 16, 1)).astype(np.float32)
  path = embedder_export.export_embedder(model, str(tmp_path / 'embedder'), turns=4, mirror=True)
  loaded = tf.saved_model.load(path)
  student = lambda x: {k: v for k, v in model(x, training=False).items()
                       if k in ('embedding', 'embedding_unit')}
  expected = inplane.symmetry_average(student, tf.constant(images), turns=4, mirror=True)
  for key in ('embedding', 'embedding_unit'):
    got = loaded.signatures['serving_default'](images=images)[key].numpy()
    np.testing.assert_allclose(got, expected[key].numpy(), atol=1e-5)
    assert np.abs(got - model(images, training=False)[key].numpy()).max() > 1e-4
  assert json.loads(loaded.config_json.numpy())['symmetry_average'] == {'turns': 4, 'mirror': True}
  with pytest.raises(ValueError, match='dividing the embedding width 8'):
    embedder_export.export_embedder(model, str(tmp_path / 'bad'), turns=3)


def test_student_task_with_a_real_untrained_teacher(tmp_path):
  """The teacher of models.teacher, exported by models.hub_export and loaded with hub.load:
  targets are its `embedding` (block 2, bandwidth 2 after one pooling) of the example spheres."""
  from models import teacher as teacher_lib
  teacher = teacher_lib.build_teacher(bandwidth=4, in_channels=2, num_classes=3,
                                      filters=(4, 4), pool_blocks=(2,), n_filter_params=2,
                                      embedding_block='block2')
  path = teacher_lib.export_teacher(teacher, str(tmp_path / 'teacher'))
  examples = {'train': make_examples(8), 'test': make_examples(4, seed=1)}
  task = student_task.StudentTask('student', in_memory_split(examples), path,
                                  model_options=TINY, range_examples=8)
  spheres = examples['train']['sphere'][:4]
  expected = teacher(spheres, training=False)['embedding'].numpy()
  assert task.embedding_shape == expected.shape[1:] == (4, 4, 8)
  np.testing.assert_allclose(task.embedding_of({'sphere': spheres}), expected, atol=1e-5)
  model = task.make_model()
  loss, _ = task.loss_and_metrics(model, next(iter(task.train_dataset(4))), training=True)
  assert loss.shape == (4,) and np.all(np.isfinite(loss))


def test_synthesis_from_a_students_embeddings(teacher_dir, tmp_path):
  student = students.build_student(16, (4, 4, 3), **TINY)
  student.get_layer('target_range').set_range([-1, -1, -1], [2, 2, 2])
  path = embedder_export.export_embedder(student, str(tmp_path / 'embedder'))
  examples = {'train': make_examples(8), 'test': make_examples(4, seed=1)}
  task = student_task.StudentTask('synthesis', in_memory_split(examples), teacher_dir,
                                  model_options=TINY, range_examples=8, student_embedder_dir=path)
  images = examples['train']['image']
  expected = student(images, training=False)['embedding'].numpy()
  np.testing.assert_allclose(task.embedding_of({'image': images}), expected, atol=1e-5)
  np.testing.assert_allclose(task.range_low, np.percentile(expected.reshape(-1, 3), 0.5, axis=0),
                             atol=1e-5)
  model = task.make_model()
  loss, _ = task.loss_and_metrics(model, next(iter(task.train_dataset(4))), training=False)
  assert loss.shape == (4,)
  with pytest.raises(ValueError, match='augment'):
    student_task.StudentTask('synthesis', in_memory_split(examples), teacher_dir, augment=True)
