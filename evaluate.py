"""Evaluation of the equivariant image embeddings, and the user tools.

usage: python evaluate.py [COMMAND] [flags] [files]

Commands (the first positional argument; `align` when there is none):
  align       relative pose from embeddings (run_alignment_experiment.m of the gist, with our
              choices by default; its own with --peaks=argmax --pair_enumeration=first_view
              --diff_partner=random --upsample_method=bicubic --odd_degree_weight=1, and
              --normalize_method=matrix_norm for its normalize; docs/deviations.md):
                evaluate.py --embeddings=FILE [--pairs=same|diff|same,diff] [--mode=fmap|target|
                fmap,target] [--upsample=K] [--normalize] [--odd_degree_weight=W] [--symmetric]
                [--max_pairs=N] [--seed=S] [--results_csv=PATH] [--name=NAME]
              prints a markdown table, appends one row per (mode, pairs) to the results CSV
              (default results.csv beside FILE; header name,mode,pairs,n,median_deg,mean_deg,acc10,
              acc30) and writes per-pair records (.pairs.npz) and an error CDF (.cdf.png) beside it.
  synthesis   view synthesis: rotate the embedding of view 1 by R2 R1^T, decode, compare with view 2
              (L1, PSNR, SSIM); needs an embeddings file with the views (`export --include_images`):
                evaluate.py synthesis --embeddings=FILE --synthesizer=DIR [--mode] [--pairs]
              (`--synthesis` is the same as the command.) Writes synthesis_results.csv, per-pair
              metrics (.synthesis.npz) and an image grid (.grid.png: input, prediction, truth).
  export      the embeddings file of a built dataset split:
                evaluate.py export --embedder=DIR [--teacher=HUB_DIR] --data_dir=DIR --split=test
                --data_config=equivariant_shapes/procedural_b8_s16_v2_n10 [--include_images]
                --output=FILE
              (--data_config: the data set's name as the build printed it, or its settings as
              key=value,... or a JSON object; --dataset_config=key=value,... is its deprecated
              spelling.)
  relpose     relative rotation between two photos (image 1 -> image 2):
                evaluate.py relpose --embedder=DIR IMG1 IMG2 [--top_k=3] [--json=OUT.json]
              (or --image1=IMG1 --image2=IMG2); many pairs in one call, embedded once per image
              and aligned in batches: --pair_list=FILE (two paths a line) or
              --images_glob='photos/*.jpg' (every image against the first, sorted); prints a
              table (--json: the list). The same as evaluation.relpose.relative_pose_from_files.
  synthesize  a novel view of one photo after rotating the object:
                evaluate.py synthesize --embedder=DIR --synthesizer=DIR IMG
                (--euler_zyz_deg=a,b,c | --quaternion=w,x,y,z | --axis_angle_deg=x,y,z,deg)
                --output=OUT.png

Conventions: docs/conventions.md. The relative pose of views at R1, R2 is R2 R1^T.
The flags live in a FlagValues of their own (EVAL_FLAGS), so importing this module next to other
absl apps (train.py, main.py) in one process cannot clash; absl's own flags (--verbosity, ...)
are still accepted.
"""
import sys

from pipeline import cli

cli.die_with_parent()  # a pipeline's evaluate.py dies with the pipeline (pipeline.runner)

# pylint: disable=wrong-import-position
from absl import app
from absl import flags
# pylint: enable=wrong-import-position

EVAL_FLAGS = flags.FlagValues()
COMMANDS = ('align', 'synthesis', 'export', 'relpose', 'synthesize')


def _define_flags(fv):
  """Every flag of evaluate.py, on the FlagValues `fv`."""
  d = dict(flag_values=fv)
  # The experiments.
  flags.DEFINE_string('embeddings', None, 'Embeddings file (.npz, see docs/conventions.md).', **d)
  flags.DEFINE_list('pairs', ['same'], 'Pair kinds: same (two views of one instance) and/or diff '
                    '(two instances of one class).', **d)
  flags.DEFINE_list('mode', ['fmap'], 'Embeddings to use: fmap (student) and/or target (teacher).',
                    **d)
  flags.DEFINE_integer('upsample', 1, 'Correlation evaluated at upsample x bandwidth.',
                       lower_bound=1, **d)
  flags.DEFINE_bool('normalize', False, 'Per-channel normalisation of the maps before correlating.',
                    **d)
  flags.DEFINE_float('odd_degree_weight', 2.0,
                     "Scale of the odd spherical-harmonic degrees of the student's maps (fmap mode, "
                     'relpose) before correlating; 1 leaves them alone. The odd degrees tell a pose '
                     'from its 180-degree flips; 2 was best of 1-6 on held-out procedural shapes.',
                     lower_bound=0.0, **d)
  flags.DEFINE_bool('symmetric', False, 'Report min(err, 180 - err): forgives a two-fold flip.',
                    **d)
  # The gist's MATLAB experiment (align.m) beside ours (evaluation.alignment, evaluation.pairs).
  flags.DEFINE_enum('peaks', 'refined', ['refined', 'argmax'],
                    "align: 'refined' refines the four best distinct grid peaks (ours); 'argmax' "
                    "is the correlation grid's maximum (spherical_correlation.m).", **d)
  flags.DEFINE_enum('upsample_method', 'spectral', ['spectral', 'bicubic'],
                    "align, --upsample > 1: 'spectral' evaluates the correlation on a finer grid "
                    "(ours); 'bicubic' resizes the maps first (align.m's imresize).", **d)
  flags.DEFINE_enum('normalize_method', 'spectral', ['spectral', 'matrix_norm'],
                    "align, --normalize: 'spectral' scales each channel's coefficients (ours); "
                    "'matrix_norm' divides each channel by its largest singular value (align.m's "
                    'norm).', **d)
  flags.DEFINE_enum('pair_enumeration', 'all', ['all', 'first_view'],
                    "align: 'all' pairs of views (ours) or each instance's first view against "
                    "its other views (align.m).", **d)
  flags.DEFINE_enum('diff_partner', 'same_class', ['same_class', 'random'],
                    "align, --pairs=diff: view 2 from another instance of the class (ours) or "
                    "from any row (align.m's randi; needs --pair_enumeration=first_view).", **d)
  flags.DEFINE_integer('max_pairs', None, 'At most this many pairs, sampled (0: all). Default: all '
                       'for same, 10000 for diff.', lower_bound=0, **d)
  flags.DEFINE_integer('seed', 0, 'Seed of the pair sampling.', **d)
  flags.DEFINE_string('results_csv', None, 'Results CSV (default: beside --embeddings).', **d)
  flags.DEFINE_string('name', None, 'Name column of the results (default: the file stem).', **d)
  flags.DEFINE_integer('batch_size', 64, 'Pairs (or views) per batch.', lower_bound=1, **d)
  flags.DEFINE_bool('progress', True, 'Show progress bars.', **d)
  flags.DEFINE_bool('synthesis', False, 'Same as the `synthesis` command.', **d)
  flags.DEFINE_integer('grid_rows', 8, 'Pairs shown in the synthesis image grid.', lower_bound=1,
                       **d)
  # Models and data.
  flags.DEFINE_string('embedder', None, 'SavedModel folder of the image embedder.', **d)
  flags.DEFINE_string('synthesizer', None, 'SavedModel folder of the view synthesiser.', **d)
  flags.DEFINE_string('teacher', None, 'Hub module folder of the teacher (export: target maps).',
                      **d)
  flags.DEFINE_string('data_dir', None, 'TFDS data_dir of the built dataset (export).', **d)
  flags.DEFINE_string('split', 'test', 'Dataset split (export).', **d)
  flags.DEFINE_string('data_config', None,
                      'The data set (export): its name as the build printed it '
                      '(equivariant_shapes/<config>), or its settings as key=value,... or a JSON '
                      'object (datasets.builders.data_settings).', **d)
  flags.DEFINE_list('dataset_config', [], 'Deprecated spelling of --data_config (key=value,...).',
                    **d)
  flags.DEFINE_integer('max_examples', None, 'Export at most this many views.', lower_bound=1, **d)
  flags.DEFINE_bool('include_images', False, 'Export: also store the views (for synthesis).', **d)
  flags.DEFINE_string('output', None, 'Output file: embeddings .npz (export) or PNG (synthesize).',
                      **d)
  # The user tools.
  flags.DEFINE_string('image1', None, 'First image (relpose), or the image (synthesize).', **d)
  flags.DEFINE_string('image2', None, 'Second image (relpose).', **d)
  flags.DEFINE_integer('image_size', None, 'Image size, when the embedder does not fix it.', **d)
  flags.DEFINE_integer('top_k', 3, 'Candidate rotations reported by relpose.', lower_bound=1, **d)
  flags.DEFINE_string('json', None, 'relpose: also write the result as JSON here.', **d)
  flags.DEFINE_string('pair_list', None, 'relpose: a text file of image pairs, two paths a line '
                      '(relative to the file), all done in one call.', **d)
  flags.DEFINE_string('images_glob', None, 'relpose: the pose of every matching image relative '
                      'to the first (sorted), in one call.', **d)
  flags.DEFINE_string('euler_zyz_deg', None, 'synthesize: rotation as ZYZ Euler degrees a,b,c.',
                      **d)
  flags.DEFINE_string('quaternion', None, 'synthesize: rotation as quaternion w,x,y,z.', **d)
  flags.DEFINE_string('axis_angle_deg', None, 'synthesize: rotation as axis and degrees x,y,z,deg.',
                      **d)


_define_flags(EVAL_FLAGS)


def _data_settings(fv):
  """The data set settings of --data_config (or the deprecated --dataset_config)."""
  from absl import logging  # pylint: disable=g-import-not-at-top
  from datasets import builders  # pylint: disable=g-import-not-at-top  (imports TFDS)
  spec = fv.data_config
  if fv.dataset_config:
    if spec:
      raise app.UsageError('give --data_config or its deprecated spelling --dataset_config, '
                           'not both')
    logging.warning('--dataset_config is deprecated: use --data_config (the same key=value '
                    'text, or the data set name equivariant_shapes/<config>)')
    spec = ','.join(fv.dataset_config)
  try:
    return builders.data_settings(spec, fv.data_dir)
  except ValueError as e:
    raise app.UsageError(f'--data_config: {e}') from None


def _require(fv, *names):
  missing = [n for n in names if fv[n].value in (None, '')]
  if missing:
    raise app.UsageError('missing ' + ', '.join(f'--{n}' for n in missing))


def _check_choices(name, values, choices):
  cli.check_choices(f'--{name}', values, choices)


def _split_command(argv):
  """argv (after flag parsing) -> (command, positional file arguments)."""
  args = list(argv[1:])
  command = 'align'
  if args and args[0] in COMMANDS:
    command = args.pop(0)
  return command, args


def _images(fv, files, count):
  """The image paths of relpose (2) or synthesize (1), from positional args or --image1/--image2."""
  named = [p for p in (fv.image1, fv.image2)[:count] if p]
  paths = files if files else named
  if files and named:
    raise app.UsageError('give the images either as arguments or with --image1/--image2, not both')
  if len(paths) != count:
    raise app.UsageError(f'expected {count} image file(s), got {len(paths)}: {paths}')
  return paths


def execute(fv, argv):
  """Runs the command of the parsed flags `fv` and positional `argv`; returns the exit code."""
  from evaluation import commands, models_io  # pylint: disable=g-import-not-at-top  (TF import)
  command, files = _split_command(argv)
  if fv.synthesis and command == 'align':
    command = 'synthesis'
  if files and command not in ('relpose', 'synthesize'):
    raise app.UsageError(f'unexpected arguments {files} (commands: {", ".join(COMMANDS)})')
  if command in ('align', 'synthesis'):
    _require(fv, 'embeddings')
    _check_choices('pairs', fv.pairs, ('same', 'diff'))
    _check_choices('mode', fv.mode, ('fmap', 'target'))
  try:
    if command == 'align':
      _, table = commands.align_command(
          fv.embeddings, pair_kinds=fv.pairs, modes=fv.mode, upsample=fv.upsample,
          normalize=fv.normalize, symmetric=fv.symmetric, max_pairs=fv.max_pairs, seed=fv.seed,
          results_csv=fv.results_csv, name=fv.name, batch_size=fv.batch_size, progress=fv.progress,
          odd_degree_weight=fv.odd_degree_weight, peaks=fv.peaks,
          upsample_method=fv.upsample_method, normalize_method=fv.normalize_method,
          pair_enumeration=fv.pair_enumeration, diff_partner=fv.diff_partner)
      print(table)
    elif command == 'synthesis':
      _require(fv, 'synthesizer')
      synthesizer = models_io.load_synthesizer(fv.synthesizer, fv.batch_size)
      _, table = commands.synthesis_command(
          fv.embeddings, synthesizer, pair_kinds=fv.pairs, modes=fv.mode, max_pairs=fv.max_pairs,
          seed=fv.seed, results_csv=fv.results_csv, name=fv.name, grid_rows=fv.grid_rows,
          batch_size=fv.batch_size)
      print(table)
    elif command == 'export':
      _require(fv, 'embedder', 'data_dir', 'output')
      from evaluation import embeddings_export  # pylint: disable=g-import-not-at-top
      embedder = models_io.load_embedder(fv.embedder, fv.batch_size)
      teacher = models_io.load_teacher(fv.teacher, fv.batch_size) if fv.teacher else None
      examples = embeddings_export.load_split_examples(fv.split, fv.data_dir,
                                                       **_data_settings(fv))
      arrays, seconds = embeddings_export.export_embeddings(
          fv.output, examples, embedder, teacher=teacher, batch_size=fv.batch_size,
          max_examples=fv.max_examples, include_images=fv.include_images, progress=fv.progress)
      n = len(arrays['fmap'])
      print(f'wrote {fv.output}: {n} views, keys {sorted(arrays)}, '
            f'{n / max(seconds, 1e-9):.1f} views/s')
    elif command == 'relpose':
      _require(fv, 'embedder')
      many = [n for n in ('pair_list', 'images_glob') if fv[n].value]
      if many:
        from evaluation import relpose  # pylint: disable=g-import-not-at-top
        if len(many) > 1 or files or fv.image1 or fv.image2:
          raise app.UsageError('relpose: give two images, --pair_list or --images_glob, one of '
                               'them')
        pairs = (relpose.read_pair_list(fv.pair_list) if fv.pair_list
                 else relpose.glob_pairs(fv.images_glob))
        embedder = models_io.load_embedder(fv.embedder, fv.batch_size)
        _, text = commands.relpose_pairs_command(
            embedder, pairs, top_k=fv.top_k, upsample=fv.upsample, normalize=fv.normalize,
            json_path=fv.json, image_size=fv.image_size, odd_degree_weight=fv.odd_degree_weight,
            batch_size=fv.batch_size)
        print(text)
        return 0
      image1, image2 = _images(fv, files, 2)
      embedder = models_io.load_embedder(fv.embedder)
      _, text = commands.relpose_command(embedder, image1, image2, top_k=fv.top_k,
                                         upsample=fv.upsample, normalize=fv.normalize,
                                         json_path=fv.json, image_size=fv.image_size,
                                         odd_degree_weight=fv.odd_degree_weight)
      print(text)
    elif command == 'synthesize':
      _require(fv, 'embedder', 'synthesizer', 'output')
      from evaluation import rotation_formats  # pylint: disable=g-import-not-at-top
      (image,) = _images(fv, files, 1)
      rotation = rotation_formats.rotation_from_flags(fv.euler_zyz_deg, fv.quaternion,
                                                      fv.axis_angle_deg)
      embedder = models_io.load_embedder(fv.embedder)
      synthesizer = models_io.load_synthesizer(fv.synthesizer)
      commands.synthesize_command(embedder, synthesizer, image, rotation, fv.output,
                                  image_size=fv.image_size)
      print(f'wrote {fv.output}')
  except (ValueError, OSError) as e:  # bad input files or models: one clear line, no traceback
    print(f'evaluate.py {command}: error: {e}', file=sys.stderr)
    return 1
  return 0


def parse(argv, fv=EVAL_FLAGS):
  """Parses `argv` into `fv` (from scratch); returns the positional arguments (argv[0] first)."""
  fv.unparse_flags()
  return fv(argv)


def run(argv):
  """In-process entry point (tests): parse `argv` (argv[0] = program) and execute."""
  return execute(EVAL_FLAGS, parse(argv))


def _flags_parser(argv):
  """app.run's parser: absl's global flags (logging, help) first, then ours."""
  if any(a in ('-h', '--help', '-help', '--helpfull', '--helpshort') for a in argv[1:]):
    print(__doc__)
    print(EVAL_FLAGS.get_help())
    sys.exit(0)
  rest = flags.FLAGS(argv, known_only=True)
  try:
    return parse(rest)
  except flags.Error as e:
    print(f'evaluate.py: {e}\nTry --help.', file=sys.stderr)
    sys.exit(2)


def main(argv):
  # Before TensorFlow loads (execute imports it): no start-up notices unless --verbosity=1.
  from pipeline import console  # pylint: disable=g-import-not-at-top
  console.quiet(sys.argv)
  # tensorflow_graphics (rotation formats) inspects the call stack of its import, frame by frame:
  # from here, a few frames deep, that costs a third of what it does deep inside execute's imports.
  from geometry import conversions  # pylint: disable=g-import-not-at-top,unused-import
  return execute(EVAL_FLAGS, argv)


if __name__ == '__main__':
  app.run(cli.exit_on_error(main), flags_parser=_flags_parser)
