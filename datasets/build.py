"""Builds the `EquivariantShapes` data set from the command line, locally or with Apache Beam.

  python -m datasets.build --data_dir=./output/tensorflow_datasets --source=folder \
      --mesh_dir=path/to/meshes --test_per_category=1 --views_per_instance=4
  # the same with Beam, 2 local worker processes:
  python -m datasets.build ... --beam_pipeline_options=runner=DirectRunner,\
direct_num_workers=2,direct_running_mode=multi_processing

--beam_pipeline_options takes the 'key=value,key=value' text of `tfds build` (each item becomes
a `--key=value` Beam pipeline option); without it the build is the local one and nothing imports
apache_beam (an optional extra: `pip install -e .[beam]` or scripts/bootstrap_beam.sh). Both
builds give the same examples under the same keys. The settings are those of
`builders.make_config`; the data set is read back with `builders.load_split` and the same settings.
"""
import sys

from absl import app
from absl import flags

if __name__ == '__main__':
  from pipeline import console  # pylint: disable=g-import-not-at-top
  # Library warnings and progress bars off (--verbosity=1 shows them); the package `datasets`
  # has loaded TensorFlow already, so its start-up lines are printed.
  console.quiet(sys.argv, tfds=True)

# pylint: disable=g-import-not-at-top,wrong-import-position
from datasets import builders
from pipeline import cli

FLAGS = flags.FLAGS


def define_flags():
  """Defines the command-line flags; only when run as a program, since main.py defines flags
  with the same names and both may be imported in one process."""
  flags.DEFINE_string('data_dir', None, 'TFDS data folder to build into (gs:// with Beam on a '
                      'cluster).')
  flags.DEFINE_string('config', None, 'A registered config to build, by name '
                      '(equivariant_shapes/procedural_b8_s16_v2_n10, as `tfds build --config`); '
                      'its settings replace those of the flags below.')
  flags.DEFINE_enum('source', 'procedural', builders.SOURCES, 'Mesh source.')
  flags.DEFINE_string('mesh_dir', None, 'Mesh folder of the folder and shapenet sources; on a '
                      'cluster a path that every worker can read.')
  flags.DEFINE_list('categories', None, 'Subset of the categories (default: all).')
  flags.DEFINE_integer('instances_per_category', 20, 'Procedural shapes per category.')
  flags.DEFINE_integer('views_per_instance', 8, 'Random views per shape instance.')
  flags.DEFINE_integer('bandwidth', 32, 'Bandwidth B of the spherical maps (2B x 2B).')
  flags.DEFINE_integer('image_size', 64, 'Views are image_size x image_size pixels.')
  flags.DEFINE_float('test_fraction', 0.2, 'Share of test instances (see datasets.sources).')
  flags.DEFINE_integer('test_per_category', None, 'Exactly this many test instances per '
                       'category, instead of --test_fraction.')
  flags.DEFINE_integer('seed', 0, 'Mixed into the rotation seed of every instance.')
  flags.DEFINE_list('extra_channels', [], 'Sphere channels after depth and cos.')
  flags.DEFINE_string('beam_pipeline_options', None, 'Build with Apache Beam with these pipeline '
                      "options, e.g. 'runner=DirectRunner,direct_num_workers=2,"
                      "direct_running_mode=multi_processing'.")
  flags.DEFINE_bool('force', False, 'Rebuild even if the data set exists.')


def build(data_dir, beam_pipeline_options=None, force=False, **config):
  """Builds (or reuses) the data set of `config` (`builders.make_config` settings).

  Args:
    data_dir: the TFDS data folder.
    beam_pipeline_options: None for the local build, or 'key=value,...' Beam pipeline options.
    force: rebuild even if the data set is already there.
    **config: the settings of `builders.make_builder`.

  Returns:
    The prepared `builders.EquivariantShapes` builder.
  """
  builder = builders.make_builder(data_dir, **config)
  beam_options = None
  if beam_pipeline_options is not None:
    beam_options = builders.import_beam_generation().pipeline_options(beam_pipeline_options)
  return builders.prepare(builder, force=force, beam_options=beam_options)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if not FLAGS.data_dir:
    raise app.UsageError('--data_dir is required')
  cli.check_output_dir('--data_dir', FLAGS.data_dir)
  if FLAGS.source != 'procedural' and not FLAGS.mesh_dir:
    raise app.UsageError(f'--source={FLAGS.source} needs --mesh_dir')
  if FLAGS.mesh_dir:
    cli.check_input_dir('--mesh_dir', FLAGS.mesh_dir)
  for name in ('instances_per_category', 'views_per_instance', 'bandwidth', 'image_size'):
    cli.check_int(f'--{name}', FLAGS[name].value)
  config = dict(source=FLAGS.source, mesh_dir=FLAGS.mesh_dir, categories=FLAGS.categories,
                instances_per_category=FLAGS.instances_per_category,
                views_per_instance=FLAGS.views_per_instance, bandwidth=FLAGS.bandwidth,
                image_size=FLAGS.image_size, test_fraction=FLAGS.test_fraction,
                test_per_category=FLAGS.test_per_category, seed=FLAGS.seed,
                extra_channels=tuple(FLAGS.extra_channels))
  if FLAGS.config:
    try:
      config = builders.data_settings(FLAGS.config, FLAGS.data_dir)
    except ValueError as e:
      raise app.UsageError(f'--config: {e}') from e
  try:
    # Listing the meshes checks the mesh folder and the split settings before any work starts.
    builders.mesh_records(builders.make_config(**config))
    if FLAGS.beam_pipeline_options is not None:
      builders.import_beam_generation().pipeline_options(FLAGS.beam_pipeline_options)
  except (ValueError, ImportError) as e:
    raise app.UsageError(str(e)) from e
  builder = build(FLAGS.data_dir, FLAGS.beam_pipeline_options, FLAGS.force, **config)
  for split, summary in builders.build_summary(builder).items():
    print(f'{split}: {summary["examples"]} examples of {summary["instances"]} instances, '
          f'{len(summary["failures"])} failed meshes, {summary["seconds"]:.1f} s '
          f'({summary["generated_with"]})')
  for line in builders.build_warnings(builder):
    print(line)
  print(f'Built {builder.name}/{builder.builder_config.name} in {builder.data_dir}')
  sys.stdout.flush()


if __name__ == '__main__':
  define_flags()
  cli.run(main)
