"""The main job: builds the data set, writes contact sheets, trains and evaluates every model,
skips finished stages on a rerun and resumes a killed stage."""
import json
import os
import subprocess
import sys

from absl import app
from absl.testing import flagsaver
import numpy as np
from PIL import Image
import pytest

import main
from datasets import contact_sheet
from datasets import procedural
from evaluation import alignment
from evaluation import degrees
from evaluation import identifiability
from pipeline import presets
from pipeline import runner
from pipeline import stages
from tests.conftest import REPO_ROOT

TINY = dict(source='procedural', views_per_instance=1, bandwidth=8, image_size=16,
            instances_per_category=2)


def _job(tmp_path, force=False):
  return main.Job(output_dir=str(tmp_path / 'out'), data_dir=str(tmp_path / 'data'),
                  dataset=dict(TINY), sheet_instances=2, force=force)


def test_stages_build_write_sheets_and_skip_when_complete(tmp_path):
  job = _job(tmp_path)
  main.run_stages(job, ['dataset', 'contact_sheets'])
  sheets = [contact_sheet.sheet_path(job.output_dir, c) for c in procedural.CATEGORIES]
  assert all(os.path.isfile(p) for p in sheets)
  image = np.asarray(Image.open(sheets[0]))
  assert image.ndim == 3 and image.shape[2] == 3 and image.std() > 0
  table = main.summary_table(job)
  assert 'Failed meshes: 0' in table and 'airplane' in table

  # A rerun finds every output complete and redoes nothing.
  stamps = [os.path.getmtime(p) for p in sheets]
  rerun = _job(tmp_path)
  assert all(stage.is_complete(rerun) for stage in main.STAGES[:2])
  main.run_stages(rerun, ['dataset', 'contact_sheets'])
  assert [os.path.getmtime(p) for p in sheets] == stamps

  # A missing sheet makes its stage incomplete again.
  os.remove(sheets[3])
  assert not main.STAGES[1].is_complete(_job(tmp_path))

  # --force rebuilds the data set and rewrites every sheet.
  info = os.path.join(job.builder().data_dir, 'dataset_info.json')
  built = os.path.getmtime(info)
  main.run_stages(_job(tmp_path, force=True), ['dataset', 'contact_sheets'])
  assert os.path.getmtime(info) > built
  assert all(os.path.getmtime(p) >= os.path.getmtime(info) for p in sheets)


def test_bad_settings_are_usage_errors(tmp_path):
  with flagsaver.flagsaver():
    main.FLAGS(['main.py', f'--mesh_dir={tmp_path / "nowhere"}'])
    with pytest.raises(app.UsageError, match='nowhere'):
      main.job_from_flags()
  with flagsaver.flagsaver():
    main.FLAGS(['main.py', '--bandwidth=0'])
    with pytest.raises(app.UsageError, match='bandwidth'):
      main.job_from_flags()
  with pytest.raises(ValueError, match='bogus'):
    main.run_stages(_job(tmp_path), ['dataset', 'bogus'])
  with flagsaver.flagsaver():  # the default's 4 test shapes need more than 4 shapes
    main.FLAGS(['main.py', '--instances_per_category=4'])
    with pytest.raises(app.UsageError, match='test_per_category=4'):
      main.job_from_flags()

  with flagsaver.flagsaver():
    main.FLAGS(['main.py', '--preset=tiny', '--teacher_steps=7', '--image_size=32'])
    job = main.job_from_flags()
  assert job.settings['teacher_steps'] == 7 and job.dataset['image_size'] == 32
  assert job.settings['student_steps'] == presets.PRESETS['tiny']['student_steps']
  with flagsaver.flagsaver():
    main.FLAGS(['main.py', '--student_degree_loss_weight=0'])
    job = main.job_from_flags()
  assert job.settings['degree_loss_weight'] == 0.0
  assert '--degree_loss_weight=0.0' in stages.train_args(job, 'student')
  assert not any('degree' in a for a in stages.train_args(job, 'synthesis'))
  assert '--embedder_turns=8' in stages.train_args(job, 'student')
  assert '--embedder_mirror=true' in stages.train_args(job, 'student')
  assert '--pose_loss_weight=1.0' in stages.train_args(job, 'student')
  with flagsaver.flagsaver():
    main.FLAGS(['main.py', '--student_pose_loss_weight=0'])
    job = main.job_from_flags()
  assert '--pose_loss_weight=0.0' in stages.train_args(job, 'student')
  assert not any('pose_loss' in a for a in stages.train_args(job, 'synthesis'))
  with flagsaver.flagsaver():
    main.FLAGS(['main.py', '--student_embedder_turns=1', '--nostudent_embedder_mirror'])
    job = main.job_from_flags()
  assert '--embedder_turns=1' in stages.train_args(job, 'student')
  assert '--embedder_mirror=false' in stages.train_args(job, 'student')
  assert not any('embedder_' in a for a in stages.train_args(job, 'synthesis'))


def test_test_instances_come_from_the_preset_or_the_flag(tmp_path):
  with flagsaver.flagsaver():
    main.FLAGS(['main.py'])
    job = main.job_from_flags()
  assert job.dataset['instances_per_category'] == 68 and job.dataset['test_per_category'] == 4
  with flagsaver.flagsaver():
    main.FLAGS(['main.py', '--instances_per_category=3', '--test_per_category=1'])
    job = main.job_from_flags()
  assert job.dataset['instances_per_category'] == 3 and job.dataset['test_per_category'] == 1
  with flagsaver.flagsaver():  # tiny: a fifth of its shapes (the builder's test_fraction)
    main.FLAGS(['main.py', '--preset=tiny'])
    job = main.job_from_flags()
  assert 'test_per_category' not in job.dataset
  _write_tetrahedra(tmp_path / 'meshes' / 'cup', 3)
  with flagsaver.flagsaver():  # a mesh folder keeps its own split
    main.FLAGS(['main.py', f'--mesh_dir={tmp_path / "meshes"}'])
    job = main.job_from_flags()
  assert 'test_per_category' not in job.dataset


TETRAHEDRON_OFF = 'OFF\n4 4 0\n0 0 0\n1 0 0\n0 1 0\n0 0 1\n3 0 2 1\n3 0 1 3\n3 0 3 2\n3 1 2 3\n'


def _write_tetrahedra(folder, count, start=0):
  """`count` small OFF meshes (stretched tetrahedra) in `folder`."""
  os.makedirs(folder, exist_ok=True)
  for i in range(start, start + count):
    text = TETRAHEDRON_OFF.replace('0 0 1\n', f'0 0 {1 + 0.25 * i}\n', 1)
    with open(os.path.join(folder, f'shape{i}.off'), 'w') as f:
      f.write(text)


def test_command_line_end_to_end(tmp_path):
  output_dir = tmp_path / 'out'
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  result = subprocess.run(
      [sys.executable, 'main.py', f'--output_dir={output_dir}', '--instances_per_category=2',
       '--test_per_category=1', '--views_per_instance=1', '--bandwidth=8', '--image_size=16',
       '--sheet_instances=1', '--stages=dataset,contact_sheets'],
      cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'Failed meshes: 0' in result.stdout
  assert os.path.isfile(output_dir / 'contact_sheet_mug.png')
  assert os.path.isdir(output_dir / 'tensorflow_datasets' / 'equivariant_shapes')


def test_contact_sheet_tiles_show_the_arrays_unscaled(tmp_path):
  ramp = np.tile(np.linspace(0.0, 1.0, 16, dtype=np.float32), (16, 1))  # 0 at the left, 1 right
  example = {'image': np.full((8, 8, 1), 0.5, np.float32), 'instance': b'mug/0001', 'view': 3,
             'label': 0, 'sphere': np.stack([ramp, np.full_like(ramp, 0.25)], axis=-1)}
  paths = contact_sheet.write_contact_sheets([example], ['mug'], ['depth', 'cos'],
                                             str(tmp_path), per_label=2)
  assert list(paths) == ['mug'] and os.listdir(tmp_path) == ['contact_sheet_mug.png']
  sheet = np.asarray(Image.open(paths['mug']).convert('L')).astype(float)
  # Row 0, tiles: view (96 px wide), depth (192), cos (192), each after a 4 px gap; the tiles
  # start below the title, the column names and the instance caption.
  top = 3 * contact_sheet._CAPTION + 10
  view, depth, cos = sheet[top, 4:100], sheet[top, 104:296], sheet[top, 300:492]
  np.testing.assert_allclose(view, 128, atol=1)
  np.testing.assert_allclose(cos, 64, atol=1)
  assert depth[0] < 10 and depth[-1] > 245 and np.all(np.diff(depth) >= 0)


def test_presets_resolve_and_lr_schedule():
  for name, settings in presets.PRESETS.items():
    assert set(settings) == set(presets.KEYS), name
  assert presets.resolve('tiny', {'teacher_steps': 9, 'bandwidth': None})['teacher_steps'] == 9
  with pytest.raises(ValueError, match='nope'):
    presets.resolve('nope')
  with pytest.raises(ValueError, match='teacher_stepz'):
    presets.resolve('tiny', {'teacher_stepz': 1})
  # 48 "epochs" of 10 steps: the original drops at epochs 32 and 40.
  assert presets.lr_schedule(presets.ORIGINAL_LR, presets.ORIGINAL_DROPS, 480) == (
      [320, 400], [1e-3, 2e-4, 4e-5])
  # Too few steps for distinct drops: the ones that collide or fall at the ends are left out.
  assert presets.lr_schedule(presets.ORIGINAL_LR, presets.ORIGINAL_DROPS, 1) == ([], [1e-3])
  assert presets.lr_schedule(presets.ORIGINAL_LR, presets.ORIGINAL_DROPS, 4) == ([3], [1e-3, 2e-4])


def test_training_progress_lines_have_rate_and_eta():
  times = iter([100.0, 110.0, 130.0])
  progress = runner.TrainingProgress('teacher', 1000, clock=lambda: next(times))
  assert progress.line('start_step=0') == '[teacher] training from step 0 to 1000'
  assert progress.line('I1127 training.py:389] some other line') is None
  first = progress.line("I1127 training.py:389] step 100 train {'loss': 2.0} (10.0 images/s)")
  assert first == '[teacher] step 100/1000 (10%)'  # no rate yet: the first window has tracing
  second = progress.line("step 200 train {'loss': 1.5} (10.0 images/s)")
  assert second == '[teacher] step 200/1000 (20%)  10.00 steps/s  ETA 1m20s'
  third = progress.line("step 400 train {'loss': 1.0} (10.0 images/s)")
  assert third == '[teacher] step 400/1000 (40%)  10.00 steps/s  ETA 1m00s'
  assert 'eval' in progress.line("step 1000 eval {'accuracy': 0.5}")
  assert runner.format_seconds(3725) == '1h02m'


def test_stage_records_skip_done_work_and_clear_other_settings(tmp_path):
  job = _job(tmp_path)
  folder, output = str(tmp_path / 'out' / 'model'), str(tmp_path / 'out' / 'model' / 'file')
  calls = []

  def work():
    calls.append(1)
    os.makedirs(folder, exist_ok=True)
    with open(output, 'w') as f:
      f.write('x')

  settings = {'args': ['a', 1], 'upstream': {'teacher': 3.0}}
  assert not runner.is_done(job.output_dir, 'model', settings)
  os.makedirs(folder)
  stages._run_recorded(job, 'model', settings, [output], work, folder)
  assert runner.is_done(job.output_dir, 'model', settings)
  other = dict(settings, args=['a', 2])
  assert not runner.is_done(job.output_dir, 'model', other)
  assert runner.has_other_settings(job.output_dir, 'model', other)
  # A killed run (record 'running', same settings) keeps its folder: training resumes there.
  runner.write_record(job.output_dir, 'model', settings, [output], 'running')
  assert not runner.is_done(job.output_dir, 'model', settings)
  with open(os.path.join(folder, 'checkpoint'), 'w') as f:
    f.write('kept')
  stages._run_recorded(job, 'model', settings, [output], work, folder)
  assert os.path.exists(os.path.join(folder, 'checkpoint'))
  # Other settings clear the folder first; a missing output is an error.
  stages._run_recorded(job, 'model', other, [output], work, folder)
  assert not os.path.exists(os.path.join(folder, 'checkpoint')) and len(calls) == 3
  with pytest.raises(RuntimeError, match='without writing'):
    stages._run_recorded(job, 'model', settings, [output + '2'], work, folder)
  os.remove(output)
  assert not runner.is_done(job.output_dir, 'model', other)


def test_pair_kinds_need_two_instances_of_a_class(tmp_path):
  path = str(tmp_path / 'e.npz')
  np.savez(path, instance=np.array([b'a/1', b'a/1', b'b/1', b'b/1']), label=np.array([0, 0, 1, 1]))
  assert stages.pair_kinds(path) == ['same']
  np.savez(path, instance=np.array([b'a/1', b'a/1', b'a/2', b'a/2']), label=np.array([0, 0, 0, 0]))
  assert stages.pair_kinds(path) == ['same', 'diff']


def _run_main(output_dir, *extra):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  result = subprocess.run(
      [sys.executable, 'main.py', '--preset=tiny', f'--output_dir={output_dir}', *extra],
      cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900, check=False)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  return result.stdout


@pytest.mark.slow
def test_whole_pipeline_tiny_then_skip_then_resume(tmp_path):
  out = tmp_path / 'out'
  stdout = _run_main(out)
  for model in ('teacher', 'student', 'synthesis'):
    assert os.path.isfile(out / model / 'export' / 'saved_model.pb'), model
  assert '[teacher] step 4/4 (100%)' in stdout
  eval_dir = out / 'eval'
  for name in ('test_embeddings.npz', 'results.csv', 'synthesis_results.csv',
               'test_embeddings.cdf.png', 'test_embeddings+up2.cdf.png',
               'test_embeddings.fmap.same.grid.png', 'test_embeddings.target.diff.grid.png'):
    assert os.path.isfile(eval_dir / name), name
  assert os.path.isfile(out / 'training_curves.png')
  with open(out / 'results.md') as f:
    table = f.read()
  assert table in stdout  # printed
  for mode in ('target', 'fmap'):
    for kind in ('same', 'diff'):
      for upsample in (1, 2):
        assert f'| {mode} | {kind} | {upsample} |' in table
  assert '| teacher | 4 | accuracy |' in table and 'psnr_db' in table
  assert ('Student trained on: map loss, degree loss x 1 (degrees 1,2,3,4), pose loss x 1 '
          '(degrees < 8, temperature 0.02)') in table
  assert "fmap pairs: the student's maps correlated with their odd degrees x 2 " in table
  # Same-instance pairs per category, the student's row from its per-pair errors.
  with np.load(eval_dir / 'test_embeddings.fmap.same.pairs.npz') as pairs:
    by_category = alignment.summarize_by_group(pairs['raw_error_deg'],
                                               alignment.category_of(pairs['instance_1']))
  with np.load(eval_dir / 'test_embeddings.npz') as data:
    ratios, angles = identifiability.second_peak_ratios(data['target'])
    views = identifiability.summarize_by_group(
        ratios, angles, identifiability.view_errors_deg(data['fmap'], data['target']),
        alignment.category_of(data['instance']),
        far_ratios=identifiability.far_pose_ratios(data['target'])[0])
  for category, stats in by_category.items():
    row = next(line for line in table.splitlines() if line.startswith(f'| {category} | '))
    assert row.startswith(f'| {category} | {stats["n"]} | ')
    view = views[category]  # the per-view cells: the teacher's margin and the student's match
    assert row.endswith(f'| {view["second_peak_ratio"]:.3f} | {view["far_pose_ratio"]:.3f} | '
                        f'{view["views_at_pose"]:.1f} | {view["views_flipped"]:.1f} |'), row
  # The per-degree correlation of the student's test embeddings with the teacher's.
  with np.load(eval_dir / 'test_embeddings.npz') as data:
    rho = degrees.degree_correlation(data['fmap'], data['target'])
  assert '| correlation | ' + ' | '.join(f'{r:.3f}' for r in rho) + ' |' in table
  # The flip-tolerant median comes from the same pairs as the row's plain errors.
  with np.load(eval_dir / 'test_embeddings.fmap.same.pairs.npz') as pairs:
    raw = pairs['raw_error_deg']
  row = next(line for line in table.splitlines() if line.startswith('| fmap | same | 1 |'))
  assert float(row.strip(' |').split('|')[-1]) == pytest.approx(
      np.median(np.minimum(raw, 180 - raw)), abs=1e-3)

  # A rerun skips every stage.
  stdout = _run_main(out)
  assert stdout.count('skipped') == len(main.STAGES) and 'running' not in stdout

  # A student run killed before its export: the rerun resumes from its checkpoint (step 4 of 4,
  # nothing left to train), and the stages after it run again since their input changed.
  with open(runner.record_path(str(out), 'student')) as f:
    record = json.load(f)
  runner.write_record(str(out), 'student', record['settings'], record['outputs'], 'running')
  os.remove(out / 'student' / 'export' / 'saved_model.pb')
  stdout = _run_main(out)
  assert '[student] training from step 4 to 4' in stdout
  assert 'Stage teacher: outputs complete, skipped' in stdout
  for stage in ('student', 'embeddings', 'relative_pose', 'view_synthesis', 'results'):
    assert f'Stage {stage}: done' in stdout, stage
  assert 'Stage synthesis: outputs complete, skipped' in stdout


def test_chance_levels_of_the_results_match_random_rotations():
  from geometry import random_rotations  # pylint: disable=g-import-not-at-top
  rotations = random_rotations(40000, seed=3)
  errors = np.degrees(np.arccos(np.clip((np.trace(rotations, axis1=1, axis2=2) - 1) / 2, -1, 1)))
  assert np.median(errors) == pytest.approx(stages.CHANCE_MEDIAN_DEG, abs=1.0)
  assert np.median(np.minimum(errors, 180 - errors)) == pytest.approx(
      stages.CHANCE_FLIP_TOLERANT_MEDIAN_DEG, abs=1.0)


def _folder_job(tmp_path, force=False):
  return main.Job(output_dir=str(tmp_path / 'out'), data_dir=str(tmp_path / 'data'),
                  dataset=dict(source='folder', mesh_dir=str(tmp_path / 'meshes'),
                               views_per_instance=1, bandwidth=8, image_size=16),
                  sheet_instances=1, force=force)


def _summary_counts(table):
  """{category: total examples over the splits} from summary_table's rows."""
  counts = {}
  for line in table.splitlines()[2:]:
    cells = line.split()
    if len(cells) >= 2 and all(c.isdigit() for c in cells[1:]) and not line.startswith(' '):
      counts[cells[0]] = sum(int(c) for c in cells[1:])
  return counts


def test_a_changed_mesh_folder_is_a_new_data_set(tmp_path, capsys):
  """Adding meshes or a category to --mesh_dir used to give 'outputs complete, skipped' and a
  summary listing the new category with 0 examples: the name hashed the folder's path only."""
  meshes = tmp_path / 'meshes'
  _write_tetrahedra(meshes / 'cup', 3)
  _write_tetrahedra(meshes / 'box', 3)
  job = _folder_job(tmp_path)
  main.run_stages(job, ['dataset'])
  first = job.builder().builder_config.name
  assert {k: v for k, v in _summary_counts(main.summary_table(job)).items()
          if k in ('cup', 'box', 'total')} == {'cup': 3, 'box': 3, 'total': 6}

  _write_tetrahedra(meshes / 'cup', 1, start=3)  # one more cup, and a new category
  _write_tetrahedra(meshes / 'vase', 2)
  changed = _folder_job(tmp_path)
  assert changed.builder().builder_config.name != first
  assert not main.STAGES[0].is_complete(changed)
  capsys.readouterr()
  main.run_stages(changed, ['dataset'])
  assert 'Stage dataset: running' in capsys.readouterr().out
  counts = _summary_counts(main.summary_table(changed))
  assert (counts['cup'], counts['box'], counts['vase'], counts['total']) == (4, 3, 2, 9)

  # Touching a file (same names and sizes, new contents) changes the name too.
  os.utime(meshes / 'box' / 'shape0.off', ns=(1, 1))
  assert _folder_job(tmp_path).builder().builder_config.name != changed.builder().builder_config.name


def test_killed_builds_are_cleaned_and_skipped_entries_and_empty_classes_shown(tmp_path, capsys):
  meshes = tmp_path / 'meshes'
  _write_tetrahedra(meshes / 'cup', 3)
  (meshes / 'cup' / 'notes.txt').write_text('not a mesh')
  (meshes / 'cup' / 'parts').mkdir()
  os.symlink(tmp_path / 'nowhere.off', meshes / 'cup' / 'gone.off')
  os.symlink('loop.off', meshes / 'cup' / 'loop.off')  # a link to itself
  (meshes / 'broken').mkdir()
  (meshes / 'broken' / 'bad.off').write_text('OFF\n3 1 0\n0 0 0\n')  # truncated
  (meshes / 'empty').mkdir()
  (meshes / 'empty' / 'readme.md').write_text('no meshes here')
  (meshes / 'README').write_text('a file beside the categories')
  job = _folder_job(tmp_path)
  # A killed build leaves TFDS' temporary folder behind.
  leftover = os.path.join(os.path.dirname(job.builder().data_dir), 'incomplete.ABC123_1.4.0')
  os.makedirs(leftover)
  open(os.path.join(leftover, 'part.tfrecord'), 'w').close()
  capsys.readouterr()
  main.run_stages(job, ['dataset'])
  assert not os.path.exists(leftover)
  assert f'Removing {leftover}, left by a build that did not finish' in capsys.readouterr().out
  table = main.summary_table(job)
  assert "Warning: category 'broken' has no usable mesh (1 failed): an empty class" in table
  for entry in ('README: not a category folder', 'cup/gone.off: dangling link',
                'cup/loop.off: symlink loop', 'cup/notes.txt: unsupported format .txt',
                'cup/parts: a folder', 'empty/: no mesh files'):
    assert f'  {entry}' in table, entry
  assert 'Skipped entries of the mesh folder: 6' in table


def test_flags_and_inputs_are_checked_before_anything_is_written(tmp_path):
  a_file = tmp_path / 'a_file'
  a_file.write_text('x')
  (tmp_path / 'no_meshes').mkdir()
  out = tmp_path / 'out'
  for flag, message in (
      ('--teacher_steps=-5', '--teacher_steps must be a positive integer, got -5'),
      ('--teacher_batch_size=0', '--teacher_batch_size must be a positive integer, got 0'),
      ('--student_batch_size=-1', '--student_batch_size must be a positive integer'),
      ('--image_size=7', '--image_size must be a power of two >= 4, got 7'),
      ('--bandwidth=12', '--bandwidth must be a power of two >= 2, got 12'),
      ('--stages=dataset,bogus', "--stages: unknown stages ['bogus']"),
      (f'--output_dir={a_file}', 'is a file, not a folder'),
      (f'--mesh_dir={tmp_path / "no_meshes"}', 'has no <category>/ sub-folders with mesh files'),
      ('--views_per_instance=0', '--views_per_instance must be a positive integer')):
    with flagsaver.flagsaver():
      main.FLAGS(['main.py', '--preset=tiny', f'--output_dir={out}', flag])
      with pytest.raises(ValueError if 'stages' in flag else (app.UsageError, ValueError),
                         match=message.replace('[', r'\[').replace(']', r'\]')):
        main.main(['main.py'])
    assert not out.exists(), flag


def test_force_says_what_it_removes(tmp_path, capsys):
  job = _job(tmp_path, force=True)
  folder = stages.path(job, 'teacher')
  os.makedirs(os.path.join(folder, 'export'))
  for name in ('ckpt-2.index', os.path.join('export', 'saved_model.pb')):
    open(os.path.join(folder, name), 'w').close()
  stages._run_recorded(job, 'teacher', {'args': []}, [], lambda: None, folder)  # pylint: disable=protected-access
  out = capsys.readouterr().out
  assert (f'[teacher] removing {folder} (2 files: checkpoints, summaries, export) because --force'
          in out)
  assert not os.path.exists(folder)


def test_readme_says_saved_models_are_code_and_what_force_deletes():
  with open(REPO_ROOT / 'README.md') as f:
    readme = f.read()
  note = readme[readme.index('**Trust and safety.**'):][:1200]
  for words in ('programs', '--embedder', '--teacher', '--synthesizer', 'read and write files',
                '--force', 'teacher/', 'tensorflow_datasets'):
    assert words in note, words


def _main_process(output_dir, *flags_, data_dir=None):
  """A running `main.py --preset=tiny` (stdout piped, line by line)."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  extra = [f'--data_dir={data_dir}'] if data_dir else []
  return subprocess.Popen(
      [sys.executable, 'main.py', '--preset=tiny', f'--output_dir={output_dir}', *extra, *flags_],
      cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _children(pid):
  """The pids of the child processes of `pid` (Linux /proc)."""
  children = []
  for task in os.listdir(f'/proc/{pid}/task'):
    with open(f'/proc/{pid}/task/{task}/children') as f:
      children += [int(c) for c in f.read().split()]
  return children


def _running(pid):
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().split(')')[-1].split()[0] != 'Z'
  except FileNotFoundError:
    return False


def _wait_for_line(process, text, timeout=600):
  """Reads the process's stdout until a line containing `text`; returns the lines read."""
  import time  # pylint: disable=g-import-not-at-top
  lines, deadline = [], time.time() + timeout
  while time.time() < deadline:
    line = process.stdout.readline()
    if not line:
      break
    lines.append(line)
    if text in line:
      return lines
  raise AssertionError(f'no {text!r} in the output: {"".join(lines)[-3000:]}')


def _error_lines(stderr, program='main.py'):
  return [line for line in stderr.splitlines() if line.startswith(f'{program}:')]


@pytest.mark.slow
def test_sigkill_of_main_takes_its_child_along_and_one_run_per_folder(tmp_path):
  """A SIGKILLed main.py left its train.py running for ~48 s, and a second main.py on the same
  folder trained it concurrently: now the child dies with it, a second run is refused naming the
  first, and the lock the killed run left is taken over by the next run."""
  import time  # pylint: disable=g-import-not-at-top
  out = tmp_path / 'out'
  first = _main_process(out, '--teacher_steps=100000', '--stages=dataset,teacher')
  try:
    _wait_for_line(first, '[teacher] training from step 0')
    (child,) = _children(first.pid)
    assert _running(child)
    second = subprocess.run([sys.executable, 'main.py', '--preset=tiny', f'--output_dir={out}'],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))
    errors = _error_lines(second.stderr)
    assert second.returncode == 2 and 'Traceback' not in second.stderr, second.stderr[-2000:]
    assert len(errors) == 1 and f'is in use by process {first.pid}' in errors[0], errors
    first.kill()
    first.wait()
    deadline = time.time() + 10
    while _running(child) and time.time() < deadline:
      time.sleep(0.1)
    assert not _running(child)
  finally:
    if first.poll() is None:
      first.kill()
      first.wait()
  stdout = _run_main(out, '--stages=dataset')
  assert f'the lock of process {first.pid}, which no longer runs, was stale; taken over' in stdout


def _variables(model_dir):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(model_dir))
  return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
          if not name.startswith('_CHECKPOINTABLE_OBJECT_GRAPH')}


@pytest.mark.slow
def test_a_killed_and_resumed_pipeline_ends_as_an_uninterrupted_one(tmp_path):
  """main.py SIGKILLed while training the teacher, rerun, SIGKILLed while training the student,
  rerun: its checkpoints and metrics equal those of an uninterrupted run, digit for digit (the
  resumed input pipelines used to start over: teacher accuracy 0.750 vs 0.725)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  data = tmp_path / 'data'
  flags_ = ('--teacher_steps=24', '--student_steps=24', '--student_pose_loss_weight=0',
            '--stages=dataset,teacher,student')
  _run_main(tmp_path / 'straight', f'--data_dir={data}', *flags_)
  resumed = tmp_path / 'resumed'
  for model in ('teacher', 'student'):
    process = _main_process(resumed, *flags_, data_dir=data)
    try:
      deadline = time.time() + 600
      while time.time() < deadline and process.poll() is None:
        latest = tf.train.latest_checkpoint(str(resumed / model))
        if latest and 9 <= int(latest.rsplit('-', 1)[1]) < 24:
          break
        time.sleep(0.2)
      process.kill()  # main.py only: its train.py dies with it
      process.wait()
    finally:
      if process.poll() is None:
        process.kill()
    killed_at = int(tf.train.latest_checkpoint(str(resumed / model)).rsplit('-', 1)[1])
    assert 9 <= killed_at < 24, (model, killed_at)
  stdout = _run_main(resumed, f'--data_dir={data}', *flags_)
  assert '[teacher]' not in stdout.split('Stage student')[0] or 'teacher: outputs complete' in stdout
  for model, metric in (('teacher', 'accuracy'), ('student', 'relative_error')):
    results = {}
    for run in ('straight', 'resumed'):
      with open(tmp_path / run / model / 'train_result.json') as f:
        results[run] = json.load(f)
    print(f'{model}: uninterrupted {metric} {results["straight"]["eval"][metric]!r} loss '
          f'{results["straight"]["eval"]["loss"]!r}; killed at step '
          f'{results["resumed"]["start_step"]} and resumed: {metric} '
          f'{results["resumed"]["eval"][metric]!r} loss {results["resumed"]["eval"]["loss"]!r}')
    assert results['resumed']['start_step'] > 0
    assert results['resumed']['eval'] == results['straight']['eval']
    assert results['resumed']['train'] == results['straight']['train']
    straight, again = _variables(tmp_path / 'straight' / model), _variables(resumed / model)
    assert straight.keys() == again.keys() and len(straight) > 10
    for name, value in straight.items():
      np.testing.assert_array_equal(again[name], value, err_msg=name)
