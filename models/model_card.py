"""Model cards: the contract of an exported model, kept in its SavedModel's `assets/` folder.

Every export (the teacher's TF-Hub module, the student's embedder, the synthesiser) carries two
files in `<export>/assets/`:

  model_card.json   machine-readable: inputs and outputs (dtype, shape, meaning), signatures,
                    grid convention, units, the teacher layer, build settings, the commit it was
                    exported from and, after training, what it was trained on (`trained_on`);
  model_card.md     the same for people, with the three ways to load it.

`read_card(export_dir)` reads the JSON back. `add_training_record(export_dir, record)` adds what
the training run knew and the export did not (data set name and settings, steps, the teacher the
student learned from); `models.training.train` calls it after the export.

Shapes use None for the batch dimension. A spherical map `[N, 2B, 2B, C]` is on the
Driscoll-Healy grid of bandwidth B (docs/conventions.md): rows are colatitudes
`beta_j = pi (2j + 1) / (4B)` north to south, columns longitudes `alpha_k = 2 pi k / (2B)`,
channels last.
"""
import json
import os
import subprocess

CARD_JSON = 'model_card.json'
CARD_MD = 'model_card.md'

PAPER = ('Esteves, Sud, Luo, Daniilidis, Makadia. Cross-Domain 3D Equivariant Image Embeddings. '
         'ICML 2019 (arXiv:1812.02716)')
TEACHER_PAPER = ('Esteves, Allen-Blanchette, Makadia, Daniilidis. Learning SO(3) Equivariant '
                 'Representations with Spherical CNNs. ECCV 2018 (arXiv:1711.06721)')
GRID = ('Driscoll-Healy grid of bandwidth B: [2B rows = colatitude beta_j = pi (2j + 1) / (4B), '
        'north to south; 2B columns = longitude alpha_k = 2 pi k / (2B); channels last]; '
        'rotations act on column vectors, (R . f)(x) = f(R^T x) (docs/conventions.md)')
VIEW_CONVENTION = ('a view of the object from the fixed camera on +z looking at the origin, '
                   'image up = +y, row 0 at the top; black (0) background, grayscale in [0, 1]')


def _spec(dtype, shape, meaning):
  return {'dtype': dtype, 'shape': [None if d is None else int(d) for d in shape],
          'meaning': meaning}


def git_commit(root=None):
  """The commit of the checkout at `root` (default: this project's), '+dirty' when it has
  uncommitted changes to tracked files; 'unknown' outside a git checkout."""
  root = root or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  try:
    commit = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=root, capture_output=True,
                            text=True, timeout=10, check=True).stdout.strip()
    dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'], cwd=root,
                           capture_output=True, text=True, timeout=10, check=True).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return 'unknown'
  return commit + ('+dirty' if dirty else '')


def _teacher_output_meaning(name, config):
  """What the teacher's output `name` is (see models.teacher)."""
  if name == 'logits':
    return 'class scores (unnormalised log-probabilities), invariant to rotations of the input'
  if name == 'aux_logits':
    return ("the auxiliary classifier's scores, from the last branch's half of the descriptor "
            '(a training aid)')
  if name == 'descriptor':
    return ('area-weighted global average of the last block, all branches concatenated; '
            'rotation invariant')
  if name == 'embedding':
    block = config.get('embedding_block')
    return (f'the target map the students learn: the same tensor as `{block}`; rotation '
            'equivariant (embedding(R . f) ~= R . embedding(f))')
  if name.startswith('block'):
    return (f'the spherical feature map after block {name[5:]} (spherical conv, area-weighted '
            'batch norm, PReLU), branches concatenated on channels; rotation equivariant')
  return 'model output'


def teacher_card(input_spec, output_shapes, config):
  """The card of a teacher module (`models.teacher.export_teacher`).

  Args:
    input_spec: the `tf.TensorSpec` of the spheres (its name is the signature's keyword).
    output_shapes: {output name: shape without the batch dimension}.
    config: the teacher's build settings (`model.teacher_config`).
  """
  b = config.get('bandwidth')
  outputs = {name: _spec('float32', [None] + list(shape), _teacher_output_meaning(name, config))
             for name, shape in sorted(output_shapes.items())}
  return {
      'model': 'teacher',
      'what': ('spherical CNN (two-branch, Esteves et al. ECCV 2018) on ray-cast spherical maps '
               'of 3D shapes; its equivariant feature maps are the targets of the image students'),
      'format': 'TF-Hub reusable SavedModel (TF2): obj(spheres, training=False) -> dict, '
                'variables, trainable_variables, regularization_losses, '
                "signatures['serving_default'], config_json",
      'inputs': {input_spec.name: _spec(
          input_spec.dtype.name, input_spec.shape.as_list(),
          f'spherical maps of bandwidth B = {b} of a shape: channel 0 depth (distance travelled '
          'inside the unit ball / 2, 1 = no hit), channel 1 |cos| between ray and surface normal '
          '(0 = no hit), then any extra channels (datasets.raycast)')},
      'outputs': outputs,
      'signatures': {'serving_default': f'keyword `{input_spec.name}`, outputs as above'},
      'teacher_layer': config.get('embedding_block'),
      'grid': GRID,
      'units': ('activations of the network (PReLU outputs after area-weighted batch norm), no '
                'physical unit; the students predict `embedding` in these units'),
      'settings': config,
      'papers': [TEACHER_PAPER, PAPER],
  }


def embedder_card(image_shape, embedding_shape, symmetry_average, encoded_signature=None):
  """The card of an embedder SavedModel (`models.embedder_export.export_embedder`)."""
  b = embedding_shape[0] // 2
  s = image_shape[0]
  embedding = f'[N, {embedding_shape[0]}, {embedding_shape[1]}, {embedding_shape[2]}]'
  outputs = {
      'embedding': _spec('float32', [None] + list(embedding_shape),
                         f"the spherical map of the view, bandwidth B = {b}, in the teacher's "
                         'units (the teacher layer it was trained on: see trained_on)'),
      'embedding_unit': _spec('float32', [None] + list(embedding_shape),
                              "the student's sigmoid output in [0, 1]: `embedding` mapped per "
                              "channel by the range fitted on the teacher's training targets"),
  }
  signatures = {
      'serving_default': f'keyword `images`, float32 [N, {s}, {s}, {image_shape[2]}] in [0, 1]',
      'serving_uint8': f'keyword `images`, uint8 [N, {s}, {s}, {image_shape[2]}] in 0..255',
  }
  inputs = {'images': _spec('float32', [None] + list(image_shape),
                            f'{VIEW_CONVENTION}; {s} x {s} pixels')}
  if encoded_signature:
    signatures[encoded_signature] = (
        'keyword `images`, string [N]: encoded PNG, JPEG, GIF or BMP files of any size, RGB(A) '
        'or gray; decoded and converted in-graph like evaluation.images.load_view (alpha onto '
        f'black, ITU-R 601-2 luminance, antialiased bilinear resize to {s} x {s}, [0, 1])')
    inputs['images_encoded'] = _spec('string', [None], 'encoded image files (serving_encoded)')
  return {
      'model': 'embedder',
      'what': ('image -> spherical map: a ResNet v2 student trained to predict the teacher\'s '
               'equivariant map of a view (Esteves et al. ICML 2019); two embeddings correlated '
               'over SO(3) give the relative pose of the views (correlation.align)'),
      'format': 'TF2 SavedModel (tf.Module): embed, embed_uint8, embed_encoded, signatures',
      'inputs': inputs,
      'outputs': outputs,
      'signatures': signatures,
      'symmetry_average': symmetry_average,
      'grid': GRID,
      'units': f"teacher units for `embedding` {embedding}; [0, 1] for `embedding_unit`",
      'relative_pose': ('evaluation.relpose.relative_pose_from_embeddings(e1, e2): the odd degrees '
                        'of student maps are doubled before correlating (odd_degree_weight=2)'),
      'papers': [PAPER],
  }


def synthesizer_card(embedding_shape, image_shape):
  """The card of a synthesiser SavedModel (`models.embedder_export.export_synthesizer`)."""
  return {
      'model': 'synthesizer',
      'what': 'spherical map (teacher units) -> view of the object at the pose of the map',
      'format': 'TF2 SavedModel (tf.Module): synthesize, signatures',
      'inputs': {'embeddings': _spec('float32', [None] + list(embedding_shape),
                                     "teacher-unit spherical maps (the teacher's embedding)")},
      'outputs': {'image': _spec('float32', [None] + list(image_shape), VIEW_CONVENTION)},
      'signatures': {'serving_default': 'keyword `embeddings`, outputs as above'},
      'grid': GRID,
      'papers': [PAPER],
  }


def _loading_examples(card):
  """Python snippets that load the export with standard TF APIs, per route."""
  if card['model'] == 'teacher':
    (name, spec), = card['inputs'].items()
    shape = ', '.join('N' if d is None else str(d) for d in spec['shape'])
    return {
        'hub.load': ("import tensorflow_hub as hub\nteacher = hub.load(EXPORT)\n"
                     f"out = teacher(spheres)  # float32 [{shape}] -> dict of the outputs above"),
        'keras.layers.TFSMLayer (Keras 3)': (
            "import keras\nlayer = keras.layers.TFSMLayer(EXPORT, call_endpoint='serving_default')"
            f"\nout = layer({name}=spheres)  # or layer(spheres); dict of the outputs above"),
        'hub.KerasLayer (tf_keras, TF_USE_LEGACY_KERAS=1)': (
            "import os; os.environ['TF_USE_LEGACY_KERAS'] = '1'  # before importing TensorFlow\n"
            "import tensorflow_hub as hub\n"
            "layer = hub.KerasLayer(EXPORT, output_key='embedding')  # trainable=True fine-tunes\n"
            "maps = layer(spheres)"),
    }
  if card['model'] == 'embedder':
    return {
        'tf.saved_model.load': ("embedder = tf.saved_model.load(EXPORT)\n"
                                "embedder.embed(images_float01)['embedding']\n"
                                "embedder.embed_encoded(tf.constant([png_or_jpeg_bytes]))"
                                "['embedding']"),
        'keras.layers.TFSMLayer (Keras 3)': (
            "layer = keras.layers.TFSMLayer(EXPORT, call_endpoint='serving_default')\n"
            "layer(images_float01)['embedding']"),
        'hub.KerasLayer (tf_keras, TF_USE_LEGACY_KERAS=1)': (
            "hub.KerasLayer(EXPORT, signature='serving_default', "
            "signature_outputs_as_dict=True)(images)['embedding']"),
    }
  return {'tf.saved_model.load': ("synthesizer = tf.saved_model.load(EXPORT)\n"
                                  "synthesizer.synthesize(embeddings)['image']")}


def to_markdown(card):
  """The card as Markdown text."""
  lines = [f"# Model card: {card['model']}", '', card['what'], '', f"Format: {card['format']}.", '']
  for title, key in (('Inputs', 'inputs'), ('Outputs', 'outputs')):
    lines += [f'## {title}', '', '| key | dtype | shape | meaning |', '|---|---|---|---|']
    for name, spec in card[key].items():
      shape = '[' + ', '.join('N' if d is None else str(d) for d in spec['shape']) + ']'
      lines.append(f"| `{name}` | {spec['dtype']} | {shape} | {spec['meaning']} |")
    lines.append('')
  lines += ['## Signatures', ''] + [f'- `{k}`: {v}' for k, v in card['signatures'].items()] + ['']
  lines += ['## Conventions', '', f"- Grid: {card['grid']}."]
  for key, title in (('teacher_layer', 'Teacher layer (`embedding`)'), ('units', 'Units'),
                     ('symmetry_average', 'Symmetry average'), ('relative_pose', 'Relative pose')):
    if key in card:
      lines.append(f'- {title}: {card[key]}')
  lines += ['', '## Provenance', '', f"- Exported from commit: {card.get('commit', 'unknown')}"]
  trained = card.get('trained_on')
  if trained:
    for key, value in trained.items():
      lines.append(f'- {key}: {json.dumps(value, sort_keys=True)}')
  else:
    lines.append('- Trained on: not recorded (exported outside models.training.train)')
  if 'settings' in card:
    lines += ['', '## Settings', '', '```json', json.dumps(card['settings'], indent=2,
                                                           sort_keys=True), '```']
  lines += ['', '## Loading', '']
  for route, code in _loading_examples(card).items():
    lines += [f'{route}:', '', '```python', code, '```', '']
  lines += ['## References', ''] + [f'- {p}' for p in card['papers']]
  return '\n'.join(lines) + '\n'


def card_files(card):
  """{file name: text} of the card, for `assets/`."""
  return {CARD_JSON: json.dumps(card, indent=2, sort_keys=True) + '\n',
          CARD_MD: to_markdown(card)}


def write_card(export_dir, card):
  """Writes the card's files into `export_dir/assets/` (each file atomically); returns `card`."""
  card = dict(card)
  card.setdefault('commit', git_commit())
  assets = os.path.join(export_dir, 'assets')
  os.makedirs(assets, exist_ok=True)
  for name, text in card_files(card).items():
    tmp = os.path.join(assets, f'.{name}.tmp{os.getpid()}')
    with open(tmp, 'w') as f:
      f.write(text)
    os.replace(tmp, os.path.join(assets, name))
  return card


def read_card(export_dir):
  """The card dict of an export; ValueError naming the folder when it has none."""
  path = os.path.join(export_dir, 'assets', CARD_JSON)
  if not os.path.isfile(path):
    raise ValueError(f'{export_dir}: no model card ({path})')
  with open(path) as f:
    return json.load(f)


def add_training_record(export_dir, record):
  """Adds `record` (JSON-serialisable dict: data set, steps, ...) as the card's `trained_on`.

  Returns the updated card, or None when the export has no card (nothing is written then)."""
  try:
    card = read_card(export_dir)
  except ValueError:
    return None
  card['trained_on'] = record
  return write_card(export_dir, card)
