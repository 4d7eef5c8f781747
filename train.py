"""Trains the teacher, a student or the synthesis model with the shared custom training loop.

  python train.py --model=teacher|student|synthesis --model_dir=DIR [task flags] [shared flags]

`--model` picks the task module (`models.teacher_task` for the teacher, `models.student_task` for
the student and synthesis models); its `build_task(FLAGS)` returns a `models.training.Task`, and
`models.training.train` runs it. The task module is imported before the flags are parsed, so its
task-specific flags are accepted on the command line; the flags here are shared by every task.
Rerunning with the same `--model_dir` resumes from its latest checkpoint.
"""
import importlib
import sys

from pipeline import cli

cli.die_with_parent()  # before the heavy imports: a pipeline's train.py dies with the pipeline

# pylint: disable=g-import-not-at-top,wrong-import-position
from pipeline import console

console.quiet(sys.argv)  # before TensorFlow loads: no start-up notices unless --verbosity=1

from absl import app
from absl import flags
from absl import logging
import keras

from models import training
# pylint: enable=g-import-not-at-top,wrong-import-position

TASK_MODULES = {
    'teacher': 'models.teacher_task',
    'student': 'models.student_task',
    'synthesis': 'models.student_task',
}

FLAGS = flags.FLAGS
flags.DEFINE_enum('model', None, list(TASK_MODULES), 'What to train.')
flags.DEFINE_string('model_dir', None, 'Checkpoints, summaries and exports go here.')
flags.DEFINE_string('data_dir', None, 'Where the data set was built (datasets.builders).')
flags.DEFINE_string('data_config', '{}',
                    'The data set: its name as the build printed it '
                    '(equivariant_shapes/procedural_b8_s16_v2_n10), or its settings as a JSON '
                    'object (\'{"bandwidth": 16, "image_size": 32}\') or as key=value,... '
                    '(datasets.builders.data_settings).')
flags.DEFINE_integer('batch_size', 32, 'Global batch size (over all replicas).')
flags.DEFINE_integer('max_steps', 10000, 'Train until this many steps (a resumed run counts on).')
flags.DEFINE_list('lr_boundaries', [], 'Steps at which the learning rate changes.')
flags.DEFINE_list('lr_values', ['1e-3'], 'Learning rates: one more than --lr_boundaries.')
flags.DEFINE_float('momentum', 0.9, "Adam's beta_1.")
flags.DEFINE_float('adam_epsilon', 1e-8, "Adam's epsilon.")
flags.DEFINE_enum('distribution_strategy', 'one_device', training.STRATEGIES,
                  'tf.distribute strategy.')
flags.DEFINE_string('tpu', '', 'TPU address or name for --distribution_strategy=tpu.')
flags.DEFINE_integer('logical_cpu_devices', 0,
                     'Split the CPU into this many logical devices (for testing the mirrored '
                     'strategy without GPUs); 0 leaves it alone.')
flags.DEFINE_integer('checkpoint_every', 1000, 'Steps between checkpoints.')
flags.DEFINE_integer('summary_every', 100, 'Steps between TensorBoard scalar summaries.')
flags.DEFINE_integer('eval_every', 0,
                     'Steps between evaluations on the test split (one always runs at the end).')
flags.DEFINE_integer('eval_batches', 0, 'Batches per evaluation (0: the whole test split).')
flags.DEFINE_integer('seed', 0,
                     'Seeds Python, NumPy and TensorFlow (initial weights, data order, augmentation) '
                     'so that a run repeats; -1 leaves them unseeded.')
flags.DEFINE_bool('export', True, 'Export the trained model to MODEL_DIR/export at the end.')
flags.DEFINE_enum('jit_compile', 'auto', ['auto', 'true', 'false'],
                  "Compile each step's loss and gradients with XLA; auto: as the model's task "
                  'prefers (the teacher yes, students no: models.training.Task.jit_compile).')
flags.mark_flags_as_required(['model', 'model_dir'])


def requested_model(argv):
  """The value of --model in `argv` (before absl parses it), or None."""
  for i, arg in enumerate(argv[1:], start=1):
    if arg.startswith('--model='):
      return arg.split('=', 1)[1]
    if arg == '--model' and i + 1 < len(argv):
      return argv[i + 1]
  return None


def import_task_module(model):
  """Imports the task module of `model` (defining its flags); a clear error if it is missing."""
  if model not in TASK_MODULES:
    raise app.UsageError(f'--model must be one of {sorted(TASK_MODULES)}, got {model!r}')
  name = TASK_MODULES[model]
  try:
    return importlib.import_module(name)
  except ModuleNotFoundError as e:
    if e.name == name:
      raise app.UsageError(f'--model={model} needs the module {name}, which is not installed '
                           'in this checkout') from None
    raise


def resolve_data_config(text, data_dir):
  """--data_config (a data set name, JSON or key=value text) -> the JSON object of its settings,
  which the tasks read; a JSON object is passed through untouched."""
  if not text or text.lstrip().startswith('{'):
    return text
  import json  # pylint: disable=g-import-not-at-top
  from datasets import builders  # pylint: disable=g-import-not-at-top  (imports TFDS)
  try:
    return json.dumps(builders.data_settings(text, data_dir))
  except ValueError as e:
    raise app.UsageError(f'--data_config: {e}') from None


def run_info(flag_values):
  """What TensorBoard's text summary and hparams and the export's model card record of this run:
  the program's flags (absl's own left out), the data set (name, folder, settings), the commit
  and, for a student or synthesis model, the teacher export it learned from."""
  import json  # pylint: disable=g-import-not-at-top
  from models import model_card  # pylint: disable=g-import-not-at-top
  values = {}
  for module, defined in flag_values.flags_by_module_dict().items():
    if not module.startswith('absl.'):
      values.update({f.name: f.value for f in defined})
  info = {'flags': dict(sorted(values.items())), 'commit': model_card.git_commit()}
  uses_npz = 'npz_dir' in flag_values and flag_values['npz_dir'].value
  if flag_values['data_dir'].value and not uses_npz:
    from datasets import builders  # pylint: disable=g-import-not-at-top
    settings = json.loads(flag_values.data_config or '{}')
    config = builders.make_config(**settings)
    info['dataset'] = {'name': builders.dataset_name(settings),
                       'version': str(builders.EquivariantShapes.VERSION),
                       'data_dir': flag_values.data_dir,
                       'settings': json.loads(json.dumps(config.settings()))}
  teacher_dir = flag_values['tgt_embed_dir'].value if 'tgt_embed_dir' in flag_values else None
  if teacher_dir:
    teacher = {'export': teacher_dir, 'key': flag_values.tgt_embed_key}
    try:
      card = model_card.read_card(teacher_dir)
      teacher.update(teacher_layer=card.get('teacher_layer'), commit=card.get('commit'))
    except ValueError:
      pass  # a teacher exported without a card: its path and key are what is known
    info['teacher'] = teacher
  return info


def _configure_logical_cpus(count):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  cpus = tf.config.list_physical_devices('CPU')
  tf.config.set_logical_device_configuration(
      cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(count)])


def check_flags():
  """Raises cli.InputError for a bad shared flag, before anything is built or written."""
  cli.check_output_dir('--model_dir', FLAGS.model_dir)
  cli.check_int('--batch_size', FLAGS.batch_size)
  for name in ('max_steps', 'checkpoint_every', 'summary_every', 'eval_every', 'eval_batches',
               'logical_cpu_devices'):
    cli.check_int(f'--{name}', FLAGS[name].value, minimum=0)
  if FLAGS.data_config.lstrip().startswith('{'):  # names and key=value: resolve_data_config
    cli.parse_json_object('--data_config', FLAGS.data_config)
  if FLAGS.data_dir:
    cli.check_input_dir('--data_dir', FLAGS.data_dir)
  try:
    training.TrainConfig(model_dir=FLAGS.model_dir, batch_size=FLAGS.batch_size,
                         max_steps=FLAGS.max_steps, lr_boundaries=[int(b) for b in
                                                                   FLAGS.lr_boundaries],
                         lr_values=[float(v) for v in FLAGS.lr_values])
  except ValueError as e:
    raise cli.InputError(f'--lr_values/--lr_boundaries: {e}') from None


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  check_flags()
  if FLAGS.logical_cpu_devices:
    _configure_logical_cpus(FLAGS.logical_cpu_devices)
  # The strategy first: multi-worker strategies must exist before any other TensorFlow op.
  strategy = training.make_strategy(FLAGS.distribution_strategy, FLAGS.tpu)
  if FLAGS.seed >= 0:
    keras.utils.set_random_seed(FLAGS.seed)
  module = import_task_module(FLAGS.model)
  FLAGS.data_config = resolve_data_config(FLAGS.data_config, FLAGS.data_dir)
  task = module.build_task(FLAGS)
  try:
    lr_values = [float(v) for v in FLAGS.lr_values]
    lr_boundaries = [int(b) for b in FLAGS.lr_boundaries]
  except ValueError as e:
    raise app.UsageError(f'--lr_values/--lr_boundaries: {e}') from None
  config = training.TrainConfig(
      model_dir=FLAGS.model_dir, batch_size=FLAGS.batch_size, max_steps=FLAGS.max_steps,
      lr_boundaries=lr_boundaries, lr_values=lr_values, momentum=FLAGS.momentum,
      adam_epsilon=FLAGS.adam_epsilon, checkpoint_every=FLAGS.checkpoint_every,
      summary_every=FLAGS.summary_every, eval_every=FLAGS.eval_every,
      eval_batches=FLAGS.eval_batches or None, export=FLAGS.export,
      jit_compile={'auto': None, 'true': True, 'false': False}[FLAGS.jit_compile],
      seed=FLAGS.seed if FLAGS.seed >= 0 else None, run_info=run_info(FLAGS))
  result = training.train(task, config, strategy)
  logging.info('done: %s', result)
  print(f"final_step={result['step']}", flush=True)


if __name__ == '__main__':
  _model = requested_model(sys.argv)
  if _model in TASK_MODULES:
    import_task_module(_model)
  cli.run(main)
