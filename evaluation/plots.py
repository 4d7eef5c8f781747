"""Figures of the evaluation: the error CDF and the view-synthesis image grid (atomic PNGs)."""
import numpy as np

from evaluation.files import atomic_save_figure, atomic_write_png


def empirical_cdf(errors_deg):
  """Sorted errors and the fraction of pairs at or below each: two float64 arrays `[P]`."""
  e = np.sort(np.asarray(errors_deg, np.float64).ravel())
  return e, np.arange(1, e.size + 1) / max(e.size, 1)


def plot_error_cdf(path, curves, title='Relative pose error', max_deg=180.0):
  """Writes a PNG with one CDF curve per entry of `curves`.

  Args:
    path: output PNG.
    curves: dict label -> errors in degrees `[P]` (e.g. {'fmap/same': ..., 'target/same': ...}).
    title: figure title.
    max_deg: right end of the x axis (90 for folded symmetric errors).
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')  # files only, never a display
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  figure, axes = plt.subplots(figsize=(5, 3.5))
  try:
    for label, errors in curves.items():
      x, y = empirical_cdf(errors)
      axes.step(np.concatenate([[0.0], x]), np.concatenate([[0.0], 100 * y]), where='post',
                label=f'{label} (median {np.median(x):.1f}°)')
    for t in (10, 30):
      axes.axvline(t, color='0.8', lw=0.8, zorder=0)
    axes.set(xlim=(0, max_deg), ylim=(0, 100), xlabel='error (degrees)',
             ylabel='pairs with smaller error (%)', title=title)
    axes.grid(alpha=0.3)
    axes.legend(loc='lower right', fontsize='small')
    atomic_save_figure(path, figure)
  finally:
    plt.close(figure)


def to_uint8(images):
  """Float images in [0, 1] (clipped) -> uint8, same shape."""
  return np.round(np.clip(np.asarray(images, np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)


def image_grid(columns, scale=2, gap=2):
  """Tiles image columns into one uint8 picture.

  Args:
    columns: list of float arrays `[R, H, W, 1]` in [0, 1], one per column (e.g. input,
      prediction, truth), all the same shape.
    scale: integer upscaling (nearest neighbour) so small views stay visible.
    gap: white pixels between tiles.

  Returns:
    uint8 `[R (H s + gap) + gap, K (W s + gap) + gap]`.
  """
  shapes = {np.shape(c) for c in columns}
  if len(shapes) != 1:
    raise ValueError(f'image_grid: columns differ in shape: {sorted(shapes)}')
  rows, h, w, _ = next(iter(shapes))
  hs, ws = h * scale, w * scale
  grid = np.full((rows * (hs + gap) + gap, len(columns) * (ws + gap) + gap), 255, np.uint8)
  for k, column in enumerate(columns):
    tiles = to_uint8(column)[..., 0].repeat(scale, 1).repeat(scale, 2)
    for r in range(rows):
      top, left = gap + r * (hs + gap), gap + k * (ws + gap)
      grid[top:top + hs, left:left + ws] = tiles[r]
  return grid


def titled(grid, titles, tile_width, gap=2, height=12):
  """`grid` with a white strip on top holding one title per column (Pillow's default font)."""
  from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top
  canvas = Image.new('L', (grid.shape[1], grid.shape[0] + height), 255)
  canvas.paste(Image.fromarray(grid), (0, height))
  draw = ImageDraw.Draw(canvas)
  for k, title in enumerate(titles):
    draw.text((gap + k * (tile_width + gap), 0), title, fill=0)
  return np.asarray(canvas)


def save_image_grid(path, columns, scale=2, titles=None):
  """Writes `image_grid(columns, scale)` as a PNG, with column `titles` on top when given."""
  grid = image_grid(columns, scale)
  if titles:
    grid = titled(grid, titles, tile_width=np.shape(columns[0])[2] * scale)
  atomic_write_png(path, grid)
