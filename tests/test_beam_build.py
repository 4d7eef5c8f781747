"""The Apache Beam build of the data set gives the same examples as the local build.

These tests need apache_beam, an optional extra kept out of the main .venv (it pins protobuf and
pyarrow differently): they skip there and run in .venv-beam (scripts/bootstrap_beam.sh):

  .venv-beam/bin/python -m pytest -q -m beam tests
"""
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from datasets import builders
from datasets import procedural
from tests.conftest import REPO_ROOT

beam = pytest.importorskip('apache_beam')
from datasets import beam_generation  # pylint: disable=g-import-not-at-top,wrong-import-position

pytestmark = pytest.mark.beam

FEATURES = ('image', 'sphere', 'rotation', 'label', 'instance', 'view')
TINY = dict(categories=('chair', 'mug'), instances_per_category=3, views_per_instance=2,
            bandwidth=8, image_size=16)
TWO_LOCAL_WORKERS = 'runner=DirectRunner,direct_num_workers=2,direct_running_mode=multi_processing'


def _examples_by_key(builder, split):
  """{'<instance>/<view>': example} of a built split (the key of `examples_for_mesh`)."""
  examples = {}
  for example in tfds.as_numpy(builder.as_dataset(split=split)):
    key = f'{example["instance"].decode()}/{example["view"]:03d}'
    assert key not in examples, key
    examples[key] = example
  return examples


def _assert_same_examples(builder_a, builder_b):
  assert set(builder_a.info.splits) == set(builder_b.info.splits)
  for split in builder_a.info.splits:
    a, b = _examples_by_key(builder_a, split), _examples_by_key(builder_b, split)
    assert a and sorted(a) == sorted(b), split
    for key in a:
      for feature in FEATURES:
        np.testing.assert_array_equal(a[key][feature], b[key][feature], err_msg=f'{key} {feature}')
    assert builder_a.info.splits[split].num_examples == builder_b.info.splits[split].num_examples


def _without_timing(summary):
  return {split: {k: v for k, v in s.items() if k not in ('seconds', 'generated_with')}
          for split, s in summary.items()}


def test_pipeline_options_parse_the_tfds_format():
  options = beam_generation.pipeline_options(TWO_LOCAL_WORKERS + ', ').get_all_options()
  assert options['runner'] == 'DirectRunner' and options['direct_num_workers'] == 2
  assert options['direct_running_mode'] == 'multi_processing'
  with pytest.raises(ValueError, match='direct_num_workers'):
    beam_generation.pipeline_options('runner=DirectRunner,direct_num_workers')


def test_beam_build_equals_local_build_with_a_bad_mesh(tmp_path):
  mesh_dir = tmp_path / 'meshes'
  for category in ('chair', 'mug'):
    for i in range(3):
      path = mesh_dir / category / f'{category}_{i}.off'
      os.makedirs(path.parent, exist_ok=True)
      procedural.generate_shape(category, i).export(str(path))
  (mesh_dir / 'mug' / 'broken.off').write_text('OFF\n3 1 0\n0 0 0\n')  # truncated
  settings = dict(source='folder', mesh_dir=str(mesh_dir), views_per_instance=2, bandwidth=8,
                  image_size=16, test_per_category=1)
  local = builders.make_builder(str(tmp_path / 'local'), **settings)
  local.download_and_prepare()
  with_beam = builders.make_builder(str(tmp_path / 'beam'), **settings)
  with_beam.download_and_prepare(download_config=tfds.download.DownloadConfig(
      beam_runner=beam.runners.DirectRunner()))

  _assert_same_examples(local, with_beam)
  summary = builders.build_summary(with_beam)
  assert _without_timing(summary) == _without_timing(builders.build_summary(local))
  assert {s['generated_with'] for s in summary.values()} == {'beam'}
  failures = [f['instance'] for s in summary.values() for f in s['failures']]
  assert failures == ['mug/broken']
  # The workers' summary files were read into the metadata and removed.
  assert not [f for f in os.listdir(with_beam.data_dir) if f.endswith('.build_summary.json')]
  # A fresh builder reads the summary back from the built data set.
  again = builders.make_builder(str(tmp_path / 'beam'), **settings)
  assert _without_timing(builders.build_summary(again)) == _without_timing(summary)


def test_missing_beam_gives_a_clear_error(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, 'datasets.beam_generation', None)  # import fails
  builder = builders.make_builder(str(tmp_path), **TINY)
  with pytest.raises(ImportError, match=r'pip install -e "\.\[beam\]"'):
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        beam_options=beam.options.pipeline_options.PipelineOptions([])))


def _run(code_or_module_args, cwd):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  result = subprocess.run([sys.executable] + code_or_module_args, cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
  return result


def test_local_build_never_imports_beam(tmp_path):
  code = ('import sys, main\n'
          'from datasets import build\n'
          f'build.build({str(tmp_path)!r}, **{TINY!r})\n'
          "assert 'apache_beam' not in sys.modules, 'the local build imported apache_beam'\n"
          "print('no beam')\n")
  assert 'no beam' in _run(['-c', code], REPO_ROOT).stdout


@pytest.mark.slow
def test_cli_build_on_two_worker_processes_equals_local_build(tmp_path):
  flags = [f'--{k}={",".join(v) if isinstance(v, tuple) else v}' for k, v in TINY.items()]
  result = _run(['-m', 'datasets.build', f'--data_dir={tmp_path / "beam"}',
                 f'--beam_pipeline_options={TWO_LOCAL_WORKERS}'] + flags, REPO_ROOT)
  assert '(beam)' in result.stdout
  local = builders.make_builder(str(tmp_path / 'local'), **TINY)
  local.download_and_prepare()
  _assert_same_examples(local, builders.make_builder(str(tmp_path / 'beam'), **TINY))
