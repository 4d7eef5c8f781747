"""Students (image -> spherical embedding) and the synthesis model (spherical embedding -> image).

Both are residual encoder-decoders with a 1-D bottleneck, built from the ResNet v2 pieces of
`models.resnet_v2`, in one of two layouts (`ARCHITECTURES`, `architecture=` of the builders).

Layout 'gist' (recipe 'original'): the one of model.py in the gist machc/spherical_embeddings, with
`base_channels` as its `initial_channels` (64 there) and `max_channels` (256 there):
- encoder (`gist_encoder`), input `S x S`, `n = log2 S` steps: a 7x7 stride-2 stem with
  `base_channels`, then for `i = 1 .. n-1` a stage of v2 blocks with `min(base * 2^i, max)`
  channels, stride 1 for `i = 1` and 2 after (so the first stage already has twice the stem's
  channels), down to 2x2; no batch norm or ReLU after the last stage; a 2x2 VALID convolution
  with bias to the `1 x 1 x n_latent` bottleneck;
- decoder (`gist_decoder`), output `S x S`, `n = log2 S - 2` levels with
  `min(base * 2^(n-1-i), max)` channels: a 4x4 VALID stride-1 transposed convolution from 1x1
  (+ batch norm + ReLU), then per level `i >= 1` a stage of stride-1 v2 blocks followed by a
  separate 3x3 stride-2 transposed convolution (+ batch norm + ReLU), and a final linear 7x7
  stride-2 transposed convolution with bias to the output channels, then the sigmoid.
  The transposed convolutions pad as TensorFlow's 'SAME' (zeros, as slim's conv2d_transpose);
  their batch norms are slim's (no scale, epsilon 1e-3, momentum 0.999), the v2 blocks' the
  official ResNet's (momentum 0.997).

Layout 'ours' (the default):
- encoder: 7x7 stride-2 stem, then stages of v2 blocks (the first at the stem's resolution, each
  later one halving it) down to 2x2, a final BN-ReLU (pre-activation networks end with one), and a
  linear map of the 2x2 map to a `1 x 1 x n_latent` bottleneck;
- decoder: a linear map of the bottleneck to `2 x 2 x channels`, stages of v2 blocks whose first
  block upsamples by 2 with transposed convolutions, up to the output size, then BN-ReLU, a 3x3
  convolution to the output channels and a sigmoid.
Channels double at every halving of the resolution, from `base_channels` at the largest map, capped
at `max_channels`. Sizes must be powers of two (checked, with a clear error).

Padding: images are padded by reflection; spherical maps circularly in longitude and by reflection
in colatitude ('spherical' mode), because a map lives on the sphere.

Target scaling. The decoder of a student ends in a sigmoid, so its targets must lie in [0, 1]; the
teacher's embeddings do not. Every model keeps a per-channel range `[low_c, high_c]` (an
`AffineRange` layer, non-trainable weights, saved in checkpoints and exports), set once before
training from robust extremes of each channel over a sample of training targets (`fit_range`:
the 0.5th and 99.5th percentiles by default). Not the minimum and maximum: the teacher's features
are heavy-tailed (maxima about 13 standard deviations above the mean), and a min-max range packs
almost every target into a sliver near 0 (mean 0.12, std 0.06 in [0, 1]) where the sigmoid learns
slowly; clipping the rarest 1% of values gave a lower test loss in equal steps. Training
compares the sigmoid output with `clip((t - low) / (high - low), 0, 1)`;
the model also outputs its prediction mapped back to the teacher's units, `low + (high - low) y`.
The synthesis model applies the same map to its input embeddings.
"""
import keras
import numpy as np
import tensorflow as tf

from models import resnet_v2

ARCHITECTURES = ('ours', 'gist')
# slim.batch_norm's defaults, on the gist decoder's transposed convolutions.
SLIM_BATCH_NORM_MOMENTUM = 0.999
SLIM_BATCH_NORM_EPSILON = 1e-3


def check_power_of_two(value, name, minimum=1):
  """Returns `value` as int if it is a power of two >= `minimum`, else a ValueError naming `name`."""
  if int(value) != value or value < minimum or int(value) & (int(value) - 1):
    raise ValueError(f'{name} must be a power of two >= {minimum}, got {value!r}')
  return int(value)


@keras.saving.register_keras_serializable(package='students')
class AffineRange(keras.layers.Layer):
  """Per-channel affine map between a quantity's units and [0, 1], stored with the model.

  `to_unit(t) = clip((t - low) / (high - low), 0, 1)`, `from_unit(y) = low + (high - low) y`, for
  tensors `[..., C]`. Call mode `direction='to_unit'|'from_unit'`. Initially low = 0, high = 1.
  """

  def __init__(self, channels, direction='to_unit', **kwargs):
    super().__init__(**kwargs)
    if direction not in ('to_unit', 'from_unit'):
      raise ValueError(f"direction must be 'to_unit' or 'from_unit', got {direction!r}")
    self.channels, self.direction = int(channels), direction
    self.low = self.add_weight(name='low', shape=(self.channels,), initializer='zeros',
                               trainable=False)
    self.high = self.add_weight(name='high', shape=(self.channels,), initializer='ones',
                                trainable=False)

  def set_range(self, low, high):
    """Sets the range from arrays `[C]`; a channel with `high <= low` gets `high = low + 1`."""
    low = np.asarray(low, np.float32).reshape(-1)
    high = np.asarray(high, np.float32).reshape(-1)
    if low.shape != (self.channels,) or high.shape != (self.channels,):
      raise ValueError(f'range needs {self.channels} channels, got low {low.shape}, '
                       f'high {high.shape}')
    high = np.where(high > low, high, low + 1.0)
    self.low.assign(low)
    self.high.assign(high)

  def to_unit(self, t):
    low, high = tf.cast(self.low, t.dtype), tf.cast(self.high, t.dtype)
    return tf.clip_by_value((t - low) / (high - low), 0.0, 1.0)

  def from_unit(self, y):
    low, high = tf.cast(self.low, y.dtype), tf.cast(self.high, y.dtype)
    return low + (high - low) * y

  def call(self, x):
    return self.to_unit(x) if self.direction == 'to_unit' else self.from_unit(x)

  def get_config(self):
    return dict(super().get_config(), channels=self.channels, direction=self.direction)


def fit_range(targets, percentile=0.5):
  """Per-channel `(low, high)` of targets `[..., C]` -> two float32 arrays `[C]`: the
  `percentile`-th and `(100 - percentile)`-th percentiles (0: the minimum and maximum)."""
  if not 0 <= percentile < 50:
    raise ValueError(f'percentile must be in [0, 50), got {percentile!r}')
  t = np.asarray(targets, np.float32)
  t = t.reshape(-1, t.shape[-1])
  low, high = np.percentile(t, [percentile, 100 - percentile], axis=0)
  return low.astype(np.float32), high.astype(np.float32)


def _channels(size, reference_size, base_channels, max_channels):
  """Channels of a map of `size` pixels: base at `reference_size`, doubling per halving."""
  return int(min(max_channels, base_channels * max(1, reference_size // size)))


def encoder(x, padding_mode, layers_per_block=2, base_channels=64, max_channels=512,
            n_latent=1024, name='encoder'):
  """Residual encoder: `[N, S, S, C]` (S a power of two >= 4) -> bottleneck `[N, 1, 1, n_latent]`."""
  size = check_power_of_two(x.shape[1], f'{name} input size', minimum=4)
  if x.shape[2] != size:
    raise ValueError(f'{name} needs square inputs, got shape {x.shape}')
  size //= 2
  x = resnet_v2.Conv2DFixedPadding(_channels(size, size, base_channels, max_channels), 7, 2,
                                   padding_mode, name=f'{name}_stem')(x)
  reference, stage, strides = size, 0, 1
  while True:
    x = resnet_v2.block_layer(x, _channels(size, reference, base_channels, max_channels),
                              layers_per_block, strides, padding_mode,
                              name=f'{name}_stage{stage}')
    if size == 2:
      break
    size, stage, strides = size // 2, stage + 1, 2
  x = resnet_v2.batch_norm(name=f'{name}_final_bn')(x)
  x = keras.layers.ReLU(name=f'{name}_final_relu')(x)
  # The linear map to the bottleneck: a 2x2 VALID convolution is a dense layer on the 2x2 map.
  return keras.layers.Conv2D(n_latent, 2, padding='valid', name=f'{name}_bottleneck')(x)


def decoder(z, out_size, out_channels, padding_mode, layers_per_block=2, base_channels=64,
            max_channels=512, name='decoder'):
  """Residual decoder: bottleneck `[N, 1, 1, L]` -> sigmoid map `[N, out_size, out_size, C_out]`."""
  out_size = check_power_of_two(out_size, f'{name} output size', minimum=2)
  size = 2
  channels = _channels(size, out_size, base_channels, max_channels)
  x = keras.layers.Flatten(name=f'{name}_flatten')(z)
  x = keras.layers.Dense(size * size * channels, name=f'{name}_from_bottleneck')(x)
  x = keras.layers.Reshape((size, size, channels), name=f'{name}_reshape')(x)
  stage = 0
  while size < out_size:
    size *= 2
    x = resnet_v2.block_layer(x, _channels(size, out_size, base_channels, max_channels),
                              layers_per_block, 2, padding_mode, transpose=True,
                              name=f'{name}_stage{stage}')
    stage += 1
  x = resnet_v2.batch_norm(name=f'{name}_final_bn')(x)
  x = keras.layers.ReLU(name=f'{name}_final_relu')(x)
  x = resnet_v2.Conv2DFixedPadding(out_channels, 3, 1, padding_mode, use_bias=True,
                                   name=f'{name}_output')(x)
  return keras.layers.Activation('sigmoid', name=f'{name}_sigmoid')(x)


def gist_encoder(x, padding_mode, layers_per_block=2, base_channels=64, max_channels=256,
                 n_latent=1024, name='encoder'):
  """The gist's residual encoder (module docstring): `[N, S, S, C]` (S a power of two >= 4) ->
  bottleneck `[N, 1, 1, n_latent]`. Layer names: `{name}_stem`, `{name}_res_blockII`,
  `{name}_bottleneck`."""
  size = check_power_of_two(x.shape[1], f'{name} input size', minimum=4)
  if x.shape[2] != size:
    raise ValueError(f'{name} needs square inputs, got shape {x.shape}')
  for i in range(int(np.log2(size))):
    if i == 0:
      x = resnet_v2.Conv2DFixedPadding(base_channels, 7, 2, padding_mode, name=f'{name}_stem')(x)
    else:
      x = resnet_v2.block_layer(x, min(base_channels * 2**i, max_channels), layers_per_block,
                                1 if i == 1 else 2, padding_mode, name=f'{name}_res_block{i:02d}',
                                bn_momentum=resnet_v2.OFFICIAL_BATCH_NORM_MOMENTUM)
  return keras.layers.Conv2D(n_latent, 2, padding='valid', name=f'{name}_bottleneck')(x)


def _slim_transposed(x, filters, kernel_size, strides, padding, name):
  """slim.conv2d_transpose with batch norm and ReLU: no bias, 'SAME' zero padding or 'VALID'."""
  x = keras.layers.Conv2DTranspose(filters, kernel_size, strides=strides, padding=padding,
                                   use_bias=False, name=f'{name}_tconv')(x)
  x = keras.layers.BatchNormalization(momentum=SLIM_BATCH_NORM_MOMENTUM,
                                      epsilon=SLIM_BATCH_NORM_EPSILON, scale=False,
                                      name=f'{name}_bn')(x)
  return keras.layers.ReLU(name=f'{name}_relu')(x)


def gist_decoder(z, out_size, out_channels, padding_mode, layers_per_block=2, base_channels=64,
                 max_channels=256, name='decoder'):
  """The gist's residual decoder (module docstring): bottleneck `[N, 1, 1, L]` -> sigmoid map
  `[N, out_size, out_size, C_out]` (out_size a power of two >= 8). `padding_mode` pads the v2
  blocks' convolutions. Layer names: `{name}_levelI_tconv|bn|relu`, `{name}_res_blockII`,
  `{name}_output`."""
  out_size = check_power_of_two(out_size, f'{name} output size', minimum=8)
  if z.shape[1] != 1 or z.shape[2] != 1:
    raise ValueError(f'{name} needs a 1x1 bottleneck, got shape {z.shape}')
  levels = int(np.log2(out_size)) - 2
  x = z
  for i in range(levels):
    filters = min(base_channels * 2**(levels - i - 1), max_channels)
    if i == 0:
      x = _slim_transposed(x, filters, 4, 1, 'valid', f'{name}_level0')
    else:
      x = resnet_v2.block_layer(x, filters, layers_per_block, 1, padding_mode,
                                name=f'{name}_res_block{i:02d}',
                                bn_momentum=resnet_v2.OFFICIAL_BATCH_NORM_MOMENTUM)
      x = _slim_transposed(x, filters, 3, 2, 'same', f'{name}_level{i}')
  x = keras.layers.Conv2DTranspose(out_channels, 7, strides=2, padding='same', use_bias=True,
                                   name=f'{name}_output')(x)
  return keras.layers.Activation('sigmoid', name=f'{name}_sigmoid')(x)


def _layout(architecture):
  """(encoder, decoder) functions of `architecture` in ARCHITECTURES."""
  if architecture == 'ours':
    return encoder, decoder
  if architecture == 'gist':
    return gist_encoder, gist_decoder
  raise ValueError(f'--architecture must be one of {ARCHITECTURES}, got {architecture!r}')


def _check_embedding_shape(embedding_shape):
  if len(embedding_shape) != 3 or embedding_shape[0] != embedding_shape[1]:
    raise ValueError(f'embedding shape must be [2B, 2B, C], got {tuple(embedding_shape)}')
  check_power_of_two(embedding_shape[0], 'embedding size 2B', minimum=2)
  return tuple(int(s) for s in embedding_shape)


def build_student(image_size=64, embedding_shape=(32, 32, 16), image_channels=1,
                  layers_per_block=2, base_channels=64, max_channels=512, n_latent=1024,
                  architecture='ours', name='student'):
  """Student: images `[N, S, S, image_channels]` in [0, 1] -> a dict of
  `embedding_unit` (sigmoid output `[N, 2B, 2B, C]` in [0, 1]), `embedding` (the same in the
  teacher's units, through the model's `target_range` layer) and `latent` `[N, n_latent]`.

  `embedding_shape` is the teacher's embedding `[2B, 2B, C]`. Image padding is reflect, embedding
  padding spherical. `architecture`: 'ours' or 'gist' (module docstring; 'gist' needs 2B >= 8).
  """
  encode, decode = _layout(architecture)
  image_size = check_power_of_two(image_size, 'image size', minimum=4)
  height, _, channels = _check_embedding_shape(embedding_shape)
  images = keras.Input((image_size, image_size, image_channels), name='image')
  z = encode(images, 'reflect', layers_per_block, base_channels, max_channels, n_latent)
  unit = decode(z, height, channels, 'spherical', layers_per_block, base_channels, max_channels)
  teacher_units = AffineRange(channels, 'from_unit', name='target_range')(unit)
  latent = keras.layers.Flatten(name='latent')(z)
  return keras.Model(images, {'embedding_unit': unit, 'embedding': teacher_units,
                              'latent': latent}, name=name)


def build_synthesis(embedding_shape=(32, 32, 16), image_size=64, image_channels=1,
                    layers_per_block=2, base_channels=64, max_channels=512, n_latent=1024,
                    architecture='ours', name='synthesis'):
  """Synthesis: embeddings `[N, 2B, 2B, C]` in the teacher's units -> a dict of `image`
  `[N, S, S, image_channels]` in [0, 1] and `latent` `[N, n_latent]`.

  The input goes through the model's `input_range` layer (to [0, 1]) before a spherical encoder;
  the decoder pads images by reflection. 2B must be at least 4. `architecture`: 'ours' or 'gist'
  (module docstring; the gist has no synthesis model, and README.org says its models are all such
  encoder-decoders, so 'gist' uses its encoder and decoder here too).
  """
  encode, decode = _layout(architecture)
  height, _, channels = _check_embedding_shape(embedding_shape)
  check_power_of_two(height, 'embedding size 2B', minimum=4)
  image_size = check_power_of_two(image_size, 'image size', minimum=2)
  embeddings = keras.Input((height, height, channels), name='embedding')
  x = AffineRange(channels, 'to_unit', name='input_range')(embeddings)
  z = encode(x, 'spherical', layers_per_block, base_channels, max_channels, n_latent)
  image = decode(z, image_size, image_channels, 'reflect', layers_per_block, base_channels,
                 max_channels)
  latent = keras.layers.Flatten(name='latent')(z)
  return keras.Model(embeddings, {'image': image, 'latent': latent}, name=name)
