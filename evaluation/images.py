"""User images -> views as the models were trained on: grayscale, square, `size x size`, [0, 1].

Training views (datasets.render_view) are single-channel float32 images in [0, 1] with a black
(0) background. A user photo of any mode (RGB, RGBA, palette, 16-bit, CMYK, ...) and any size is
converted the same way:
  1. transparency is composited onto black, the training background;
  2. converted to luminance (Pillow's 'L', ITU-R 601-2);
  3. resized to the embedder's input size with an antialiased bilinear filter (a non-square photo is
     stretched, not cropped: crop it yourself to keep the aspect ratio);
  4. scaled to float32 in [0, 1].
"""
import os

import numpy as np


def load_view(path, size):
  """Reads the image file at `path` as a training-like view.

  Args:
    path: PNG, JPEG or any format Pillow reads.
    size: int or (height, width) of the output.

  Returns:
    float32 `[H, W, 1]` in [0, 1].

  Raises:
    ValueError naming the file when it is missing or not a readable image.
  """
  from PIL import Image, UnidentifiedImageError  # pylint: disable=g-import-not-at-top
  path = os.fspath(path)
  height, width = (size, size) if np.isscalar(size) else size
  if not os.path.isfile(path):
    raise ValueError(f'image {path}: no such file')
  try:
    with Image.open(path) as image:
      image.load()
      gray, white = _to_gray(image)
  except (UnidentifiedImageError, OSError, SyntaxError) as e:
    raise ValueError(f'image {path}: cannot read it as an image ({e})') from e
  if gray.size[0] < 1 or gray.size[1] < 1:
    raise ValueError(f'image {path}: empty image')
  resized = gray.resize((int(width), int(height)), Image.Resampling.BILINEAR, reducing_gap=None)
  pixels = np.asarray(resized, np.float32)
  return (pixels / white)[..., None].clip(0.0, 1.0)


def _to_gray(image):
  """Any Pillow image -> (mode 'L' or 'F' image, its white level), alpha composited onto black.

  16-bit and 32-bit integer images keep their precision (mode 'F', white 65535); float images
  ('F') are taken as already in [0, 1].
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  if image.mode.startswith('I'):
    return image.convert('F'), 65535.0
  if image.mode == 'F':
    return image, 1.0
  if image.mode == 'P':
    image = image.convert('RGBA')
  if image.mode in ('RGBA', 'LA', 'PA', 'RGBa', 'La'):
    rgba = image.convert('RGBA')
    black = Image.new('RGBA', rgba.size, (0, 0, 0, 255))
    image = Image.alpha_composite(black, rgba)
  return image.convert('L'), 255.0
