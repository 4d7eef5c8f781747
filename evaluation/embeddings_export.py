"""Embeddings of a dataset split: the input of the alignment and view-synthesis evaluations.

`compute_embeddings` runs the student embedder over the views of a dataset (and, optionally, the
teacher over the spheres of the same views) and returns the arrays of an embeddings file
(embeddings_io). The dataset is any iterable of example dicts in the format of
datasets.builders (image float32 [H, W, 1] in [0, 1] or uint8, sphere float32 [2B, 2B, C_in],
rotation float32 [3, 3], label int64, instance string); `load_split_examples` reads one with
datasets.builders.load_split.
"""
import time

import numpy as np

from evaluation.embeddings_io import save_embeddings
from evaluation.models_io import check_embedding

_REQUIRED = ('image', 'rotation', 'instance')


def _as_numpy(value):
  value = value.numpy() if hasattr(value, 'numpy') else np.asarray(value)
  return value.astype(str) if value.dtype == object or value.dtype.kind == 'S' else value


def _views(value):
  """Dataset images -> float32 [n, H, W, 1] in [0, 1] (uint8 images are scaled)."""
  value = _as_numpy(value)
  return value.astype(np.float32) / 255.0 if value.dtype == np.uint8 else value.astype(np.float32)


def compute_embeddings(examples, embedder, teacher=None, batch_size=32, max_examples=None,
                       include_images=False, progress=True):
  """Embeddings of every example.

  Args:
    examples: iterable of example dicts (unbatched), see the module docstring.
    embedder: images `[n, H, W, 1]` -> embeddings `[n, 2B, 2B, C]`.
    teacher: optional spheres `[n, 2B, 2B, C_in]` -> embeddings; gives the `target` array.
    batch_size: examples per model call.
    max_examples: stop after this many (None: all).
    include_images: also return the views as `image` (needed by the view-synthesis evaluation).

  Returns:
    dict of arrays of an embeddings file: fmap, rot, instance, label (when the examples have it),
    target (with a teacher), image (when asked).
  """
  columns = {'fmap': [], 'rot': [], 'instance': [], 'label': [], 'target': [], 'image': []}
  bar = None
  if progress:
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top
    bar = tqdm(desc='embed', unit='view', total=max_examples, dynamic_ncols=True)

  def flush(batch):
    views = _views(np.stack([e['image'] for e in batch]))
    fmap = np.asarray(embedder(views), np.float32)
    check_embedding(fmap, 'embedder')
    columns['fmap'].append(fmap)
    columns['rot'].append(np.stack([_as_numpy(e['rotation']) for e in batch]).astype(np.float32))
    columns['instance'].append(np.array([_as_numpy(e['instance']) for e in batch]))
    if all('label' in e for e in batch):
      columns['label'].append(np.array([_as_numpy(e['label']) for e in batch]))
    if teacher is not None:
      target = np.asarray(teacher(np.stack([_as_numpy(e['sphere']) for e in batch])), np.float32)
      check_embedding(target, 'teacher')
      columns['target'].append(target)
    if include_images:
      columns['image'].append(views)
    if bar is not None:
      bar.update(len(batch))

  batch, count = [], 0
  try:
    for example in examples:
      needed = _REQUIRED + (('sphere',) if teacher is not None else ())
      missing = [k for k in needed if k not in example]
      if missing:
        raise ValueError(f'dataset examples lack {missing} (have {sorted(example)})')
      batch.append(example)
      count += 1
      if len(batch) == batch_size:
        flush(batch)
        batch = []
      if max_examples is not None and count >= max_examples:
        break
    if batch:
      flush(batch)
  finally:
    if bar is not None:
      bar.close()
  if not columns['fmap']:
    raise ValueError('compute_embeddings: the dataset has no examples')
  out = {k: np.concatenate(v) for k, v in columns.items() if v}
  if 'label' in out and len(out['label']) != len(out['fmap']):
    del out['label']  # some examples had no label: leave the optional column out
  return out


def load_split_examples(split, data_dir, **config):
  """Unbatched example dicts of a built dataset split (datasets.builders.load_split), as numpy."""
  from datasets import builders  # pylint: disable=g-import-not-at-top  (TFDS import is slow)
  return builders.load_split(split, data_dir, **config).as_numpy_iterator()


def export_embeddings(path, examples, embedder, teacher=None, **options):
  """compute_embeddings, then an atomic write of the embeddings file; returns (arrays, seconds)."""
  start = time.perf_counter()
  arrays = compute_embeddings(examples, embedder, teacher=teacher, **options)
  save_embeddings(path, **arrays)
  return arrays, time.perf_counter() - start
