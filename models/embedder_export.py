"""SavedModel exports of a trained student (the embedder) and of the synthesis model.

Both are plain `tf.Module`s, reloadable with `tf.saved_model.load(path)` (no Keras needed):

Embedder (`export_embedder`):
  loaded.embed(images float32 [N, S, S, C] in [0, 1]) -> {'embedding', 'embedding_unit'}
  loaded.embed_uint8(images uint8 [N, S, S, C] in 0..255) -> the same
  loaded.embed_encoded(images string [N]: PNG/JPEG/GIF/BMP file bytes, any size, RGB(A) or gray)
      -> the same, the views made in-graph by `decode_views` (single-channel students)
  signatures 'serving_default' (float32, keyword `images`), 'serving_uint8' and
  'serving_encoded' (string, keyword `images`: what TF Serving-style callers send).
  `embedding` is in the teacher's units `[N, 2B, 2B, C]`; `embedding_unit` is the sigmoid output
  in [0, 1] the student was trained on (see models.students). With `turns` > 1 and/or `mirror`,
  both are the student's average over the camera's exact symmetries
  (`datasets.inplane.symmetry_average`): turns by multiples of `2 pi / turns` about the camera axis
  and the left-right mirror. Measured on the default preset's test split (2000 same-instance pairs,
  one trained student): 8 turns and the mirror took the flip-tolerant median error of relative pose
  from 18.0 to 14.1 degrees and Acc@10 from 6.8% to 12.2%, for 16 student passes per image.
Synthesiser (`export_synthesizer`):
  loaded.synthesize(embeddings float32 [N, 2B, 2B, C], teacher units) -> {'image' [N, S, S, C]}
  signature 'serving_default' (keyword `embeddings`).
Each export also holds `config_json` (a string variable: input and output shapes) and its model
card in `assets/` (`models.model_card`).

`decode_views` is `evaluation.images.load_view` as TensorFlow ops: alpha composited onto black,
ITU-R 601-2 luminance rounded to 8 bits (Pillow's 'L'), an antialiased bilinear resize to S x S
(Pillow's BILINEAR resize is the same triangle filter), rounded to 8 bits, then / 255. JPEGs are
decoded with the accurate integer DCT, as Pillow does, a large one at the reduced DCT scale
load_view picks (Pillow's draft mode). 16-bit PNGs are read at 8 bits here (Pillow
keeps 16); otherwise the two paths agree to one grey level (tests/test_embedder_export.py).

Writes are atomic: the SavedModel is written beside the destination and renamed into place.
"""
import json

import tensorflow as tf

from datasets import inplane
from models import hub_export
from models import model_card

# Pillow's 'L' conversion: L = (19595 R + 38470 G + 7471 B + 2^15) >> 16 (ITU-R 601-2).
_LUMA_WEIGHTS = (19595, 38470, 7471)


# A large JPEG is decoded at 1/2, 1/4 or 1/8 scale by the IDCT itself while it stays at least
# this many times the view, as evaluation.images.load_view does with Pillow's draft mode.
JPEG_DRAFT_FACTOR = 4


def _decode_jpeg_draft(encoded, size):
  """A JPEG decoded at the largest scale 1/r (r in 1, 2, 4, 8) that keeps both sides at least
  JPEG_DRAFT_FACTOR x `size` (Pillow's `draft` choice), with the accurate integer DCT."""
  shape = tf.io.extract_jpeg_shape(encoded)
  scale = tf.minimum(shape[1] // (JPEG_DRAFT_FACTOR * size[1]),
                     shape[0] // (JPEG_DRAFT_FACTOR * size[0]))
  index = tf.reduce_sum(tf.cast(scale >= tf.constant([2, 4, 8]), tf.int32))
  branches = [lambda r=r: tf.io.decode_jpeg(encoded, ratio=r, dct_method='INTEGER_ACCURATE')
              for r in (1, 2, 4, 8)]
  return tf.switch_case(index, branches)


def decode_view(encoded, size):
  """One encoded image file -> its view as the models were trained on.

  Args:
    encoded: scalar string tensor, the bytes of a PNG, JPEG, GIF (first frame) or BMP file.
    size: (height, width) of the view.

  Returns:
    float32 `[height, width, 1]` in [0, 1] (see the module docstring).
  """
  image = tf.cond(
      tf.io.is_jpeg(encoded),
      lambda: _decode_jpeg_draft(encoded, size),
      lambda: tf.io.decode_image(encoded, expand_animations=False))
  image = tf.cast(image, tf.int32)
  channels = tf.shape(image)[-1]
  # To RGBA: gray repeats, no alpha is opaque.
  rgb = tf.cond(channels < 3, lambda: tf.repeat(image[..., :1], 3, axis=-1),
                lambda: image[..., :3])
  alpha = tf.cond(tf.equal(channels % 2, 0), lambda: image[..., -1:],
                  lambda: tf.fill(tf.shape(image[..., :1]), 255))
  # Onto black, rounded to 8 bits as Pillow's alpha_composite does.
  rgb = (rgb * alpha + 127) // 255
  luma = (rgb[..., 0:1] * _LUMA_WEIGHTS[0] + rgb[..., 1:2] * _LUMA_WEIGHTS[1]
          + rgb[..., 2:3] * _LUMA_WEIGHTS[2] + 32768) // 65536
  resized = tf.image.resize(tf.cast(luma, tf.float32), size, method='bilinear', antialias=True)
  return tf.clip_by_value(tf.round(resized), 0.0, 255.0) / 255.0


def decode_views(encoded, size):
  """Encoded image files `string [N]` -> views float32 `[N, height, width, 1]` (`decode_view`)."""
  size = tf.constant(size, tf.int32) if not tf.is_tensor(size) else size
  return tf.map_fn(lambda e: decode_view(e, size), encoded,
                   fn_output_signature=tf.TensorSpec([None, None, 1], tf.float32))


class _Embedder(tf.Module):

  def __init__(self, model, turns=1, mirror=False):
    super().__init__(name='embedder')
    self.model = model
    self.turns, self.mirror = turns, mirror
    shape = [None] + list(model.input_shape[1:])
    self.config_json = tf.Variable(json.dumps({
        'image_shape': list(model.input_shape[1:]),
        'embedding_shape': list(model.output['embedding'].shape[1:]),
        'symmetry_average': {'turns': turns, 'mirror': mirror}}), trainable=False)
    self.embed = tf.function(self._embed, input_signature=[
        tf.TensorSpec(shape, tf.float32, name='images')])
    self.embed_uint8 = tf.function(
        lambda images: self._embed(tf.cast(images, tf.float32) / 255.0),
        input_signature=[tf.TensorSpec(shape, tf.uint8, name='images')])
    self.embed_encoded = None
    if shape[-1] == 1 and shape[1] is not None and shape[2] is not None:
      size = (int(shape[1]), int(shape[2]))
      self.embed_encoded = tf.function(
          lambda images: self._embed(tf.ensure_shape(decode_views(images, size), shape)),
          input_signature=[tf.TensorSpec([None], tf.string, name='images')])

  def _student(self, images):
    out = self.model(images, training=False)
    return {'embedding': out['embedding'], 'embedding_unit': out['embedding_unit']}

  def _embed(self, images):
    return inplane.symmetry_average(self._student, images, self.turns, self.mirror)


class _Synthesizer(tf.Module):

  def __init__(self, model):
    super().__init__(name='synthesizer')
    self.model = model
    self.config_json = tf.Variable(json.dumps({
        'embedding_shape': list(model.input_shape[1:]),
        'image_shape': list(model.output['image'].shape[1:])}), trainable=False)
    self.synthesize = tf.function(self._synthesize, input_signature=[
        tf.TensorSpec([None] + list(model.input_shape[1:]), tf.float32, name='embeddings')])

  def _synthesize(self, embeddings):
    return {'image': self.model(embeddings, training=False)['image']}


def _check_outputs(model, keys, builder):
  outputs = model.output if isinstance(model.output, dict) else {}
  missing = [k for k in keys if k not in outputs]
  if missing:
    raise ValueError(f'export: the model lacks outputs {missing}; build it with {builder}')


def export_embedder(student, export_dir, turns=1, mirror=False):
  """Writes the student (a `models.build_student` model) as an embedder SavedModel.

  `turns`, `mirror`: the symmetry average of the module docstring (1, False: the plain student);
  `turns` must divide the embedding's width 2B and the image must be square.
  """
  _check_outputs(student, ('embedding', 'embedding_unit'), 'models.build_student')
  image_shape = list(student.input_shape[1:])
  width = student.output['embedding'].shape[2]
  if int(turns) != turns or turns < 1 or width % int(turns):
    raise ValueError(f'export_embedder: turns must be a positive integer dividing the embedding '
                     f'width {width}, got {turns!r}')
  if (int(turns) > 1 or mirror) and image_shape[0] != image_shape[1]:
    raise ValueError(f'export_embedder: turns and mirror need square images, got {image_shape}')
  module = _Embedder(student, int(turns), bool(mirror))
  signatures = {'serving_default': module.embed, 'serving_uint8': module.embed_uint8}
  if module.embed_encoded is not None:
    signatures['serving_encoded'] = module.embed_encoded
  card = model_card.embedder_card(
      image_shape, list(student.output['embedding'].shape[1:]),
      {'turns': int(turns), 'mirror': bool(mirror)},
      'serving_encoded' if module.embed_encoded is not None else None)
  return hub_export.save_atomic(module, export_dir, signatures, card=card)


def export_synthesizer(model, export_dir):
  """Writes the synthesis model (a `models.build_synthesis` model) as a synthesiser SavedModel."""
  _check_outputs(model, ('image',), 'models.build_synthesis')
  module = _Synthesizer(model)
  card = model_card.synthesizer_card(list(model.input_shape[1:]),
                                     list(model.output['image'].shape[1:]))
  return hub_export.save_atomic(module, export_dir, {'serving_default': module.synthesize},
                                card=card)
