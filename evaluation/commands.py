"""The commands of evaluate.py as plain functions (the flags live in evaluate.py).

Each command reads its inputs, runs one piece of evaluation/, writes its outputs atomically and
returns what it printed, so tests can call it without a command line.

Output files of `align` (all beside the results CSV, `<name>` from `run_name`):
  <results_csv>                          one row per (mode, pairs) with ALIGNMENT_HEADER;
  <name>.<mode>.<pairs>.pairs.npz        per-pair records: pairs [P, 2] (rows of the embeddings
                                         file), instance_1/2, label_1/2 (when present),
                                         estimated/true [P, 3, 3], raw_error_deg, error_deg [P];
  <name>.cdf.png                         the error CDF of every (mode, pairs) of the run.
`synthesis` writes the same kinds of files: <results_csv> with SYNTHESIS_HEADER,
<name>.<mode>.<pairs>.synthesis.npz (pairs, l1, psnr_db, ssim, predictions) and
<name>.<mode>.<pairs>.grid.png (columns: input view, prediction, true view; one pair per row).
"""
import json
import os

import numpy as np

from evaluation import alignment, embeddings_io, images, models_io, plots, relpose, results
from evaluation import synthesis
from evaluation import pairs as pairs_lib
from evaluation.embeddings_io import load_embeddings
from evaluation.files import atomic_write_npz, atomic_write_png, atomic_write_text

DIFF_PAIRS_DEFAULT_MAX = 10000


def run_name(embeddings_path, name=None, normalize=False, upsample=1, symmetric=False):
  """The `name` column: `name` or the file's stem, tagged with the non-default options.

  E.g. 'test_embeddings+norm+up2+sym' for --normalize --upsample=2 --symmetric, so rows of
  different settings of one file stay distinct in the fixed-header CSV.
  """
  base = name or os.path.splitext(os.path.basename(embeddings_path))[0]
  tags = (['norm'] if normalize else []) + ([f'up{upsample}'] if upsample != 1 else []) + (
      ['sym'] if symmetric else [])
  return '+'.join([base] + tags)


def pairs_record_path(out_dir, label, mode, kind):
  """Where `align_command` keeps the per-pair records of one (run name, mode, pair kind)."""
  return os.path.join(out_dir, f'{label}.{mode}.{kind}.pairs.npz')


def default_results_csv(embeddings_path, filename='results.csv'):
  """`results.csv` (or `filename`) in the folder of the embeddings file."""
  return os.path.join(os.path.dirname(os.path.abspath(embeddings_path)), filename)


def _pairs_for(data, kind, max_pairs, seed, enumeration='all', partner='same_class'):
  if max_pairs is None:
    max_pairs = DIFF_PAIRS_DEFAULT_MAX if kind == 'diff' else 0
  return pairs_lib.make_pairs(data['instance'], data['rot'], kind=kind, label=data.get('label'),
                              max_pairs=max_pairs, seed=seed, enumeration=enumeration,
                              partner=partner)


def _pair_ids(data, pairs):
  ids = {'instance_1': data['instance'][pairs[:, 0]], 'instance_2': data['instance'][pairs[:, 1]]}
  if 'label' in data:
    ids.update(label_1=data['label'][pairs[:, 0]], label_2=data['label'][pairs[:, 1]])
  return ids


def check_runs(embeddings_path, data, modes, all_pairs):
  """Raises ValueError naming the file unless every mode's maps are in `data` and every map a
  pair uses can be correlated in float32 (embeddings_io.check_map_scales).

  Args:
    data: the embeddings file's arrays; modes: 'fmap' and/or 'target';
    all_pairs: {kind: pairs [P, 2] of rows}.
  """
  for mode in modes:
    if mode not in data:
      raise ValueError(f'embeddings file {embeddings_path}: no "{mode}" maps for --mode={mode} '
                       f'(has {sorted(data)})')
  used = np.concatenate([np.asarray(p, np.int64).reshape(-1) for p in all_pairs.values()] +
                        [np.zeros(0, np.int64)])
  for mode in modes:
    embeddings_io.check_map_scales(data[mode], f'embeddings file {embeddings_path}, "{mode}"',
                                   rows=used)


def align_command(embeddings_path, pair_kinds=('same',), modes=('fmap',), upsample=1,
                  normalize=False, symmetric=False, max_pairs=None, seed=0, results_csv=None,
                  name=None, batch_size=64, progress=True, align_fn=None, odd_degree_weight=1.0,
                  peaks='refined', upsample_method='spectral', normalize_method='spectral',
                  pair_enumeration='all', diff_partner='same_class'):
  """The relative-pose experiment; returns (rows, printed markdown table). `odd_degree_weight`
  scales the odd degrees of the student's (fmap) maps; `peaks`, `upsample_method` and
  `normalize_method` choose between ours and align.m's (see alignment.run_alignment), and
  `pair_enumeration`, `diff_partner` the pairs (pairs.make_pairs)."""
  data = load_embeddings(embeddings_path)
  results_csv = results_csv or default_results_csv(embeddings_path)
  out_dir = os.path.dirname(os.path.abspath(results_csv))
  label = run_name(embeddings_path, name, normalize, upsample, symmetric)
  # Every input is checked and every run computed before the first file is written: a bad
  # kind, mode or map leaves no half-written output.
  all_pairs = {kind: _pairs_for(data, kind, max_pairs, seed, pair_enumeration, diff_partner)
               for kind in pair_kinds}
  check_runs(embeddings_path, data, modes, all_pairs)
  runs = [(kind, mode, alignment.run_alignment(
      data, pairs, mode=mode, symmetric=symmetric, align_fn=align_fn, batch_size=batch_size,
      upsample=upsample, normalize=normalize, progress=progress,
      odd_degree_weight=odd_degree_weight, peaks=peaks, upsample_method=upsample_method,
      normalize_method=normalize_method)) for kind, pairs in all_pairs.items() for mode in modes]
  rows, curves = [], {}
  for kind, mode, run in runs:
    row = dict(run['stats'], name=label, mode=mode, pairs=kind)
    results.append_row(results_csv, row, results.ALIGNMENT_HEADER)
    atomic_write_npz(pairs_record_path(out_dir, label, mode, kind),
                     pairs=run['pairs'], estimated=run['estimated'], true=run['true'],
                     raw_error_deg=run['raw_error_deg'], error_deg=run['error_deg'],
                     **_pair_ids(data, run['pairs']))
    rows.append(row)
    curves[f'{mode}/{kind}'] = run['error_deg']
  plots.plot_error_cdf(os.path.join(out_dir, f'{label}.cdf.png'), curves,
                       title=f'Relative pose error: {label}', max_deg=90.0 if symmetric else 180.0)
  table = results.markdown_table(rows, results.ALIGNMENT_HEADER + ('pairs_per_s',))
  return rows, table


def synthesis_command(embeddings_path, synthesizer, pair_kinds=('same',), modes=('fmap',),
                      max_pairs=None, seed=0, results_csv=None, name=None, grid_rows=8,
                      batch_size=32, rotate_fn=None):
  """The view-synthesis evaluation; returns (rows, printed markdown table).

  Args:
    synthesizer: embeddings -> images (models_io.load_synthesizer or any callable).
    grid_rows: pairs shown in the PNG grid (the first ones in pair order).
  """
  data = load_embeddings(embeddings_path)
  results_csv = results_csv or default_results_csv(embeddings_path, 'synthesis_results.csv')
  out_dir = os.path.dirname(os.path.abspath(results_csv))
  label = run_name(embeddings_path, name)
  # As in align_command: everything checked and computed before the first write.
  all_pairs = {kind: _pairs_for(data, kind, max_pairs, seed) for kind in pair_kinds}
  check_runs(embeddings_path, data, modes, all_pairs)
  if 'image' not in data:
    raise ValueError(f'embeddings file {embeddings_path}: no "image" views (export it with '
                     '--include_images)')
  runs = []
  for kind, pairs in all_pairs.items():
    for mode in modes:
      if hasattr(synthesizer, 'check_input'):
        synthesizer.check_input(data[mode][:1])
      runs.append((kind, mode, synthesis.run_synthesis(data, pairs, synthesizer, mode=mode,
                                                       rotate_fn=rotate_fn,
                                                       batch_size=batch_size)))
  rows = []
  for kind, mode, run in runs:
    row = dict(run['stats'], name=label, mode=mode, pairs=kind)
    results.append_row(results_csv, row, results.SYNTHESIS_HEADER)
    stem = os.path.join(out_dir, f'{label}.{mode}.{kind}')
    atomic_write_npz(stem + '.synthesis.npz', pairs=run['pairs'], l1=run['l1'],
                     psnr_db=run['psnr_db'], ssim=run['ssim'], predictions=run['predictions'],
                     **_pair_ids(data, run['pairs']))
    shown = run['pairs'][:grid_rows]
    plots.save_image_grid(stem + '.grid.png', [data['image'][shown[:, 0]],
                                               run['predictions'][:grid_rows],
                                               data['image'][shown[:, 1]]],
                          titles=('input', 'predicted', 'truth'))
    rows.append(row)
  table = results.markdown_table(rows, results.SYNTHESIS_HEADER + ('pairs_per_s',))
  return rows, table


def relpose_command(embedder, image1, image2, top_k=3, upsample=1, normalize=False,
                    json_path=None, image_size=None, align_top_k_fn=None,
                    odd_degree_weight=relpose.ODD_DEGREE_WEIGHT):
  """Relative pose between two image files (relpose.relative_pose_from_files); returns (result
  dict, printed text)."""
  result = relpose.relative_pose_from_files(
      embedder, image1, image2, top_k=top_k, upsample=upsample, normalize=normalize,
      image_size=image_size, odd_degree_weight=odd_degree_weight, align_top_k_fn=align_top_k_fn)
  if json_path:
    atomic_write_text(json_path, json.dumps(result, indent=2) + '\n')
  return result, relpose.format_relative_pose(result)


def relpose_pairs_command(embedder, pairs, top_k=3, upsample=1, normalize=False, json_path=None,
                          image_size=None, odd_degree_weight=relpose.ODD_DEGREE_WEIGHT,
                          batch_size=64, align_top_k_fn=None):
  """Relative poses of many image pairs in one call (relpose.relative_poses_from_files); returns
  (list of result dicts, printed table). `json_path` gets the list."""
  results = relpose.relative_poses_from_files(
      embedder, pairs, top_k=top_k, upsample=upsample, normalize=normalize,
      image_size=image_size, odd_degree_weight=odd_degree_weight, batch_size=batch_size,
      align_top_k_fn=align_top_k_fn)
  if json_path:
    atomic_write_text(json_path, json.dumps(results, indent=2) + '\n')
  return results, relpose.format_pose_table(results)


def synthesize_command(embedder, synthesizer, image, rotation, output, image_size=None,
                       rotate_fn=None):
  """The novel view of an image file after `rotation [3, 3]`, written as PNG; returns it."""
  size = relpose.view_size(embedder, image_size)
  view = images.load_view(image, size)
  picture = relpose.novel_view(embedder, synthesizer, view, np.asarray(rotation), rotate_fn)
  atomic_write_png(output, plots.to_uint8(picture))
  return picture
