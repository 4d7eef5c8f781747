"""Training curves read back from summary event files (evaluation.curves)."""
import os

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from evaluation import curves


def _write(log_dir, points):
  writer = tf.summary.create_file_writer(log_dir)
  with writer.as_default():
    for step, values in points:
      for tag, value in values.items():
        tf.summary.scalar(tag, value, step=step)
  writer.close()


def test_read_scalars_sorts_steps_and_keeps_the_last_write(tmp_path):
  log_dir = str(tmp_path / 'train')
  _write(log_dir, [(20, {'loss': 0.5}), (10, {'loss': 1.0, 'accuracy': 0.25})])
  _write(log_dir, [(20, {'loss': 0.4}), (30, {'loss': 0.3})])  # a resumed run rewrites step 20
  scalars = curves.read_scalars(log_dir)
  steps, values = scalars['loss']
  np.testing.assert_array_equal(steps, [10, 20, 30])
  np.testing.assert_allclose(values, [1.0, 0.4, 0.3], rtol=1e-6)
  np.testing.assert_allclose(scalars['accuracy'][1], [0.25])
  assert curves.read_scalars(str(tmp_path / 'absent')) == {}


def test_plot_training_curves_draws_each_run_with_scalars(tmp_path):
  for model in ('a', 'b'):
    _write(str(tmp_path / model / 'train'), [(s, {'loss': 1.0 / s, 'relative_error': 0.5})
                                            for s in range(1, 6)])
  _write(str(tmp_path / 'a' / 'eval'), [(5, {'loss': 0.3, 'relative_error': 0.6})])
  out = str(tmp_path / 'curves.png')
  drawn = curves.plot_training_curves(out, {
      'a': (str(tmp_path / 'a'), ['relative_error']), 'b': (str(tmp_path / 'b'), []),
      'missing': (str(tmp_path / 'none'), ['accuracy'])})
  assert drawn == ['a', 'b']
  with Image.open(out) as image:
    assert image.size[0] > 400 and image.size[1] > 300
  assert not [f for f in os.listdir(tmp_path) if 'tmp' in f]
  with pytest.raises(ValueError, match='no training scalars'):
    curves.plot_training_curves(out, {'missing': (str(tmp_path / 'none'), [])})
