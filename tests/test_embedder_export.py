"""The embedder's encoded-image signature: decode, gray, resize and scale in-graph, as
evaluation.images.load_view does in Python."""
import io

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from evaluation import images as images_lib
from models import embedder_export, students

TINY = dict(layers_per_block=1, base_channels=8, max_channels=16, n_latent=16)


def photo(height, width, seed=0):
  """A photo-like RGB uint8 image: smooth shading, a saturated patch, sensor noise."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[0:height, 0:width] / max(height, width)
  image = np.stack([200 * x + 30 * np.sin(9 * y), 150 * y + 50 * x,
                    120 + 60 * np.cos(7 * x * y)], -1)
  image += rng.normal(0, 12, image.shape)
  image[height // 4:height // 2, width // 3:2 * width // 3] = [230, 40, 40]
  return np.clip(image, 0, 255).astype(np.uint8)


def encode(array, mode, fmt):
  buffer = io.BytesIO()
  Image.fromarray(array, mode).save(buffer, fmt, **({'quality': 90} if fmt == 'JPEG' else {}))
  return buffer.getvalue()


def cases():
  rgb = photo(75, 100)
  alpha = np.random.default_rng(1).integers(0, 256, rgb.shape[:2], dtype=np.uint8)
  return [('JPEG', 'RGB', rgb), ('JPEG', 'L', rgb[..., 1]), ('PNG', 'RGB', rgb),
          ('PNG', 'L', rgb[..., 0]), ('PNG', 'RGBA', np.dstack([rgb, alpha])),
          ('PNG', 'LA', np.dstack([rgb[..., 2], alpha])), ('PNG', 'RGB', photo(10, 7, 2)),
          ('BMP', 'RGB', rgb)]


def test_large_jpegs_are_decoded_at_load_views_reduced_scale(tmp_path):
  # 1600 x 1200 at 32 px: 1/8 scale; 500 x 700: 1/2 (both sides stay >= 4 x the view).
  for i, (height, width) in enumerate([(1200, 1600), (700, 500)]):
    for mode, array in (('RGB', photo(height, width, i)), ('L', photo(height, width, i)[..., 0])):
      data = encode(array, mode, 'JPEG')
      path = tmp_path / f'{i}{mode}.jpg'
      path.write_bytes(data)
      want = images_lib.load_view(path, 32)
      got = embedder_export.decode_views(tf.constant([data]), (32, 32))[0].numpy()
      assert np.abs(got - want).max() <= 1.0 / 255 + 1e-6, (height, width, mode)
      assert np.mean(got == want) > 0.8, (height, width, mode)


@pytest.mark.parametrize('size', [16, 40])
def test_decode_views_match_load_view_to_one_grey_level(tmp_path, size):
  for i, (fmt, mode, array) in enumerate(cases()):
    data = encode(array, mode, fmt)
    path = tmp_path / f'{i}.{fmt.lower()}'
    path.write_bytes(data)
    want = images_lib.load_view(path, size)
    got = embedder_export.decode_views(tf.constant([data]), (size, size))[0].numpy()
    assert got.shape == want.shape == (size, size, 1)
    assert np.abs(got - want).max() <= 1.0 / 255 + 1e-6, (fmt, mode)
    assert np.mean(got == want) > 0.5, (fmt, mode)


def test_decode_view_is_gray_luminance_of_an_opaque_rgb_image():
  # Independent reference: ITU-R 601-2 luma of a flat colour, no resampling involved.
  flat = np.zeros((8, 8, 3), np.uint8) + np.array([200, 100, 50], np.uint8)
  got = embedder_export.decode_views(tf.constant([encode(flat, 'RGB', 'PNG')]), (4, 4))[0]
  luma = round(0.299 * 200 + 0.587 * 100 + 0.114 * 50)
  np.testing.assert_allclose(got.numpy(), luma / 255.0, atol=1e-6)
  # Fully transparent pixels are black, the training background.
  clear = np.zeros((8, 8, 4), np.uint8) + np.array([255, 255, 255, 0], np.uint8)
  got = embedder_export.decode_views(tf.constant([encode(clear, 'RGBA', 'PNG')]), (4, 4))[0]
  assert np.all(got.numpy() == 0.0)


def test_serving_encoded_signature_equals_the_python_path_on_a_jpeg_photo(tmp_path):
  keras.utils.set_random_seed(0)
  model = students.build_student(32, (8, 8, 3), **TINY)
  path = embedder_export.export_embedder(model, str(tmp_path / 'embedder'), turns=2)
  loaded = tf.saved_model.load(path)
  jpeg = encode(photo(120, 90, 3), 'RGB', 'JPEG')
  png = encode(photo(40, 64, 4)[..., 0], 'L', 'PNG')
  (tmp_path / 'a.jpg').write_bytes(jpeg)
  (tmp_path / 'b.png').write_bytes(png)
  views = np.stack([images_lib.load_view(tmp_path / 'a.jpg', 32),
                    images_lib.load_view(tmp_path / 'b.png', 32)])
  want = loaded.embed(views)['embedding'].numpy()
  signature = loaded.signatures['serving_encoded']
  got = signature(images=tf.constant([jpeg, png]))['embedding'].numpy()
  assert got.shape == want.shape == (2, 8, 8, 3)
  # In-graph views differ from Python's by at most one grey level on some pixels; the signature
  # is exactly the embedder on them, and near the embedder on Python's views.
  graph_views = embedder_export.decode_views(tf.constant([jpeg, png]), (32, 32))
  assert np.abs(graph_views.numpy() - views).max() <= 1.0 / 255 + 1e-6
  np.testing.assert_allclose(got, loaded.embed(graph_views)['embedding'].numpy(), rtol=1e-5,
                             atol=1e-6)
  scale = np.abs(want).max()
  np.testing.assert_allclose(got, want, atol=2e-2 * scale)
  np.testing.assert_allclose(loaded.embed_encoded(tf.constant([jpeg]))['embedding'].numpy(),
                             got[:1], rtol=1e-5, atol=1e-6)
  with pytest.raises(tf.errors.InvalidArgumentError):
    signature(images=tf.constant([b'not an image']))
