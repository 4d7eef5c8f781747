"""TFDS builder of (view, spherical map) pairs of 3D shapes: the training data of every stage.

Each mesh instance gives `views_per_instance` examples, one per Haar-random rotation `R` (seeded by
the instance id, so a build is reproducible and independent of the order of the meshes). An
example is a dict:

  key        dtype    shape           meaning
  'image'    float32  [S, S, 1]       the view of `R . mesh` from the fixed camera, values in [0, 1]
                                      (0 = background; `datasets.raycast.MeshRaycaster.views`)
  'sphere'   float32  [2B, 2B, C]     the spherical map of `R . mesh` on the Driscoll-Healy grid;
                                      C = 2 ('depth', 'cos') + extra channels
                                      (`datasets.raycast.MeshRaycaster.spheres`), anti-aliased:
                                      cast at `sphere_oversample` x B and band-limited to B, so
                                      values leave [0, 1] slightly near silhouettes (in [0, 1]
                                      only with sphere_oversample=1)
  'rotation' float32  [3, 3]          `R`, acting on column vectors
  'label'    int64    []              the category index (ClassLabel; names in
                                      `builder.info.features['label'].names`)
  'instance' string   []              the instance id, e.g. b'chair/0007' (bytes from as_numpy)
  'view'     int64    []              the view index within the instance, 0 .. V-1

S = `image_size`, B = `bandwidth`. The splits 'train' and 'test' hold disjoint sets of instances
(`datasets.sources`). Sources: 'procedural' (the default, `datasets.procedural`), 'folder' (a
ModelNet-style folder: `mesh_dir` in the config, or the TFDS manual dir together with
`categories`), 'shapenet' (ShapeNetCore v2 in `mesh_dir` or the manual dir).

A mesh that fails (unreadable file, degenerate mesh, ray casting error) is logged with the reason
and skipped; each split's summary (instances, examples, failures) is logged at its end and kept
in `builder.info.metadata['summary'][split]` (`split_summary`).

Usage:
  builder = make_builder(data_dir, bandwidth=16, image_size=32)
  builder.download_and_prepare()
  train = load_split('train', data_dir, bandwidth=16, image_size=32)   # a tf.data.Dataset

Names: a data set is `equivariant_shapes/<config name>` (the build prints it; `make_config` names
the settings). The presets' settings are registered `BUILDER_CONFIGS`, so `import datasets;
tfds.load('equivariant_shapes/procedural_b8_s16_v2_n10', data_dir=...)` reads the tiny preset's
build; any build (registered or not) reads with `tfds.builder_from_directory(
'<data_dir>/equivariant_shapes/<config>/<version>')`. `data_settings(spec, data_dir)` turns a
name, a JSON object or 'key=value,...' text into the settings of `make_config` (what the command
lines' `--data_config` takes). `as_supervised=True` gives (image, sphere) pairs: a view and the
spherical map of the shape in the same pose.

`examples_for_mesh(record, config)` makes all examples of one mesh; it is the unit of work of the
parallel build with Apache Beam (`datasets.beam_generation`), which the builder uses, with the
same examples and keys, when the download config names a Beam runner or Beam options:

  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      beam_options=beam_generation.pipeline_options('direct_num_workers=2,...')))

or `python -m datasets.build --beam_pipeline_options=...`. apache_beam is an optional extra
(`pip install .[beam]`); without a Beam runner nothing here imports it.
"""
import dataclasses
import hashlib
import importlib
import inspect
import json
import os
import time
from typing import Optional, Tuple

from absl import logging
from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from datasets import procedural
from datasets import raycast
from datasets import sources
from geometry import rotations as rotations_lib

SOURCES = ('procedural', 'folder', 'shapenet')
DATASET_NAME = 'equivariant_shapes'
# No web page of this project exists; the homepage is the ICML 2019 paper the data set serves.
HOMEPAGE = 'https://arxiv.org/abs/1812.02716'
CITATION = """\
@inproceedings{esteves2019cross,
  title = {Cross-Domain 3D Equivariant Image Embeddings},
  author = {Esteves, Carlos and Sud, Avneesh and Luo, Zhengyi and Daniilidis, Kostas and
            Makadia, Ameesh},
  booktitle = {Proceedings of the 36th International Conference on Machine Learning (ICML)},
  pages = {1812--1822},
  year = {2019},
}
@inproceedings{esteves2018learning,
  title = {Learning SO(3) Equivariant Representations with Spherical CNNs},
  author = {Esteves, Carlos and Allen-Blanchette, Christine and Makadia, Ameesh and
            Daniilidis, Kostas},
  booktitle = {Proceedings of the European Conference on Computer Vision (ECCV)},
  pages = {52--68},
  year = {2018},
}
"""
DESCRIPTION = """\
Views and spherical maps of 3D shapes in random poses: the training data of Cross-Domain 3D
Equivariant Image Embeddings (Esteves et al., ICML 2019). Every example is one shape instance at
one Haar-random rotation R: `image`, the grayscale depth-cued view of R . mesh from a fixed camera
on +z (S x S, [0, 1], black background); `sphere`, the ray-cast spherical map of R . mesh on the
Driscoll-Healy grid of bandwidth B ([2B, 2B, C]: depth inside the unit ball, |cos| of the ray and
the surface normal, then any extra channels; band-limited to B); `rotation` R (acts on column
vectors); the category `label`, the `instance` id and the `view` index. Train and test splits hold
disjoint instances. Shapes are procedural (10 categories, generated here) or read from a
ModelNet-style folder or ShapeNetCore v2. Supervised keys: (image, sphere), the view and the
spherical map of the shape in the same pose."""

_MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Only for source='folder' without `mesh_dir` (give `categories` too) and source='shapenet':
put the meshes in the manual dir, either in ModelNet layout <category>/{train,test}/<name>.<ext>
or flat <category>/<name>.<ext>, or a ShapeNetCore v2 tree
<synset>/<model>/models/model_normalized.obj.
The default (procedural) source needs no files."""


@dataclasses.dataclass(eq=False)
class ShapesConfig(tfds.core.BuilderConfig):
  """What to build. Make one with `make_config`, which also picks a name describing it.

  Attributes:
    source: 'procedural', 'folder' or 'shapenet'.
    mesh_dir: root folder of the meshes ('folder', 'shapenet'); None: the TFDS manual dir.
    categories: subset of category names, or None for all (required for 'folder' without
      mesh_dir, since the label names must be known before the manual dir is).
    instances_per_category: procedural instances per category.
    views_per_instance: views (random rotations) per instance.
    bandwidth: B of the spherical maps (2B x 2B).
    image_size: views are image_size x image_size.
    test_fraction: share of test instances (procedural, and flat folders without train/test).
    test_per_category: if set, K: exactly K test instances per category instead of
      `test_fraction` (`datasets.sources`; e.g. 1 for "train on two, test on the third").
    seed: mixed into every instance's rotation seed.
    extra_channels: sphere channels after 'depth' and 'cos' (names of raycast.SPHERE_CHANNELS).
    sphere_oversample: k of `MeshRaycaster.spheres(..., oversample=k)`: rays on the grid of kB,
      low-passed to B, so that `sphere(R . mesh) ~= correlation.rotate(sphere(mesh), R)`
      (relative error about 0.03 at k = 2 against 0.12 at k = 1, B = 32). 1: point samples,
      as in version 1.0.0.
  """
  source: str = 'procedural'
  mesh_dir: Optional[str] = None
  categories: Optional[Tuple[str, ...]] = None
  instances_per_category: int = 20
  views_per_instance: int = 8
  bandwidth: int = 32
  image_size: int = 64
  test_fraction: float = 0.2
  test_per_category: Optional[int] = None
  seed: int = 0
  extra_channels: Tuple[str, ...] = ()
  sphere_oversample: int = 2

  @property
  def sphere_channels(self):
    return len(raycast.BASE_SPHERE_CHANNELS) + len(self.extra_channels)

  def settings(self):
    """The build parameters as a plain dict (for logs and error messages)."""
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(ShapesConfig)
            if f.name not in {g.name for g in dataclasses.fields(tfds.core.BuilderConfig)}}


def make_config(source='procedural', mesh_dir=None, categories=None, instances_per_category=20,
                views_per_instance=8, bandwidth=32, image_size=64, test_fraction=0.2, seed=0,
                extra_channels=(), name=None, test_per_category=None, sphere_oversample=2):
  """A validated `ShapesConfig`, named after its settings (two settings never share a folder).

  The name is '<source>_b<B>_s<S>_v<V>[_n<N>]' (N for the procedural source), followed by a digest
  of the other settings when any differs from the default (mesh folder and its contents:
  `sources.tree_fingerprint`, categories, ..., sphere_oversample != 2). The default sphere_oversample changed from 1 (point samples) to 2 in
  builder version 1.1.0; names were kept, and the version keeps the old data apart (TFDS stores
  each version in its own folder), so a 1.0.0 build is never read as an anti-aliased one.

  Raises:
    ValueError naming the bad setting.
  """
  if source not in SOURCES:
    raise ValueError(f'source must be one of {SOURCES}, got {source!r}')
  for flag, value in (('instances_per_category', instances_per_category),
                      ('views_per_instance', views_per_instance), ('bandwidth', bandwidth),
                      ('image_size', image_size), ('sphere_oversample', sphere_oversample)):
    if int(value) != value or value < 1:
      raise ValueError(f'{flag} must be a positive integer, got {value!r}')
  if not 0.0 <= test_fraction < 1.0:
    raise ValueError(f'test_fraction must be in [0, 1), got {test_fraction!r}')
  if test_per_category is not None and (isinstance(test_per_category, bool) or
                                        int(test_per_category) != test_per_category or
                                        test_per_category < 1):
    raise ValueError(f'test_per_category must be a positive integer or None, '
                     f'got {test_per_category!r}')
  if (source == 'procedural' and test_per_category is not None
      and test_per_category >= instances_per_category):
    raise ValueError(f'test_per_category={test_per_category} leaves no training instance of the '
                     f'{instances_per_category} per category (instances_per_category)')
  unknown = [c for c in extra_channels if c not in raycast.SPHERE_CHANNELS
             or c in raycast.BASE_SPHERE_CHANNELS]
  if unknown:
    raise ValueError(f'Unknown extra sphere channels {unknown}; choose from '
                     f'{sorted(set(raycast.SPHERE_CHANNELS) - set(raycast.BASE_SPHERE_CHANNELS))}')
  if mesh_dir is not None:
    if source == 'procedural':
      raise ValueError('mesh_dir is only for the folder and shapenet sources')
    if not os.path.isdir(mesh_dir):
      raise ValueError(f'mesh_dir {mesh_dir!r} is not a folder')
    mesh_dir = os.path.abspath(mesh_dir)
  if source == 'folder' and mesh_dir is None and not categories:
    raise ValueError("source='folder' needs mesh_dir, or categories when the meshes are in the "
                     'TFDS manual dir')
  categories = None if categories is None else tuple(sorted(categories))
  if source == 'procedural' and categories is not None:
    unknown = sorted(set(categories) - set(procedural.CATEGORIES))
    if unknown:
      raise ValueError(f'Unknown procedural categories {unknown}; choose from '
                       f'{procedural.CATEGORIES}')
  if name is None:
    name = f'{source}_b{bandwidth}_s{image_size}_v{views_per_instance}'
    if source == 'procedural':
      name += f'_n{instances_per_category}'
    others = {'mesh_dir': mesh_dir, 'categories': categories, 'test_fraction': test_fraction,
              'seed': seed, 'extra_channels': tuple(extra_channels)}
    defaults = {'mesh_dir': None, 'categories': None, 'test_fraction': 0.2, 'seed': 0,
                'extra_channels': ()}
    if test_per_category is not None:  # only when set, so the older names stay the same
      others['test_per_category'] = int(test_per_category)
    if sphere_oversample != 2:  # likewise: the default keeps the names of version 1.0.0
      others['sphere_oversample'] = int(sphere_oversample)
    if mesh_dir is not None:
      # What is in the folder, not only its path: a changed folder is another data set, built
      # afresh instead of reused stale.
      others['mesh_contents'] = sources.tree_fingerprint(mesh_dir)
    if others != defaults:
      name += '_' + hashlib.sha256(repr(sorted(others.items())).encode()).hexdigest()[:10]
  return ShapesConfig(
      name=name, description=f'{source} shapes, bandwidth {bandwidth}, {image_size} px views, '
      f'{views_per_instance} views per instance', source=source, mesh_dir=mesh_dir,
      categories=categories, instances_per_category=int(instances_per_category),
      views_per_instance=int(views_per_instance), bandwidth=int(bandwidth),
      image_size=int(image_size), test_fraction=float(test_fraction),
      test_per_category=None if test_per_category is None else int(test_per_category),
      seed=int(seed), extra_channels=tuple(extra_channels),
      sphere_oversample=int(sphere_oversample))


def category_names(config):
  """Ordered label names of a config (the ClassLabel names)."""
  if config.categories is not None:
    return list(config.categories)
  if config.source == 'procedural':
    return list(procedural.CATEGORIES)
  if config.source == 'folder':
    return sources.folder_categories(config.mesh_dir)
  return sources.shapenet_categories()


def mesh_records(config, mesh_dir=None):
  """All `sources.MeshRecord`s of a config; `mesh_dir` overrides config.mesh_dir (manual dir)."""
  mesh_dir = config.mesh_dir or mesh_dir
  if config.source == 'procedural':
    return sources.procedural_records(config.instances_per_category, config.categories,
                                      config.test_fraction, config.test_per_category)
  if mesh_dir is None:
    raise ValueError(f'The {config.source} source needs a mesh folder: set mesh_dir or pass '
                     'download_config=tfds.download.DownloadConfig(manual_dir=...)')
  if config.source == 'folder':
    return sources.folder_records(mesh_dir, config.categories, config.test_fraction,
                                  config.test_per_category)
  return sources.shapenet_records(mesh_dir, config.categories, config.test_fraction,
                                  config.test_per_category)


def rotation_seed(instance, seed=0):
  """A 64-bit seed for the rotations of one instance: a hash of its id (order independent)."""
  digest = hashlib.sha256(f'{seed}:{instance}'.encode('utf-8')).digest()
  return int.from_bytes(digest[:8], 'little')


def examples_for_mesh(record, config):
  """All examples of one mesh: a list of (key, example dict) with keys '<instance>/<view>'.

  The mesh is loaded and ray cast once (one BVH); the spheres and the views of its V rotations
  are two batched calls.

  Raises:
    ValueError (or whatever loading raises) if the mesh cannot be used; the caller skips it.
  """
  mesh = record.load()
  rotations = rotations_lib.random_rotations(config.views_per_instance,
                                             rotation_seed(record.instance, config.seed))
  caster = raycast.MeshRaycaster(mesh)
  spheres = caster.spheres(rotations, bandwidth=config.bandwidth,
                           extra_channels=config.extra_channels,
                           oversample=config.sphere_oversample)
  images = caster.views(rotations, size=config.image_size)
  for name, array in (('sphere', spheres), ('image', images)):
    if not np.isfinite(array).all():
      raise ValueError(f'{record.instance}: non-finite values in the {name}s')
  examples = []
  for view in range(config.views_per_instance):
    examples.append((f'{record.instance}/{view:03d}', {
        'image': images[view],
        'sphere': spheres[view],
        'rotation': rotations[view].astype(np.float32),
        'label': record.label,
        'instance': record.instance,
        'view': view,
    }))
  return examples


def mesh_failure(record, error):
  """The failure entry of a mesh that could not be used: {'instance', 'origin', 'reason'}."""
  return {'instance': record.instance, 'origin': record.origin,
          'reason': f'{type(error).__name__}: {error}'}


def split_summary(num_records, examples_per_label, failures, seconds, generated_with):
  """The summary of one split's generation, as kept in `builder.info.metadata['summary']`.

  Args:
    num_records: the number of meshes of the split.
    examples_per_label: {label name: examples}, for the labels with at least one usable mesh.
    failures: `mesh_failure` entries of the meshes that were skipped.
    seconds: the generation time: wall time of the local build; for Beam the time spent in
      `examples_for_mesh` summed over all workers (splits share one pipeline, so a split has no
      wall time of its own).
    generated_with: 'python' (the local generator) or 'beam'.

  Returns:
    {'instances', 'examples', 'examples_per_label', 'failures' (sorted by instance), 'seconds',
     'generated_with'}; the same, but for 'seconds' and 'generated_with', whichever way it was
    generated.
  """
  failures = sorted(failures, key=lambda f: f['instance'])
  return {
      'instances': num_records - len(failures),
      'examples': sum(examples_per_label.values()),
      'examples_per_label': dict(sorted(examples_per_label.items())),
      'failures': failures,
      'seconds': round(seconds, 3),
      'generated_with': generated_with,
  }


def _log_summary(split, summary):
  failures = summary['failures']
  logging.info('%s: %d examples from %d instances in %.1f s (%s); %d meshes failed%s', split,
               summary['examples'], summary['instances'], summary['seconds'],
               summary['generated_with'], len(failures),
               ''.join(f'\n  {f["instance"]}: {f["reason"]}' for f in failures))


def import_beam_generation():
  """`datasets.beam_generation`, imported only for a Beam build (apache_beam is optional)."""
  try:
    return importlib.import_module('datasets.beam_generation')
  except ImportError as e:
    raise ImportError('A Beam runner or Beam options were given, but apache_beam is not '
                      'installed: pip install -e ".[beam]" (or scripts/bootstrap_beam.sh, which '
                      f'makes .venv-beam). ({e})') from e


class EquivariantShapes(tfds.core.GeneratorBasedBuilder):
  """Views and spherical maps of procedural or real 3D shapes (see the module docstring)."""

  VERSION = tfds.core.Version('1.4.0')
  RELEASE_NOTES = {
      '1.0.0': 'First release.',
      '1.1.0': 'Anti-aliased spheres: sphere_oversample (default 2) casts at 2B and band-limits '
               'to B.',
      '1.2.0': 'Depth-cued views (datasets.raycast.shade): farther surfaces are darker, so a view '
               'tells the front of a mirror-symmetric shape from its back.',
      '1.3.0': 'Procedural shapes with larger symmetry breakers (datasets.procedural): no category '
               'has a rotation 30 degrees or more from the identity that nearly ties its pose.',
      '1.4.0': 'Procedural airplanes, benches, lamps and tables told front from back more plainly: '
               'a tapered, rising tail cone and swept wings; shorter benches with taller backs; '
               'desk lamps (short arm, large shade); a raised rail at the back of a table top.',
  }
  MANUAL_DOWNLOAD_INSTRUCTIONS = _MANUAL_DOWNLOAD_INSTRUCTIONS
  # The first one is the default; custom settings: EquivariantShapes(config=make_config(...)).
  # The presets' data (pipeline.presets; tests/test_builders.py checks they stay registered) are
  # named configs, so loading them by name needs no settings and TFDS does not warn about
  # custom configurations.
  BUILDER_CONFIGS = [
      make_config(),  # procedural_b32_s64_v8_n20
      make_config(bandwidth=16, image_size=32),  # small and quick, for development
      make_config(instances_per_category=100, views_per_instance=16),
      make_config(instances_per_category=10, views_per_instance=2, bandwidth=8,
                  image_size=16),  # preset tiny
      make_config(instances_per_category=68, test_per_category=4, views_per_instance=16,
                  bandwidth=16, image_size=32),  # preset default
      make_config(instances_per_category=100, views_per_instance=32, bandwidth=32,
                  image_size=64),  # preset paper
  ]

  def _info(self):
    config = self.builder_config
    b, s = config.bandwidth, config.image_size
    return self.dataset_info_from_configs(
        description=DESCRIPTION,
        homepage=HOMEPAGE,
        citation=CITATION,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Tensor(shape=(s, s, 1), dtype=np.float32, encoding='zlib'),
            'sphere': tfds.features.Tensor(shape=(2 * b, 2 * b, config.sphere_channels),
                                           dtype=np.float32, encoding='zlib'),
            'rotation': tfds.features.Tensor(shape=(3, 3), dtype=np.float32),
            'label': tfds.features.ClassLabel(names=category_names(config)),
            'instance': tfds.features.Text(),
            'view': tfds.features.Scalar(dtype=np.int64),
        }),
        supervised_keys=('image', 'sphere'),
        metadata=tfds.core.MetadataDict(),
    )

  def _log_download_bytes(self):
    # TFDS prints download sizes (all 'Unknown' here: nothing is downloaded) on stdout; a log line.
    logging.info('Building %s/%s in %s', self.name, self.builder_config.name, self.data_dir)

  def _log_download_done(self):
    logging.info('Built %s/%s in %s', self.name, self.builder_config.name, self.data_dir)

  def _download_and_prepare(self, dl_manager, download_config):
    # A Beam runner or Beam options switch the generation to Beam, as for TFDS' own Beam data
    # sets (`tfds build --beam_pipeline_options=...` sets the options).
    self._use_beam = (download_config.beam_runner is not None
                      or download_config.beam_options is not None)
    self._beam_summary_paths = {}
    super()._download_and_prepare(dl_manager, download_config)

  def _split_generators(self, dl_manager):
    config = self.builder_config
    manual_dir = None
    if config.source != 'procedural' and config.mesh_dir is None:
      manual_dir = str(dl_manager.manual_dir)
    records = mesh_records(config, manual_dir)
    self.info.metadata['summary'] = {}
    # What this build read: its categories, and the folder entries it skipped (build_warnings).
    self.info.metadata['label_names'] = category_names(config)
    self.info.metadata['skipped'] = (
        [list(entry) for entry in sources.folder_skipped(config.mesh_dir or manual_dir)]
        if config.source == 'folder' else [])
    # What `data_settings` reads back to find an unregistered config by its name.
    self.info.metadata['settings'] = json.loads(json.dumps(config.settings()))
    splits = {}
    for split in sources.SPLITS:
      split_records = [r for r in records if r.split == split]
      if not split_records:
        logging.warning('%s: no instances in split %r; it is left out', config.name, split)
      elif getattr(self, '_use_beam', False):
        # Workers write the split's summary next to the data (self.data_dir is the incomplete
        # folder during the build); _process_pipeline_result moves it into the metadata.
        path = os.path.join(self.data_dir, f'{split}.build_summary.json')
        self._beam_summary_paths[split] = path
        splits[split] = import_beam_generation().MeshExamples(split_records, config, path)
      else:
        splits[split] = self._generate_examples(split, split_records)
    return splits

  def _generate_examples(self, split, records):
    """Yields (key, example) for every view of every usable mesh; logs and skips bad meshes."""
    config = self.builder_config
    examples_per_label = {}
    failures = []
    start = time.time()
    for i, record in enumerate(records):
      try:
        examples = examples_for_mesh(record, config)
      except Exception as e:  # pylint: disable=broad-except  (one bad mesh never stops a build)
        failures.append(mesh_failure(record, e))
        logging.warning('%s: skipping %s (%s): %s', split, record.instance, record.origin,
                        failures[-1]['reason'])
        continue
      examples_per_label[record.label] = examples_per_label.get(record.label, 0) + len(examples)
      yield from examples
      done = i + 1
      if done % 20 == 0 or done == len(records):
        elapsed = time.time() - start
        logging.info('%s: %d/%d meshes, %.1f examples/s', split, done, len(records),
                     sum(examples_per_label.values()) / max(elapsed, 1e-9))
    summary = split_summary(len(records), examples_per_label, failures, time.time() - start,
                            'python')
    self.info.metadata['summary'][split] = summary
    _log_summary(split, summary)

  def _process_pipeline_result(self, pipeline_result):
    """After a Beam build: reads each split's summary, written by the workers, into the metadata."""
    del pipeline_result  # the summaries are files, not Beam metrics (they hold failure reasons)
    for split, path in self._beam_summary_paths.items():
      path = epath.Path(path)
      if not path.exists():
        raise RuntimeError(f'The Beam pipeline finished without writing the {split} summary {path}')
      summary = json.loads(path.read_text())
      path.unlink()
      self.info.metadata['summary'][split] = summary
      _log_summary(split, summary)


def make_builder(data_dir, source='procedural', mesh_dir=None, views_per_instance=8,
                 bandwidth=32, image_size=64, instances_per_category=20, **config):
  """The `EquivariantShapes` builder of these settings (see `make_config`), reading and writing
  under `data_dir`. Call `.download_and_prepare()` on it to build."""
  config = make_config(source=source, mesh_dir=mesh_dir, views_per_instance=views_per_instance,
                       bandwidth=bandwidth, image_size=image_size,
                       instances_per_category=instances_per_category, **config)
  # A preset is passed by name (TFDS warns about custom configs); the name fixes the settings.
  if config.name in {c.name for c in EquivariantShapes.BUILDER_CONFIGS}:
    config = config.name
  return EquivariantShapes(data_dir=data_dir, config=config)


def load_split(split, data_dir, shuffle_files=False, **config):
  """The built split `split` ('train' or 'test') as a `tf.data.Dataset` of example dicts.

  Args:
    split: a TFDS split name ('train', 'test', or a slice such as 'train[:10%]').
    data_dir: where the data set was built.
    shuffle_files: passed to `as_dataset`.
    **config: the settings of `make_builder` (source, bandwidth, image_size, ...).

  Raises:
    FileNotFoundError naming data_dir and the settings if that data set has not been built.
  """
  builder = make_builder(data_dir, **config)
  if not builder.is_prepared():
    raise FileNotFoundError(
        f'No {builder.name}/{builder.builder_config.name} data set in {data_dir} (settings '
        f'{builder.builder_config.settings()}); build it first with main.py or '
        'make_builder(...).download_and_prepare()')
  return builder.as_dataset(split=split, shuffle_files=shuffle_files)


def build_summary(builder):
  """{split: summary} of the build: instances, examples, examples_per_label, failures, seconds."""
  return dict(builder.info.metadata.get('summary', {}))


def built_labels(builder):
  """The category names of the build (as it recorded them), else those of its config."""
  names = builder.info.metadata.get('label_names')
  return list(names) if names is not None else list(builder.info.features['label'].names)


def build_warnings(builder):
  """Lines about what the build left out: categories with no usable mesh (empty classes) and the
  entries of the mesh folder it skipped (`sources.folder_skipped`)."""
  summary = build_summary(builder)
  lines = []
  for label in built_labels(builder):
    if not any(split['examples_per_label'].get(label) for split in summary.values()):
      failed = sum(1 for split in summary.values() for f in split['failures']
                   if f['instance'].split('/')[0] == label)
      lines.append(f'Warning: category {label!r} has no usable mesh ({failed} failed): an empty '
                   'class')
  skipped = builder.info.metadata.get('skipped', [])
  if skipped:
    lines.append(f'Skipped entries of the mesh folder: {len(skipped)}')
    lines += [f'  {relative}: {reason}' for relative, reason in skipped]
  return lines


def incomplete_folders(builder):
  """The temporary folders of builds of this config that never finished (TFDS writes a build into
  `<config folder>/incomplete.<random>_<version>/` and renames it when done)."""
  config_dir = epath.Path(builder.data_dir).parent
  if not config_dir.exists():
    return []
  return sorted(p for p in config_dir.iterdir() if p.name.startswith('incomplete.') and p.is_dir())


def prepare(builder, force=False, download_dir=None, beam_options=None, announce=print):
  """Builds the data set of `builder` unless it is built (`force`: rebuild), one build at a time.

  The config's folder is locked for the build (pipeline.locks: a second build of it is refused
  naming the first); the `incomplete.*` folders of killed builds are removed first, and what
  `force` removes is announced.
  """
  from pipeline import locks  # pylint: disable=g-import-not-at-top  (the command-line layer)
  config_dir = os.path.dirname(os.fspath(builder.data_dir))
  with locks.hold(config_dir, 'data set folder', announce=announce):
    for folder in incomplete_folders(builder):
      announce(f'Removing {folder}, left by a build that did not finish')
      folder.rmtree()
    if force and builder.is_prepared():
      announce(f'--force: removing the built data set {builder.data_dir} to rebuild it')
    mode = (tfds.download.GenerateMode.FORCE_REDOWNLOAD if force
            else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
    builder.download_and_prepare(download_dir=download_dir, download_config=(
        tfds.download.DownloadConfig(download_mode=mode, beam_options=beam_options)))
  return builder


def _config_settings(config):
  """The `make_config` keywords of a config (its settings, JSON-friendly)."""
  accepted = set(inspect.signature(make_config).parameters) - {'name'}
  settings = json.loads(json.dumps(config.settings()))
  return {k: v for k, v in settings.items() if k in accepted}


def registered_names():
  """The names of the registered configs, 'equivariant_shapes/<config>'."""
  return [f'{DATASET_NAME}/{c.name}' for c in EquivariantShapes.BUILDER_CONFIGS]


def built_names(data_dir):
  """The 'equivariant_shapes/<config>' names built in `data_dir` (any version), sorted."""
  if not data_dir or not (epath.Path(data_dir) / DATASET_NAME).exists():
    return []
  root = epath.Path(data_dir) / DATASET_NAME
  return sorted(f'{DATASET_NAME}/{p.name}' for p in root.iterdir()
                if p.is_dir() and any((v / 'dataset_info.json').exists() for v in p.iterdir()
                                      if v.is_dir()))


def _settings_of_built(config_name, data_dir):
  """The settings a build of `config_name` in `data_dir` recorded (newest version), or None."""
  if not data_dir or not (epath.Path(data_dir) / DATASET_NAME / config_name).exists():
    return None
  folder = epath.Path(data_dir) / DATASET_NAME / config_name
  for version in sorted((v for v in folder.iterdir() if v.is_dir()), key=lambda v: v.name,
                        reverse=True):
    metadata = version / 'metadata.json'
    if metadata.exists():
      settings = json.loads(metadata.read_text()).get('settings')
      if settings is not None:
        accepted = set(inspect.signature(make_config).parameters) - {'name'}
        return {k: v for k, v in settings.items() if k in accepted}
  return None


def parse_key_values(text):
  """'bandwidth=16,image_size=32' -> {'bandwidth': 16, 'image_size': 32} (ints, floats, bools,
  'none'; other values stay strings)."""
  settings = {}
  for item in text.split(','):
    item = item.strip()
    if not item:
      continue
    key, sep, value = item.partition('=')
    if not sep or not key.strip():
      raise ValueError(f'expected key=value, got {item!r}')
    value = value.strip()
    for cast in (int, float):
      try:
        value = cast(value)
        break
      except ValueError:
        pass
    if isinstance(value, str):
      value = {'true': True, 'false': False, 'none': None}.get(value.lower(), value)
    settings[key.strip()] = value
  return settings


def data_settings(spec, data_dir=None):
  """The `make_config` settings named by `spec`, one format for every command line.

  Args:
    spec: a data set name as the build prints it, 'equivariant_shapes/<config>' (the prefix and a
      ':<version>' suffix are optional); a JSON object '{"bandwidth": 16, "image_size": 32}'; or
      'key=value,...' text ('bandwidth=16,image_size=32'); a dict is returned as it is; None or
      '' mean the default settings ({}).
    data_dir: where to look for a build of a name that is not registered (its settings are in
      the build's metadata.json).

  Returns:
    dict of `make_config` keywords (validated: make_config accepts them).

  Raises:
    ValueError naming the spec and, for an unknown name, the registered and built names.
  """
  if spec is None or isinstance(spec, dict):
    settings = dict(spec or {})
  else:
    text = str(spec).strip()
    if not text:
      settings = {}
    elif text.startswith('{'):
      try:
        settings = json.loads(text)
      except json.JSONDecodeError as e:
        raise ValueError(f'data set settings are not valid JSON ({e}): {text!r}') from None
      if not isinstance(settings, dict):
        raise ValueError(f'data set settings must be a JSON object, got {text!r}')
    elif '=' in text:
      try:
        settings = parse_key_values(text)
      except ValueError as e:
        raise ValueError(f'data set settings {text!r}: {e}') from None
    else:
      name = text.split(':', 1)[0]
      if name.startswith(DATASET_NAME + '/'):
        name = name[len(DATASET_NAME) + 1:]
      if '/' in name or not name:
        raise ValueError(f'{text!r} is not a data set of this project (expected '
                         f'{DATASET_NAME}/<config>)')
      registered = {c.name: c for c in EquivariantShapes.BUILDER_CONFIGS}
      if name in registered:
        settings = _config_settings(registered[name])
      else:
        settings = _settings_of_built(name, data_dir)
        if settings is None:
          raise ValueError(
              f'no data set {DATASET_NAME}/{name}' + (f' built in {data_dir}' if data_dir else '')
              + f'; registered: {", ".join(registered_names())}'
              + (f'; built there: {", ".join(built_names(data_dir)) or "none"}' if data_dir
                 else '') + '. Give its name as the build printed it, or its settings')
  try:
    make_config(**settings)
  except TypeError as e:
    raise ValueError(f'data set settings {settings}: {e}') from None
  return settings


def dataset_name(settings):
  """'equivariant_shapes/<config>' of `make_config` settings (what the build prints)."""
  return f'{DATASET_NAME}/{make_config(**settings).name}'
