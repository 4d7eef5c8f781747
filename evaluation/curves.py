"""Training curves: the scalars a training run wrote for TensorBoard, read back and plotted.

`models.training` writes scalars (loss, metrics, learning rate, rates) with `tf.summary` into
`model_dir/train` and, at each periodic evaluation on the test split, `model_dir/eval`. This module
reads those event files without TensorBoard and draws train and test curves side by side, so a run's
learning can be judged from a PNG (the main job writes `training_curves.png`).
"""
import glob
import os

import numpy as np
import tensorflow as tf

from evaluation.files import atomic_save_figure


def read_scalars(event_dir):
  """Scalars of every event file in `event_dir`: dict tag -> (steps int64 `[K]`, values float64
  `[K]`), sorted by step; a step written twice (a resumed run) keeps its last value. An absent
  folder gives {}. Tags are read without the model group `models.training` writes them under
  (`student/loss` -> `loss`); text and other non-numeric summaries are skipped."""
  series = {}
  for path in sorted(glob.glob(os.path.join(event_dir, 'events.out.tfevents.*'))):
    for record in tf.data.TFRecordDataset(path):
      event = tf.compat.v1.Event.FromString(record.numpy())
      for value in event.summary.value:
        if value.HasField('tensor'):
          number = tf.make_ndarray(value.tensor)
        elif value.HasField('simple_value'):
          number = value.simple_value
        else:
          continue
        number = np.asarray(number)
        if np.size(number) != 1 or not np.issubdtype(number.dtype, np.number):
          continue
        tag = value.tag.rsplit('/', 1)[-1]
        series.setdefault(tag, {})[int(event.step)] = float(number.ravel()[0])
  return {tag: (np.array(sorted(points), np.int64),
                np.array([points[s] for s in sorted(points)], np.float64))
          for tag, points in series.items()}


def plot_training_curves(path, runs):
  """Writes a PNG with one row per run: loss (log scale) and each metric, train and test.

  Args:
    path: output PNG.
    runs: dict title -> (model_dir, [metric tags]), e.g.
      {'student': ('output/student', ['relative_error'])}; runs without event files are skipped.
  Returns:
    the titles of the runs drawn.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')  # files only, never a display
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  loaded = []
  for title, (model_dir, metrics) in runs.items():
    train = read_scalars(os.path.join(model_dir, 'train'))
    test = read_scalars(os.path.join(model_dir, 'eval'))
    if train or test:
      loaded.append((title, ['loss'] + list(metrics), train, test))
  if not loaded:
    raise ValueError(f'no training scalars found for {sorted(runs)}')
  columns = max(len(tags) for _, tags, _, _ in loaded)
  figure, axes = plt.subplots(len(loaded), columns, figsize=(4 * columns, 2.8 * len(loaded)),
                              squeeze=False)
  try:
    for row, (title, tags, train, test) in enumerate(loaded):
      for column in range(columns):
        ax = axes[row, column]
        if column >= len(tags):
          ax.axis('off')
          continue
        tag = tags[column]
        for label, series, style in (('train', train, '-'), ('test', test, 'o-')):
          if tag in series:
            ax.plot(*series[tag], style, ms=3, lw=1, label=label)
        if tag == 'loss':
          ax.set_yscale('log')
        ax.set(title=f'{title}: {tag}', xlabel='step')
        ax.grid(alpha=0.3)
        ax.legend(fontsize='small')
    figure.tight_layout()
    atomic_save_figure(path, figure)
  finally:
    plt.close(figure)
  return [title for title, _, _, _ in loaded]
