"""ResNet v2 pieces (pre-activation) in Keras 3, with pluggable padding.

Semantics follow TensorFlow's official/resnet/resnet_model.py (v2 building blocks):
- batch norm with epsilon 1e-5, applied before each convolution (pre-activation); its momentum is
  0.99 rather than the official 0.997 (see BATCH_NORM_MOMENTUM);
- convolutions without bias, variance-scaling (fan-in, truncated normal) initialisation;
- "fixed padding": a kernel of size k is padded by (k - 1) // 2 before and the rest after,
  independently of the input size;
- the stride sits in the first block of a stage, whose shortcut is a 1x1 projection of the
  pre-activated input.

Two changes: the padding is explicit for every stride (official/resnet pads only strided
convolutions through its `fixed_padding` and uses zero 'SAME' padding for stride 1; the gist
machc/spherical_embeddings monkeypatches `fixed_padding` with reflect / circular padding and its
README mentions "minor patches" that it does not show, so which convolutions it padded is not
verifiable: docs/deviations.md), and its mode is pluggable:
- 'reflect': numpy's reflect mode on both axes, for images;
- 'spherical': circular along columns (longitude wraps around) and reflect along rows (colatitude),
  for maps `[N, 2B, 2B, C]` on the Driscoll-Healy grid;
- 'zero': zeros, as official/resnet's stride-1 'SAME' convolutions.
Decoders upsample with transposed convolutions padded the same way (`Conv2DTransposeFixedPadding`).
Everything is channels-last.
"""
import keras
import tensorflow as tf

PADDING_MODES = ('reflect', 'spherical', 'zero')
# The official model's 0.997 averages the moving statistics over ~330 steps, tuned for runs of
# 100k+ steps. Our students train for a few thousand steps while their weights still move fast, so
# the inference-mode statistics lagged the weights: overfitting 64 images, inference-mode error
# was 2-3x the training-mode error after 400-900 steps (normalised MSE 1.3-2.0 vs 0.55-0.77),
# worse than predicting the mean map. 0.99 (~100 steps, the Keras default) keeps them in step.
BATCH_NORM_MOMENTUM = 0.99
BATCH_NORM_EPSILON = 1e-5
# official/resnet's _BATCH_NORM_DECAY, which the gist's students use (recipe 'original').
OFFICIAL_BATCH_NORM_MOMENTUM = 0.997


def _check_mode(mode):
  if mode not in PADDING_MODES:
    raise ValueError(f'padding mode must be one of {PADDING_MODES}, got {mode!r}')


def _fixed_pads(kernel_size):
  """(before, after) padding of a kernel of `kernel_size` taps: centred, extra tap after."""
  total = kernel_size - 1
  return total // 2, total - total // 2


def pad_2d(x, rows, cols, mode):
  """Pads `x` `[N, H, W, C]` by `rows = (top, bottom)` and `cols = (left, right)` in `mode`.

  'reflect' mirrors about the edge sample (numpy 'reflect': the edge is not repeated), so each pad
  must be smaller than the size of its axis; 'spherical' wraps columns around (needs pads <= W) and
  reflects rows; 'zero' pads with zeros.
  """
  _check_mode(mode)
  (top, bottom), (left, right) = rows, cols
  if mode == 'zero':
    return tf.pad(x, [[0, 0], [top, bottom], [left, right], [0, 0]])
  height, width = x.shape[1], x.shape[2]
  if height is not None and max(top, bottom) >= height:
    raise ValueError(f'reflect padding of {max(top, bottom)} rows needs more than that many rows, '
                     f'got an input of shape {x.shape}')
  x = tf.pad(x, [[0, 0], [top, bottom], [0, 0], [0, 0]], mode='REFLECT')
  if mode == 'reflect':
    if width is not None and max(left, right) >= width:
      raise ValueError(f'reflect padding of {max(left, right)} columns needs more than that many '
                       f'columns, got an input of shape {x.shape}')
    return tf.pad(x, [[0, 0], [0, 0], [left, right], [0, 0]], mode='REFLECT')
  if width is not None and max(left, right) > width:
    raise ValueError(f'circular padding of {max(left, right)} columns needs at least that many '
                     f'columns, got an input of shape {x.shape}')
  parts = [x[:, :, x.shape[2] - left:]] if left else []
  parts.append(x)
  if right:
    parts.append(x[:, :, :right])
  return tf.concat(parts, axis=2)


def variance_scaling():
  return keras.initializers.VarianceScaling(scale=1.0, mode='fan_in',
                                            distribution='truncated_normal')


def batch_norm(name=None, synchronized=True, momentum=BATCH_NORM_MOMENTUM):
  """Batch norm with the official ResNet's epsilon and `momentum` (ours by default).

  `synchronized=True` computes batch statistics over the global batch under a distribution
  strategy, so training does not depend on how a batch is split across replicas.
  """
  return keras.layers.BatchNormalization(momentum=momentum, epsilon=BATCH_NORM_EPSILON,
                                         synchronized=synchronized, name=name)


@keras.saving.register_keras_serializable(package='resnet_v2')
class Conv2DFixedPadding(keras.layers.Layer):
  """Convolution with explicit fixed padding in `padding_mode`, then a VALID convolution.

  Input `[N, H, W, C]` -> `[N, ceil(H / s), ceil(W / s), filters]` for stride s (H, W multiples
  of s in this project). No bias by default (batch norm follows in ResNets). Output pixel i sees
  input pixels `s i - before .. s i + after`.
  """

  def __init__(self, filters, kernel_size, strides=1, padding_mode='reflect', use_bias=False,
               **kwargs):
    super().__init__(**kwargs)
    _check_mode(padding_mode)
    self.filters, self.kernel_size, self.strides = filters, kernel_size, strides
    self.padding_mode, self.use_bias = padding_mode, use_bias
    self.conv = keras.layers.Conv2D(filters, kernel_size, strides=strides, padding='valid',
                                    use_bias=use_bias, kernel_initializer=variance_scaling(),
                                    name='conv')

  def build(self, input_shape):
    pads = _fixed_pads(self.kernel_size)
    shape = list(input_shape)
    shape[1] += sum(pads)
    shape[2] += sum(pads)
    self.conv.build(tuple(shape))

  def call(self, x):
    pads = _fixed_pads(self.kernel_size)
    return self.conv(pad_2d(x, pads, pads, self.padding_mode))

  def get_config(self):
    return dict(super().get_config(), filters=self.filters, kernel_size=self.kernel_size,
                strides=self.strides, padding_mode=self.padding_mode, use_bias=self.use_bias)


def _transposed_kernel_init(shape, dtype=None):
  """Variance scaling of the forward convolution (fan-in k * k * in) for a transposed kernel
  `[k, k, out, in]`."""
  k1, k2, out_channels, in_channels = shape
  kernel = variance_scaling()((k1, k2, in_channels, out_channels), dtype=dtype)
  return tf.transpose(kernel, [0, 1, 3, 2])


@keras.saving.register_keras_serializable(package='resnet_v2')
class Conv2DTransposeFixedPadding(keras.layers.Layer):
  """Transposed convolution (upsampling by `strides`) whose borders follow `padding_mode`.

  Input `[N, H, W, C]` -> `[N, s H, s W, filters]`. It is the transpose of `Conv2DFixedPadding`
  with the same kernel size and stride: output pixel o receives input pixel i with tap
  `o - s i + before`. The input is first padded by `p = max(before, after)` pixels in
  `padding_mode` (extending the input signal beyond its domain: periodically in longitude for
  'spherical'), then transposed-convolved with VALID padding, then cropped to `s H x s W`. With
  'spherical' padding it is exactly the periodic transposed convolution along columns: rolling
  the input by one column rolls the output by `s` columns.
  """

  def __init__(self, filters, kernel_size, strides=2, padding_mode='spherical', **kwargs):
    super().__init__(**kwargs)
    _check_mode(padding_mode)
    self.filters, self.kernel_size, self.strides = filters, kernel_size, strides
    self.padding_mode = padding_mode
    self.kernel = None

  def build(self, input_shape):
    channels = input_shape[-1]
    self.kernel = self.add_weight(
        name='kernel', shape=(self.kernel_size, self.kernel_size, self.filters, channels),
        initializer=_transposed_kernel_init, trainable=True)

  def call(self, x):
    s, k = self.strides, self.kernel_size
    before, after = _fixed_pads(k)
    p = max(before, after)
    xp = pad_2d(x, (p, p), (p, p), self.padding_mode)
    n = tf.shape(x)[0]
    height, width = x.shape[1], x.shape[2]
    # The largest VALID output size for this input: it ends at least s * p + before rows past s H.
    full_h, full_w = (height + 2 * p) * s + k - 1, (width + 2 * p) * s + k - 1
    y = tf.nn.conv2d_transpose(xp, tf.cast(self.kernel, x.dtype),
                               tf.stack([n, full_h, full_w, self.filters]), strides=s,
                               padding='VALID')
    off = s * p + before
    return y[:, off:off + s * height, off:off + s * width, :]

  def compute_output_shape(self, input_shape):
    n, h, w, _ = input_shape
    return (n, h * self.strides, w * self.strides, self.filters)

  def get_config(self):
    return dict(super().get_config(), filters=self.filters, kernel_size=self.kernel_size,
                strides=self.strides, padding_mode=self.padding_mode)


def conv_fixed_padding(filters, kernel_size, strides, padding_mode, transpose=False, name=None):
  """A `Conv2DFixedPadding` (downsampling by `strides`) or, with `transpose`, a
  `Conv2DTransposeFixedPadding` (upsampling by `strides`; stride 1 is a plain convolution)."""
  if transpose and strides > 1:
    return Conv2DTransposeFixedPadding(filters, kernel_size, strides, padding_mode, name=name)
  return Conv2DFixedPadding(filters, kernel_size, strides, padding_mode, name=name)


def building_block_v2(x, filters, strides, padding_mode, projection=False, transpose=False,
                      name='block', bn_momentum=BATCH_NORM_MOMENTUM):
  """Pre-activation basic block: BN-ReLU-conv3x3(stride)-BN-ReLU-conv3x3, plus the shortcut.

  The shortcut is the identity, or with `projection` a 1x1 convolution of the pre-activated input
  with the block's stride (needed when the stride or the channel count changes). With `transpose`
  the strided convolutions upsample instead of downsample. `bn_momentum`: of both batch norms.
  Functional: `x` is a Keras tensor.
  """
  shortcut = x
  x = batch_norm(name=f'{name}_bn1', momentum=bn_momentum)(x)
  x = keras.layers.ReLU(name=f'{name}_relu1')(x)
  if projection:
    shortcut = conv_fixed_padding(filters, 1, strides, padding_mode, transpose,
                                  name=f'{name}_projection')(x)
  x = conv_fixed_padding(filters, 3, strides, padding_mode, transpose, name=f'{name}_conv1')(x)
  x = batch_norm(name=f'{name}_bn2', momentum=bn_momentum)(x)
  x = keras.layers.ReLU(name=f'{name}_relu2')(x)
  x = conv_fixed_padding(filters, 3, 1, padding_mode, name=f'{name}_conv2')(x)
  return keras.layers.Add(name=f'{name}_add')([x, shortcut])


def block_layer(x, filters, num_blocks, strides, padding_mode, transpose=False, name='stage',
                bn_momentum=BATCH_NORM_MOMENTUM):
  """A stage of `num_blocks` v2 blocks; the first has the stride and a projection shortcut
  (always, as in the official model)."""
  x = building_block_v2(x, filters, strides, padding_mode, projection=True, transpose=transpose,
                        name=f'{name}_block0', bn_momentum=bn_momentum)
  for i in range(1, num_blocks):
    x = building_block_v2(x, filters, 1, padding_mode, name=f'{name}_block{i}',
                          bn_momentum=bn_momentum)
  return x
