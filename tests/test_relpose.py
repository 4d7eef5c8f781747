"""evaluation.relpose's Python calls: the same numbers as `evaluate.py relpose`, from images or
embeddings, one pair or many (pair lists, globs), against the known relative rotations."""
import json

import numpy as np
import pytest

import evaluate
from evaluation import degrees, models_io, relpose
from geometry import random_rotations
from tests.test_evaluate import random_centers, vmf_maps
from tests.test_relpose_cli import scene  # pylint: disable=unused-import  (fixture)


def _angle_deg(a, b):
  return np.degrees(np.arccos(np.clip((np.trace(np.asarray(a) @ np.asarray(b).T) - 1) / 2, -1, 1)))


def test_from_embeddings_recovers_known_rotations_one_or_many_pairs():
  rot = random_rotations(8, 3).astype(np.float64)
  centers = random_centers(1, seed=5)[np.zeros(8, int)]
  maps = vmf_maps(rot, centers)
  one = relpose.relative_pose_from_embeddings(maps[0], maps[1], top_k=2)
  assert _angle_deg(one['rotation']['matrix'], rot[1] @ rot[0].T) < 1.0
  assert one['confidence'] > 1.0 and len(one['alternatives']) == 2
  many = relpose.relative_pose_from_embeddings(maps[:4], maps[4:], top_k=2, batch_size=3)
  assert len(many) == 4
  for k, result in enumerate(many):
    assert _angle_deg(result['rotation']['matrix'], rot[4 + k] @ rot[k].T) < 1.0
  # Batched or not, the same peaks.
  single = relpose.relative_pose_from_embeddings(maps[2], maps[6], top_k=2)
  np.testing.assert_allclose(many[2]['rotation']['matrix'], single['rotation']['matrix'],
                             atol=1e-5)
  with pytest.raises(ValueError, match='differ in shape'):
    relpose.relative_pose_from_embeddings(maps[0], maps[1, :, :, :2])


def test_odd_degree_weight_is_applied_to_both_maps():
  rot = random_rotations(2, 7).astype(np.float64)
  maps = vmf_maps(rot, random_centers(1, seed=6)[[0, 0]])
  calls = []

  def spy(f, g, **options):
    calls.append((np.asarray(f), np.asarray(g), options))
    from correlation import align_top_k  # pylint: disable=import-outside-toplevel
    return align_top_k(f, g, **options)

  relpose.relative_pose_from_embeddings(maps[0], maps[1], align_top_k_fn=spy)
  f, g, options = calls[-1]
  np.testing.assert_allclose(f[0], degrees.weight_odd_degrees(maps[:1], 2.0)[0], atol=1e-6)
  np.testing.assert_allclose(g[0], degrees.weight_odd_degrees(maps[1:], 2.0)[0], atol=1e-6)
  assert options == {'k': 3, 'upsample': 1, 'normalize': False}
  relpose.relative_pose_from_embeddings(maps[0], maps[1], odd_degree_weight=1.0,
                                        align_top_k_fn=spy)
  np.testing.assert_allclose(calls[-1][0][0], maps[0], atol=1e-6)


def test_python_calls_give_exactly_what_the_cli_prints(scene, tmp_path, capsys):
  out = tmp_path / 'cli.json'
  files = scene['files']
  assert evaluate.run(['evaluate.py', 'relpose', f'--embedder={scene["embedder"]}', files[0],
                       files[3], f'--json={out}']) == 0
  cli_text = capsys.readouterr().out
  cli = json.loads(out.read_text())
  from_files = relpose.relative_pose_from_files(scene['embedder'], files[0], files[3])
  assert from_files == cli
  assert relpose.format_relative_pose(from_files) in cli_text
  # From the embedder's own maps of the same files: the same result, image names aside.
  embedder = models_io.load_embedder(scene['embedder'])
  from evaluation import images  # pylint: disable=import-outside-toplevel
  maps = embedder(np.stack([images.load_view(p, (32, 32)) for p in (files[0], files[3])]))
  from_maps = relpose.relative_pose_from_embeddings(maps[0], maps[1])
  assert dict(from_maps, image1=files[0], image2=files[3]) == cli
  assert _angle_deg(cli['rotation']['matrix'], scene['turn']) < 1.0


def test_many_pairs_from_a_list_file_or_a_glob(scene, tmp_path, capsys):
  files = scene['files']
  listing = tmp_path / 'pairs.txt'
  listing.write_text(f'# image 1, image 2\n{files[0]} {files[1]}\n\n{files[2]},{files[0]}\n'
                     f'{files[0]} {files[3]}\n')
  pairs = relpose.read_pair_list(listing)
  assert pairs == [(files[0], files[1]), (files[2], files[0]), (files[0], files[3])]
  out = tmp_path / 'many.json'
  assert evaluate.run(['evaluate.py', 'relpose', f'--embedder={scene["embedder"]}',
                       f'--pair_list={listing}', f'--json={out}']) == 0
  table = capsys.readouterr().out
  results = json.loads(out.read_text())
  assert len(results) == 3 and sum(line.startswith('| /') for line in table.splitlines()) == 3
  rot = scene['rot']
  for result, (i, j) in zip(results, [(0, 1), (2, 0), (0, 3)]):
    assert _angle_deg(result['rotation']['matrix'], rot[j] @ rot[i].T) < 1.0
    alone = relpose.relative_pose_from_files(scene['embedder'], files[i], files[j])
    # Batched with other pairs, the same best peak (to float rounding: XLA steps of a few pairs).
    np.testing.assert_allclose(result['rotation']['matrix'], alone['rotation']['matrix'],
                               atol=1e-4)
    assert result['score'] == pytest.approx(alone['score'], rel=1e-5)
    assert result['confidence'] == pytest.approx(alone['confidence'], rel=1e-5)
    assert (result['image1'], result['image2']) == (alone['image1'], alone['image2'])
  glob_pairs = relpose.glob_pairs(str(scene['root'] / 'view*.png'))
  assert glob_pairs == [(files[0], f) for f in files[1:]]
  assert evaluate.run(['evaluate.py', 'relpose', f'--embedder={scene["embedder"]}',
                       f'--images_glob={scene["root"] / "view*.png"}', f'--json={out}']) == 0
  assert [r['image2'] for r in json.loads(out.read_text())] == files[1:]


def test_bad_pair_lists_and_globs(scene, tmp_path):
  bad = tmp_path / 'bad.txt'
  bad.write_text('a.png b.png c.png\n')
  with pytest.raises(ValueError, match='bad.txt:1: expected two image paths'):
    relpose.read_pair_list(bad)
  with pytest.raises(ValueError, match='no such file'):
    relpose.read_pair_list(tmp_path / 'absent.txt')
  with pytest.raises(ValueError, match='need at least two'):
    relpose.glob_pairs(str(tmp_path / '*.png'))
  with pytest.raises(evaluate.app.UsageError, match='one of them'):
    evaluate.run(['evaluate.py', 'relpose', f'--embedder={scene["embedder"]}',
                  f'--pair_list={bad}', scene['files'][0], scene['files'][1]])
  assert evaluate.run(['evaluate.py', 'relpose', f'--embedder={scene["embedder"]}',
                       f'--pair_list={bad}']) == 1
