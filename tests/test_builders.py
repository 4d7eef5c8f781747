"""Mesh sources and the TFDS builder: instance splits, reproducible builds, bad meshes skipped."""
import os
import pickle

import numpy as np
import pytest
import tensorflow_datasets as tfds

from datasets import builders
from datasets import procedural
from datasets import raycast
from datasets import sources

TINY = dict(categories=('chair', 'mug'), instances_per_category=3, views_per_instance=2,
            bandwidth=8, image_size=16)


def _write_mesh(path, category='chair', seed=0):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  procedural.generate_shape(category, seed).export(str(path))


def _read_all(dataset):
  return sorted(tfds.as_numpy(dataset), key=lambda e: (e['instance'], e['view']))


# --------------------------------------------------------------------------------------------
# Sources


def test_procedural_records_split_by_instance():
  records = sources.procedural_records(5, ['mug', 'car'], test_fraction=0.2)
  assert len(records) == 10 and len({r.instance for r in records}) == 10
  test = {r.instance for r in records if r.split == 'test'}
  assert test == {'car/0004', 'mug/0004'}
  assert records[0].load().vertices.shape == procedural.generate_shape('car', 0).vertices.shape
  # Records travel to worker processes (a Beam build): they must pickle.
  np.testing.assert_array_equal(pickle.loads(pickle.dumps(records[1])).load().faces,
                                records[1].load().faces)


def test_hash_split_is_stable_and_close_to_the_fraction():
  keys = [f'chair/chair_{i:04d}.off' for i in range(2000)]
  splits = [sources.hash_split(k, 0.2) for k in keys]
  assert splits == [sources.hash_split(k, 0.2) for k in keys]
  assert 0.17 < splits.count('test') / len(keys) < 0.23
  assert all(sources.hash_split(k, 0.0) == 'train' for k in keys[:50])


def test_folder_records_modelnet_and_flat_layouts(tmp_path):
  _write_mesh(tmp_path / 'chair' / 'train' / 'chair_0001.off', 'chair', 0)
  _write_mesh(tmp_path / 'chair' / 'test' / 'chair_0002.obj', 'chair', 1)
  for i in range(6):
    _write_mesh(tmp_path / 'mug' / f'mug_{i}.off', 'mug', i)
  (tmp_path / 'mug' / 'notes.txt').write_text('not a mesh')
  (tmp_path / 'empty').mkdir()
  assert sources.folder_categories(str(tmp_path)) == ['chair', 'mug']
  records = sources.folder_records(str(tmp_path), test_fraction=0.5)
  by_id = {r.instance: r for r in records}
  assert sorted(by_id) == ['chair/test/chair_0002', 'chair/train/chair_0001'] + [
      f'mug/mug_{i}' for i in range(6)]
  assert by_id['chair/train/chair_0001'].split == 'train'
  assert by_id['chair/test/chair_0002'].split == 'test'
  for i in range(6):
    assert by_id[f'mug/mug_{i}'].split == sources.hash_split(f'mug/mug_{i}.off', 0.5)
  assert by_id['mug/mug_3'].label == 'mug'
  np.testing.assert_allclose(np.linalg.norm(by_id['mug/mug_3'].load().vertices, axis=1).max(), 1)
  with pytest.raises(ValueError, match='sofa'):
    sources.folder_records(str(tmp_path), categories=['sofa'])
  with pytest.raises(ValueError, match='no_such_dir'):
    sources.folder_records(str(tmp_path / 'no_such_dir'))


def test_folder_records_on_the_shared_meshes(shared_meshes_dir):
  counts = {}
  for name in ('psb', 'modelnet'):
    records = sources.folder_records(str(shared_meshes_dir / name))
    assert len({r.instance for r in records}) == len(records)
    assert {r.split for r in records} == {'train', 'test'}
    counts[name] = len(records)
    assert all(os.path.isfile(r.mesh) for r in records)
  assert counts == {'psb': 57, 'modelnet': 13}  # the numbers in shared/data/meshes/README.md
  assert sources.folder_categories(str(shared_meshes_dir / 'modelnet')) == [
      'airplane', 'bathtub', 'bed', 'chair']


def test_shapenet_records_on_a_fake_tree(tmp_path):
  for synset, category in (('03001627', 'chair'), ('02691156', 'airplane')):
    for i in range(3):
      _write_mesh(tmp_path / synset / f'model{i}' / 'models' / 'model_normalized.obj', category, i)
  _write_mesh(tmp_path / '99999999' / 'm' / 'models' / 'model_normalized.obj')  # unknown synset
  (tmp_path / '03001627' / 'no_mesh' / 'models').mkdir(parents=True)
  records = sources.shapenet_records(str(tmp_path))
  assert [r.instance for r in records] == [f'airplane/model{i}' for i in range(3)] + [
      f'chair/model{i}' for i in range(3)]
  assert all(r.split == sources.hash_split(r.instance.split('/')[1], 0.2) for r in records)
  only_chairs = sources.shapenet_records(str(tmp_path), categories=['chair'])
  assert {r.label for r in only_chairs} == {'chair'}
  assert records[0].load().faces.shape[1] == 3
  with pytest.raises(ValueError, match='no <synset>'):
    sources.shapenet_records(str(tmp_path), categories=['sofa'])


# --------------------------------------------------------------------------------------------
# Examples of one mesh


def test_examples_for_mesh_match_single_rotation_ray_casting():
  config = builders.make_config(**TINY)
  record = sources.procedural_records(3, ['mug'])[1]
  examples = builders.examples_for_mesh(record, config)
  assert [k for k, _ in examples] == ['mug/0001/000', 'mug/0001/001']
  mesh = record.load()
  for view, (_, example) in enumerate(examples):
    r = example['rotation']
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-5)
    assert np.linalg.det(r) > 0
    # The batched fast path equals the one-rotation wrappers at the example's rotation.
    np.testing.assert_allclose(example['sphere'], raycast.mesh_to_sphere(
        mesh, r, bandwidth=8, oversample=config.sphere_oversample), atol=1e-6)
    np.testing.assert_allclose(example['image'], raycast.render_view(mesh, r, size=16), atol=1e-6)
    assert example['view'] == view and example['instance'] == 'mug/0001'
  # Rotations depend on the instance id only: the same with another record list, not the same
  # for another instance.
  again = builders.examples_for_mesh(sources.procedural_records(2, ['mug'])[1], config)
  np.testing.assert_array_equal(again[0][1]['rotation'], examples[0][1]['rotation'])
  other = builders.examples_for_mesh(sources.procedural_records(3, ['mug'])[0], config)
  assert not np.allclose(other[0][1]['rotation'], examples[0][1]['rotation'])


def test_make_config_names_and_validation(tmp_path):
  assert builders.make_config().name == 'procedural_b32_s64_v8_n20'
  # Anti-aliased spheres by default (builder 1.1.0), under the same names; point samples differ.
  assert builders.make_config().sphere_oversample == 2
  assert builders.make_config(sphere_oversample=1).name.startswith('procedural_b32_s64_v8_n20_')
  with pytest.raises(ValueError, match='sphere_oversample'):
    builders.make_config(sphere_oversample=0)
  assert builders.make_config(**TINY).name != builders.make_config(
      **dict(TINY, categories=('car', 'mug'))).name
  with pytest.raises(ValueError, match='bandwidth'):
    builders.make_config(bandwidth=0)
  with pytest.raises(ValueError, match='spaceship'):
    builders.make_config(categories=['spaceship'])
  with pytest.raises(ValueError, match='nowhere'):
    builders.make_config(source='folder', mesh_dir=str(tmp_path / 'nowhere'))
  with pytest.raises(ValueError, match='manual dir'):
    builders.make_config(source='folder')


# --------------------------------------------------------------------------------------------
# Builds


def test_tiny_procedural_build_reads_back_with_tfds_load(tmp_path):
  data_dir = str(tmp_path / 'data')
  with pytest.raises(FileNotFoundError, match='data'):
    builders.load_split('train', data_dir, **TINY)
  builder = builders.make_builder(data_dir, **TINY)
  builder.download_and_prepare(download_dir=str(tmp_path / 'downloads'),
                               download_config=tfds.download.DownloadConfig())
  name = f'equivariant_shapes/{builder.builder_config.name}'
  splits = {s: _read_all(tfds.load(name, split=s, data_dir=data_dir)) for s in ('train', 'test')}
  assert len(splits['train']) == 2 * 2 * 2 and len(splits['test']) == 2 * 1 * 2
  example = splits['train'][0]
  assert example['image'].shape == (16, 16, 1) and example['image'].dtype == np.float32
  assert 0.0 <= example['image'].min() and example['image'].max() <= 1.0
  assert example['sphere'].shape == (16, 16, 2) and example['sphere'].dtype == np.float32
  assert example['rotation'].shape == (3, 3) and example['rotation'].dtype == np.float32
  assert example['label'].dtype == np.int64 and example['view'].dtype == np.int64
  assert isinstance(example['instance'], bytes)
  instances = {s: {e['instance'] for e in v} for s, v in splits.items()}
  assert not instances['train'] & instances['test']
  assert instances['test'] == {b'chair/0002', b'mug/0002'}
  assert builder.info.features['label'].names == ['chair', 'mug']
  summary = builders.build_summary(builder)
  assert summary['train']['examples_per_label'] == {'chair': 4, 'mug': 4}
  assert summary['train']['failures'] == []

  # load_split reads the same examples; a second build elsewhere gives identical data.
  loaded = _read_all(builders.load_split('test', data_dir, **TINY))
  np.testing.assert_array_equal(loaded[0]['sphere'], splits['test'][0]['sphere'])
  other_dir = str(tmp_path / 'again')
  builders.make_builder(other_dir, **TINY).download_and_prepare()
  rebuilt = _read_all(builders.load_split('train', other_dir, **TINY))
  for a, b in zip(rebuilt, splits['train']):
    for key in ('image', 'sphere', 'rotation', 'instance', 'view', 'label'):
      np.testing.assert_array_equal(a[key], b[key])


def test_bad_mesh_is_skipped_and_counted_in_a_manual_dir_build(tmp_path):
  mesh_dir = tmp_path / 'meshes'
  _write_mesh(mesh_dir / 'chair' / 'train' / 'chair_0001.off', 'chair', 0)
  _write_mesh(mesh_dir / 'chair' / 'test' / 'chair_0002.off', 'chair', 1)
  _write_mesh(mesh_dir / 'mug' / 'train' / 'mug_0001.off', 'mug', 0)
  (mesh_dir / 'mug' / 'train' / 'broken.off').write_text('OFF\n3 1 0\n0 0 0\n')  # truncated
  data_dir = str(tmp_path / 'data')
  settings = dict(source='folder', categories=['chair', 'mug'], views_per_instance=2,
                  bandwidth=8, image_size=16)
  builder = builders.make_builder(data_dir, **settings)
  builder.download_and_prepare(
      download_dir=str(tmp_path / 'downloads'),
      download_config=tfds.download.DownloadConfig(manual_dir=str(mesh_dir)))
  summary = builders.build_summary(builder)
  assert [f['instance'] for f in summary['train']['failures']] == ['mug/train/broken']
  assert 'broken.off' in summary['train']['failures'][0]['origin']
  assert summary['train']['instances'] == 2 and summary['test']['instances'] == 1
  train = _read_all(builders.load_split('train', data_dir, **settings))
  assert {e['instance'] for e in train} == {b'chair/train/chair_0001', b'mug/train/mug_0001'}


# --------------------------------------------------------------------------------------------
# test_per_category: exactly K test instances of each category


def _test_instances_per_label(records):
  per_label = {}
  for record in records:
    per_label.setdefault(record.label, {'train': 0, 'test': 0})[record.split] += 1
  return per_label


def test_per_category_test_takes_the_smallest_hashes_and_is_stable():
  keys = [f'cup/cup_{i}.off' for i in range(7)]
  # Reference: the sha256 digests themselves, compared as 8-byte little-endian integers.
  import hashlib  # pylint: disable=import-outside-toplevel
  by_digest = sorted(keys, key=lambda k: int.from_bytes(
      hashlib.sha256(k.encode()).digest()[:8], 'little'))
  assert sources.per_category_test(keys, 2, 'cup') == set(by_digest[:2])
  # Adding a key with a larger hash keeps the choice; adding one with a smaller hash takes over
  # one place and keeps the other.
  larger = next(f'cup/new_{i}.off' for i in range(100)
                if sources.hash_key(f'cup/new_{i}.off') > sources.hash_key(by_digest[1]))
  assert sources.per_category_test(keys + [larger], 2, 'cup') == set(by_digest[:2])
  smaller = next(f'cup/new_{i}.off' for i in range(1000)
                 if sources.hash_key(f'cup/new_{i}.off') < sources.hash_key(by_digest[0]))
  assert sources.per_category_test(keys + [smaller], 2, 'cup') == {smaller, by_digest[0]}
  with pytest.raises(ValueError, match='cup has 2'):
    sources.per_category_test(keys[:2], 2, 'cup')
  for bad in (0, -1, 1.5, True):
    with pytest.raises(ValueError, match='test_per_category'):
      sources.per_category_test(keys, bad, 'cup')


def test_folder_records_test_per_category(tmp_path):
  for category, count in (('mug', 4), ('car', 3)):
    for i in range(count):
      _write_mesh(tmp_path / category / f'{category}_{i}.off', category, i)
  _write_mesh(tmp_path / 'chair' / 'train' / 'chair_0001.off', 'chair', 0)  # ModelNet layout
  _write_mesh(tmp_path / 'chair' / 'train' / 'chair_0002.off', 'chair', 1)
  records = sources.folder_records(str(tmp_path), test_per_category=1)
  assert _test_instances_per_label(records) == {
      'car': {'train': 2, 'test': 1}, 'mug': {'train': 3, 'test': 1},
      'chair': {'train': 2, 'test': 0}}  # split folders keep their split
  mug_test = [r.instance for r in records if r.label == 'mug' and r.split == 'test']
  assert mug_test == [os.path.splitext(k)[0] for k in sources.per_category_test(
      [f'mug/mug_{i}.off' for i in range(4)], 1, 'mug')]
  # Files added to another category never move an instance of this one.
  _write_mesh(tmp_path / 'car' / 'car_9.off', 'car', 9)
  again = sources.folder_records(str(tmp_path), test_per_category=1)
  assert [r.instance for r in again if r.label == 'mug' and r.split == 'test'] == mug_test
  with pytest.raises(ValueError, match="'car' of mesh folder"):
    sources.folder_records(str(tmp_path), test_per_category=4)


def test_folder_records_test_per_category_on_psb(shared_meshes_dir):
  """Train on two instances of each class, test on the third."""
  records = sources.folder_records(str(shared_meshes_dir / 'psb'), test_per_category=1)
  per_label = _test_instances_per_label(records)
  assert len(per_label) == 19
  assert all(counts == {'train': 2, 'test': 1} for counts in per_label.values()), per_label


def test_procedural_and_shapenet_test_per_category(tmp_path):
  records = sources.procedural_records(5, ['mug', 'car'], test_per_category=2)
  assert {r.instance for r in records if r.split == 'test'} == {
      'car/0003', 'car/0004', 'mug/0003', 'mug/0004'}
  with pytest.raises(ValueError, match='instances_per_category'):
    sources.procedural_records(2, ['mug'], test_per_category=2)
  for synset, category in (('03001627', 'chair'), ('02691156', 'airplane')):
    for i in range(4):
      _write_mesh(tmp_path / synset / f'm{i}' / 'models' / 'model_normalized.obj', category, i)
  records = sources.shapenet_records(str(tmp_path), test_per_category=1)
  assert _test_instances_per_label(records) == {'airplane': {'train': 3, 'test': 1},
                                                'chair': {'train': 3, 'test': 1}}
  chair_test = [r.instance for r in records if r.label == 'chair' and r.split == 'test']
  assert chair_test == ['chair/' + m for m in sources.per_category_test(
      [f'm{i}' for i in range(4)], 1, 'chair')]


def test_make_config_test_per_category(tmp_path):
  plain = builders.make_config(**TINY)
  one = builders.make_config(**TINY, test_per_category=1)
  assert one.test_per_category == 1 and plain.test_per_category is None
  assert one.name != plain.name != builders.make_config(**TINY, test_per_category=2).name
  assert builders.make_config(test_per_category=None).name == 'procedural_b32_s64_v8_n20'
  with pytest.raises(ValueError, match='test_per_category'):
    builders.make_config(**TINY, test_per_category=0)
  with pytest.raises(ValueError, match='no training instance'):
    builders.make_config(**TINY, test_per_category=3)
  records = builders.mesh_records(one)
  assert _test_instances_per_label(records) == {'chair': {'train': 2, 'test': 1},
                                                'mug': {'train': 2, 'test': 1}}


def test_folder_build_with_test_per_category(tmp_path):
  mesh_dir = tmp_path / 'meshes'
  for category in ('chair', 'mug'):
    for i in range(3):
      _write_mesh(mesh_dir / category / f'{category}_{i}.off', category, i)
  settings = dict(source='folder', mesh_dir=str(mesh_dir), views_per_instance=2, bandwidth=8,
                  image_size=16, test_per_category=1)
  data_dir = str(tmp_path / 'data')
  builder = builders.make_builder(data_dir, **settings)
  builder.download_and_prepare()
  summary = builders.build_summary(builder)
  assert summary['test']['examples_per_label'] == {'chair': 2, 'mug': 2}
  assert summary['train']['examples_per_label'] == {'chair': 4, 'mug': 4}
  test = _read_all(builders.load_split('test', data_dir, **settings))
  expected = {r.instance for r in sources.folder_records(str(mesh_dir), test_per_category=1)
              if r.split == 'test'}
  assert {e['instance'].decode() for e in test} == expected


def test_main_passes_the_test_per_category_flag(tmp_path):
  from absl import app  # pylint: disable=import-outside-toplevel
  from absl.testing import flagsaver  # pylint: disable=import-outside-toplevel
  import main  # pylint: disable=import-outside-toplevel
  for i in range(2):
    _write_mesh(tmp_path / 'mug' / f'mug_{i}.off', 'mug', i)
  with flagsaver.flagsaver():
    main.FLAGS(['main.py', f'--mesh_dir={tmp_path}', '--test_per_category=1'])
    job = main.job_from_flags()
  assert job.dataset['test_per_category'] == 1
  assert job.builder().builder_config.test_per_category == 1
  with flagsaver.flagsaver():
    main.FLAGS(['main.py', '--test_per_category=0'])
    with pytest.raises(app.UsageError, match='test_per_category'):
      main.job_from_flags()


# --------------------------------------------------------------------------------------------
# Names: registered presets, DatasetInfo, and one data set spec for every command line


def test_every_presets_data_is_a_registered_config():
  from absl.testing import flagsaver  # pylint: disable=import-outside-toplevel
  import main  # pylint: disable=import-outside-toplevel
  from pipeline import presets  # pylint: disable=import-outside-toplevel
  registered = {c.name: c for c in builders.EquivariantShapes.BUILDER_CONFIGS}
  for preset in presets.PRESETS:
    with flagsaver.flagsaver():
      main.FLAGS(['main.py', f'--preset={preset}'])
      job = main.job_from_flags()
    config = builders.make_config(**job.dataset)
    assert config.name in registered, preset
    assert registered[config.name].settings() == config.settings(), preset
    # make_builder passes it by name: the builder holds the registered config itself.
    builder = builders.make_builder('/nonexistent', **job.dataset)
    assert builder.builder_config is registered[config.name]


def test_dataset_info_cites_both_papers_and_names_supervised_keys():
  info = builders.EquivariantShapes(data_dir='/nonexistent',
                                    config='procedural_b8_s16_v2_n10').info
  assert info.citation.count('@inproceedings') == 2
  assert 'Cross-Domain 3D Equivariant Image Embeddings' in info.citation and 'ICML' in info.citation
  assert 'Spherical CNNs' in info.citation and 'ECCV' in info.citation
  assert info.homepage == builders.HOMEPAGE and info.homepage.startswith('https://')
  assert 'spherical map' in info.description and len(info.description) > 300
  assert info.supervised_keys == ('image', 'sphere')


def test_data_settings_accepts_a_name_json_or_key_values():
  for name in builders.registered_names():
    settings = builders.data_settings(name)
    assert builders.dataset_name(settings) == name
    assert builders.data_settings(name.split('/')[1] + ':1.4.0') == settings
  expected = {'bandwidth': 8, 'image_size': 16}
  assert builders.data_settings('{"bandwidth": 8, "image_size": 16}') == expected
  assert builders.data_settings('bandwidth=8, image_size=16') == expected
  assert builders.data_settings(expected) == expected
  assert builders.data_settings('') == builders.data_settings(None) == {}
  tiny = builders.data_settings('equivariant_shapes/procedural_b8_s16_v2_n10')
  assert (tiny['bandwidth'], tiny['image_size'], tiny['views_per_instance'],
          tiny['instances_per_category']) == (8, 16, 2, 10)
  for bad, match in (('mnist/3.0.0', 'not a data set of this project'),
                     ('equivariant_shapes/procedural_b9', 'registered: equivariant_shapes/'),
                     ('bandwidth=8,colour=red', 'colour'), ('bandwidth', 'registered'),
                     ('{"bandwidth": 8', 'not valid JSON'), ('[1, 2]', 'no data set'),
                     ('bandwidth=0', 'bandwidth must be a positive integer')):
    with pytest.raises(ValueError, match=match):
      builders.data_settings(bad)


def test_an_unregistered_build_is_found_by_name_and_reads_as_supervised(tmp_path):
  data_dir = str(tmp_path / 'data')
  settings = dict(categories=('mug',), instances_per_category=2, views_per_instance=1,
                  bandwidth=4, image_size=8)
  builder = builders.make_builder(data_dir, **settings)
  builder.download_and_prepare()
  name = builders.dataset_name(settings)
  assert name not in builders.registered_names()
  assert builders.built_names(data_dir) == [name]
  resolved = builders.data_settings(name, data_dir)
  assert builders.make_config(**resolved).name == builder.builder_config.name
  with pytest.raises(ValueError, match=f'built there: {name}'):
    builders.data_settings('equivariant_shapes/other', data_dir)
  # Plain TFDS reads it by name, and as (image, sphere) pairs.
  image, sphere = next(iter(tfds.as_numpy(tfds.load(name, split='train', data_dir=data_dir,
                                                    as_supervised=True))))
  assert image.shape == (8, 8, 1) and sphere.shape == (8, 8, 2)
  version = builder.info.version
  ro = tfds.builder_from_directory(os.path.join(data_dir, name, str(version)))
  assert ro.info.features['sphere'].shape == (8, 8, 2)


def test_train_and_evaluate_take_the_data_set_by_name(tmp_path):
  import json  # pylint: disable=import-outside-toplevel
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  import evaluate  # pylint: disable=import-outside-toplevel
  name = 'equivariant_shapes/procedural_b8_s16_v2_n10'
  settings = builders.data_settings(name)
  evaluate.parse(['evaluate.py', f'--data_config={name}'])
  assert evaluate._data_settings(evaluate.EVAL_FLAGS) == settings
  evaluate.parse(['evaluate.py', '--data_config={"bandwidth": 8, "image_size": 16}'])
  assert evaluate._data_settings(evaluate.EVAL_FLAGS) == {'bandwidth': 8, 'image_size': 16}
  evaluate.parse(['evaluate.py', '--dataset_config=bandwidth=8,image_size=16'])  # deprecated
  assert evaluate._data_settings(evaluate.EVAL_FLAGS) == {'bandwidth': 8, 'image_size': 16}
  evaluate.parse(['evaluate.py', '--dataset_config=bandwidth=8', f'--data_config={name}'])
  with pytest.raises(evaluate.app.UsageError, match='not both'):
    evaluate._data_settings(evaluate.EVAL_FLAGS)
  evaluate.parse(['evaluate.py', '--data_config=equivariant_shapes/nope'])
  with pytest.raises(evaluate.app.UsageError, match='--data_config: no data set'):
    evaluate._data_settings(evaluate.EVAL_FLAGS)
  # train.py defines flags that clash with main.py's in one process: ask a fresh one.
  script = ('import json, train\n'
            f'print(train.resolve_data_config({name!r}, None))\n'
            'print(train.resolve_data_config("bandwidth=8,image_size=16", None))\n'
            'print(train.resolve_data_config(\'{"bandwidth": 8}\', None))\n')
  done = subprocess.run([sys.executable, '-c', script], cwd=os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))), capture_output=True, text=True, timeout=120)
  assert done.returncode == 0, done.stderr[-2000:]
  lines = done.stdout.strip().splitlines()[-3:]
  assert json.loads(lines[0]) == settings
  assert json.loads(lines[1]) == {'bandwidth': 8, 'image_size': 16}
  assert lines[2] == '{"bandwidth": 8}'


def test_build_program_takes_a_config_name(tmp_path):
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  done = subprocess.run([sys.executable, '-m', 'datasets.build', f'--data_dir={tmp_path}',
                         '--config=equivariant_shapes/procedural_b8_s16_v2_n11'], cwd=root,
                        capture_output=True, text=True, timeout=300)
  assert done.returncode != 0
  assert ('--config: no data set equivariant_shapes/procedural_b8_s16_v2_n11'
          in done.stderr.splitlines()[-1])
