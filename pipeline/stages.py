"""The training and evaluation stages of main.py, each a subprocess of train.py or evaluate.py.

Folders under the job's output_dir:
  teacher/, student/, synthesis/   train.py model_dirs (checkpoints, TensorBoard, export/)
  eval/                            embeddings of the test split, results CSVs, error CDF plots,
                                   view-synthesis image grids
  logs/<stage>.log                 the full output of every program a stage ran
  stages/<stage>.json              stage records (pipeline.runner)
  results.md                       the final table

Every stage's settings are its program's flags plus the finishing times of the stages it uses, so
a redone upstream stage makes the later ones run again. Training resumes from the model_dir's
checkpoint after a kill (train.py does it); a model_dir of other settings is cleared first.
"""
import json
import os
import re
import shutil
import time

import numpy as np

from evaluation import alignment as alignment_lib
from evaluation import commands as eval_commands
from evaluation import curves as curves_lib
from evaluation import degrees as degrees_lib
from evaluation import embeddings_io
from evaluation import identifiability
from evaluation import results as results_lib
from evaluation.files import atomic_write_text
from pipeline import presets
from pipeline import runner

EMBEDDINGS = 'test_embeddings'
ALIGN_CSV = 'results.csv'
SYNTHESIS_CSV = 'synthesis_results.csv'
RESULTS_MD = 'results.md'
CURVES_PNG = 'training_curves.png'
# Goals of the main job on the default's test split (unseen instances).
GOAL_TARGET_MEDIAN_DEG = 5.0
GOAL_FMAP_SAME_MEDIAN_DEG = 15.0
# Medians of the error of a Haar-random rotation: the angle has density (1 - cos t) / pi on
# [0, pi]; folded as min(t, pi - t) it is uniform on [0, pi / 2] (median 45 degrees).
CHANCE_MEDIAN_DEG = 132.3  # solves t - sin(t) = pi / 2
CHANCE_FLIP_TOLERANT_MEDIAN_DEG = 45.0


def path(job, *parts):
  return os.path.join(job.output_dir, *parts)


def _log(job, stage):
  return path(job, 'logs', f'{stage}.log')


def _record_time(job, stage):
  record = runner.read_record(job.output_dir, stage)
  return record.get('time') if record and record.get('status') == 'done' else None


def _dataset_stamp(job):
  builder = job.builder()
  info = os.path.join(builder.data_dir, 'dataset_info.json')
  return [builder.data_dir, os.path.getmtime(info) if os.path.exists(info) else None]


def _data_config(job):
  """The data set settings (datasets.builders.make_builder keywords), None values left out."""
  return {k: v for k, v in sorted(job.dataset.items()) if v is not None}


def _join(values):
  return ','.join(str(v) for v in values)


# Training stages.

def train_args(job, model):
  """train.py's flags for `model` (teacher, student or synthesis) under the job's settings."""
  s = job.settings
  kind = 'teacher' if model == 'teacher' else model
  steps = s[f'{kind}_steps']
  batch = s['teacher_batch_size'] if model == 'teacher' else s['student_batch_size']
  boundaries, values = presets.lr_schedule(s[f'{kind}_lr'], s[f'{kind}_lr_drops'], steps)
  args = ['train.py', f'--model={model}', f'--model_dir={path(job, model)}',
          f'--data_dir={job.data_dir}', f'--data_config={json.dumps(_data_config(job))}',
          f'--batch_size={batch}', f'--max_steps={steps}',
          f'--lr_boundaries={_join(boundaries)}', f'--lr_values={_join(values)}',
          f'--checkpoint_every={s["checkpoint_every"]}', f'--summary_every={s["summary_every"]}',
          # Ten evaluations on the test split per run: the test curves of training_curves.png.
          f'--eval_every={max(1, steps // 10)}']
  if model == 'teacher':
    args += [f'--teacher_filters={_join(s["teacher_filters"])}',
             f'--teacher_pool_blocks={_join(s["teacher_pool_blocks"])}',
             f'--teacher_embedding_block={s["teacher_embedding_block"]}']
  else:
    args += [f'--tgt_embed_dir={path(job, "teacher", "export")}',
             f'--base_channels={s["base_channels"]}', f'--max_channels={s["max_channels"]}',
             f'--n_latent={s["n_latent"]}', f'--layers_per_block={s["layers_per_block"]}',
             '--cache_targets=memory']
  if model == 'student':
    args += [f'--degree_loss_weight={s["degree_loss_weight"]}',
             f'--degree_loss_degrees={_join(s["degree_loss_degrees"])}',
             f'--pose_loss_weight={s["pose_loss_weight"]}',
             f'--pose_loss_bandwidth={s["pose_loss_bandwidth"]}',
             f'--pose_loss_temperature={s["pose_loss_temperature"]}',
             f'--embedder_turns={s["embedder_turns"]}',
             f'--embedder_mirror={str(bool(s["embedder_mirror"])).lower()}']
  return args + presets.recipe_train_flags(s, model)


def _train_settings(job, model):
  upstream = ({'dataset': _dataset_stamp(job)} if model == 'teacher'
              else {'teacher': _record_time(job, 'teacher')})
  return {'args': train_args(job, model), 'upstream': upstream}


def _train_outputs(job, model):
  return [path(job, model, 'export', 'saved_model.pb'), path(job, model, 'train_result.json')]


def _verify_training(job, model):
  """Raises RuntimeError unless training reached its steps and the export loads."""
  with open(path(job, model, 'train_result.json')) as f:
    result = json.load(f)
  steps = job.settings['teacher_steps' if model == 'teacher' else f'{model}_steps']
  if result.get('step') != steps:
    raise RuntimeError(f'stage {model}: training stopped at step {result.get("step")} of {steps}')
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (heavy; only when verifying)
  export = path(job, model, 'export')
  try:
    loaded = tf.saved_model.load(export)
  except Exception as e:  # pylint: disable=broad-except  (any failure means unusable)
    raise RuntimeError(f'stage {model}: the export {export} does not load: {e}') from e
  del loaded


def remove(stage, target, why):
  """Deletes the file or folder `target`, saying what it deletes and why (nothing is deleted
  silently: --force and changed settings remove whole model folders)."""
  if os.path.isdir(target):
    count = sum(len(files) for _, _, files in os.walk(target))
    print(f'[{stage}] removing {target} ({count} files: checkpoints, summaries, export) '
          f'because {why}', flush=True)
    shutil.rmtree(target)
  elif os.path.exists(target):
    print(f'[{stage}] removing {target} because {why}', flush=True)
    os.remove(target)


def _run_recorded(job, stage, settings, outputs, work, folder=None):
  """Runs `work()` under the stage record protocol (see pipeline.runner); `folder` is cleared
  when it holds work of other settings or --force is on."""
  if folder and os.path.isdir(folder) and (
      job.force or runner.has_other_settings(job.output_dir, stage, settings)):
    why = '--force' if job.force else 'it holds work of other settings'
    remove(stage, folder, why)
  runner.write_record(job.output_dir, stage, settings, outputs, 'running')
  work()
  missing = [p for p in outputs if not os.path.exists(p)]
  if missing:
    raise RuntimeError(f'stage {stage}: finished without writing {missing}')
  runner.write_record(job.output_dir, stage, settings, outputs, 'done')


def training_stage_functions(model):
  """(run, is_complete) of the training stage of `model`."""

  def run(job):
    settings = _train_settings(job, model)
    args = settings['args']
    progress = runner.TrainingProgress(model, job.settings[
        'teacher_steps' if model == 'teacher' else f'{model}_steps'])

    def work():
      runner.run_program(model, args, _log(job, model), show=progress.line)
      _verify_training(job, model)

    _run_recorded(job, model, settings, _train_outputs(job, model), work, path(job, model))

  def is_complete(job):
    return runner.is_done(job.output_dir, model, _train_settings(job, model))

  return run, is_complete


# Evaluation stages.

def _show_eval(line):
  return line if line.startswith(('|', 'wrote ')) else None


def _embeddings_path(job):
  return path(job, 'eval', f'{EMBEDDINGS}.npz')


def _export_settings(job):
  config = [f'{k}={v}' for k, v in _data_config(job).items()]
  args = ['evaluate.py', 'export', f'--embedder={path(job, "student", "export")}',
          f'--teacher={path(job, "teacher", "export")}', f'--data_dir={job.data_dir}',
          '--split=test', f'--data_config={_join(config)}', '--include_images',
          f'--output={_embeddings_path(job)}', '--progress=false']
  return {'args': args, 'upstream': {s: _record_time(job, s) for s in ('teacher', 'student')}
          | {'dataset': _dataset_stamp(job)}}


def run_export(job):
  settings = _export_settings(job)
  _run_recorded(job, 'embeddings', settings, [_embeddings_path(job)], lambda: runner.run_program(
      'embeddings', settings['args'], _log(job, 'embeddings'), show=_show_eval))


def export_complete(job):
  return runner.is_done(job.output_dir, 'embeddings', _export_settings(job))


def pair_kinds(embeddings_file):
  """['same', 'diff'] when some class has two instances in the file, else ['same']."""
  with np.load(embeddings_file) as data:
    instance, label = data['instance'], data['label'] if 'label' in data else None
  if label is None:
    return ['same']
  per_label = {}
  for i, l in zip(instance.tolist(), label.tolist()):
    per_label.setdefault(l, set()).add(i)
  return ['same', 'diff'] if any(len(v) > 1 for v in per_label.values()) else ['same']


def _eval_upstream(job, *stages):
  return {s: _record_time(job, s) for s in stages}


def _align_settings(job):
  return {'upsample': list(job.settings['upsample']), 'max_pairs': job.settings['eval_max_pairs'],
          'odd_degree_weight': job.settings['odd_degree_weight'],
          **({'recipe_flags': presets.recipe_align_flags(job.settings)}
             if presets.recipe_align_flags(job.settings) else {}),
          'upstream': _eval_upstream(job, 'embeddings')}


def _align_outputs(job):
  names = [_run_name(u) for u in job.settings['upsample']]
  return [path(job, 'eval', ALIGN_CSV)] + [path(job, 'eval', f'{n}.cdf.png') for n in names]


def _run_name(upsample):
  return EMBEDDINGS + (f'+up{upsample}' if upsample != 1 else '')


def run_align(job):
  settings = _align_settings(job)
  csv = path(job, 'eval', ALIGN_CSV)

  def work():
    remove('relative_pose', csv, 'this stage rewrites its table')
    kinds = pair_kinds(_embeddings_path(job))
    for upsample in settings['upsample']:
      runner.run_program('relative_pose', [
          'evaluate.py', f'--embeddings={_embeddings_path(job)}', f'--pairs={_join(kinds)}',
          '--mode=target,fmap', f'--upsample={upsample}', f'--max_pairs={settings["max_pairs"]}',
          f'--odd_degree_weight={settings["odd_degree_weight"]}',
          *settings.get('recipe_flags', ()),
          f'--results_csv={csv}', '--progress=false'], _log(job, 'relative_pose'),
          show=_show_eval)

  _run_recorded(job, 'relative_pose', settings, _align_outputs(job), work)


def align_complete(job):
  return runner.is_done(job.output_dir, 'relative_pose', _align_settings(job))


def _synthesis_settings(job):
  return {'max_pairs': job.settings['eval_max_pairs'],
          'upstream': _eval_upstream(job, 'embeddings', 'synthesis')}


def run_view_synthesis(job):
  settings = _synthesis_settings(job)
  csv = path(job, 'eval', SYNTHESIS_CSV)
  kinds = pair_kinds(_embeddings_path(job))
  grids = [path(job, 'eval', f'{EMBEDDINGS}.{m}.{k}.grid.png') for m in ('target', 'fmap')
           for k in kinds]

  def work():
    remove('view_synthesis', csv, 'this stage rewrites its table')
    runner.run_program('view_synthesis', [
        'evaluate.py', 'synthesis', f'--embeddings={_embeddings_path(job)}',
        f'--synthesizer={path(job, "synthesis", "export")}', '--mode=target,fmap',
        f'--pairs={_join(kinds)}', f'--max_pairs={settings["max_pairs"]}',
        f'--results_csv={csv}'], _log(job, 'view_synthesis'), show=_show_eval)

  _run_recorded(job, 'view_synthesis', settings, [csv] + grids, work)


def view_synthesis_complete(job):
  return runner.is_done(job.output_dir, 'view_synthesis', _synthesis_settings(job))


# The results table.

def _train_result(job, model):
  with open(path(job, model, 'train_result.json')) as f:
    return json.load(f)


def _upsample_of(name):
  match = re.search(r'\+up(\d+)', name)
  return int(match.group(1)) if match else 1


def _median(rows, mode, pairs, column='median_deg'):
  values = [float(r[column]) for r in rows
            if r['mode'] == mode and r['pairs'] == pairs and r.get(column) not in (None, '')]
  return min(values) if values else None


def _add_flip_tolerant_medians(job, rows):
  """Adds `sym_median_deg` to each alignment row: the median of `min(e, 180 - e)` over the same
  pairs (from the run's per-pair file), the original study's error that forgives a 180-degree flip.

  Why it is reported beside the plain median: the teacher's maps are dominated by even degrees
  (l = 0, 2, 4: about 70% of their energy on the procedural shapes), which cannot tell a pose from
  its 180-degree flips about the object's axes; only the weak odd degrees (about 5%) can, and a
  student learns them last. The flip-tolerant median shows how far the student has got before that.
  """
  for row in rows:
    row['sym_median_deg'] = ''
    pairs_file = eval_commands.pairs_record_path(path(job, 'eval'), row['name'], row['mode'],
                                                 row['pairs'])
    if os.path.exists(pairs_file):
      with np.load(pairs_file) as data:
        folded = alignment_lib.fold_symmetric(data['raw_error_deg'])
      row['sym_median_deg'] = float(np.median(folded)) if folded.size else ''


def _degree_correlation_lines(data, max_degree=6):
  """The student's test embeddings (`data`, an embeddings file's arrays) against the teacher's,
  degree by degree (a markdown table)."""
  if 'target' not in data:
    return ['(the embeddings file has no teacher embeddings)']
  rho = degrees_lib.degree_correlation(data['fmap'], data['target'], max_degree)
  return ['| degree l | ' + ' | '.join(str(l) for l in range(len(rho))) + ' |',
          '|---|' + '---|' * len(rho),
          '| correlation | ' + ' | '.join(f'{r:.3f}' for r in rho) + ' |', '',
          'Per degree, the correlation of the harmonic coefficients of the student\'s embeddings '
          "with the teacher's (evaluation.degrees): pose needs the low degrees, and the odd ones "
          'to tell a pose from its 180-degree flips.']


def _category_lines(job, embeddings):
  """Same-instance relative pose per category (upsample 1, teacher and student), and per view the
  teacher's margin and the student's match (evaluation.identifiability, on `embeddings`, the test
  embeddings file's arrays): a markdown table."""
  by_mode = {}
  for mode in ('target', 'fmap'):
    pairs_file = eval_commands.pairs_record_path(path(job, 'eval'), _run_name(1), mode, 'same')
    if not os.path.exists(pairs_file):
      return ['(no same-instance pairs)']
    with np.load(pairs_file) as data:
      by_mode[mode] = alignment_lib.summarize_by_group(
          data['raw_error_deg'], alignment_lib.category_of(data['instance_1']))
  views = {}
  if 'target' in embeddings:
    ratios, angles = identifiability.second_peak_ratios(embeddings['target'])
    views = identifiability.summarize_by_group(
        ratios, angles, identifiability.view_errors_deg(embeddings['fmap'], embeddings['target']),
        alignment_lib.category_of(embeddings['instance']),
        far_ratios=identifiability.far_pose_ratios(embeddings['target'])[0])
  flipped = f'> {alignment_lib.FLIPPED_DEG:.0f} deg, %'
  at_pose = f'< {identifiability.AT_POSE_DEG:.0f} deg, %'
  lines = ['| category | pairs | target median | fmap median | fmap acc30 '
           f'| fmap flip-tolerant median | fmap flipped ({flipped}) | teacher 2nd peak / 1st '
           f'| teacher far pose / pose | views at pose ({at_pose}) | views flipped ({flipped}) |',
           '|---|---|---|---|---|---|---|---|---|---|---|']
  for category, fmap in by_mode['fmap'].items():
    target = by_mode['target'].get(category, {}).get('median_deg', float('nan'))
    view = views.get(category, {})
    view_cells = ' | '.join(f'{view.get(key, float("nan")):.{digits}f}' for key, digits in (
        ('second_peak_ratio', 3), ('far_pose_ratio', 3), ('views_at_pose', 1),
        ('views_flipped', 1)))
    lines.append(f'| {category} | {fmap["n"]} | {target:.2f} | {fmap["median_deg"]:.1f} | '
                 f'{fmap["acc30"]:.1f} | {fmap["sym_median_deg"]:.1f} | {fmap["flipped"]:.1f} | '
                 f'{view_cells} |')
  return lines + [
      '', "Flipped: a pose taken for one of its 180-degree flips. If each view's embedding were "
      'that of its pose or, at random, of one flip of it, about 50% of the pairs would be '
      "flipped; with the three flips about the object's axes, 75%.", '',
      "Per view (all test views): teacher 2nd peak / 1st, the median over views of the best "
      "other peak of the teacher's map (means removed) correlated with itself, over the peak at "
      "the identity (1: a pose the teacher's maps cannot tell from another; a student whose "
      "maps miss the teacher's by more than this margin can take the other pose); teacher far "
      "pose / pose, the median of the best value of that self-correlation at rotations 30 "
      'degrees or more from the identity over its best (it also sees the slow ridges of shapes '
      'nearly symmetric about an axis, which have no second peak); views at pose / flipped: the '
      "rotation between the student's map of a view and the teacher's map of the same view "
      '(evaluation.identifiability).']


def _embedder_line(settings):
  turns, mirror = int(settings['embedder_turns']), bool(settings['embedder_mirror'])
  if turns == 1 and not mirror:
    return 'fmap: the plain student\'s embeddings.'
  parts = [f'{turns} turns about the camera axis'] if turns > 1 else []
  parts += ['the left-right mirror'] if mirror else []
  return ("fmap: the student's embeddings averaged over " + ' and '.join(parts) +
          ' (exact symmetries of the camera; models.embedder_export).')


def _odd_degree_line(settings):
  weight = float(settings['odd_degree_weight'])
  if weight == 1.0:
    return 'fmap pairs: the maps correlated as they are.'
  return (f"fmap pairs: the student's maps correlated with their odd degrees x {weight:g} "
          '(evaluate.py --odd_degree_weight; teacher maps as they are).')


def _student_loss_line(settings):
  terms = ['map loss']
  if settings['degree_loss_weight']:
    terms.append(f"degree loss x {settings['degree_loss_weight']:g} (degrees "
                 f"{_join(settings['degree_loss_degrees'])})")
  if settings['pose_loss_weight']:
    terms.append(f"pose loss x {settings['pose_loss_weight']:g} (degrees < "
                 f"{settings['pose_loss_bandwidth']}, temperature "
                 f"{settings['pose_loss_temperature']:g})")
  return "Student trained on: " + ', '.join(terms) + ' (models.student_task).'


def results_markdown(job):
  """The final results as markdown: relative pose, view synthesis, the models' test metrics."""
  align_rows = results_lib.read_rows(path(job, 'eval', ALIGN_CSV))
  synthesis_rows = results_lib.read_rows(path(job, 'eval', SYNTHESIS_CSV))
  for row in align_rows:
    row['upsample'] = _upsample_of(row['name'])
  _add_flip_tolerant_medians(job, align_rows)
  lines = [f'# Results ({job.preset_name} preset, recipe '
           f"{job.settings.get('recipe', 'ours')}, test split: unseen instances)", '',
           f'Data: {json.dumps(_data_config(job))}', '',
           '## Relative pose (angular error in degrees)', '',
           results_lib.markdown_table(
               align_rows, ('mode', 'pairs', 'upsample', 'n', 'median_deg', 'mean_deg', 'acc10',
                            'acc30', 'sym_median_deg')), '',
           'sym_median_deg: median of min(err, 180 - err), the flip-tolerant error of the '
           f'original study. Chance (random rotations): median {CHANCE_MEDIAN_DEG:.0f} deg, '
           f'flip-tolerant median {CHANCE_FLIP_TOLERANT_MEDIAN_DEG:.0f} deg.', '',
           _embedder_line(job.settings), _odd_degree_line(job.settings),
           _student_loss_line(job.settings), '',
           '## View synthesis (rotated embedding of view 1, decoded, against view 2)', '',
           results_lib.markdown_table(synthesis_rows,
                                      ('mode', 'pairs', 'n', 'l1', 'psnr_db', 'ssim')), '',
           '## Models (test split)', '',
           '| model | steps | metric | value |', '|---|---|---|---|']
  for model, metric in (('teacher', 'accuracy'), ('student', 'relative_error'),
                        ('synthesis', 'relative_error')):
    result = _train_result(job, model)
    value = result.get('eval', {}).get(metric)
    lines.append(f'| {model} | {result.get("step")} | {metric} | '
                 f'{"n/a" if value is None else f"{value:.4f}"} |')
  embeddings = embeddings_io.load_embeddings(_embeddings_path(job))  # read once, for both tables
  lines += ['', '## Relative pose by category (same instance, upsample 1)', '',
            *_category_lines(job, embeddings)]
  lines += ['', '## Student against teacher, by degree (test split)', '',
            *_degree_correlation_lines(embeddings)]
  target, fmap = _median(align_rows, 'target', 'same'), _median(align_rows, 'fmap', 'same')
  lines += ['', '## Goals (best over upsampling)', '',
            _goal('target-mode same-instance median', target, GOAL_TARGET_MEDIAN_DEG),
            _goal('fmap-mode same-instance median', fmap, GOAL_FMAP_SAME_MEDIAN_DEG),
            _flip_tolerant_line(_median(align_rows, 'fmap', 'same', 'sym_median_deg')), '']
  return '\n'.join(lines)


def _flip_tolerant_line(value):
  if value is None:
    return '- fmap-mode same-instance flip-tolerant median: not measured'
  return (f'- fmap-mode same-instance flip-tolerant median: {value:.2f} deg (no goal; chance '
          f'{CHANCE_FLIP_TOLERANT_MEDIAN_DEG:.0f} deg)')


def _goal(what, value, limit):
  if value is None:
    return f'- {what}: not measured (goal <= {limit:g} deg)'
  verdict = 'met' if value <= limit else 'NOT met'
  return f'- {what}: {value:.2f} deg (goal <= {limit:g} deg): {verdict}'


def _results_settings(job):
  return {'preset': job.preset_name,
          'upstream': _eval_upstream(job, 'relative_pose', 'view_synthesis', 'teacher', 'student',
                                     'synthesis')}


def write_training_curves(job):
  """`training_curves.png`: loss and metric of each model, train and test, from its summaries."""
  curves_lib.plot_training_curves(path(job, CURVES_PNG), {
      'teacher': (path(job, 'teacher'), ['accuracy']),
      'student': (path(job, 'student'), ['relative_error']),
      'synthesis': (path(job, 'synthesis'), ['relative_error'])})


def run_results(job):
  settings = _results_settings(job)
  target = path(job, RESULTS_MD)

  def work():
    write_training_curves(job)
    atomic_write_text(target, results_markdown(job))

  _run_recorded(job, 'results', settings, [target, path(job, CURVES_PNG)], work)


def results_complete(job):
  return runner.is_done(job.output_dir, 'results', _results_settings(job))
