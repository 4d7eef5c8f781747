"""Exported models as plain batched numpy functions: embedder, synthesiser, teacher.

- Embedder: a SavedModel (`tf.saved_model.load`) whose serving signature maps images
  `[N, H, W, 1]` (uint8 in [0, 255] or float32 in [0, 1]) to embeddings `[N, 2B, 2B, C]`.
- Synthesiser: a SavedModel whose serving signature maps embeddings `[N, 2B, 2B, C]` to images
  `[N, H, W, 1]`.
- Teacher: a TF-Hub module (`hub.load`), called on spheres `[N, 2B, 2B, C_in]`, returning a dict
  with 'embedding'.

`SavedModelFunction` reads the input spec of the signature (so callers know the image size the
embedder expects), converts inputs to the signature's dtype, runs in batches and picks the output
(the single output, or the one named by `output_key`). Shape mismatches raise a ValueError naming
the model's folder.
"""
import os

import numpy as np
import tensorflow as tf

from evaluation import embeddings_io

SIGNATURE_KEY = 'serving_default'
OUTPUT_KEYS = ('embedding', 'embeddings', 'image', 'images', 'output_0')


class SavedModelFunction:
  """A SavedModel signature as `f(np.ndarray [N, ...]) -> np.ndarray [N, ...]` (float32).

  Attributes:
    path: the SavedModel folder.
    input_shape: the signature's input shape without the batch dimension (entries may be None).
    input_dtype: tf.DType of the input (uint8 inputs get float [0, 1] values scaled to 0..255).
  """

  def __init__(self, path, role='model', output_key=None, batch_size=32):
    self.path = os.fspath(path)
    self.role = role
    self.batch_size = int(batch_size)
    if not os.path.isdir(self.path):
      raise ValueError(f'{role} {self.path}: no such SavedModel folder')
    try:
      self._loaded = tf.saved_model.load(self.path)
    except Exception as e:  # a folder that is not a SavedModel: say which one and why
      raise ValueError(f'{role} {self.path}: cannot load SavedModel ({e})') from e
    signatures = getattr(self._loaded, 'signatures', {})
    if SIGNATURE_KEY not in signatures:
      raise ValueError(f'{role} {self.path}: no "{SIGNATURE_KEY}" signature '
                       f'(has {sorted(signatures)})')
    self._function = signatures[SIGNATURE_KEY]
    _, kwargs = self._function.structured_input_signature
    if len(kwargs) != 1:
      raise ValueError(f'{role} {self.path}: the signature must take one input, '
                       f'got {sorted(kwargs)}')
    (self._input_name, spec), = kwargs.items()
    self.input_shape = tuple(spec.shape.as_list()[1:])
    self.input_dtype = spec.dtype
    outputs = self._function.structured_outputs
    if output_key is None:
      names = [k for k in OUTPUT_KEYS if k in outputs]
      if len(outputs) == 1:
        output_key = next(iter(outputs))
      elif names:
        output_key = names[0]
      else:
        raise ValueError(f'{role} {self.path}: several outputs {sorted(outputs)} and none of '
                         f'{list(OUTPUT_KEYS)}; cannot tell which to use')
    if output_key not in outputs:
      raise ValueError(f'{role} {self.path}: no output "{output_key}" (has {sorted(outputs)})')
    self._output_key = output_key

  def check_input(self, array):
    """Raises a ValueError naming the model when `array [N, ...]` does not fit the input spec."""
    shape = tuple(np.shape(array)[1:])
    ok = len(shape) == len(self.input_shape) and all(
        want is None or want == got for want, got in zip(self.input_shape, shape))
    if not ok:
      expected = ', '.join(str(d) for d in self.input_shape)
      raise ValueError(f'{self.role} {self.path} expects inputs [N, {expected}], '
                       f'got {list(np.shape(array))}')

  def __call__(self, array):
    array = np.asarray(array)
    self.check_input(array)
    outputs = []
    for start in range(0, len(array), self.batch_size):
      batch = array[start:start + self.batch_size]
      if self.input_dtype == tf.uint8 and batch.dtype != np.uint8:
        batch = np.round(np.clip(batch, 0.0, 1.0) * 255.0).astype(np.uint8)
      elif self.input_dtype != tf.uint8:
        batch = batch.astype(self.input_dtype.as_numpy_dtype)
      result = self._function(**{self._input_name: tf.constant(batch)})[self._output_key]
      outputs.append(np.asarray(result, np.float32))
    if not outputs:
      raise ValueError(f'{self.role} {self.path}: called on an empty batch')
    return np.concatenate(outputs)


def load_embedder(path, batch_size=32):
  """The image embedder at `path`; checks its input is `[N, H, W, 1]`."""
  embedder = SavedModelFunction(path, role='embedder', batch_size=batch_size)
  if len(embedder.input_shape) != 3 or embedder.input_shape[-1] not in (1, None):
    raise ValueError(f'embedder {path}: expects images [N, H, W, 1], its signature takes '
                     f'[N, {", ".join(str(d) for d in embedder.input_shape)}]')
  return embedder


def load_synthesizer(path, batch_size=32):
  """The view synthesiser at `path`; checks its input is a spherical map `[N, 2B, 2B, C]`."""
  synthesizer = SavedModelFunction(path, role='synthesizer', batch_size=batch_size)
  if len(synthesizer.input_shape) != 3:
    raise ValueError(f'synthesizer {path}: expects embeddings [N, 2B, 2B, C], its signature takes '
                     f'[N, {", ".join(str(d) for d in synthesizer.input_shape)}]')
  return synthesizer


def image_size_of(embedder, default=None):
  """(H, W) the embedder expects; `default` (an int) when its signature leaves them open."""
  h, w = embedder.input_shape[:2]
  if h is None or w is None:
    if default is None:
      raise ValueError(f'embedder {embedder.path}: its signature does not fix the image size; '
                       'pass it explicitly (--image_size)')
    return int(default), int(default)
  return int(h), int(w)


def check_embedding(maps, source):
  """Raises a ValueError naming `source` unless `maps` is `[N, 2B, 2B, C]` of finite maps that
  float32 correlation can use (embeddings_io.check_map_scales: not zero, constant or of a
  scale that over- or underflows)."""
  shape = np.shape(maps)
  if len(shape) != 4 or shape[1] != shape[2] or shape[1] % 2:
    raise ValueError(f'{source} returned {list(shape)}, expected embeddings [N, 2B, 2B, C]')
  if not np.all(np.isfinite(maps)):
    raise ValueError(f'{source} returned non-finite embeddings')
  embeddings_io.check_map_scales(maps, f'{source} output')


def load_teacher(path, batch_size=32):
  """The teacher hub module at `path` as `f(spheres [N, 2B, 2B, C_in]) -> embeddings` (numpy)."""
  import tensorflow_hub as hub  # pylint: disable=g-import-not-at-top  (slow import, only when used)
  path = os.fspath(path)
  if not os.path.isdir(path):
    raise ValueError(f'teacher {path}: no such hub module folder')
  module = hub.load(path)

  def teacher(spheres):
    out = []
    for start in range(0, len(spheres), batch_size):
      result = module(tf.constant(np.asarray(spheres[start:start + batch_size], np.float32)))
      if not isinstance(result, dict) or 'embedding' not in result:
        keys = sorted(result) if isinstance(result, dict) else ''
        raise ValueError(f'teacher {path}: expected a dict with "embedding", got '
                         f'{type(result).__name__} {keys}')
      out.append(np.asarray(result['embedding'], np.float32))
    return np.concatenate(out)

  return teacher
