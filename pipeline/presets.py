"""Named settings of the whole pipeline (`main.py --preset=NAME`); flags override single values.

  tiny     seconds-scale, for tests: B=8 spheres, 16 px views, a handful of steps, tiny models.
  default  the bundled procedural shapes in about 60 minutes on a 2-core CPU (the README command).
  paper    the GPU settings of the paper's scale: 64 px views, B=32 spheres, spherical-cnn's
           model-64 teacher layout (two branches, 16..128 filters; embedding block4, our choice)
           trained 48 epochs with its learning-rate drops; larger students. Run in tests only for
           a few steps (tests/test_paper_smoke.py, slow).

Recipes (`main.py --recipe=NAME`, `RECIPES`), orthogonal to the presets: 'ours' (the default) is
the preset as it stands; 'original' replaces every setting that the original code fixes with its
value (`ORIGINAL`, per preset `ORIGINAL_PER_PRESET`): the gist machc/spherical_embeddings' student
layout and loss, the spherical-cnn repository's teacher defaults, no pose or degree loss, no
in-plane turns, the plain embedder, and the MATLAB experiment's semantics in the evaluation. Widths
scale with the preset: the gist's `initial_channels` (64) is the preset's `base_channels` and its
`max_channels` the preset's, except that `paper` takes the gist's 256 where ours has 512.
docs/deviations.md lists every setting against the original files.

Every preset is a flat dict with the keys of `KEYS`. Learning-rate drops are given as fractions
of the run (`*_lr_drops`), so changing the number of steps keeps the schedule's shape; the
teacher's default (1e-3, then 2e-4 at 2/3 and 4e-5 at 5/6 of the steps) is spherical-cnn's
params/training.txt: 32/48 and 40/48 epochs.
"""

ORIGINAL_LR = (1e-3, 2e-4, 4e-5)
ORIGINAL_DROPS = (32 / 48, 40 / 48)
STUDENT_LR = (3e-4, 6e-5, 1.2e-5)  # spherical-cnn's drops by 5, from a lower start (see 'default')

_COMMON = dict(
    views_per_instance=8,
    teacher_filters=(16, 16, 32, 32, 64, 64, 128, 128),
    teacher_pool_blocks=(3, 5, 7),
    teacher_embedding_block='block4',
    teacher_lr=ORIGINAL_LR, teacher_lr_drops=ORIGINAL_DROPS,
    student_lr=ORIGINAL_LR, student_lr_drops=ORIGINAL_DROPS,
    synthesis_lr=ORIGINAL_LR, synthesis_lr_drops=ORIGINAL_DROPS,
    layers_per_block=2,
    upsample=(1, 2),
    degree_loss_weight=0.0, degree_loss_degrees=(1, 2, 3, 4),  # models.student_task
    pose_loss_weight=0.0, pose_loss_bandwidth=8, pose_loss_temperature=0.02,
    # The exported embedder averages the student over 8 turns about the camera axis and the
    # mirror (models.embedder_export): 16 passes per image, exact symmetries of the camera.
    embedder_turns=8, embedder_mirror=True,
    eval_max_pairs=2000,  # pairs per kind (same, diff), sampled
    # Procedural test instances per category (the last ones); None: a fifth of the instances.
    test_per_category=None,
    # Relative pose from the student's maps correlates them with their odd degrees doubled
    # (evaluate.py --odd_degree_weight): chosen among 1-6 on held-out shapes (see README).
    odd_degree_weight=2.0,
    # Recipe switches (the values of 'ours'; RECIPES / ORIGINAL below).
    student_architecture='ours',    # models.students: 'ours' | 'gist'
    area_weighting='loss',          # models.losses: 'loss' | 'values' (the gist's)
    inplane_rotations=True,         # models.student_task: random turns about the camera axis
    teacher_pooling='spectral',     # models.teacher: 'spectral' | 'wap' (spherical-cnn's)
    teacher_batch_norm_area_weighted=True,
    teacher_batch_norm_momentum=0.9,
    # Relative pose (evaluate.py): refined top-4 peaks, every pair of views of an instance,
    # different instances of one class, spectral upsampling.
    peaks='refined', pair_enumeration='all', diff_partner='same_class',
    upsample_method='spectral',
)

PRESETS = {
    'tiny': dict(
        _COMMON,
        instances_per_category=10, views_per_instance=2, bandwidth=8, image_size=16,
        teacher_filters=(4, 4, 8, 8), teacher_pool_blocks=(3,), teacher_embedding_block='block2',
        teacher_steps=4, teacher_batch_size=8,
        student_steps=4, synthesis_steps=4, student_batch_size=8,
        base_channels=8, max_channels=16, n_latent=16, layers_per_block=1,
        degree_loss_weight=1.0, pose_loss_weight=1.0,
        embedder_turns=2,
        checkpoint_every=2, summary_every=2,
        eval_max_pairs=50,
    ),
    'default': dict(
        # Sized on the shared 2-core CPU with short runs of this preset (100 steps each, batch 16):
        # teacher 0.19 s/step (0.07 since its steps are XLA-compiled), synthesis 0.14-0.19 s/step,
        # student below; relative pose 35-75 pairs/s; each program start and export ~30 s.
        _COMMON,
        # 64 training shapes per category, 4 test: the data cost seconds, and the student is
        # limited by the shapes it has seen. With 16 (and the same steps) it put 89.5% of its
        # training views at pose and 78.0% of the test views (flipped 8.5% against 17.3%).
        instances_per_category=68, test_per_category=4,
        views_per_instance=16, bandwidth=16, image_size=32,
        # Six blocks, pooling at 4 and 6: blocks 1-3 keep B=16, and block3 (32 channels at B=16,
        # a 32^3 correlation grid) is the target map, the finest resolution at some depth.
        teacher_filters=(16, 16, 32, 32, 64, 64), teacher_pool_blocks=(4, 6),
        teacher_embedding_block='block3',
        teacher_steps=2000, teacher_batch_size=16,  # 10240 training spheres: 3.1 epochs
        # The student is what the fmap-mode goal rests on: it gets most of the time, as many steps
        # as fit. Measured with this preset's data and teacher (pose of held-out views, same
        # instance): Adam at 3e-4 lowered the loss far faster than spherical-cnn's 1e-3 (0.68 vs
        # 0.88 of a mean predictor's loss after 11.7k steps, GPU replica); the narrow student (16..128
        # channels, 256 latents) learns about as fast per step at 0.07 s/step instead of 0.2 here,
        # and in-plane turns (datasets.inplane) keep the test loss near the training loss.
        # The degree loss weighs degrees 1-4 alike next to the map loss: at 4000 steps it lifted
        # the correlation of the predicted degrees 1 and 2 with the teacher's from 0.01 and 0.06 to
        # 0.44 and 0.57, and lowered the map loss too (0.75 vs 0.78 of a mean predictor's).
        # The pose loss (models.student_task) at weight 1, on degrees below 8 at temperature 0.02:
        # in 5000 steps (drops at 5/6 and 11/12) it took the fmap same-instance flip-tolerant
        # median to 19.3 degrees and Acc@30 to 20.7%, where the map and degree losses alone were
        # still at chance after 4000 (43.6; 45 is chance) and reached 15.2 and 32.9% in 16000
        # (with it: 12.2 and 35.1%, plain median 89.8 against 95.1);
        # at weight 4 the maps lagged (relative error 0.39 against 0.36; flip-tolerant 21.5).
        # Its cost: the student trains at 0.79 of the map loss's rate with it, 0.96 with the
        # degree loss alone (benchmarks/bench_students.py --preset=default, same process).
        degree_loss_weight=1.0, pose_loss_weight=1.0,
        # Synthesis: its test loss fell 4% from 2100 to 3000 steps (0.00399 -> 0.00385), for 3
        # minutes that the 60 did not have.
        student_steps=16000, synthesis_steps=2000, student_batch_size=16,
        # The student's loss still fell fast at 2/3 of 16000 steps: its drops come at 5/6 and
        # 11/12 (test loss 0.01123 vs 0.01152, fmap Acc@30 22.8% vs 20.1%, same seed). 22000 steps
        # against 16000: relative error 0.282 vs 0.288, fmap Acc@30 30.2% vs 28.2%, flip-tolerant
        # median 14.1 vs 14.6 degrees (upsample 2, same seed), but machines of this kind differ:
        # the student ran 12.8 steps/s on one (whole run 40 minutes at 22000 steps) and 6.7 on
        # another (the student alone 55 minutes), where the teacher and synthesis ran alike.
        # 16000 steps fit in 60 minutes on both; a slower one (student 6.2 steps/s, synthesis 8m20s)
        # took 61 min 11 s in all (commit 0b26920, 3000 synthesis steps); with 2000, 49 min 15 s on
        # a machine where the student ran 7.0 steps/s (commit bf79b98), and with 64 training
        # shapes 55 min 17 s on one where it ran 6.0 (README, commit 4d3339d) and 61 min 19 s on one
        # where it ran 5.5 (commit 5454504): no slack left on the slower machines.
        student_lr=STUDENT_LR, synthesis_lr=STUDENT_LR, student_lr_drops=(5 / 6, 11 / 12),
        base_channels=16, max_channels=128, n_latent=256, layers_per_block=2,
        checkpoint_every=200, summary_every=50,
        eval_max_pairs=1000,  # per pair kind and call: 8 x 1000 pairs, about 3 minutes
    ),
    'paper': dict(
        _COMMON,
        instances_per_category=100, views_per_instance=32, bandwidth=32, image_size=64,
        # 2000 shapes x 32 views * 0.8 = 51200 training spheres, batch 32: 1600 steps per epoch.
        teacher_steps=48 * 1600, teacher_batch_size=32,
        student_steps=100000, synthesis_steps=100000, student_batch_size=32,
        base_channels=64, max_channels=512, n_latent=1024, layers_per_block=2,
        checkpoint_every=1000, summary_every=100,
    ),
}

KEYS = tuple(sorted(PRESETS['default']))

RECIPES = ('ours', 'original')
# What the original code fixes (docs/deviations.md). Learning rates: the gist's train.py takes them
# as flags without giving values; spherical-cnn's schedule (1e-3, 2e-4, 4e-5 at 32/48 and 40/48)
# is the one the sources give, used for every model.
ORIGINAL = dict(
    student_architecture='gist', area_weighting='values', inplane_rotations=False,
    degree_loss_weight=0.0, pose_loss_weight=0.0,
    embedder_turns=1, embedder_mirror=False,
    student_lr=ORIGINAL_LR, student_lr_drops=ORIGINAL_DROPS,
    synthesis_lr=ORIGINAL_LR, synthesis_lr_drops=ORIGINAL_DROPS,
    teacher_lr=ORIGINAL_LR, teacher_lr_drops=ORIGINAL_DROPS,
    teacher_pooling='wap', teacher_batch_norm_area_weighted=False,
    teacher_batch_norm_momentum=0.99,
    # run_alignment_experiment.m / align.m / spherical_correlation.m.
    # run_alignment_experiment.m's default normalize=false: maps correlated as they are.
    odd_degree_weight=1.0, peaks='argmax', pair_enumeration='first_view', diff_partner='random',
    upsample_method='bicubic',
)
ORIGINAL_PER_PRESET = {
    # The gist's max_channels default (256); spherical-cnn's training.txt: batch 16, 48 epochs of
    # the paper preset's 51200 training spheres.
    'paper': dict(max_channels=256, teacher_batch_size=16, teacher_steps=48 * 3200),
}


def resolve(name, overrides=None, recipe='ours'):
  """The settings of preset `name` under `recipe`, with `overrides` (a dict; None values are
  ignored) applied last. The result has the keys of `KEYS` plus `recipe`.

  Raises:
    ValueError naming the preset, the recipe or the unknown key.
  """
  if name not in PRESETS:
    raise ValueError(f'--preset must be one of {sorted(PRESETS)}, got {name!r}')
  if recipe not in RECIPES:
    raise ValueError(f'--recipe must be one of {list(RECIPES)}, got {recipe!r}')
  settings = dict(PRESETS[name])
  if recipe == 'original':
    settings.update(ORIGINAL)
    settings.update(ORIGINAL_PER_PRESET.get(name, {}))
  for key, value in (overrides or {}).items():
    if key not in settings:
      raise ValueError(f'unknown setting {key!r}; the settings are {list(KEYS)}')
    if value is not None:
      settings[key] = value
  settings['recipe'] = recipe
  return settings


def lr_schedule(values, drops, steps):
  """(`--lr_boundaries`, `--lr_values`) for `steps` steps: `values[i+1]` from `drops[i] * steps`.

  Drops that round to the same step, to step 0 or to the end are left out (a tiny run keeps the
  first learning rate).
  """
  boundaries, kept = [], [values[0]]
  for fraction, value in zip(drops, values[1:]):
    step = int(round(fraction * steps))
    if 0 < step < steps and (not boundaries or step > boundaries[-1]):
      boundaries.append(step)
      kept.append(value)
  return boundaries, kept


# The recipe switches as program flags: (setting, program flag, models it applies to). A flag is
# passed only where the setting differs from recipe 'ours', so the command lines of 'ours' (and the
# stage records that hold them) stay as they were.
_TRAIN_SWITCHES = (
    ('teacher_pooling', 'teacher_pooling', ('teacher',)),
    ('teacher_batch_norm_area_weighted', 'teacher_batch_norm_area_weighted', ('teacher',)),
    ('teacher_batch_norm_momentum', 'teacher_batch_norm_momentum', ('teacher',)),
    ('student_architecture', 'architecture', ('student', 'synthesis')),
    ('area_weighting', 'area_weighting', ('student',)),
    ('inplane_rotations', 'inplane_rotations', ('student', 'synthesis')),
)
_ALIGN_SWITCHES = (('peaks', 'peaks'), ('pair_enumeration', 'pair_enumeration'),
                   ('diff_partner', 'diff_partner'), ('upsample_method', 'upsample_method'))


def _flag_value(value):
  return str(value).lower() if isinstance(value, bool) else str(value)


def recipe_train_flags(settings, model):
  """train.py flags of the recipe switches of `settings` for `model` (teacher, student or
  synthesis) that differ from recipe 'ours': a list of '--flag=value'."""
  ours = _COMMON
  return [f'--{flag}={_flag_value(settings[key])}' for key, flag, models in _TRAIN_SWITCHES
          if model in models and settings.get(key, ours[key]) != ours[key]]


def recipe_align_flags(settings):
  """evaluate.py (align) flags of the recipe switches of `settings` that differ from 'ours'."""
  ours = _COMMON
  return [f'--{flag}={_flag_value(settings[key])}' for key, flag in _ALIGN_SWITCHES
          if settings.get(key, ours[key]) != ours[key]]
