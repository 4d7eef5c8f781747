"""The spherical CNN teacher: the two-branch model of Esteves et al. (ECCV 2018) in Keras 3.

`build_teacher(bandwidth=32, in_channels=2, num_classes=K)` returns a functional `keras.Model` that
maps spherical maps `[N, 2B, 2B, C_in]` to a dict:

- `logits [N, K]`: class scores, invariant to rotations of the input;
- `descriptor [N, C]`: the area-weighted global average of the last block (rotation invariant);
- `block1` ... `block8`: the spherical feature map of every block, `[N, 2B_i, 2B_i, C_i]`, the
  channels of all branches concatenated (branch 0 first); every one is equivariant:
  `block_i(R . f) = R . block_i(f)` up to the aliasing of the nonlinearities;
- `embedding`: the default target map for the students, one of the blocks (`embedding_block`);
- `aux_logits [N, K]` (with `aux_classifier=True`): spherical-cnn's extra classifier on the last
  branch's half of the descriptor, an auxiliary loss that keeps that branch discriminative.

Architecture (every choice an option of `build_teacher`): one branch per input channel (the
ray-cast distance and the normal-derived channel see different filters); every branch has 8 blocks
of [spherical conv -> batch norm (no scale) -> PReLU] with 16, 16, 32, 32, 64, 64, 128, 128 filters
and 8 filter anchors per channel pair; blocks 3, 5 and 7 halve the bandwidth (32 -> 16 -> 8 -> 4);
at those blocks branch 0 also receives the other branches' maps (concatenated on channels) as
input. The descriptor of the concatenated last maps feeds one dense layer (no hidden fully
connected layer). So far as the spherical-cnn repository's params/model-64.txt. Two choices
differ between the repository's defaults and ours (docs/deviations.md):

- pooling: the repository pools after the block's nonlinearity with area-weighted 2x2 average
  pooling (`pooling='wap'`, its default `--pool=wap`; `--spectral_pool` is off in model-64.txt);
  ours by default truncates the spectrum inside the convolution (`pooling='spectral'`), exactly
  equivariant;
- batch norm: the repository's is plain `tf.layers.batch_normalization(scale=False)` (pixel
  statistics, momentum 0.99; `batch_norm_area_weighted=False`); ours by default weighs the
  statistics by area (`spherical_layers.SphericalBatchNormalization`), momentum 0.9.

The default embedding is `block4`: at `B=32` input a `32 x 32 x 64` map (bandwidth 16). Bandwidth 16
is the finest resolution after the first pooling, which is what relative pose needs: an SO(3)
correlation of bandwidth-16 maps has a 32^3 grid (11.25 degree steps before upsampling), where the
bandwidth-8 and -4 blocks would give 22.5 and 45 degree steps. Block 4 is the deeper of the two
bandwidth-16 blocks (more abstract features, easier for an image student to predict than
the bandwidth-32 maps that mostly copy the input geometry, and 4x cheaper to correlate).

Equivariance, measured on a teacher trained for 480 steps on the procedural default (test shapes,
three random rotations): the relative difference `|teacher(sphere(R . mesh)) - R . teacher(sphere(
mesh))|` (per-channel means removed) is 0.16 for block4 and 0.16-0.26 for every block, against ~1.44
for an unrelated rotation; the input spheres themselves differ by 0.41 (ray-cast maps are not
band-limited), the logits by 0.07 (predicted classes identical).
"""
import keras
import tensorflow as tf

from models import hub_export
from models import spherical_layers

DEFAULT_FILTERS = (16, 16, 32, 32, 64, 64, 128, 128)
DEFAULT_POOL_BLOCKS = (3, 5, 7)
DEFAULT_EMBEDDING_BLOCK = 'block4'
POOLINGS = ('spectral', 'wap')


def block_name(index):
  """Name of the `index`-th block's feature map (1-based), e.g. `block4`."""
  return f'block{index}'


def teacher_block_bandwidths(bandwidth=32, num_blocks=len(DEFAULT_FILTERS),
                             pool_blocks=DEFAULT_POOL_BLOCKS):
  """Bandwidth of every block's output map, `{block_name: B_i}`."""
  out, b = {}, int(bandwidth)
  for i in range(1, num_blocks + 1):
    if i in pool_blocks:
      b //= 2
    out[block_name(i)] = b
  return out


def build_teacher(bandwidth=32, in_channels=2, num_classes=None, *, filters=DEFAULT_FILTERS,
                  pool_blocks=DEFAULT_POOL_BLOCKS, concat_blocks=None, split_channels=True,
                  n_filter_params=8, batch_norm=True, batch_norm_momentum=0.9, aux_classifier=True,
                  embedding_block=DEFAULT_EMBEDDING_BLOCK, weight_decay=0.0, pooling='spectral',
                  batch_norm_area_weighted=True, name='teacher'):
  """Builds the spherical CNN teacher (see the module docstring).

  Args:
    bandwidth: `B` of the input maps `[N, 2B, 2B, in_channels]`; divisible by 2 per pooling block.
    in_channels: channels of the input maps.
    num_classes: number of classes (required).
    filters: output channels of every block of every branch; its length is the number of blocks.
    pool_blocks: 1-based blocks that halve the bandwidth.
    concat_blocks: 1-based blocks whose branch 0 input is the concatenation of all branches
      (default: the pooling blocks, as in spherical-cnn's model-64.txt).
    split_channels: one branch per input channel (spherical-cnn's two_branch); False: one branch.
    n_filter_params: filter anchors over the degrees per (input, output) channel pair.
    batch_norm: batch norm after every convolution (then the conv has no bias).
    batch_norm_momentum: momentum of the moving statistics used at inference. 0.9 rather than
      spherical-cnn's 0.99 (TensorFlow's default): the statistics then follow the changing
      weights within ~10 steps, where 0.99 lags ~100 steps behind, which ruins inference after short runs (measured on the procedural
      default at batch 16, test accuracy after 240 steps: 25% with 0.99, 91% with 0.9).
    aux_classifier: also output `aux_logits` from the last branch's descriptor (needs 2+ branches).
    embedding_block: the block returned as `embedding`, e.g. `block4`.
    weight_decay: L2 factor on the filter anchors (a `model.losses` term); 0 disables.
    pooling: 'spectral' (the convolution of a pooling block truncates to bandwidth B/2) or 'wap'
      (spherical-cnn's default: full-bandwidth convolution, batch norm and PReLU, then
      `spherical_layers.WeightedAveragePooling`).
    batch_norm_area_weighted: area-weighted statistics (`SphericalBatchNormalization`) or, False,
      plain Keras batch norm over pixels (spherical-cnn's).
    name: the model's name.

  Returns:
    A built functional `keras.Model` returning the dict of the module docstring.
  """
  if pooling not in POOLINGS:
    raise ValueError(f'build_teacher: pooling must be one of {POOLINGS}, got {pooling!r}')
  if num_classes is None or int(num_classes) != num_classes or num_classes < 1:
    raise ValueError(f'build_teacher: num_classes must be a positive integer, got {num_classes!r}')
  if int(in_channels) != in_channels or in_channels < 1:
    raise ValueError(f'build_teacher: in_channels must be a positive integer, got {in_channels!r}')
  filters = tuple(int(f) for f in filters)
  pool_blocks = tuple(int(i) for i in pool_blocks)
  concat_blocks = pool_blocks if concat_blocks is None else tuple(int(i) for i in concat_blocks)
  num_blocks = len(filters)
  for what, blocks in (('pool_blocks', pool_blocks), ('concat_blocks', concat_blocks)):
    if any(i < 1 or i > num_blocks for i in blocks):
      raise ValueError(f'build_teacher: {what} must be in 1..{num_blocks}, got {blocks}')
  if bandwidth % (2 ** len(pool_blocks)):
    raise ValueError(f'build_teacher: bandwidth {bandwidth} cannot be halved {len(pool_blocks)} '
                     f'times (pool_blocks={pool_blocks})')
  block_names = [block_name(i) for i in range(1, num_blocks + 1)]
  if embedding_block not in block_names:
    raise ValueError(f'build_teacher: embedding_block must be one of {block_names}, '
                     f'got {embedding_block!r}')
  num_branches = int(in_channels) if split_channels else 1
  if aux_classifier and num_branches < 2:
    aux_classifier = False  # the auxiliary head needs a second branch to look at
  regularizer = keras.regularizers.L2(weight_decay) if weight_decay else None

  spheres = keras.Input((2 * bandwidth, 2 * bandwidth, in_channels), name='spheres')
  if num_branches == 1:
    branches = [spheres]
  else:
    branches = [spheres[..., c:c + 1] for c in range(num_branches)]

  def concat(maps, layer_name):
    return maps[0] if len(maps) == 1 else keras.layers.Concatenate(name=layer_name)(maps)

  outputs = {}
  for i, num_filters in enumerate(filters, start=1):
    # Branch 0 takes every branch's previous maps at the concat blocks; evaluated before any
    # branch of this block runs, so all branches contribute their previous output.
    inputs = list(branches)
    if i in concat_blocks and num_branches > 1:
      inputs[0] = concat(branches, f'concat{i}')
    for b in range(num_branches):
      suffix = f'{i}_branch{b}' if num_branches > 1 else f'{i}'
      spectral_pool = pooling == 'spectral' and i in pool_blocks
      x = spherical_layers.SphericalConv(
          num_filters, n_filter_params=n_filter_params, pool=spectral_pool,
          use_bias=not batch_norm, kernel_regularizer=regularizer, name=f'conv{suffix}')(inputs[b])
      if batch_norm:
        norm = (spherical_layers.SphericalBatchNormalization if batch_norm_area_weighted
                else keras.layers.BatchNormalization)
        x = norm(scale=False, momentum=batch_norm_momentum, name=f'bn{suffix}')(x)
      x = keras.layers.PReLU(alpha_initializer=keras.initializers.Constant(0.1),
                             shared_axes=[1, 2], name=f'prelu{suffix}')(x)
      if pooling == 'wap' and i in pool_blocks:
        x = spherical_layers.WeightedAveragePooling(name=f'pool{suffix}')(x)
      branches[b] = x
    outputs[block_name(i)] = concat(branches, block_name(i))

  pooled = [spherical_layers.SphericalGlobalAveragePooling(name=f'pool_branch{b}')(x)
            for b, x in enumerate(branches)]
  descriptor = concat(pooled, 'descriptor')
  outputs['descriptor'] = descriptor
  outputs['logits'] = keras.layers.Dense(num_classes, name='logits')(descriptor)
  if aux_classifier:
    outputs['aux_logits'] = keras.layers.Dense(num_classes, name='aux_logits')(pooled[-1])
  outputs['embedding'] = outputs[embedding_block]
  model = keras.Model(spheres, outputs, name=name)
  # Kept on the model for the export and the students: which block is the embedding, and the
  # settings needed to rebuild it.
  model.teacher_config = {
      'bandwidth': int(bandwidth), 'in_channels': int(in_channels),
      'num_classes': int(num_classes), 'filters': list(filters), 'pool_blocks': list(pool_blocks),
      'concat_blocks': list(concat_blocks), 'split_channels': bool(split_channels),
      'n_filter_params': int(n_filter_params), 'batch_norm': bool(batch_norm),
      'batch_norm_momentum': float(batch_norm_momentum),
      'aux_classifier': bool(aux_classifier), 'embedding_block': embedding_block,
      'weight_decay': float(weight_decay), 'pooling': pooling,
      'batch_norm_area_weighted': bool(batch_norm_area_weighted)}
  return model


def export_teacher(model, export_dir):
  """Writes a teacher built by `build_teacher` as a TF-Hub module; returns `export_dir`.

  Load it with `hub.load(export_dir)` (or `hub_export.load`): `module(spheres [N, 2B, 2B, C_in],
  training=False)` returns the dict of the module docstring, `module.signatures['serving_default']`
  takes the keyword `spheres`, and `hub_export.load_config(module)` gives the build settings
  (`embedding_block`: the block behind `embedding`) and `output_shapes`.
  """
  config = getattr(model, 'teacher_config', None)
  if config is None:
    raise ValueError('export_teacher: the model was not built by models.teacher.build_teacher')
  b, c = config['bandwidth'], config['in_channels']
  spec = tf.TensorSpec([None, 2 * b, 2 * b, c], tf.float32, name='spheres')
  shapes = {name: list(tensor.shape[1:]) for name, tensor in model.output.items()}
  return hub_export.export_reusable_saved_model(model, export_dir, spec,
                                                dict(config, output_shapes=shapes))
