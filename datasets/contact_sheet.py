"""Contact sheets: one PNG per category showing a few instances of a built data set.

Each row is one instance: its rendered view, then every channel of its spherical map drawn as an
equirectangular image (longitude alpha from 0 at the left to 2 pi at the right, colatitude beta
from the north pole at the top to the south pole at the bottom, stretched to the 2:1 aspect of
the sphere's angles). Values in [0, 1] map to black..white without rescaling, so sheets of
different data sets compare directly; for the 'depth' channel white is a ray that missed.
"""
import os
import tempfile

import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFont

_TILE = 96  # tile height in pixels
_GAP = 4
_CAPTION = 14  # caption strip height
_BACKGROUND = (40, 40, 48)
_TEXT = (235, 235, 235)


def save_png(image, path):
  """Writes a PIL image to `path` atomically (temporary file in the same folder, then rename)."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  handle, temporary = tempfile.mkstemp(suffix='.png', dir=folder)
  try:
    with os.fdopen(handle, 'wb') as f:
      image.save(f, format='PNG')
    os.replace(temporary, path)
  except BaseException:
    if os.path.exists(temporary):
      os.remove(temporary)
    raise


def _gray_tile(array, width, height):
  """A [H, W] array with values in [0, 1] as an RGB PIL image of `width` x `height` (nearest)."""
  array = np.asarray(array, np.float32)
  if array.ndim != 2:
    raise ValueError(f'expected a 2-D array, got shape {array.shape}')
  pixels = (np.clip(np.nan_to_num(array), 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
  return Image.fromarray(pixels, mode='L').resize((width, height), Image.NEAREST).convert('RGB')


def _text(value):
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)


def category_sheet(title, examples, channel_names):
  """The contact sheet of one category as a PIL image.

  Args:
    title: heading, e.g. the category name.
    examples: numpy example dicts: 'image' [S, S, 1], 'sphere' [2B, 2B, C], 'instance', 'view'.
    channel_names: C names for the sphere channels' captions.

  Returns:
    PIL.Image (RGB): one row per example, a view tile and C equirectangular tiles of 2:1 aspect.
  """
  if not examples:
    raise ValueError(f'contact sheet {title!r}: no examples')
  font = ImageFont.load_default()
  widths = [_TILE] + [2 * _TILE] * len(channel_names)
  width = _GAP + sum(w + _GAP for w in widths)
  header = 2 * _CAPTION  # title, then the column names
  row_height = _CAPTION + _TILE + _GAP  # a caption line naming the instance, then the tiles
  sheet = Image.new('RGB', (width, header + row_height * len(examples)), _BACKGROUND)
  draw = ImageDraw.Draw(sheet)
  draw.text((_GAP, 1), f'{title}: {len(examples)} instances', fill=_TEXT, font=font)
  x = _GAP
  for name, tile_width in zip(['view'] + list(channel_names), widths):
    draw.text((x, _CAPTION + 1), name, fill=_TEXT, font=font)
    x += tile_width + _GAP
  for row, example in enumerate(examples):
    sphere = np.asarray(example['sphere'])
    if sphere.ndim != 3 or sphere.shape[-1] != len(channel_names):
      raise ValueError(f'contact sheet {title!r}: sphere of shape {sphere.shape} does not have the '
                       f'{len(channel_names)} channels {list(channel_names)}')
    tiles = [_gray_tile(np.asarray(example['image'])[..., 0], _TILE, _TILE)]
    tiles += [_gray_tile(sphere[..., c], 2 * _TILE, _TILE) for c in range(sphere.shape[-1])]
    top = header + row * row_height
    draw.text((_GAP, top), f'{_text(example["instance"])}  view {int(example["view"])}',
              fill=_TEXT, font=font)
    x = _GAP
    for tile_width, tile in zip(widths, tiles):
      sheet.paste(tile, (x, top + _CAPTION))
      x += tile_width + _GAP
  return sheet


def first_instances(examples, label_names, per_label):
  """{label name: up to `per_label` examples, the first seen view of distinct instances}."""
  chosen = {name: [] for name in label_names}
  seen = set()
  for example in examples:
    name = label_names[int(example['label'])]
    instance = _text(example['instance'])
    if len(chosen[name]) < per_label and instance not in seen:
      seen.add(instance)
      chosen[name].append(example)
    if all(len(v) >= per_label for v in chosen.values()):
      break
  return chosen


def sheet_path(output_dir, category):
  """Where the sheet of `category` goes: `<output_dir>/contact_sheet_<category>.png`."""
  return os.path.join(output_dir, f'contact_sheet_{category}.png')


def write_contact_sheets(examples, label_names, channel_names, output_dir, per_label=4):
  """Writes one PNG per category that has examples; returns {category: path}.

  Args:
    examples: iterable of numpy example dicts (e.g. `tfds.as_numpy(dataset)`); read until every
      category has `per_label` instances or the iterable ends.
    label_names: the ClassLabel names (index -> category).
    channel_names: names of the sphere channels.
    output_dir: folder of the PNGs (created).
    per_label: instances per sheet.
  """
  written = {}
  for category, chosen in first_instances(examples, label_names, per_label).items():
    if chosen:
      path = sheet_path(output_dir, category)
      save_png(category_sheet(category, chosen, channel_names), path)
      written[category] = path
  return written
