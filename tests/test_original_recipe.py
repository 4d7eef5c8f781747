"""Recipe 'original': each component against a hand-built reference of the original files.

The references transcribe the loops of the gist machc/spherical_embeddings (model.py, align.m) and
of spherical-cnn (layers.py `area_weights`, models.py `wap` pooling) with explicit formulas for
shapes, parameter counts and values; they share no code with the modules under test.
"""
import math

import numpy as np
import pytest
import tensorflow as tf

from evaluation import alignment
from evaluation import pairs as pairs_lib
from models import losses
from models import spherical_layers
from models import students
from models import teacher
from pipeline import presets


# Students: model.py's residual_encoder / residual_decoder, layer by layer.

def _block_layer_params(c_in, c, blocks):
  """official/resnet block_layer of v2 basic blocks: BN (gamma, beta, mean, var) + 3x3 convs
  without bias, a 1x1 projection in the first block."""
  first = 4 * c_in + 9 * c_in * c + 4 * c + 9 * c * c + c_in * c
  return first + (blocks - 1) * (4 * c + 9 * c * c + 4 * c + 9 * c * c)


def gist_reference(image_size, out_size, out_channels, initial=64, max_channels=256,
                   n_latent=1024, layers_per_block=2, in_channels=1):
  """[(group, output shape [H, W, C], parameters)] of the gist's student, from model.py's loops."""
  groups, size, c = [], image_size, in_channels
  for i in range(int(math.log2(image_size))):
    if i == 0:
      size //= 2
      groups.append(('encoder_stem', (size, size, initial), 49 * c * initial))
      c = initial
    else:
      filters = min(initial * 2**i, max_channels)
      size = size if i == 1 else size // 2
      groups.append((f'encoder_res_block{i:02d}', (size, size, filters),
                     _block_layer_params(c, filters, layers_per_block)))
      c = filters
  groups.append(('encoder_bottleneck', (1, 1, n_latent), 4 * c * n_latent + n_latent))
  c, size = n_latent, 1
  levels = int(math.log2(out_size)) - 2
  for i in range(levels):
    filters = min(initial * 2**(levels - i - 1), max_channels)
    if i == 0:  # 4x4 VALID transposed conv from 1x1, slim batch norm (no scale: beta, mean, var)
      size = 4
      groups.append(('decoder_level0', (4, 4, filters), 16 * c * filters + 3 * filters))
    else:
      groups.append((f'decoder_res_block{i:02d}', (size, size, filters),
                     _block_layer_params(c, filters, layers_per_block)))
      size *= 2
      groups.append((f'decoder_level{i}', (size, size, filters), 9 * filters * filters +
                     3 * filters))
    c = filters
  groups.append(('decoder_output', (2 * size, 2 * size, out_channels),
                 49 * c * out_channels + out_channels))
  return groups


def _model_groups(model, group_names):
  """Parameters and last output shape of the layers of `model` whose names start with each group."""
  out = {}
  for name in group_names:
    layers = [l for l in model.layers if l.name == name or l.name.startswith(name + '_')]
    assert layers, name
    out[name] = (tuple(layers[-1].output.shape[1:]), sum(l.count_params() for l in layers))
  return out


@pytest.mark.parametrize('image_size,embedding_shape,initial,max_channels,latent', [
    (32, (32, 32, 32), 16, 128, 256),    # the default preset's widths
    (16, (16, 16, 8), 8, 16, 16),        # tiny
    (64, (32, 32, 64), 64, 256, 1024),   # the paper preset under recipe 'original'
])
def test_gist_student_matches_model_py_layer_by_layer(image_size, embedding_shape, initial,
                                                      max_channels, latent):
  model = students.build_student(image_size, embedding_shape, base_channels=initial,
                                 max_channels=max_channels, n_latent=latent, architecture='gist')
  reference = gist_reference(image_size, embedding_shape[0], embedding_shape[2], initial,
                             max_channels, latent)
  got = _model_groups(model, [g for g, _, _ in reference])
  for group, shape, params in reference:
    assert got[group] == (shape, params), group
  # Nothing else has weights but the target range (2 C, not trainable); no BN-ReLU before the
  # bottleneck, a sigmoid at the end.
  total = sum(p for _, _, p in reference) + 2 * embedding_shape[2]
  assert model.count_params() == total
  assert not [l for l in model.layers if 'final_bn' in l.name]
  assert model.get_layer('decoder_sigmoid').output.shape[1:] == embedding_shape


def test_gist_decoder_batch_norms_and_biases():
  model = students.build_student(32, (16, 16, 4), base_channels=8, max_channels=32, n_latent=16,
                                 architecture='gist')
  level = model.get_layer('decoder_level1_bn')
  assert not level.scale and level.center and level.momentum == pytest.approx(0.999)
  assert level.epsilon == pytest.approx(1e-3)
  assert model.get_layer('decoder_res_block01_block0_bn1').momentum == pytest.approx(0.997)
  assert model.get_layer('encoder_res_block02_block0_bn1').momentum == pytest.approx(0.997)
  assert not model.get_layer('decoder_level1_tconv').use_bias
  assert model.get_layer('decoder_output').use_bias
  assert model.get_layer('encoder_bottleneck').use_bias


def test_gist_synthesis_model_and_bad_sizes():
  model = students.build_synthesis((16, 16, 4), 32, base_channels=8, max_channels=32, n_latent=16,
                                   architecture='gist')
  assert model.output['image'].shape[1:] == (32, 32, 1)
  with pytest.raises(ValueError, match='output size'):
    students.build_student(16, (4, 4, 3), architecture='gist')  # the gist's decoder needs 8+
  with pytest.raises(ValueError, match='architecture'):
    students.build_student(16, (8, 8, 3), architecture='resnet')


# The loss: embedding_loss with area_weights (spherical-cnn layers.py) on target and prediction.

def test_weighted_values_loss_by_hand():
  b, delta = 2, 0.1
  rng = np.random.default_rng(3)
  pred = rng.uniform(0, 1, (2, 2 * b, 2 * b, 3)).astype(np.float32)
  target = rng.uniform(0, 1, (2, 2 * b, 2 * b, 3)).astype(np.float32)
  expected = np.zeros(2)
  for n in range(2):
    total = 0.0
    for j in range(2 * b):
      weight = math.sin(math.pi * (2 * j + 1) / (4 * b))  # unnormalised, as area_weights
      for k in range(2 * b):
        for c in range(3):
          d = abs(weight * pred[n, j, k, c] - weight * target[n, j, k, c])
          total += 0.5 * d * d if d <= delta else delta * (d - 0.5 * delta)
    expected[n] = total / (2 * b * 2 * b * 3)  # tf.losses.huber_loss: the mean over elements
  got = losses.weighted_values_loss(tf.constant(pred), tf.constant(target), 'huber', delta).numpy()
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  ours = losses.map_loss(tf.constant(pred), tf.constant(target), 'huber', delta).numpy()
  assert np.all(np.abs(ours - expected) > 1e-4)  # a different loss, not a renaming


def test_weighted_values_loss_weighs_the_poles_down_quadratically():
  b = 4
  pred = np.zeros((1, 2 * b, 2 * b, 1), np.float32)
  target = np.zeros_like(pred)
  target[0, 0] = 0.05  # the row nearest the north pole, inside the quadratic zone
  got = losses.weighted_values_loss(tf.constant(pred), tf.constant(target), 'l2').numpy()[0]
  sine = math.sin(math.pi / (4 * b))
  assert got == pytest.approx((sine * 0.05) ** 2 * 2 * b / (2 * b) ** 2, rel=1e-5)


# The teacher: spherical-cnn's wap pooling and plain batch norm.

def test_weighted_average_pooling_by_hand():
  b = 4
  x = np.random.default_rng(0).normal(size=(2, 2 * b, 2 * b, 3)).astype(np.float32)
  beta = lambda j, bw: math.pi * (2 * j + 1) / (4 * bw)
  expected = np.zeros((2, b, b, 3))
  for i in range(b):
    for k in range(b):
      acc = 0.0
      for dj in (0, 1):
        for dk in (0, 1):
          acc = acc + math.sin(beta(2 * i + dj, b)) * x[:, 2 * i + dj, 2 * k + dk]
      expected[:, i, k] = acc / 4 / math.sin(beta(i, b // 2))
  got = spherical_layers.WeightedAveragePooling()(tf.constant(x)).numpy()
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_teacher_with_spherical_cnn_defaults():
  model = teacher.build_teacher(8, 2, 5, filters=(4, 4, 8, 8), pool_blocks=(3,),
                                embedding_block='block4', pooling='wap',
                                batch_norm_area_weighted=False, batch_norm_momentum=0.99)
  kinds = {type(l).__name__ for l in model.layers}
  assert 'SphericalBatchNormalization' not in kinds and 'BatchNormalization' in kinds
  assert not model.get_layer('conv3_branch0').pool  # full-bandwidth convolution, pooled after
  assert isinstance(model.get_layer('pool3_branch0'), spherical_layers.WeightedAveragePooling)
  assert model.get_layer('bn1_branch0').momentum == pytest.approx(0.99)
  assert not model.get_layer('bn1_branch0').scale
  outputs = model(tf.random.normal([2, 16, 16, 2]), training=False)
  assert outputs['block2'].shape == (2, 16, 16, 8) and outputs['block3'].shape == (2, 8, 8, 16)
  assert model.teacher_config['pooling'] == 'wap'
  assert not model.teacher_config['batch_norm_area_weighted']
  with pytest.raises(ValueError, match='pooling'):
    teacher.build_teacher(8, 2, 5, pooling='max')


# The MATLAB experiment.

def test_first_view_pairs_reproduce_align_m_rows():
  """align.m with sameinstance: row i (instance i's first view) against rows i + ninstances * j,
  j = 1 .. nrots - 1, for i = 1 .. ninstances (0-based here)."""
  ninstances, nrots = 4, 5
  instance = np.array([f'shape{i}' for j in range(nrots) for i in range(ninstances)])
  expected = [(i, i + ninstances * j) for i in range(ninstances) for j in range(1, nrots)]
  rotations = np.tile(np.eye(3), (len(instance), 1, 1))
  got = pairs_lib.make_pairs(instance, rotations, 'same', enumeration='first_view')
  assert got.tolist() == [list(p) for p in expected]
  # 'diff' (randi(ntotal)): the same first views, partners anywhere in the file, reproducibly.
  diff = pairs_lib.make_pairs(instance, rotations, 'diff', enumeration='first_view',
                              partner='random', seed=5)
  assert diff[:, 0].tolist() == [i for i, _ in expected]
  assert diff[:, 1].min() >= 0 and diff[:, 1].max() < len(instance)
  again = pairs_lib.make_pairs(instance, rotations, 'diff', enumeration='first_view',
                               partner='random', seed=5)
  assert np.array_equal(diff, again)
  labels = np.array([i % 2 for j in range(nrots) for i in range(ninstances)])
  same_class = pairs_lib.make_pairs(instance, rotations, 'diff', label=labels,
                                    enumeration='first_view', partner='same_class')
  assert np.all(labels[same_class[:, 0]] == labels[same_class[:, 1]])
  assert np.all(instance[same_class[:, 0]] != instance[same_class[:, 1]])
  with pytest.raises(ValueError, match='first_view'):
    pairs_lib.make_pairs(instance, rotations, 'diff', label=labels, partner='random')


def test_matrix_norm_is_matlabs_norm():
  m = np.zeros((1, 4, 4, 2), np.float32)
  m[0, :, :, 0] = np.diag([3.0, 4.0, 1.0, 2.0])
  m[0, :, :, 1] = 2.0  # a constant channel: norm = 2 * 4 (rank one), and the mean is kept
  out = alignment.matrix_norm_normalize(m)
  np.testing.assert_allclose(out[0, :, :, 0], np.diag([0.75, 1.0, 0.25, 0.5]), rtol=1e-6)
  np.testing.assert_allclose(out[0, :, :, 1], 0.25, rtol=1e-6)
  x = np.random.default_rng(1).normal(size=(3, 6, 6, 2)).astype(np.float32)
  y = alignment.matrix_norm_normalize(x)
  for n in range(3):
    for c in range(2):
      assert np.linalg.svd(y[n, :, :, c], compute_uv=False)[0] == pytest.approx(1.0, rel=1e-5)


def test_imresize_matrix_by_hand_and_against_tensorflow_inside():
  # MATLAB imresize([1 2 3 4], 2), first sample: u = 0.75, taps -1..2 with the cubic kernel
  # weights -3/128, 29/128, 111/128, -9/128 on the mirrored samples 2, 1, 1, 2.
  out = alignment.imresize_matrix(4, 2) @ np.array([1.0, 2.0, 3.0, 4.0])
  assert out[0] == pytest.approx(116 / 128)
  assert out[-1] == pytest.approx(5 - 116 / 128)  # the mirror image at the other end
  np.testing.assert_allclose(alignment.imresize_matrix(7, 3).sum(axis=1), 1.0)
  x = np.random.default_rng(2).normal(size=(2, 8, 8, 3)).astype(np.float32)
  ours = alignment.resize_bicubic(x, 2)
  keys = tf.image.resize(x, (16, 16), method='bicubic').numpy()  # Keys a = -0.5, no mirroring
  np.testing.assert_allclose(ours[:, 3:-3, 3:-3], keys[:, 3:-3, 3:-3], atol=1e-5)


def test_argmax_peaks_are_the_plain_grid_argmax():
  import correlation  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(4)
  maps = rng.normal(size=(4, 8, 8, 2)).astype(np.float32)
  embeddings = {'fmap': maps, 'rot': np.tile(np.eye(3, dtype=np.float32), (4, 1, 1))}
  pairs = np.array([[0, 1], [2, 3]])
  run = alignment.run_alignment(embeddings, pairs, peaks='argmax', progress=False)
  expected = correlation.align(maps[[0, 2]], maps[[1, 3]], refine=False).numpy()
  np.testing.assert_allclose(run['estimated'], expected, atol=1e-5)
  with pytest.raises(ValueError, match='peaks'):
    alignment.run_alignment(embeddings, pairs, peaks='best', progress=False)


# The recipe.

def test_recipe_original_settings_and_flags():
  ours = presets.resolve('default')
  original = presets.resolve('default', recipe='original')
  assert ours['recipe'] == 'ours' and original['recipe'] == 'original'
  for key in ('student_steps', 'bandwidth', 'image_size', 'base_channels', 'max_channels',
              'n_latent', 'instances_per_category', 'views_per_instance'):
    assert original[key] == ours[key], key  # same scale, same data
  assert original['pose_loss_weight'] == 0 and original['degree_loss_weight'] == 0
  assert original['embedder_turns'] == 1 and not original['embedder_mirror']
  assert original['odd_degree_weight'] == 1.0
  assert presets.recipe_train_flags(ours, 'student') == []
  assert presets.recipe_align_flags(ours) == []
  assert presets.recipe_train_flags(original, 'teacher') == [
      '--teacher_pooling=wap', '--teacher_batch_norm_area_weighted=false',
      '--teacher_batch_norm_momentum=0.99']
  assert '--architecture=gist' in presets.recipe_train_flags(original, 'student')
  assert '--area_weighting=values' in presets.recipe_train_flags(original, 'student')
  assert '--peaks=argmax' in presets.recipe_align_flags(original)
  paper = presets.resolve('paper', recipe='original')
  assert paper['max_channels'] == 256 and paper['teacher_batch_size'] == 16
  assert presets.resolve('paper', {'max_channels': 64}, recipe='original')['max_channels'] == 64
  with pytest.raises(ValueError, match='recipe'):
    presets.resolve('default', recipe='paper')


def test_evaluate_cli_with_the_matlab_experiments_flags(tmp_path, capsys):
  import evaluate  # pylint: disable=g-import-not-at-top
  from evaluation import commands  # pylint: disable=g-import-not-at-top
  from evaluation.embeddings_io import save_embeddings  # pylint: disable=g-import-not-at-top
  from tests.test_evaluate import analytic_embeddings  # pylint: disable=g-import-not-at-top
  data = analytic_embeddings(n_instances=3, views=4)
  path = tmp_path / 'emb.npz'
  save_embeddings(str(path), **data)
  csv = tmp_path / 'results.csv'
  code = evaluate.run(['evaluate.py', f'--embeddings={path}', '--pairs=same,diff',
                       '--mode=target', '--peaks=argmax', '--pair_enumeration=first_view',
                       '--diff_partner=random', '--upsample_method=bicubic',
                       '--normalize', '--normalize_method=matrix_norm', f'--results_csv={csv}',
                       '--progress=false'])
  assert code == 0, capsys.readouterr()
  record = np.load(commands.pairs_record_path(str(tmp_path), 'emb+norm', 'target', 'same'))
  first_rows = {f'obj{k}': 4 * k for k in range(3)}  # this file keeps an instance's views together
  expected = [(first_rows[i], first_rows[i] + v) for i in ('obj0', 'obj1', 'obj2')
              for v in range(1, 4)]
  assert record['pairs'].tolist() == [list(p) for p in expected]
  assert np.median(record['error_deg']) < 16  # the grid argmax: within a grid step (11.25 deg)
  assert len(open(csv).read().strip().splitlines()) == 3  # header, same, diff
  code = evaluate.run(['evaluate.py', f'--embeddings={path}', '--pairs=diff',
                       '--diff_partner=random', f'--results_csv={csv}', '--progress=false'])
  assert code == 1 and 'first_view' in capsys.readouterr().err
