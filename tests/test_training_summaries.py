"""TensorBoard summaries of models.training: tags grouped per model, the run's flags and data set
as a text summary and hparams, example images per evaluation; read back from the event files."""
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from models import model_card
from models import teacher_task
from models import training
from tests.test_training import _task, teacher_dir  # pylint: disable=unused-import  (fixture)

RUN_INFO = {'flags': {'model': 'student', 'model_dir': '/runs/student', 'batch_size': 4,
                      'lr_values': ['1e-3'], 'augment': False, 'tgt_embed_key': None},
            'dataset': {'name': 'equivariant_shapes/procedural_b8_s16_v2_n10', 'version': '1.4.0'},
            'commit': 'abc123'}


def _accumulator(directory):
  acc = event_accumulator.EventAccumulator(directory, size_guidance={'tensors': 0, 'images': 0})
  acc.Reload()
  return acc


def test_run_writes_grouped_tags_text_hparams_and_images(teacher_dir, tmp_path):
  model_dir = str(tmp_path / 'run')
  config = training.TrainConfig(model_dir, batch_size=4, max_steps=2, checkpoint_every=0,
                                summary_every=1, run_info=RUN_INFO)
  training.train(_task(teacher_dir, 'student'), config)
  train = _accumulator(os.path.join(model_dir, 'train'))
  evaluation = _accumulator(os.path.join(model_dir, 'eval'))
  tensor_tags = set(train.Tags()['tensors'])
  assert {'student/loss', 'student/learning_rate', 'student/images_per_sec'} <= tensor_tags
  assert all(t.startswith(('student/', '_hparams_/')) for t in tensor_tags), tensor_tags
  assert [e.step for e in train.Tensors('student/loss')] == [1, 2]
  # The text summary: the flags and the data set of the run.
  (text,) = train.Tensors('student/run')
  markdown = tf.make_ndarray(text.tensor_proto).item().decode()
  for needle in ('| --batch_size | 4 |', 'equivariant_shapes/procedural_b8_s16_v2_n10',
                 '| --lr_values | ["1e-3"] |', '"abc123"'):
    assert needle in markdown, needle
  # hparams: the session start info of the HParams plugin, with the scalar flags.
  content = train.PluginTagToContent('hparams')['_hparams_/session_start_info']
  start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
  assert start.hparams['batch_size'].number_value == 4
  assert start.hparams['model'].string_value == 'student'
  assert start.hparams['augment'].bool_value is False
  assert start.hparams['lr_values'].string_value == '["1e-3"]'
  assert start.hparams['dataset'].string_value == 'equivariant_shapes/procedural_b8_s16_v2_n10'
  # Evaluation: grouped metrics and a few example views and maps.
  eval_tags = set(evaluation.Tags()['tensors'])
  assert {'student/loss', 'student/relative_error'} <= eval_tags
  images = {'student/images/input_view', 'student/images/embedding_pred_vs_target'}
  assert images <= eval_tags
  view = tf.image.decode_png(
      evaluation.Tensors('student/images/input_view')[-1].tensor_proto.string_val[2])
  assert view.shape[-1] == 1 and view.shape[0] == 16
  # The export's model card got the run's record.
  card = model_card.read_card(os.path.join(model_dir, 'export'))
  assert card['trained_on'] == dict(RUN_INFO, steps=2)


def test_without_run_info_no_text_or_hparams(teacher_dir, tmp_path):
  model_dir = str(tmp_path / 'run')
  config = training.TrainConfig(model_dir, batch_size=4, max_steps=1, checkpoint_every=0,
                                summary_every=1)
  training.train(_task(teacher_dir, 'synthesis'), config)
  tags = set(_accumulator(os.path.join(model_dir, 'train')).Tags()['tensors'])
  assert 'synthesis/loss' in tags and not any('run' in t or 'hparams' in t for t in tags)
  assert 'trained_on' not in model_card.read_card(os.path.join(model_dir, 'export'))


def test_hparams_and_text_of_run_info():
  values = training.hparams_of(RUN_INFO)
  assert values == {'model': 'student', 'model_dir': '/runs/student', 'batch_size': 4,
                    'lr_values': '["1e-3"]', 'augment': False, 'tgt_embed_key': 'null',
                    'dataset': 'equivariant_shapes/procedural_b8_s16_v2_n10'}
  text = training.run_summary_text('student', RUN_INFO)
  assert text.startswith('### student run') and '| --tgt_embed_key | null |' in text
  assert '| name | "equivariant_shapes/procedural_b8_s16_v2_n10" |' in text


def test_channel_images_and_the_teachers_example_maps():
  maps = tf.constant(np.random.default_rng(0).normal(size=(2, 8, 8, 5)), tf.float32)
  images = training.channel_images(maps)
  assert images.shape == (2, 24, 8, 1)
  for k in range(2):
    for c in range(3):
      block = images[k, 8 * c:8 * (c + 1), :, 0].numpy()
      assert block.min() == pytest.approx(0.0) and block.max() == pytest.approx(1.0)
      # Each block is its channel scaled to [0, 1].
      channel = maps[k, :, :, c].numpy()
      np.testing.assert_allclose(block, (channel - channel.min()) / np.ptp(channel), atol=1e-6)
  keras.utils.set_random_seed(0)
  task = teacher_task.TeacherTask(None, num_classes=3, bandwidth=4, in_channels=2,
                                  model_options=dict(filters=(4, 4), pool_blocks=(),
                                                     embedding_block='block2'))
  model = task.make_model()
  spheres = tf.random.uniform((6, 8, 8, 2))
  out = task.image_summaries(model, {'sphere': spheres, 'label': tf.zeros(6, tf.int64)})
  assert out['input_sphere'].shape == (4, 16, 8, 1) and out['embedding'].shape == (4, 24, 8, 1)
