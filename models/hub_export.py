"""Export of a Keras model as a TF-Hub reusable SavedModel, and its loading.

`hub.KerasLayer` does not work inside Keras 3 models, so the project never saves Keras models as
such: `export_reusable_saved_model` wraps the model in a plain trackable object with the attributes
of the reusable SavedModel API (https://www.tensorflow.org/hub/reusable_saved_models):

- `obj(inputs, training=False)`: the model's output dict (both `training` values are traced; in
  training mode batch norm uses and updates batch statistics);
- `obj.variables`, `obj.trainable_variables`: lists of `tf.Variable`;
- `obj.regularization_losses`: list of argument-free functions returning scalar losses;
- `obj.signatures['serving_default']`: the same dict for inference; its input keyword is the
  name of the export's `input_spec` (`spheres` for the teacher);
- `obj.config_json`: a string `tf.Variable` with the JSON description given at export (the students
  read the teacher's bandwidth and default embedding from it).

`load(path)` is `hub.load` with a clear error for a missing or broken export. Writes are atomic
(`save_atomic`): the SavedModel is written to a sibling temporary directory and renamed into place.
A teacher's export (a config with `embedding_block`) carries its model card in `assets/`
(`models.model_card`: inputs, outputs, grid, teacher layer, units, commit).

The module loads with standard APIs (README, docs/models.md): `hub.load(path)`,
`keras.layers.TFSMLayer(path, call_endpoint='serving_default')` under Keras 3, and
`hub.KerasLayer(path, output_key='embedding')` under tf_keras (`TF_USE_LEGACY_KERAS=1`).
"""
import json
import os
import shutil

import tensorflow as tf
import tensorflow_hub as hub

from models import model_card


def _regularization_loss_fn(variable):
  """An argument-free tf.function computing `variable`'s regularisation loss."""
  return tf.function(lambda: variable.regularizer(variable), input_signature=[])


class _ReusableModule(tf.train.Checkpoint):
  """The exported object: the model's variables, its call functions and the config string."""

  def __init__(self, model, input_spec, config):
    super().__init__()
    # Keras 3 variables wrap tf.Variables; the reusable SavedModel API lists the tf.Variables. The
    # model itself is reached only through the functions' closure: tracking it would make the
    # saver walk (and trace) every Keras layer, which is slow and adds nothing to the API.
    self.variables = [v.value for v in model.variables]
    self.trainable_variables = [v.value for v in model.trainable_variables]
    self.regularization_losses = [
        _regularization_loss_fn(v) for v in model.trainable_variables
        if getattr(v, 'regularizer', None) is not None]
    self.config_json = tf.Variable(json.dumps(config, sort_keys=True), trainable=False,
                                   dtype=tf.string, name='config_json')

    def call(inputs, training=False):
      return dict(model(inputs, training=training))

    self.__call__ = tf.function(call)
    # Traced once per mode; the serving signature reuses the inference trace (its keyword is the
    # spec's name).
    self.serving_function = self.__call__.get_concrete_function(input_spec, training=False)
    self.__call__.get_concrete_function(input_spec, training=True)


def export_reusable_saved_model(model, export_dir, input_spec, config=None):
  """Writes `model` to `export_dir` as a reusable SavedModel; returns `export_dir`.

  Args:
    model: a built Keras model whose output is a dict of tensors.
    export_dir: destination directory; an existing export there is replaced.
    input_spec: `tf.TensorSpec` of the single input, its `name` the serving signature's keyword.
    config: JSON-serialisable dict stored as `config_json` (e.g. the teacher's settings).
  """
  if not isinstance(input_spec, tf.TensorSpec) or not input_spec.name:
    raise ValueError(f'export: input_spec must be a named tf.TensorSpec, got {input_spec!r}')
  config = config or {}
  module = _ReusableModule(model, input_spec, config)
  card = None
  if 'embedding_block' in config:  # a teacher (models.teacher.export_teacher)
    outputs = module.serving_function.structured_outputs
    shapes = {name: list(t.shape[1:]) for name, t in outputs.items()}
    card = model_card.teacher_card(input_spec, shapes, config)
  return save_atomic(module, export_dir, {'serving_default': module.serving_function}, card=card)


def save_atomic(module, export_dir, signatures=None, card=None):
  """`tf.saved_model.save` to a sibling temporary directory, then renamed into `export_dir`.

  An existing export at `export_dir` is replaced; readers never see a half-written SavedModel.
  `card`: a `models.model_card` dict written into the export's `assets/` before the rename.
  Returns the absolute `export_dir`.
  """
  export_dir = os.path.abspath(export_dir)
  os.makedirs(os.path.dirname(export_dir), exist_ok=True)
  tmp = f'{export_dir}.tmp{os.getpid()}'
  shutil.rmtree(tmp, ignore_errors=True)
  tf.saved_model.save(module, tmp, signatures=signatures)
  if card is not None:
    model_card.write_card(tmp, card)
  if os.path.exists(export_dir):
    # os.replace cannot replace a non-empty directory: move the old export aside first.
    old = f'{export_dir}.old{os.getpid()}'
    os.replace(export_dir, old)
    os.replace(tmp, export_dir)
    shutil.rmtree(old, ignore_errors=True)
  else:
    os.replace(tmp, export_dir)
  return export_dir


def load(path):
  """Loads a reusable SavedModel written by `export_reusable_saved_model` (via `hub.load`)."""
  if not tf.io.gfile.exists(os.path.join(path, 'saved_model.pb')):
    raise ValueError(f'{path}: not a SavedModel directory (no saved_model.pb)')
  return hub.load(path)


def load_config(module):
  """The JSON config dict stored in a loaded module's `config_json`."""
  if not hasattr(module, 'config_json'):
    raise ValueError('the loaded SavedModel has no config_json: not written by models.hub_export')
  return json.loads(module.config_json.numpy().decode('utf-8'))
