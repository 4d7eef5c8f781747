"""The user tools (relpose, synthesize): image loading, rotation formats and the CLI plumbing.

What these tests prove: an image file goes through reading, colour/size conversion, a real
SavedModel signature (uint8 input), correlation.align_top_k / correlation.rotate, a real
synthesiser SavedModel and the output formats, and the reported rotation is the relative pose
R2 R1^T of the views. What they do not prove: that a trained embedder is equivariant. The stand-in
embedder is a SavedModel that looks up the nearest stored view and returns its precomputed analytic
map (vMF bumps rotated by the view's rotation), so the rotation is recoverable by construction;
accuracy on real renders is measured by the alignment experiment on a trained embedder.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import evaluate
from evaluation import images, rotation_formats
from geometry import euler_zyz_to_matrix, quaternion_to_matrix, random_rotations
from tests.test_evaluate import BANDWIDTH, random_centers, vmf_maps

SIZE = 32
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def smooth_textures(n, size=SIZE, seed=0):
  """`n` distinct low-frequency grayscale images in [0, 1], float32 `[n, size, size, 1]`."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[0:size, 0:size] / size
  out = np.zeros((n, size, size), np.float64)
  for k in range(4):
    fx, fy, phase = rng.uniform(0.5, 3, (3, n, 1, 1))
    out += rng.uniform(0.5, 1, (n, 1, 1)) * np.sin(2 * np.pi * (fx * x + fy * y) + 6 * phase)
  out = (out - out.min(axis=(1, 2), keepdims=True)) / np.ptp(out, axis=(1, 2), keepdims=True)
  return out[..., None].astype(np.float32)


class Lookup(tf.Module):
  """Nearest stored key (L2) -> its stored value; the serving signature of the stand-ins."""

  def __init__(self, keys, values, input_spec):
    super().__init__()
    self.keys = tf.constant(keys.reshape(len(keys), -1), tf.float32)
    self.values = tf.constant(values, tf.float32)
    self.serve = tf.function(self._lookup, input_signature=[input_spec])

  def _lookup(self, x):
    flat = tf.reshape(tf.cast(x, tf.float32), [tf.shape(x)[0], -1])
    if x.dtype == tf.uint8:
      flat = flat / 255.0
    d = tf.reduce_sum(tf.square(flat[:, None] - self.keys[None]), -1)
    return {'embedding': tf.gather(self.values, tf.argmin(d, axis=1))}


def save_lookup(path, keys, values, input_spec):
  module = Lookup(keys, values, input_spec)
  tf.saved_model.save(module, str(path), signatures={'serving_default': module.serve})
  return str(path)


@pytest.fixture(scope='module')
def scene(tmp_path_factory):
  """Views of one object at known rotations, their PNGs, a stand-in embedder and synthesiser."""
  root = tmp_path_factory.mktemp('relpose')
  rot = random_rotations(3, 11).astype(np.float64)
  turn = euler_zyz_to_matrix(np.radians([40.0, 70.0, -25.0])).numpy()
  rot = np.concatenate([rot, turn[None] @ rot[:1]])  # view 3 = view 0 turned by `turn`
  views = smooth_textures(len(rot))
  maps = vmf_maps(rot, random_centers(1, seed=4)[np.zeros(len(rot), int)])
  quantised = np.round(views * 255) / 255  # what comes back from an 8-bit PNG
  embedder = save_lookup(root / 'embedder', quantised, maps,
                         tf.TensorSpec([None, SIZE, SIZE, 1], tf.uint8))
  synthesizer = save_lookup(root / 'synthesizer', maps, views,
                            tf.TensorSpec([None, 2 * BANDWIDTH, 2 * BANDWIDTH, maps.shape[-1]],
                                          tf.float32))
  files = []
  for k, view in enumerate(views):
    gray = np.round(view[..., 0] * 255).astype(np.uint8)
    if k == 1:  # an RGB JPEG-free variant at another size: RGB PNG, 64 px, R = G = B
      file = root / f'view{k}.png'
      Image.fromarray(np.stack([gray] * 3, -1)).resize((2 * SIZE, 2 * SIZE),
                                                      Image.Resampling.BILINEAR).save(file)
    else:
      file = root / f'view{k}.png'
      Image.fromarray(gray).save(file)
    files.append(str(file))
  return dict(root=root, rot=rot, turn=turn, views=views, embedder=embedder,
              synthesizer=synthesizer, files=files, maps=maps)


def _angle_deg(a, b):
  return np.degrees(np.arccos(np.clip((np.trace(np.asarray(a) @ np.asarray(b).T) - 1) / 2, -1, 1)))


def test_relpose_reports_the_relative_rotation(scene, tmp_path, capsys):
  out_json = tmp_path / 'pose.json'
  code = evaluate.run(['evaluate.py', 'relpose', f'--embedder={scene["embedder"]}',
                       scene['files'][0], scene['files'][1], f'--json={out_json}', '--top_k=2'])
  assert code == 0
  text = capsys.readouterr().out
  for word in ('quaternion (w, x, y, z)', 'ZYZ Euler (deg)', 'axis-angle', 'confidence', 'top 2'):
    assert word in text
  result = json.loads(out_json.read_text())
  expected = scene['rot'][1] @ scene['rot'][0].T
  assert _angle_deg(result['rotation']['matrix'], expected) < 1.0
  assert len(result['alternatives']) == 2 and result['confidence'] > 1.0
  # Every format describes the same rotation (independent reconstructions).
  r = result['rotation']
  np.testing.assert_allclose(quaternion_to_matrix(r['quaternion_wxyz']).numpy(), r['matrix'],
                             atol=1e-5)
  np.testing.assert_allclose(euler_zyz_to_matrix(np.radians(r['euler_zyz_deg'])).numpy(),
                             r['matrix'], atol=1e-5)
  axis, angle = np.array(r['axis']), np.radians(r['angle_deg'])
  k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
  rodrigues = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k
  np.testing.assert_allclose(rodrigues, r['matrix'], atol=1e-5)
  # Flags instead of positional arguments; swapped images give the inverse rotation.
  code = evaluate.run(['evaluate.py', 'relpose', f'--embedder={scene["embedder"]}',
                       f'--image1={scene["files"][2]}', f'--image2={scene["files"][0]}',
                       f'--json={out_json}'])
  assert code == 0
  swapped = json.loads(out_json.read_text())['rotation']['matrix']
  assert _angle_deg(swapped, scene['rot'][0] @ scene['rot'][2].T) < 1.0


def test_synthesize_writes_the_turned_view(scene, tmp_path):
  out = tmp_path / 'novel.png'
  code = evaluate.run(['evaluate.py', 'synthesize', f'--embedder={scene["embedder"]}',
                       f'--synthesizer={scene["synthesizer"]}', scene['files'][0],
                       '--euler_zyz_deg=40,70,-25', f'--output={out}'])
  assert code == 0
  picture = np.asarray(Image.open(out), np.float32) / 255
  np.testing.assert_allclose(picture, scene['views'][3][..., 0], atol=1 / 255 + 1e-6)
  # The same rotation given as a quaternion lands on the same view.
  q = rotation_formats.describe_rotation(scene['turn'])['quaternion_wxyz']
  code = evaluate.run(['evaluate.py', 'synthesize', f'--embedder={scene["embedder"]}',
                       f'--synthesizer={scene["synthesizer"]}', f'--image1={scene["files"][0]}',
                       '--quaternion=' + ','.join(map(str, q)), f'--output={out}'])
  assert code == 0
  np.testing.assert_allclose(np.asarray(Image.open(out), np.float32) / 255,
                             scene['views'][3][..., 0], atol=1 / 255 + 1e-6)


def test_clear_errors(scene, tmp_path, capsys):
  junk = tmp_path / 'junk.png'
  junk.write_text('not an image')
  code = evaluate.run(['evaluate.py', 'relpose', f'--embedder={scene["embedder"]}', str(junk),
                       scene['files'][0]])
  assert code == 1 and 'junk.png: cannot read it as an image' in capsys.readouterr().err
  code = evaluate.run(['evaluate.py', 'relpose', f'--embedder={tmp_path}', *scene['files'][:2]])
  assert code == 1 and 'cannot load SavedModel' in capsys.readouterr().err
  # An "embedder" whose output is not a spherical map.
  flat = save_lookup(tmp_path / 'flat', np.zeros((1, SIZE, SIZE, 1)), np.zeros((1, 6, 8, 2)),
                     tf.TensorSpec([None, SIZE, SIZE, 1], tf.float32))
  code = evaluate.run(['evaluate.py', 'relpose', f'--embedder={flat}', *scene['files'][:2]])
  assert code == 1 and 'expected embeddings [N, 2B, 2B, C]' in capsys.readouterr().err
  # A synthesiser built for another bandwidth.
  other = save_lookup(tmp_path / 'other', np.zeros((1, 8, 8, 3)), np.zeros((1, SIZE, SIZE, 1)),
                      tf.TensorSpec([None, 8, 8, 3], tf.float32))
  code = evaluate.run(['evaluate.py', 'synthesize', f'--embedder={scene["embedder"]}',
                       f'--synthesizer={other}', scene['files'][0], '--euler_zyz_deg=0,0,0',
                       f'--output={tmp_path / "x.png"}'])
  err = capsys.readouterr().err
  assert code == 1 and 'synthesizer' in err and 'expects inputs [N, 8, 8, 3]' in err
  assert not (tmp_path / 'x.png').exists()
  with pytest.raises(evaluate.app.UsageError, match='expected 2 image'):
    evaluate.run(['evaluate.py', 'relpose', f'--embedder={scene["embedder"]}', scene['files'][0]])
  with pytest.raises(evaluate.app.UsageError, match='--embedder'):
    evaluate.run(['evaluate.py', 'relpose', *scene['files'][:2]])
  code = evaluate.run(['evaluate.py', 'synthesize', f'--embedder={scene["embedder"]}',
                       f'--synthesizer={scene["synthesizer"]}', scene['files'][0],
                       '--euler_zyz_deg=1,2', f'--output={tmp_path / "x.png"}'])
  assert code == 1 and 'expected 3 comma-separated numbers' in capsys.readouterr().err


def test_load_view_converts_like_the_training_views(tmp_path):
  rng = np.random.default_rng(0)
  rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
  Image.fromarray(rgb).save(tmp_path / 'c.png')
  view = images.load_view(tmp_path / 'c.png', (20, 30))
  c = rgb.astype(np.float64)
  luminance = (c[..., 0] * 299 + c[..., 1] * 587 + c[..., 2] * 114) / 1000 / 255
  assert view.shape == (20, 30, 1) and view.dtype == np.float32
  np.testing.assert_allclose(view[..., 0], luminance, atol=1 / 255 + 1e-6)
  # Transparency composites onto the black training background.
  rgba = np.concatenate([np.full((8, 8, 3), 255, np.uint8), np.zeros((8, 8, 1), np.uint8)], -1)
  rgba[:4, :, 3] = 255
  Image.fromarray(rgba).save(tmp_path / 'a.png')
  view = images.load_view(tmp_path / 'a.png', 8)
  np.testing.assert_allclose(view[:4, :, 0], 1.0)
  np.testing.assert_allclose(view[4:, :, 0], 0.0)
  # 16-bit grayscale keeps its range; palette and JPEG images load; sizes are resampled.
  Image.fromarray(np.full((6, 6), 32768, np.uint16)).save(tmp_path / 'g16.png')
  np.testing.assert_allclose(images.load_view(tmp_path / 'g16.png', 6), 0.5, atol=1e-4)
  Image.fromarray(rgb).convert('P').save(tmp_path / 'p.png')
  Image.fromarray(rgb).save(tmp_path / 'j.jpg', quality=95)
  for name in ('p.png', 'j.jpg'):
    view = images.load_view(tmp_path / name, 16)
    assert view.shape == (16, 16, 1) and 0 <= view.min() and view.max() <= 1
  # A constant image stays constant through resizing.
  Image.fromarray(np.full((50, 70), 200, np.uint8)).save(tmp_path / 'k.png')
  np.testing.assert_allclose(images.load_view(tmp_path / 'k.png', 32), 200 / 255, atol=1e-6)
  with pytest.raises(ValueError, match='missing.png: no such file'):
    images.load_view(tmp_path / 'missing.png', 8)


def test_rotation_formats_round_trip():
  for r in random_rotations(5, 2).astype(np.float64):
    d = rotation_formats.describe_rotation(r)
    assert d['quaternion_wxyz'][0] >= 0 and 0 <= d['angle_deg'] <= 180
    np.testing.assert_allclose(rotation_formats.rotation_from_flags(
        euler_zyz_deg=','.join(map(str, d['euler_zyz_deg']))), r, atol=1e-5)
    np.testing.assert_allclose(rotation_formats.rotation_from_flags(
        quaternion_wxyz=','.join(map(str, d['quaternion_wxyz']))), r, atol=1e-6)
    np.testing.assert_allclose(rotation_formats.rotation_from_flags(
        axis_angle_deg=','.join(map(str, d['axis'] + [d['angle_deg']]))), r, atol=1e-6)
  identity = rotation_formats.describe_rotation(np.eye(3))
  assert identity['angle_deg'] == 0 and identity['axis'] == [0, 0, 1]
  with pytest.raises(ValueError, match='exactly one'):
    rotation_formats.rotation_from_flags('0,0,0', '1,0,0,0')
  with pytest.raises(ValueError, match='zero quaternion'):
    rotation_formats.rotation_from_flags(quaternion_wxyz='0,0,0,0')
  with pytest.raises(ValueError, match='not a rotation'):
    rotation_formats.describe_rotation(np.diag([1.0, 1.0, -1.0]))


def test_command_line_entry_point(scene):
  # The real `python evaluate.py ...` path: absl app.run, our flag parser, absl's own flags.
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH=REPO)
  proc = subprocess.run(
      [sys.executable, os.path.join(REPO, 'evaluate.py'), 'relpose', '--verbosity=0',
       f'--embedder={scene["embedder"]}', scene['files'][0], scene['files'][3]],
      capture_output=True, text=True, env=env, timeout=120, cwd=REPO)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert 'relative rotation (image 1 -> image 2' in proc.stdout
  help_proc = subprocess.run([sys.executable, os.path.join(REPO, 'evaluate.py'), '--help'],
                             capture_output=True, text=True, env=env, timeout=120, cwd=REPO)
  assert help_proc.returncode == 0 and '--embeddings' in help_proc.stdout


@pytest.mark.slow  # ~17 s: two SavedModel exports of Keras models
def test_tools_accept_the_students_real_exports(tmp_path, capsys):
  # Untrained tiny student and synthesis models exported by models.embedder_export: proves the
  # tools read those SavedModels (signature names, dtypes, output keys, shapes), not accuracy.
  from models import build_student, build_synthesis, export_embedder, export_synthesizer
  size, shape = 16, (16, 16, 4)
  small = dict(layers_per_block=1, base_channels=8, max_channels=16, n_latent=32)
  embedder = export_embedder(build_student(image_size=size, embedding_shape=shape, **small),
                             tmp_path / 'embedder')
  synthesizer = export_synthesizer(build_synthesis(embedding_shape=shape, image_size=size, **small),
                                   tmp_path / 'synthesizer')
  files = []
  for k, view in enumerate(smooth_textures(2, size=40)):
    files.append(str(tmp_path / f'v{k}.png'))
    Image.fromarray(np.round(view[..., 0] * 255).astype(np.uint8)).save(files[-1])
  out_json = tmp_path / 'pose.json'
  assert evaluate.run(['evaluate.py', 'relpose', f'--embedder={embedder}', *files,
                       f'--json={out_json}']) == 0
  matrix = np.array(json.loads(out_json.read_text())['rotation']['matrix'])
  np.testing.assert_allclose(matrix @ matrix.T, np.eye(3), atol=1e-5)
  assert evaluate.run(['evaluate.py', 'synthesize', f'--embedder={embedder}',
                       f'--synthesizer={synthesizer}', files[0], '--axis_angle_deg=0,1,0,90',
                       f'--output={tmp_path / "novel.png"}']) == 0
  assert Image.open(tmp_path / 'novel.png').size == (size, size)


def test_huge_images_are_refused_before_decoding_and_large_jpegs_decoded_small(scene, tmp_path,
                                                                              capsys, monkeypatch):
  """A 20000 x 20000 PNG (0.4 MB on disk, 400 million pixels) raised an uncaught
  DecompressionBombError; now one line naming the file and the limit. A large JPEG is decoded at
  a reduced DCT scale (PIL's draft) before the resize, to nearly the same view."""
  bomb = tmp_path / 'bomb.png'
  Image.new('L', (20000, 20000)).save(bomb)
  code = evaluate.run(['evaluate.py', 'relpose', f'--embedder={scene["embedder"]}', str(bomb),
                       scene['files'][0]])
  error = capsys.readouterr().err.strip().splitlines()
  assert code == 1 and len(error) == 1, error
  assert 'bomb.png: 400 million pixels, more than the limit of 89 million' in error[0]

  rng = np.random.default_rng(0)
  smooth = np.kron(rng.uniform(0, 255, (16, 16, 3)), np.ones((128, 128, 1))).astype(np.uint8)
  photo = tmp_path / 'photo.jpg'
  Image.fromarray(smooth).save(photo, quality=95)  # 2048 x 2048
  drafts = []
  from PIL import JpegImagePlugin  # pylint: disable=g-import-not-at-top
  original_jpeg_draft = JpegImagePlugin.JpegImageFile.draft

  def jpeg_spy(self, mode, size):
    result = original_jpeg_draft(self, mode, size)
    drafts.append((self.size, size))
    return result

  monkeypatch.setattr(JpegImagePlugin.JpegImageFile, 'draft', jpeg_spy)
  view = images.load_view(photo, 32)
  assert drafts and drafts[0][0] == (256, 256), drafts  # decoded at 1/8 scale: 4 x 32 = 128 <= 256
  with Image.open(photo) as full:  # the full decode, resized the same way
    reference = np.asarray(full.convert('L').resize((32, 32), Image.Resampling.BILINEAR,
                                                    reducing_gap=None), np.float32) / 255
  np.testing.assert_allclose(view[..., 0], reference, atol=3 / 255)
