"""Mesh sources: where the shapes of a data set come from, as lists of `MeshRecord`s.

A record names one shape instance: a unique `instance` id, its category `label`, the `split` it
belongs to ('train' or 'test'; every instance is in exactly one split, so no shape is seen in both)
and how to get its mesh (`record.load()`). Three sources:

- `procedural_records`: the bundled default, `datasets.procedural` shapes; instance `k` of a
  category is `generate_shape(category, seed=k)`, the last `test_fraction` of the indices are test.
- `folder_records`: a folder in ModelNet layout `<category>/{train,test}/<name>.<ext>` (the split
  comes from the folder) or flat `<category>/<name>.<ext>` (the split comes from a hash of the
  relative path, so it never depends on which other files are present). Extensions: those of
  `datasets.meshes.SUPPORTED_SUFFIXES` (off, obj, ply, stl, glb, gltf).
- `shapenet_records`: ShapeNetCore v2 `<synset>/<model>/models/model_normalized.obj`, split by a
  hash of the model id, labels from `SHAPENET_SYNSETS`.

Every source also takes `test_per_category=K`, used instead of `test_fraction` when set: exactly K
instances of each category are test ("train on two instances per class, test on the third").
Procedural: the last K indices. Folder (flat categories) and ShapeNet: the K instances with the
smallest hash keys in their category (`per_category_test`), so adding files to other categories,
or files with larger keys, never moves an instance between splits. Folders with train/test
sub-folders keep the split of their folders under either option.

Records are sorted by instance id and hold only strings and picklable callables, so they can be
sent to worker processes (Apache Beam) as they are.
"""
import dataclasses
import functools
import hashlib
import os
from typing import Callable, Union

from datasets import meshes
from datasets import procedural

MESH_EXTENSIONS = meshes.SUPPORTED_SUFFIXES  # what datasets.load_mesh reads
SPLITS = ('train', 'test')

# ShapeNetCore v2 synset ids -> category names (the 55 categories of the core set).
SHAPENET_SYNSETS = {
    '02691156': 'airplane', '02747177': 'trash_bin', '02773838': 'bag', '02801938': 'basket',
    '02808440': 'bathtub', '02818832': 'bed', '02828884': 'bench', '02843684': 'birdhouse',
    '02871439': 'bookshelf', '02876657': 'bottle', '02880940': 'bowl', '02924116': 'bus',
    '02933112': 'cabinet', '02942699': 'camera', '02946921': 'can', '02954340': 'cap',
    '02958343': 'car', '02992529': 'cellphone', '03001627': 'chair', '03046257': 'clock',
    '03085013': 'keyboard', '03207941': 'dishwasher', '03211117': 'display', '03261776': 'earphone',
    '03325088': 'faucet', '03337140': 'file_cabinet', '03467517': 'guitar', '03513137': 'helmet',
    '03593526': 'jar', '03624134': 'knife', '03636649': 'lamp', '03642806': 'laptop',
    '03691459': 'loudspeaker', '03710193': 'mailbox', '03759954': 'microphone',
    '03761084': 'microwave', '03790512': 'motorcycle', '03797390': 'mug', '03928116': 'piano',
    '03938244': 'pillow', '03948459': 'pistol', '03991062': 'flowerpot', '04004475': 'printer',
    '04074963': 'remote', '04090263': 'rifle', '04099429': 'rocket', '04225987': 'skateboard',
    '04256520': 'sofa', '04330267': 'stove', '04379243': 'table', '04401088': 'telephone',
    '04460130': 'tower', '04468005': 'train', '04530566': 'watercraft', '04554684': 'washer',
}
SHAPENET_MESH = os.path.join('models', 'model_normalized.obj')


@dataclasses.dataclass(frozen=True)
class MeshRecord:
  """One shape instance of a source.

  Attributes:
    instance: unique id within the source, e.g. 'chair/0007' or 'chair/train/chair_0001'.
    label: category name.
    split: 'train' or 'test'.
    mesh: a path to a mesh file, or a picklable zero-argument callable returning a trimesh.
  """
  instance: str
  label: str
  split: str
  mesh: Union[str, Callable]

  def load(self):
    """The normalised `trimesh.Trimesh` of this instance (ValueError naming the file if bad)."""
    if callable(self.mesh):
      return self.mesh()
    return meshes.load_mesh(self.mesh)

  @property
  def origin(self):
    """Where the mesh comes from, for log messages: the file path or the generator call."""
    if isinstance(self.mesh, functools.partial):
      args = ', '.join(repr(a) for a in self.mesh.args)
      return f'{self.mesh.func.__name__}({args})'
    return str(self.mesh)


def hash_key(key):
  """A stable pseudo-random integer in [0, 2**64) for the string `key` (sha256, not `hash()`)."""
  digest = hashlib.sha256(key.encode('utf-8')).digest()
  return int.from_bytes(digest[:8], 'little')


def hash_split(key, test_fraction):
  """'test' for a stable pseudo-random `test_fraction` of keys, else 'train' (sha256 of `key`)."""
  _check_fraction(test_fraction)
  return 'test' if hash_key(key) / 2.0**64 < test_fraction else 'train'


def per_category_test(keys, test_per_category, where):
  """The `test_per_category` keys of one category with the smallest `hash_key`, as a set.

  Args:
    keys: the hash keys (e.g. relative paths) of every instance of one category.
    test_per_category: K, how many of them are test.
    where: the category, named in the error message.

  Raises:
    ValueError if the category has K or fewer instances (it would have none for training).
  """
  _check_test_per_category(test_per_category)
  keys = list(keys)
  if len(keys) <= test_per_category:
    raise ValueError(f'test_per_category={test_per_category} needs more than '
                     f'{test_per_category} instances per category, but {where} has {len(keys)}')
  # Ties between hash keys are practically impossible; the key itself breaks them anyway.
  return set(sorted(keys, key=lambda k: (hash_key(k), k))[:test_per_category])


def _check_fraction(test_fraction):
  if not 0.0 <= test_fraction < 1.0:
    raise ValueError(f'test_fraction must be in [0, 1), got {test_fraction!r}')


def _check_test_per_category(test_per_category):
  if (test_per_category is not None and
      (isinstance(test_per_category, bool) or int(test_per_category) != test_per_category
       or test_per_category < 1)):
    raise ValueError(f'test_per_category must be a positive integer or None, '
                     f'got {test_per_category!r}')


def _check_categories(categories, known, where):
  unknown = sorted(set(categories) - set(known))
  if unknown:
    raise ValueError(f'Unknown categories {unknown} for {where}; available: {sorted(known)}')


def procedural_records(instances_per_category, categories=None, test_fraction=0.2,
                       test_per_category=None):
  """Records of `instances_per_category` procedural shapes per category.

  Per category, with N instances, the last max(1, round(test_fraction * N)) indices are test
  (none when N == 1 or test_fraction == 0), the others train; with `test_per_category=K` the
  last K indices are test (K < N required).
  """
  _check_fraction(test_fraction)
  _check_test_per_category(test_per_category)
  if int(instances_per_category) != instances_per_category or instances_per_category < 1:
    raise ValueError('instances_per_category must be a positive integer, '
                     f'got {instances_per_category!r}')
  categories = procedural.CATEGORIES if categories is None else tuple(categories)
  _check_categories(categories, procedural.CATEGORIES, 'the procedural source')
  n = int(instances_per_category)
  if test_per_category is not None:
    if n <= test_per_category:
      raise ValueError(f'test_per_category={test_per_category} needs instances_per_category > '
                       f'{test_per_category}, got {n}')
    num_test = int(test_per_category)
  else:
    num_test = 0 if (n == 1 or test_fraction == 0) else max(1, round(test_fraction * n))
  records = []
  for category in categories:
    for index in range(n):
      records.append(MeshRecord(
          instance=f'{category}/{index:04d}', label=category,
          split='test' if index >= n - num_test else 'train',
          mesh=functools.partial(procedural.generate_shape, category, index)))
  return sorted(records, key=lambda r: r.instance)


def _mesh_files(folder):
  """Sorted mesh file names directly inside `folder` (hidden files skipped)."""
  if not os.path.isdir(folder):
    return []
  return sorted(name for name in os.listdir(folder)
                if not name.startswith('.') and name.lower().endswith(MESH_EXTENSIONS)
                and os.path.isfile(os.path.join(folder, name)))


def _entry_problem(path):
  """Why the folder entry `path` cannot be read ('dangling link', 'symlink loop'), or None."""
  if os.path.islink(path):
    try:
      os.stat(path)
    except FileNotFoundError:
      return 'dangling link'
    except OSError as e:  # ELOOP and the like
      return 'symlink loop' if 'loop' in str(e).lower() or e.errno == 40 else f'unreadable ({e})'
  return None


def folder_skipped(mesh_dir):
  """The entries of a ModelNet-style folder that `folder_records` does not read, and why.

  Returns:
    sorted list of (relative path, reason): files or links at the top level (categories are
    folders), category folders without mesh files, folders inside a category other than train/
    and test/, files in a category beside its train/ and test/ folders, files of unsupported
    formats, dangling links and symlink loops. Hidden entries (starting with '.') are not listed.
  """
  skipped = []

  def note(relative, reason):
    skipped.append((relative.replace(os.sep, '/'), reason))

  def visible(folder):
    try:
      return sorted(n for n in os.listdir(folder) if not n.startswith('.'))
    except OSError as e:
      note(os.path.relpath(folder, mesh_dir), f'unreadable folder ({e.strerror})')
      return []

  for category in visible(mesh_dir):
    path = os.path.join(mesh_dir, category)
    problem = _entry_problem(path)
    if problem or not os.path.isdir(path):
      note(category, problem or 'not a category folder (a file at the top level)')
      continue
    split_dirs = [s for s in SPLITS if os.path.isdir(os.path.join(path, s))]
    if not _mesh_files(path) and not any(_mesh_files(os.path.join(path, s)) for s in SPLITS):
      note(category + '/', 'no mesh files: not a category')
      continue
    folders = [(category, s) for s in split_dirs] if split_dirs else [(category, None)]
    if split_dirs:  # the files beside train/ and test/ are not read
      for name in visible(path):
        if name in SPLITS:
          continue
        full = os.path.join(path, name)
        problem = _entry_problem(full)
        note(os.path.join(category, name), problem or (
            'a folder (only train/ and test/ are read)' if os.path.isdir(full)
            else 'beside train/ and test/ (not read)'))
    for category_part, split in folders:
      relative_dir = os.path.join(category_part, split) if split else category_part
      folder = os.path.join(mesh_dir, relative_dir)
      for name in visible(folder):
        full = os.path.join(folder, name)
        relative = os.path.join(relative_dir, name)
        problem = _entry_problem(full)
        if problem:
          note(relative, problem)
        elif os.path.isdir(full):
          if split is None and name not in SPLITS:
            note(relative, 'a folder (meshes are read from <category>/ or its train/ and test/)')
        elif not name.lower().endswith(MESH_EXTENSIONS):
          note(relative, f'unsupported format {os.path.splitext(name)[1] or "(no suffix)"}')
        elif not os.path.isfile(full):
          note(relative, 'not a regular file')
  return sorted(skipped)


def tree_fingerprint(root, max_depth=4):
  """A digest of what is in the folder `root`: every file's relative path, size and modification
  time (nanoseconds), down to `max_depth` levels (a mesh folder's meshes are 2-4 deep).

  Adding, removing, replacing or touching a file changes it; so do dangling links. Symbolic links
  to folders are followed once (a loop is recorded, not walked). Hidden entries are skipped.
  """
  digest = hashlib.sha256()
  seen = set()

  def walk(folder, relative, depth):
    real = os.path.realpath(folder)
    if real in seen:
      digest.update(f'{relative}\0loop\n'.encode('utf-8', 'surrogateescape'))
      return
    seen.add(real)
    try:
      names = sorted(n for n in os.listdir(folder) if not n.startswith('.'))
    except OSError:
      digest.update(f'{relative}\0unreadable\n'.encode('utf-8', 'surrogateescape'))
      return
    for name in names:
      path, rel = os.path.join(folder, name), f'{relative}/{name}' if relative else name
      try:
        stat = os.stat(path)
      except OSError as e:
        digest.update(f'{rel}\0{type(e).__name__}\n'.encode('utf-8', 'surrogateescape'))
        continue
      if os.path.isdir(path):
        if depth < max_depth:
          walk(path, rel, depth + 1)
      else:
        digest.update(f'{rel}\0{stat.st_size}\0{stat.st_mtime_ns}\n'.encode(
            'utf-8', 'surrogateescape'))

  walk(root, '', 1)
  return digest.hexdigest()


def _check_dir(path, what):
  if not path or not os.path.isdir(path):
    raise ValueError(f'{what} {path!r} is not a folder')


def folder_categories(mesh_dir):
  """Sorted names of the category folders of `mesh_dir` that hold at least one mesh file."""
  _check_dir(mesh_dir, 'Mesh folder')
  names = []
  for name in sorted(os.listdir(mesh_dir)):
    path = os.path.join(mesh_dir, name)
    if name.startswith('.') or not os.path.isdir(path):
      continue
    if _mesh_files(path) or any(_mesh_files(os.path.join(path, s)) for s in SPLITS):
      names.append(name)
  return names


def folder_records(mesh_dir, categories=None, test_fraction=0.2, test_per_category=None):
  """Records of the meshes of a ModelNet-style folder (see the module docstring).

  Args:
    mesh_dir: the root folder; its sub-folders are the categories.
    categories: optional subset of category names (default: every category folder with meshes).
    test_fraction: share of test instances in flat category folders (those without train/test).
    test_per_category: if set, K: exactly K test instances in each flat category folder (those
      with the smallest hash of their relative path), instead of `test_fraction`.

  Returns:
    MeshRecords whose instance ids are the relative paths without extension, e.g.
    'chair/train/chair_0001'; `mesh` is the absolute file path.
  """
  _check_fraction(test_fraction)
  _check_test_per_category(test_per_category)
  available = folder_categories(mesh_dir)
  if not available:
    raise ValueError(f'Mesh folder {mesh_dir!r} has no <category>/ sub-folders with mesh files '
                     f'({", ".join(MESH_EXTENSIONS)})')
  categories = available if categories is None else list(categories)
  _check_categories(categories, available, f'mesh folder {mesh_dir!r}')
  records = []
  for category in categories:
    category_dir = os.path.join(mesh_dir, category)
    split_dirs = [s for s in SPLITS if os.path.isdir(os.path.join(category_dir, s))]
    if split_dirs:
      listed = [(os.path.join(category, s), s) for s in split_dirs]
    else:
      listed = [(category, None)]
    for relative_dir, split in listed:
      relatives = [os.path.join(relative_dir, name)
                   for name in _mesh_files(os.path.join(mesh_dir, relative_dir))]
      if split is None and test_per_category is not None:
        test = per_category_test(relatives, test_per_category,
                                 f'category {category!r} of mesh folder {mesh_dir!r}')
      for relative in relatives:
        if split is None:
          split_of_file = (('test' if relative in test else 'train')
                           if test_per_category is not None
                           else hash_split(relative, test_fraction))
        else:
          split_of_file = split
        records.append(MeshRecord(
            instance=os.path.splitext(relative)[0].replace(os.sep, '/'), label=category,
            split=split_of_file, mesh=os.path.abspath(os.path.join(mesh_dir, relative))))
  _check_unique(records, mesh_dir)
  return sorted(records, key=lambda r: r.instance)


def _check_unique(records, where):
  # 'a.off' and 'a.obj' in one folder would be one instance id twice.
  seen = {}
  for record in records:
    if record.instance in seen:
      raise ValueError(f'Two meshes in {where!r} share the instance id {record.instance!r}: '
                       f'{seen[record.instance]} and {record.mesh}')
    seen[record.instance] = record.mesh


def shapenet_categories(synsets=None):
  """Sorted category names of `synsets` (default: every synset of `SHAPENET_SYNSETS`)."""
  synsets = SHAPENET_SYNSETS if synsets is None else synsets
  unknown = sorted(set(synsets) - set(SHAPENET_SYNSETS))
  if unknown:
    raise ValueError(f'Unknown ShapeNet synsets {unknown}')
  return sorted(SHAPENET_SYNSETS[s] for s in synsets)


def shapenet_records(shapenet_dir, categories=None, test_fraction=0.2, test_per_category=None):
  """Records of a ShapeNetCore v2 tree `<synset>/<model>/models/model_normalized.obj`.

  Args:
    shapenet_dir: the ShapeNetCore.v2 root.
    categories: optional subset of category names (values of `SHAPENET_SYNSETS`).
    test_fraction: share of test models, chosen by a hash of the model id.
    test_per_category: if set, K: exactly K test models per category (the smallest hashes of
      their model ids), instead of `test_fraction`.

  Returns:
    MeshRecords with instance ids '<category>/<model id>'. Synset folders not in
    `SHAPENET_SYNSETS` and model folders without the mesh file are ignored.
  """
  _check_dir(shapenet_dir, 'ShapeNet folder')
  _check_fraction(test_fraction)
  _check_test_per_category(test_per_category)
  wanted = set(SHAPENET_SYNSETS.values()) if categories is None else set(categories)
  _check_categories(wanted, SHAPENET_SYNSETS.values(), 'ShapeNetCore')
  records = []
  for synset in sorted(os.listdir(shapenet_dir)):
    category = SHAPENET_SYNSETS.get(synset)
    if category not in wanted or not os.path.isdir(os.path.join(shapenet_dir, synset)):
      continue
    models = [m for m in sorted(os.listdir(os.path.join(shapenet_dir, synset)))
              if os.path.isfile(os.path.join(shapenet_dir, synset, m, SHAPENET_MESH))]
    if test_per_category is not None and models:
      test = per_category_test(models, test_per_category,
                               f'ShapeNet category {category!r} ({synset})')
    for model in models:
      split = (('test' if model in test else 'train') if test_per_category is not None
               else hash_split(model, test_fraction))
      records.append(MeshRecord(
          instance=f'{category}/{model}', label=category, split=split,
          mesh=os.path.abspath(os.path.join(shapenet_dir, synset, model, SHAPENET_MESH))))
  if not records:
    raise ValueError(f'ShapeNet folder {shapenet_dir!r} has no <synset>/<model>/{SHAPENET_MESH} '
                     f'for the categories {sorted(wanted)}')
  return sorted(records, key=lambda r: r.instance)
