"""User images -> views as the models were trained on: grayscale, square, `size x size`, [0, 1].

Training views (datasets.render_view) are single-channel float32 images in [0, 1] with a black
(0) background. A user photo of any mode (RGB, RGBA, palette, 16-bit, CMYK, ...) and any size is
converted the same way:
  1. transparency is composited onto black, the training background;
  2. converted to luminance (Pillow's 'L', ITU-R 601-2);
  3. resized to the embedder's input size with an antialiased bilinear filter (a non-square photo is
     stretched, not cropped: crop it yourself to keep the aspect ratio);
  4. scaled to float32 in [0, 1].
Images of more than MAX_PIXELS pixels are refused before decoding; a large JPEG is decoded at a
reduced DCT scale (still 4x the view's size) before the resize.
"""
import os
import re
import warnings

import numpy as np

# Images of more pixels are refused before they are decoded: a small compressed file can
# decode to gigabytes (a 20000 x 20000 PNG of one colour is 0.4 MB). Pillow's own limit (89.5
# million pixels; it warns above it and refuses twice as many), which keeps camera photos up to
# about 85 megapixels: downscale larger ones first.
MAX_PIXELS = 89_478_485
# A JPEG is decoded at the smallest DCT scale (1/2, 1/4, 1/8) still this many times the view's
# size, and then resized: much less work for a large photo, the same view up to rounding.
_DRAFT_FACTOR = 4


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
    with warnings.catch_warnings():
      warnings.simplefilter('ignore', Image.DecompressionBombWarning)  # refused below instead
      image = Image.open(path)
    with image:
      _check_pixels(path, *image.size)
      if image.format == 'JPEG':
        image.draft(None, (_DRAFT_FACTOR * int(width), _DRAFT_FACTOR * int(height)))
      image.load()
      gray, white = _to_gray(image)
  except Image.DecompressionBombError as e:  # Pillow refuses at open what is far beyond its limit
    count = re.search(r'\((\d+) pixels\)', str(e))
    raise ValueError(_too_many(path, int(count.group(1)) if count else None)) from None
  except (UnidentifiedImageError, OSError, SyntaxError) as e:
    raise ValueError(f'image {path}: cannot read it as an image ({e})') from e
  if gray.size[0] < 1 or gray.size[1] < 1:
    raise ValueError(f'image {path}: empty image')
  resized = gray.resize((int(width), int(height)), Image.Resampling.BILINEAR, reducing_gap=None)
  pixels = np.asarray(resized, np.float32)
  return (pixels / white)[..., None].clip(0.0, 1.0)


def _check_pixels(path, width, height):
  """Raises ValueError naming `path` when a `width x height` image has more than MAX_PIXELS."""
  if width * height > MAX_PIXELS:
    raise ValueError(_too_many(path, width * height, f'{width} x {height} = '))


def _too_many(path, pixels, size=''):
  count = f'{size}{pixels / 1e6:.0f} million pixels' if pixels else 'too many pixels'
  return (f'image {path}: {count}, more than the limit of {MAX_PIXELS / 1e6:.0f} million '
          '(downscale it first)')


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
