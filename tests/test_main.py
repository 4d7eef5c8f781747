"""The main job: builds the data set, writes contact sheets, skips finished stages on a rerun."""
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
from tests.conftest import REPO_ROOT

TINY = dict(source='procedural', views_per_instance=1, bandwidth=8, image_size=16,
            instances_per_category=2)


def _job(tmp_path, force=False):
  return main.Job(output_dir=str(tmp_path / 'out'), data_dir=str(tmp_path / 'data'),
                  dataset=dict(TINY), sheet_instances=2, force=force)


def test_stages_build_write_sheets_and_skip_when_complete(tmp_path):
  job = _job(tmp_path)
  main.run_stages(job)
  sheets = [contact_sheet.sheet_path(job.output_dir, c) for c in procedural.CATEGORIES]
  assert all(os.path.isfile(p) for p in sheets)
  image = np.asarray(Image.open(sheets[0]))
  assert image.ndim == 3 and image.shape[2] == 3 and image.std() > 0
  table = main.summary_table(job)
  assert 'Failed meshes: 0' in table and 'airplane' in table

  # A rerun finds every output complete and redoes nothing.
  stamps = [os.path.getmtime(p) for p in sheets]
  rerun = _job(tmp_path)
  assert all(stage.is_complete(rerun) for stage in main.STAGES)
  main.run_stages(rerun)
  assert [os.path.getmtime(p) for p in sheets] == stamps

  # A missing sheet makes its stage incomplete again.
  os.remove(sheets[3])
  assert not main.STAGES[1].is_complete(_job(tmp_path))

  # --force rebuilds the data set and rewrites every sheet.
  info = os.path.join(job.builder().data_dir, 'dataset_info.json')
  built = os.path.getmtime(info)
  main.run_stages(_job(tmp_path, force=True))
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
  with pytest.raises(ValueError, match='teacher'):
    main.run_stages(_job(tmp_path), ['dataset', 'teacher'])


def test_command_line_end_to_end(tmp_path):
  output_dir = tmp_path / 'out'
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  result = subprocess.run(
      [sys.executable, 'main.py', f'--output_dir={output_dir}', '--instances_per_category=2',
       '--views_per_instance=1', '--bandwidth=8', '--image_size=16', '--sheet_instances=1'],
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
