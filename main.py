"""The main job: every stage of the project, from the data set to the results, in order.

  python main.py                                             # the bundled procedural shapes
  python main.py --mesh_dir=path/to/meshes --test_per_category=1   # a mesh folder
  python main.py --preset=tiny --output_dir=/tmp/out         # seconds-scale smoke run

Stages (each skipped when its outputs are complete, unless --force):
  dataset         build the TFDS data set (views + spherical maps) into --data_dir
  contact_sheets  one PNG per category in --output_dir: views and spherical maps of a few instances
  teacher         train.py --model=teacher; exports the TF-Hub module to teacher/export
  student         train.py --model=student (image -> teacher embedding); embedder in student/export
  synthesis       train.py --model=synthesis (teacher embedding -> view); synthesis/export
  embeddings      evaluate.py export: student and teacher embeddings of the test split
  relative_pose   evaluate.py align: target and fmap modes, same and different instances, with and
                  without upsampling; eval/results.csv and error CDF plots
  view_synthesis  evaluate.py synthesis: L1, PSNR, SSIM and image grids in eval/
  results         results.md: the tables above plus the models' test metrics; training_curves.png
Settings come from --preset (pipeline/presets.py: tiny, default, paper); flags override single
values. The training and evaluation stages run as subprocesses (logs in <output_dir>/logs/) and
print progress lines (step, steps/s, ETA); a killed run resumes from the last checkpoint. At the
end the data set summary and results.md are printed.
"""
import dataclasses
import os
import sys
import time
from typing import Callable, Optional

from absl import app
from absl import flags
from absl import logging

from pipeline import console

# Before TensorFlow loads: its start-up lines, C++ notices and library warnings stay off the
# console (kept in logs/main.log); --verbosity=1 shows them.
console.quiet(sys.argv, own_info=False, tfds=True)

# pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow_datasets as tfds

from datasets import builders
from datasets import contact_sheet
from datasets import raycast
from pipeline import cli
from pipeline import locks
from pipeline import presets
from pipeline import runner
from pipeline import stages as pipeline_stages
# pylint: enable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_string('output_dir', './output', 'Folder of every output of the job.')
flags.DEFINE_string('data_dir', None,
                    'TFDS data folder; default: <output_dir>/tensorflow_datasets.')
flags.DEFINE_string('mesh_dir', None, 'Folder of meshes (<category>/[train|test/]<name>.<ext>) to '
                    'use instead of the bundled procedural shapes.')
flags.DEFINE_enum('source', None, builders.SOURCES, 'Mesh source; default: folder with '
                  '--mesh_dir, else procedural.')
flags.DEFINE_enum('preset', 'default', list(presets.PRESETS),
                  'Settings of every stage (pipeline/presets.py); the flags below override them.')
flags.DEFINE_enum('recipe', 'ours', list(presets.RECIPES),
                  "Method, orthogonal to the preset's scale: 'ours' or 'original' (the gist's "
                  "students and loss, spherical-cnn's teacher defaults, the MATLAB experiment's "
                  'evaluation; pipeline/presets.py, docs/deviations.md).')
flags.DEFINE_integer('views_per_instance', None, 'Random views per shape instance (preset).')
flags.DEFINE_integer('instances_per_category', None, 'Procedural shapes per category (preset).')
flags.DEFINE_integer('test_per_category', None, 'Exactly this many test instances per category '
                     '(e.g. 1: train on two instances per class, test on the third) instead of '
                     'a test fraction (preset: 4 of the default\'s 68 procedural shapes); folders '
                     'with train/test sub-folders keep their split.')
flags.DEFINE_integer('bandwidth', None, 'Bandwidth B of the spherical maps (2B x 2B; preset).')
flags.DEFINE_integer('image_size', None, 'Views are image_size x image_size pixels (preset).')
flags.DEFINE_integer('teacher_steps', None, 'Training steps of the teacher (preset).')
flags.DEFINE_integer('student_steps', None, 'Training steps of the student (preset).')
flags.DEFINE_integer('synthesis_steps', None, 'Training steps of the synthesis model (preset).')
flags.DEFINE_integer('teacher_batch_size', None, 'Batch size of the teacher (preset).')
flags.DEFINE_integer('student_batch_size', None,
                     'Batch size of the student and synthesis models (preset).')
flags.DEFINE_float('student_degree_loss_weight', None,
                   "Weight of the student's degree loss, 0 = off (preset key degree_loss_weight; "
                   'models.student_task).')
flags.DEFINE_float('student_pose_loss_weight', None,
                   "Weight of the student's pose loss, 0 = off (preset key pose_loss_weight; "
                   'models.student_task).')
flags.DEFINE_integer('student_embedder_turns', None,
                     'The exported embedder averages the student over this many turns about the '
                     'camera axis, 1 = none (preset key embedder_turns; models.embedder_export).')
flags.DEFINE_bool('student_embedder_mirror', None,
                  'The exported embedder also averages over the left-right mirror (preset key '
                  'embedder_mirror).')
flags.DEFINE_integer('sheet_instances', 4, 'Instances per contact sheet.')
flags.DEFINE_list('stages', None, 'Stages to run (default: all), in pipeline order.')
flags.DEFINE_bool('force', False, 'Redo the stages even when their outputs are complete.')


@dataclasses.dataclass
class Job:
  """Settings of one run of the pipeline, and what the stages share."""
  output_dir: str
  data_dir: str
  dataset: dict  # keyword arguments of builders.make_builder
  sheet_instances: int = 4
  force: bool = False
  preset_name: str = 'default'
  settings: dict = dataclasses.field(default_factory=lambda: presets.resolve('default'))
  build_seconds: Optional[float] = None
  _builder: Optional[builders.EquivariantShapes] = dataclasses.field(default=None, repr=False)

  def builder(self):
    """The data set's builder (made once; it reads the data set info when the set is built)."""
    if self._builder is None:
      self._builder = builders.make_builder(self.data_dir, **self.dataset)
    return self._builder


@dataclasses.dataclass(frozen=True)
class Stage:
  name: str
  run: Callable[[Job], None]
  is_complete: Callable[[Job], bool]  # are its outputs all there (then a rerun skips it)?


def build_dataset(job):
  builder = job.builder()
  start = time.time()
  builders.prepare(builder, force=job.force, download_dir=os.path.join(job.data_dir, 'downloads'))
  job.build_seconds = time.time() - start


def dataset_complete(job):
  return job.builder().is_prepared()


def _sheet_categories(job):
  """Categories with examples in the built data set (each gets a sheet)."""
  summary = builders.build_summary(job.builder())
  return sorted({label for split in summary.values()
                 for label, count in split['examples_per_label'].items() if count})


def write_sheets(job):
  builder = job.builder()
  config = builder.builder_config
  channels = list(raycast.BASE_SPHERE_CHANNELS) + list(config.extra_channels)
  label_names = builder.info.features['label'].names
  written = {}
  for split in builder.info.splits:  # train first, then test for categories train lacks
    missing = [c for c in _sheet_categories(job) if c not in written]
    if not missing:
      break
    examples = tfds.as_numpy(builder.as_dataset(split=split))
    sheets = contact_sheet.write_contact_sheets(examples, label_names, channels, job.output_dir,
                                                job.sheet_instances)
    written.update({c: p for c, p in sheets.items() if c in missing})
  for path in written.values():
    logging.info('Wrote %s', path)


def sheets_complete(job):
  if not dataset_complete(job):
    return False
  # A sheet older than the data set shows a previous build: redo it.
  built = os.path.getmtime(os.path.join(job.builder().data_dir, 'dataset_info.json'))
  paths = [contact_sheet.sheet_path(job.output_dir, c) for c in _sheet_categories(job)]
  return bool(paths) and all(os.path.exists(p) and os.path.getmtime(p) >= built for p in paths)


STAGES = (
    Stage('dataset', build_dataset, dataset_complete),
    Stage('contact_sheets', write_sheets, sheets_complete),
    Stage('teacher', *pipeline_stages.training_stage_functions('teacher')),
    Stage('student', *pipeline_stages.training_stage_functions('student')),
    Stage('synthesis', *pipeline_stages.training_stage_functions('synthesis')),
    Stage('embeddings', pipeline_stages.run_export, pipeline_stages.export_complete),
    Stage('relative_pose', pipeline_stages.run_align, pipeline_stages.align_complete),
    Stage('view_synthesis', pipeline_stages.run_view_synthesis,
          pipeline_stages.view_synthesis_complete),
    Stage('results', pipeline_stages.run_results, pipeline_stages.results_complete),
)


def check_stage_names(names):
  """Raises InputError unless every name in `names` (None: all) is a stage."""
  known = [s.name for s in STAGES]
  unknown = sorted(set(names or ()) - set(known))
  if unknown:
    raise cli.InputError(f'--stages: unknown stages {unknown}; the stages are {known}')


def run_stages(job, names=None):
  """Runs the stages `names` (default: all) in pipeline order, skipping complete ones."""
  check_stage_names(names)
  job_start = time.time()
  for stage in STAGES:
    if names and stage.name not in names:
      continue
    if not job.force and stage.is_complete(job):
      _status(f'Stage {stage.name}: outputs complete, skipped (--force redoes it)')
      continue
    _status(f'Stage {stage.name}: running')
    start = time.time()
    stage.run(job)
    if not stage.is_complete(job):
      raise RuntimeError(f'Stage {stage.name} finished but its outputs are incomplete')
    took = runner.format_seconds(time.time() - start)
    _status(f'Stage {stage.name}: done in {took} '
            f'(pipeline {runner.format_seconds(time.time() - job_start)})')


def _status(text):
  """A one-line stage status, on stdout (with the progress lines) and in the log."""
  print(f'== {text}', flush=True)
  logging.info(text)


def summary_table(job):
  """The build summary as text: examples (instances) per category and split, and failures."""
  builder = job.builder()
  if not builder.is_prepared():
    return f'No data set built yet in {job.data_dir}.'
  summary = builders.build_summary(builder)
  splits = list(summary)
  # The categories and counts of what was built (the build's own records), not of the folder now.
  labels = builders.built_labels(builder)
  lines = [f'Data set {builder.name}/{builder.builder_config.name} in {builder.data_dir}',
           f'{"category":<16}' + ''.join(f'{s + " examples":>18}' for s in splits)]
  for label in labels:
    lines.append(f'{label:<16}' + ''.join(
        f'{summary[s]["examples_per_label"].get(label, 0):>18}' for s in splits))
  lines.append(f'{"total":<16}' + ''.join(f'{summary[s]["examples"]:>18}' for s in splits))
  lines.append(f'{"instances":<16}' + ''.join(f'{summary[s]["instances"]:>18}' for s in splits))
  failures = [f for s in splits for f in summary[s]['failures']]
  lines.append(f'Failed meshes: {len(failures)}')
  lines += [f'  {f["instance"]} ({f["origin"]}): {f["reason"]}' for f in failures]
  lines += builders.build_warnings(builder)
  generation = sum(summary[s]['seconds'] for s in splits)
  total = sum(summary[s]['examples'] for s in splits)
  if generation > 0:
    lines.append(f'Generation: {total} examples in {generation:.1f} s '
                 f'({total / generation:.0f} examples/s)')
  if job.build_seconds:
    lines.append(f'Build with TFDS writing: {job.build_seconds:.1f} s '
                 f'({total / job.build_seconds:.0f} examples/s)')
  return '\n'.join(lines)


# Settings that must be positive integers (steps, batch sizes, sizes).
_POSITIVE_SETTINGS = ('views_per_instance', 'instances_per_category', 'bandwidth', 'image_size',
                      'teacher_steps', 'student_steps', 'synthesis_steps', 'teacher_batch_size',
                      'student_batch_size', 'embedder_turns', 'checkpoint_every', 'summary_every')


def check_settings(settings):
  """Raises InputError unless the resolved settings can run every stage: positive counts, views
  the students take (a power of two >= 4 pixels) and spheres the teacher can pool (a power of
  two it can halve at each of its pooling blocks)."""
  for key in _POSITIVE_SETTINGS:
    if settings.get(key) is not None:
      cli.check_int(f'--{_flag_of(key)}', settings[key])
  cli.check_power_of_two('--image_size', settings['image_size'], minimum=4)
  # The teacher halves the bandwidth at each pooling block; the students' maps are 2^k wide.
  cli.check_power_of_two('--bandwidth', settings['bandwidth'],
                         minimum=max(2, 2 ** len(settings['teacher_pool_blocks'])))
  for key in ('degree_loss_weight', 'pose_loss_weight'):
    if settings[key] < 0:
      raise cli.InputError(f'--student_{key} must be >= 0, got {settings[key]}')


def _flag_of(key):
  return f'student_{key}' if key in ('embedder_turns', 'embedder_mirror') else key


def job_from_flags():
  source = FLAGS.source or ('folder' if FLAGS.mesh_dir else 'procedural')
  try:
    overrides = {
        k: FLAGS[k].value for k in ('views_per_instance', 'instances_per_category', 'bandwidth',
                                    'image_size', 'teacher_steps', 'student_steps',
                                    'synthesis_steps', 'teacher_batch_size',
                                    'student_batch_size')}
    overrides['degree_loss_weight'] = FLAGS.student_degree_loss_weight
    overrides['pose_loss_weight'] = FLAGS.student_pose_loss_weight
    overrides['embedder_turns'] = FLAGS.student_embedder_turns
    overrides['embedder_mirror'] = FLAGS.student_embedder_mirror
    settings = presets.resolve(FLAGS.preset, overrides, recipe=FLAGS.recipe)
    check_settings(settings)
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  check_stage_names(FLAGS.stages)
  cli.check_output_dir('--output_dir', FLAGS.output_dir)
  if FLAGS.data_dir:
    cli.check_output_dir('--data_dir', FLAGS.data_dir)
  cli.check_int('--sheet_instances', FLAGS.sheet_instances)
  if FLAGS.mesh_dir and not os.path.isdir(FLAGS.mesh_dir):
    raise app.UsageError(f'--mesh_dir={FLAGS.mesh_dir}: no such folder')
  if source != 'procedural' and not FLAGS.mesh_dir:
    raise app.UsageError(f'--source={source} needs --mesh_dir')
  dataset = dict(source=source, mesh_dir=FLAGS.mesh_dir,
                 views_per_instance=settings['views_per_instance'],
                 bandwidth=settings['bandwidth'], image_size=settings['image_size'])
  if FLAGS.test_per_category is not None:
    dataset['test_per_category'] = FLAGS.test_per_category
  if source == 'procedural':
    dataset['instances_per_category'] = settings['instances_per_category']
    # The preset's test instances are those of its procedural shapes; a mesh folder has its own.
    if FLAGS.test_per_category is None and settings['test_per_category'] is not None:
      dataset['test_per_category'] = settings['test_per_category']
  try:
    # Listing the meshes checks the mesh folder (an empty one, a category without meshes) too.
    builders.mesh_records(builders.make_config(**dataset))
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  return Job(output_dir=FLAGS.output_dir,
             data_dir=FLAGS.data_dir or os.path.join(FLAGS.output_dir, 'tensorflow_datasets'),
             dataset=dataset, sheet_instances=FLAGS.sheet_instances, force=FLAGS.force,
             preset_name=FLAGS.preset, settings=settings)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  job = job_from_flags()  # every flag and input checked before anything is written
  with locks.hold(job.output_dir, '--output_dir'):
    console.log_to_file(os.path.join(job.output_dir, 'logs', 'main.log'))
    run_stages(job, FLAGS.stages)
  print(summary_table(job))
  results = os.path.join(job.output_dir, pipeline_stages.RESULTS_MD)
  if pipeline_stages.results_complete(job):
    with open(results) as f:
      print('\n' + f.read())
  sys.stdout.flush()


if __name__ == '__main__':
  cli.run(main)
