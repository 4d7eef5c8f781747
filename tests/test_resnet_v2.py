"""ResNet v2 pieces: padding modes, fixed-padding convolutions and their transposes, v2 blocks."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from models import resnet_v2

RNG = np.random.default_rng(0)


def _random(*shape):
  return RNG.normal(size=shape).astype(np.float32)


def _numpy_pad(x, rows, cols, mode):
  if mode == 'zero':
    return np.pad(x, [(0, 0), rows, cols, (0, 0)])
  x = np.pad(x, [(0, 0), rows, (0, 0), (0, 0)], mode='reflect')
  return np.pad(x, [(0, 0), (0, 0), cols, (0, 0)], mode='reflect' if mode == 'reflect' else 'wrap')


def _numpy_conv(x, kernel, stride, before):
  """Brute force: out[n, i, j, o] = sum x[n, s i + a - before, s j + b - before, c] k[a, b, c, o],
  `x` already padded by `before` at the top/left."""
  n, h, w, _ = x.shape
  k = kernel.shape[0]
  out_h, out_w = (h - k) // stride + 1, (w - k) // stride + 1
  out = np.zeros((n, out_h, out_w, kernel.shape[-1]), np.float64)
  for i in range(out_h):
    for j in range(out_w):
      patch = x[:, stride * i:stride * i + k, stride * j:stride * j + k, :]
      out[:, i, j] = np.einsum('nabc,abco->no', patch, kernel)
  return out


@pytest.mark.parametrize('mode', resnet_v2.PADDING_MODES)
@pytest.mark.parametrize('rows,cols', [((1, 1), (1, 1)), ((3, 3), (3, 3)), ((0, 2), (2, 0))])
def test_pad_matches_numpy(mode, rows, cols):
  x = _random(2, 5, 6, 3)
  np.testing.assert_array_equal(resnet_v2.pad_2d(tf.constant(x), rows, cols, mode).numpy(),
                                _numpy_pad(x, rows, cols, mode))


def test_spherical_padding_wraps_longitude_exactly():
  x = _random(1, 4, 8, 2)
  padded = resnet_v2.pad_2d(tf.constant(x), (1, 1), (2, 3), 'spherical').numpy()
  np.testing.assert_array_equal(padded[:, 1:-1, :2], x[:, :, -2:])   # left = the last columns
  np.testing.assert_array_equal(padded[:, 1:-1, -3:], x[:, :, :3])   # right = the first ones
  np.testing.assert_array_equal(padded[:, 0, 2:-3], x[:, 1])         # rows reflect


def test_padding_larger_than_the_map_is_refused():
  with pytest.raises(ValueError, match='reflect padding'):
    resnet_v2.pad_2d(tf.zeros([1, 3, 8, 1]), (3, 3), (0, 0), 'spherical')
  with pytest.raises(ValueError, match='padding mode'):
    resnet_v2.pad_2d(tf.zeros([1, 3, 8, 1]), (1, 1), (1, 1), 'circular')


@pytest.mark.parametrize('mode', resnet_v2.PADDING_MODES)
@pytest.mark.parametrize('kernel_size,stride', [(3, 1), (3, 2), (7, 2), (1, 2), (4, 2)])
def test_conv_fixed_padding_matches_brute_force(mode, kernel_size, stride):
  x = _random(2, 8, 8, 3)
  layer = resnet_v2.Conv2DFixedPadding(4, kernel_size, stride, mode)
  out = layer(x).numpy()
  kernel = layer.conv.kernel.numpy()
  before = (kernel_size - 1) // 2
  padded = _numpy_pad(x, (before, kernel_size - 1 - before), (before, kernel_size - 1 - before),
                      mode)
  assert out.shape == (2, 8 // stride, 8 // stride, 4)
  np.testing.assert_allclose(out, _numpy_conv(padded, kernel, stride, before), atol=1e-4)


def test_zero_padding_stride_one_is_official_resnets_same_convolution():
  x = _random(2, 7, 7, 3)
  layer = resnet_v2.Conv2DFixedPadding(4, 3, 1, 'zero')
  out = layer(x)
  np.testing.assert_allclose(out, tf.nn.conv2d(x, layer.conv.kernel, 1, 'SAME'), atol=1e-5)


@pytest.mark.parametrize('kernel_size', [1, 3, 4])
def test_transposed_conv_is_the_adjoint_of_the_conv(kernel_size):
  """<conv(x), y> = <x, conv^T(y)> with zero padding: the transposed layer is the exact transpose."""
  x, y = _random(2, 8, 8, 3), _random(2, 4, 4, 5)
  conv = resnet_v2.Conv2DFixedPadding(5, kernel_size, 2, 'zero')
  conv_t = resnet_v2.Conv2DTransposeFixedPadding(3, kernel_size, 2, 'zero')
  conv_t.build(y.shape)
  conv_t.kernel.assign(_conv_kernel(conv, x))
  lhs = np.sum(conv(x).numpy() * y)
  rhs = np.sum(x * conv_t(y).numpy())
  assert conv_t(y).shape == (2, 8, 8, 3)
  np.testing.assert_allclose(lhs, rhs, rtol=1e-4)


def _conv_kernel(conv, x):
  conv(x)  # builds
  return conv.conv.kernel.numpy()


@pytest.mark.parametrize('kernel_size', [1, 3])
def test_spherical_transposed_conv_is_periodic_in_longitude(kernel_size):
  """Rolling the input by one column rolls the output by two, and the result equals an ordinary
  (zero-padded) transposed convolution of the input tiled three times along longitude."""
  layer = resnet_v2.Conv2DTransposeFixedPadding(4, kernel_size, 2, 'spherical')
  x = _random(2, 4, 8, 3)
  out = layer(x).numpy()
  np.testing.assert_allclose(layer(np.roll(x, 3, axis=2)), np.roll(out, 6, axis=2), atol=1e-5)
  zero = resnet_v2.Conv2DTransposeFixedPadding(4, kernel_size, 2, 'zero')
  zero.build(x.shape)
  zero.kernel.assign(layer.kernel)
  # Reflect padding of rows: tile rows with the reflected neighbours too, then compare the middle.
  rows = np.pad(x, [(0, 0), (1, 1), (0, 0), (0, 0)], mode='reflect')
  tiled = zero(np.concatenate([rows] * 3, axis=2)).numpy()
  np.testing.assert_allclose(out, tiled[:, 2:-2, 16:32], atol=1e-5)


def test_spherical_strided_conv_commutes_with_even_longitude_rolls():
  layer = resnet_v2.Conv2DFixedPadding(4, 3, 2, 'spherical')
  x = _random(1, 8, 8, 2)
  np.testing.assert_allclose(layer(np.roll(x, 2, axis=2)), np.roll(layer(x).numpy(), 1, axis=2),
                             atol=1e-5)


def test_batch_norm_constants():
  # Momentum 0.99, not the official 0.997: see BATCH_NORM_MOMENTUM.
  bn = resnet_v2.batch_norm()
  assert bn.momentum == resnet_v2.BATCH_NORM_MOMENTUM == 0.99
  assert bn.epsilon == 1e-5 and bn.center and bn.scale


@pytest.mark.parametrize('transpose,strides,out_size', [(False, 1, 8), (False, 2, 4),
                                                        (True, 2, 16)])
def test_building_block_shapes(transpose, strides, out_size):
  inputs = keras.Input((8, 8, 6))
  out = resnet_v2.block_layer(inputs, 10, 2, strides, 'spherical', transpose=transpose)
  model = keras.Model(inputs, out)
  assert model.output.shape == (None, out_size, out_size, 10)
  # The first block projects the shortcut; later ones keep the identity.
  names = [layer.name for layer in model.layers]
  assert 'stage_block0_projection' in names and 'stage_block1_projection' not in names


def test_identity_block_with_zero_residual_is_the_identity():
  """v2 block: output = input + F(BN-ReLU(input)); with F's last conv zeroed, output = input."""
  inputs = keras.Input((8, 8, 4))
  model = keras.Model(inputs, resnet_v2.building_block_v2(inputs, 4, 1, 'reflect'))
  model.get_layer('block_conv2').conv.kernel.assign(np.zeros((3, 3, 4, 4), np.float32))
  x = _random(2, 8, 8, 4)
  np.testing.assert_allclose(model(x, training=True), x, atol=1e-6)
