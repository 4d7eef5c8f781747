"""Atomic file writes: everything goes to a temp file in the target's folder, then `os.replace`.

A crash or a concurrent reader never sees a half-written results table, embeddings file or image.
"""
import contextlib
import os
import tempfile

import numpy as np


@contextlib.contextmanager
def atomic_output(path, mode='wb'):
  """Context manager yielding a file object whose content replaces `path` on successful exit."""
  path = os.fspath(path)
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix='.tmp-', suffix='-' + os.path.basename(path), dir=folder)
  try:
    with os.fdopen(fd, mode, **({'newline': ''} if 'b' not in mode else {})) as f:
      yield f
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def atomic_write_text(path, text):
  """Writes the string `text` to `path` atomically."""
  with atomic_output(path, 'w') as f:
    f.write(text)


def atomic_write_npz(path, **arrays):
  """`np.savez_compressed(path, **arrays)`, atomically."""
  with atomic_output(path) as f:
    np.savez_compressed(f, **arrays)


def atomic_write_png(path, pixels):
  """Writes a uint8 `[H, W]`, `[H, W, 1]` or `[H, W, 3]` array as a PNG, atomically."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  pixels = np.asarray(pixels)
  if pixels.dtype != np.uint8:
    raise ValueError(f'atomic_write_png({path}): pixels must be uint8, got {pixels.dtype}')
  if pixels.ndim == 3 and pixels.shape[-1] == 1:
    pixels = pixels[..., 0]
  with atomic_output(path) as f:
    Image.fromarray(pixels).save(f, format='PNG')


def atomic_save_figure(path, figure, dpi=120):
  """Saves a matplotlib figure as a PNG, atomically."""
  with atomic_output(path) as f:
    figure.savefig(f, format='png', dpi=dpi, bbox_inches='tight')
