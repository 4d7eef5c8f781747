"""Model cards in the exports' assets/, and the three standard routes that load the teacher and
the embedder (hub.load, keras.layers.TFSMLayer, tf_keras hub.KerasLayer), each against the
project's own model on the same inputs."""
import json
import os
import shutil
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_hub as hub

from models import embedder_export, hub_export, model_card, students, teacher as teacher_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(layers_per_block=1, base_channels=8, max_channels=16, n_latent=16)


@pytest.fixture(scope='module')
def teacher(tmp_path_factory):
  keras.utils.set_random_seed(0)
  model = teacher_lib.build_teacher(bandwidth=4, in_channels=2, num_classes=3,
                                    filters=(4, 4, 6), pool_blocks=(3,), embedding_block='block2')
  path = str(tmp_path_factory.mktemp('teacher') / 'export')
  teacher_lib.export_teacher(model, path)
  spheres = np.random.default_rng(1).uniform(size=(3, 8, 8, 2)).astype(np.float32)
  return model, path, spheres


@pytest.fixture(scope='module')
def embedder(tmp_path_factory):
  keras.utils.set_random_seed(0)
  model = students.build_student(16, (8, 8, 3), **TINY)
  path = str(tmp_path_factory.mktemp('embedder') / 'export')
  embedder_export.export_embedder(model, path, turns=2, mirror=True)
  images = np.random.default_rng(2).uniform(size=(2, 16, 16, 1)).astype(np.float32)
  return model, path, images


def test_teacher_card_states_the_contract(teacher):
  model, path, _ = teacher
  card = model_card.read_card(path)
  assert card['model'] == 'teacher' and card['teacher_layer'] == 'block2'
  assert card['inputs'] == {'spheres': {'dtype': 'float32', 'shape': [None, 8, 8, 2],
                                        'meaning': card['inputs']['spheres']['meaning']}}
  assert set(card['outputs']) == set(model.output)
  for name, spec in card['outputs'].items():
    assert spec['shape'] == [None] + list(model.output[name].shape[1:]), name
    assert spec['meaning']
  assert 'block2' in card['outputs']['embedding']['meaning']
  assert card['settings']['bandwidth'] == 4 and 'Driscoll-Healy' in card['grid']
  assert card['commit'] == model_card.git_commit()
  text = open(os.path.join(path, 'assets', model_card.CARD_MD)).read()
  for needle in ('`embedding`', '`aux_logits`', '`descriptor`', 'hub.load', 'TFSMLayer',
                 'TF_USE_LEGACY_KERAS', '[N, 8, 8, 2]', 'ICML 2019', 'ECCV 2018'):
    assert needle in text, needle


def test_embedder_and_synthesizer_cards(embedder, tmp_path):
  _, path, _ = embedder
  card = model_card.read_card(path)
  assert card['model'] == 'embedder'
  assert card['inputs']['images']['shape'] == [None, 16, 16, 1]
  assert card['outputs']['embedding']['shape'] == [None, 8, 8, 3]
  assert card['symmetry_average'] == {'turns': 2, 'mirror': True}
  assert set(card['signatures']) == {'serving_default', 'serving_uint8', 'serving_encoded'}
  synth = students.build_synthesis(embedding_shape=(8, 8, 3), image_size=16, **TINY)
  synth_path = embedder_export.export_synthesizer(synth, str(tmp_path / 'synth'))
  card = model_card.read_card(synth_path)
  assert card['inputs']['embeddings']['shape'] == [None, 8, 8, 3]
  assert card['outputs']['image']['shape'] == [None, 16, 16, 1]


def test_training_record_is_added_to_the_card(embedder, tmp_path):
  _, path, _ = embedder
  copy = str(tmp_path / 'copy')
  shutil.copytree(path, copy)
  record = {'dataset': 'equivariant_shapes/procedural_b8_s16_v2_n10:1.4.0', 'steps': 4}
  card = model_card.add_training_record(copy, record)
  assert card['trained_on'] == record
  assert model_card.read_card(copy)['trained_on'] == record
  assert 'procedural_b8_s16_v2_n10' in open(os.path.join(copy, 'assets', 'model_card.md')).read()
  assert model_card.add_training_record(str(tmp_path), record) is None  # no card: nothing written
  with pytest.raises(ValueError, match='no model card'):
    model_card.read_card(str(tmp_path))


def test_teacher_hub_load_and_tfsmlayer_give_the_models_numbers(teacher):
  model, path, spheres = teacher
  want = {k: np.asarray(v) for k, v in model(spheres, training=False).items()}
  module = hub.load(path)
  got = module(tf.constant(spheres), training=False)
  layer = keras.layers.TFSMLayer(path, call_endpoint='serving_default')
  from_layer = layer(spheres)
  from_signature = module.signatures['serving_default'](spheres=tf.constant(spheres))
  for name, value in want.items():
    for route in (got, from_layer, from_signature):
      np.testing.assert_allclose(np.asarray(route[name]), value, rtol=1e-5, atol=1e-5,
                                 err_msg=name)
  assert json.loads(module.config_json.numpy())['embedding_block'] == 'block2'


def test_embedder_tfsmlayer_gives_the_models_numbers(embedder):
  model, path, images = embedder
  loaded = tf.saved_model.load(path)
  want = np.asarray(loaded.embed(images)['embedding'])
  # The export's symmetry average over 2 turns and the mirror, computed here from the student.
  from datasets import inplane
  expected = inplane.symmetry_average(
      lambda x: {'embedding': model(x, training=False)['embedding']}, tf.constant(images), 2,
      True)['embedding']
  np.testing.assert_allclose(want, expected, rtol=1e-5, atol=1e-5)
  layer = keras.layers.TFSMLayer(path, call_endpoint='serving_default')
  np.testing.assert_allclose(np.asarray(layer(images)['embedding']), want, rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # ~25 s: a second Python process with tf_keras
def test_hub_keraslayer_under_tf_keras_gives_the_models_numbers(teacher, embedder, tmp_path):
  pytest.importorskip('tf_keras')
  teacher_model, teacher_path, spheres = teacher
  _, embedder_path, images = embedder
  np.save(tmp_path / 'spheres.npy', spheres)
  np.save(tmp_path / 'images.npy', images)
  script = textwrap.dedent(f"""
      import numpy as np, tensorflow as tf, tensorflow_hub as hub, tf_keras
      spheres = np.load({str(tmp_path / 'spheres.npy')!r})
      images = np.load({str(tmp_path / 'images.npy')!r})
      layer = hub.KerasLayer({teacher_path!r}, output_key='embedding', trainable=True)
      model = tf_keras.Sequential([tf_keras.Input((8, 8, 2)), layer])
      assert len(model.trainable_weights) > 0
      np.save({str(tmp_path / 'teacher.npy')!r}, model(spheres, training=False).numpy())
      embed = hub.KerasLayer({embedder_path!r}, signature='serving_default',
                             signature_outputs_as_dict=True)
      np.save({str(tmp_path / 'embedder.npy')!r}, embed(images)['embedding'].numpy())
      """)
  env = dict(os.environ, TF_USE_LEGACY_KERAS='1', TF_CPP_MIN_LOG_LEVEL='3')
  done = subprocess.run([sys.executable, '-c', script], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  np.testing.assert_allclose(np.load(tmp_path / 'teacher.npy'),
                             teacher_model(spheres, training=False)['embedding'], rtol=1e-5,
                             atol=1e-5)
  loaded = tf.saved_model.load(embedder_path)
  want = loaded.embed(images)['embedding']
  np.testing.assert_allclose(np.load(tmp_path / 'embedder.npy'), want, rtol=1e-5, atol=1e-6)


def test_git_commit_outside_a_checkout(tmp_path):
  assert model_card.git_commit(str(tmp_path)) == 'unknown'
  commit = model_card.git_commit()
  assert commit.split('+')[0] == subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=ROOT,
                                                capture_output=True, text=True).stdout.strip()
