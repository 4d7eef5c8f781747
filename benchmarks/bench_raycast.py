"""Throughput of spherical maps and views: batched MeshRaycaster against a naive per-call baseline.

Rows of the table, all in this process on the same meshes and rotations:
  - batched embree: one MeshRaycaster per mesh (BVH built once), all rotations in one call;
    the same with 2 threads (`num_threads=2`);
  - batched embree, anti-aliased: `spheres(..., oversample=k)` for each k of `--oversample`
    (cast at kB, low-pass to B with the SHT; maps only, views have no such option);
  - batched trimesh: the same with the pure trimesh engine (slow, measured on fewer calls);
  - wrapper per call: `mesh_to_sphere` / `render_view`, one rotation per call (new BVH each call);
  - naive baseline: rotate the mesh, build a new trimesh embree intersector, intersects_location.
Rates count maps (or views) per second of wall time, best of `--repeats`, one thread unless said.

  .venv/bin/python benchmarks/bench_raycast.py [--meshes_dir=DIR] [--num_meshes=6] ...

Meshes: the `--num_meshes` shared meshes whose face counts are nearest `--target_faces`; where the
shared folder is absent, a dented icosphere of 20480 faces (procedural size).
"""
import argparse
import os
import pathlib
import resource
import sys
import time
import tracemalloc

import numpy as np
import trimesh
from trimesh.ray import ray_pyembree

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
import datasets  # pylint: disable=wrong-import-position
from datasets import raycast  # pylint: disable=wrong-import-position

DEFAULT_MESHES_DIR = pathlib.Path(__file__).resolve().parent.parent.parent / 'shared/data/meshes'


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--meshes_dir', type=pathlib.Path, default=DEFAULT_MESHES_DIR)
  parser.add_argument('--num_meshes', type=int, default=6)
  parser.add_argument('--target_faces', type=int, default=10000)
  parser.add_argument('--rotations', type=int, default=64, help='rotations per mesh (batched)')
  parser.add_argument('--baseline_calls', type=int, default=16, help='per mesh, naive and wrapper')
  parser.add_argument('--trimesh_calls', type=int, default=1, help='per mesh, trimesh engine')
  parser.add_argument('--trimesh_meshes', type=int, default=1, help='0: skip that engine')
  parser.add_argument('--bandwidth', type=int, default=32)
  parser.add_argument('--size', type=int, default=64)
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--oversample', type=int, nargs='*', default=[2],
                      help='anti-aliased rows: one per factor k > 1')
  return parser.parse_args(argv)


def select_meshes(meshes_dir, count, target_faces):
  """The `count` meshes with face counts nearest `target_faces`, or a procedural stand-in."""
  if not meshes_dir.is_dir():
    print(f'{meshes_dir} not found: using a procedural icosphere')
    ball = trimesh.creation.icosphere(subdivisions=5)
    radius = 1 + 0.2 * np.random.default_rng(0).random(len(ball.vertices))
    return {'dented icosphere': datasets.normalize_mesh(
        trimesh.Trimesh(ball.vertices * radius[:, None], ball.faces, process=False))}
  meshes = {str(p.relative_to(meshes_dir)): datasets.load_mesh(p)
            for p in sorted(meshes_dir.glob('*/*/*.off'))}
  if not meshes:
    raise ValueError(f'--meshes_dir: no */*/*.off meshes under {meshes_dir}')
  names = sorted(meshes, key=lambda n: abs(len(meshes[n].faces) - target_faces))[:count]
  return {name: meshes[name] for name in names}


# ---------------------------------------------------------------------------------------------
# The naive baseline: what one would write first with trimesh.


def _rotated_copy(mesh, rotation):
  rotated = mesh.copy()
  transform = np.eye(4)
  transform[:3, :3] = rotation
  rotated.apply_transform(transform)
  return rotated


def naive_sphere(mesh, rotation, bandwidth):
  rotated = _rotated_copy(mesh, rotation)
  x = raycast.sphere_rays(bandwidth)
  origins, directions = (1 + raycast.RAY_START_OFFSET) * x, -x
  intersector = ray_pyembree.RayMeshIntersector(rotated)
  locations, ray, face = intersector.intersects_location(origins, directions,
                                                         multiple_hits=False)
  depth = np.ones(len(x))
  cos = np.zeros(len(x))
  depth[ray] = (np.linalg.norm(locations - origins[ray], axis=1) - raycast.RAY_START_OFFSET) / 2
  cos[ray] = np.abs(np.einsum('ij,ij->i', rotated.face_normals[face], directions[ray]))
  return np.stack([depth, cos], -1).reshape(2 * bandwidth, 2 * bandwidth, 2).astype(np.float32)


def naive_view(mesh, rotation, size):
  rotated = _rotated_copy(mesh, rotation)
  directions = raycast.camera_rays(size)
  origins = np.repeat(raycast.camera_position()[None], len(directions), axis=0)
  intersector = ray_pyembree.RayMeshIntersector(rotated)
  locations, ray, face = intersector.intersects_location(origins, directions,
                                                         multiple_hits=False)
  image = np.zeros(len(directions))
  cos = np.abs(np.einsum('ij,ij->i', rotated.face_normals[face], directions[ray]))
  distance = np.linalg.norm(locations - origins[ray], axis=1)
  image[ray] = raycast.shade(cos, distance)
  return image.reshape(size, size, 1).astype(np.float32)


# ---------------------------------------------------------------------------------------------


def best_rate(function, items, repeats):
  """Items per second of `function()` (which processes `items` items), best of `repeats`."""
  best = np.inf
  for _ in range(repeats):
    start = time.perf_counter()
    function()
    best = min(best, time.perf_counter() - start)
  return items / best


def measure(meshes, rotations, args):
  """{row name: (maps/s, views/s or None)}."""
  b, size = args.bandwidth, args.size
  few = rotations[:args.baseline_calls]
  casters = {n: datasets.MeshRaycaster(m, engine='embree') for n, m in meshes.items()}
  n_all, n_few = len(meshes) * len(rotations), len(meshes) * len(few)
  rows = {}
  rows['batched embree (MeshRaycaster)'] = (
      best_rate(lambda: [c.spheres(rotations, b) for c in casters.values()], n_all, args.repeats),
      best_rate(lambda: [c.views(rotations, size) for c in casters.values()], n_all, args.repeats))
  for k in args.oversample:
    rows[f'batched embree, oversample={k} (cast {k}B, SHT to B)'] = (
        best_rate(lambda k=k: [c.spheres(rotations, b, oversample=k) for c in casters.values()],
                  n_all, args.repeats), None)
  for caster in casters.values():
    caster.num_threads = 2
  rows['batched embree, 2 threads'] = (
      best_rate(lambda: [c.spheres(rotations, b) for c in casters.values()], n_all, args.repeats),
      best_rate(lambda: [c.views(rotations, size) for c in casters.values()], n_all, args.repeats))

  some = dict(list(meshes.items())[:args.trimesh_meshes])
  slow = [datasets.MeshRaycaster(m, engine='trimesh') for m in some.values()]
  trimesh_rotations = rotations[:args.trimesh_calls]
  n_slow = len(slow) * len(trimesh_rotations)
  if n_slow:  # --trimesh_meshes=0 skips the slow engine
    rows['batched trimesh fallback'] = (
        best_rate(lambda: [c.spheres(trimesh_rotations, b) for c in slow], n_slow, 1),
        best_rate(lambda: [c.views(trimesh_rotations, size) for c in slow], n_slow, 1))

  rows['wrapper per call (BVH per call)'] = (
      best_rate(lambda: [datasets.mesh_to_sphere(m, r, b) for m in meshes.values() for r in few],
                n_few, args.repeats),
      best_rate(lambda: [datasets.render_view(m, r, size) for m in meshes.values() for r in few],
                n_few, args.repeats))
  rows['naive baseline (rotate mesh, new intersector)'] = (
      best_rate(lambda: [naive_sphere(m, r, b) for m in meshes.values() for r in few],
                n_few, args.repeats),
      best_rate(lambda: [naive_view(m, r, size) for m in meshes.values() for r in few],
                n_few, args.repeats))
  return rows


def check_agreement(meshes, rotations, args):
  """Fraction of values where the batched path and the naive baseline differ by > 1e-3."""
  mesh = next(iter(meshes.values()))
  caster = datasets.MeshRaycaster(mesh)
  fast_s = caster.spheres(rotations[:4], args.bandwidth)
  fast_v = caster.views(rotations[:4], args.size)
  slow_s = np.stack([naive_sphere(mesh, r, args.bandwidth) for r in rotations[:4]])
  slow_v = np.stack([naive_view(mesh, r, args.size) for r in rotations[:4]])
  return np.mean(np.abs(fast_s - slow_s) > 1e-3), np.mean(np.abs(fast_v - slow_v) > 1e-3)


def peak_batch_memory(mesh, rotations, args):
  """tracemalloc peak (MiB) of one batched spheres call and one views call."""
  caster = datasets.MeshRaycaster(mesh)
  tracemalloc.start()
  caster.spheres(rotations, args.bandwidth)
  caster.views(rotations, args.size)
  peak = tracemalloc.get_traced_memory()[1]
  tracemalloc.stop()
  return peak / 2**20


def main(argv=None):
  args = parse_args(argv)
  meshes = select_meshes(args.meshes_dir, args.num_meshes, args.target_faces)
  rotations = datasets.random_rotations(args.rotations, seed=0).astype(np.float64)
  faces = [len(m.faces) for m in meshes.values()]
  print(f'{len(meshes)} meshes ({", ".join(meshes)}), faces {min(faces)}-{max(faces)} '
        f'(mean {np.mean(faces):.0f}); {args.rotations} rotations per mesh; '
        f'B={args.bandwidth}, {args.size} px; load average {os.getloadavg()[0]:.1f} on '
        f'{os.cpu_count()} cores\n')
  rows = measure(meshes, rotations, args)
  base_maps, base_views = rows['naive baseline (rotate mesh, new intersector)']
  print(f'| path | maps/s (B={args.bandwidth}) | x baseline | views/s ({args.size} px) '
        '| x baseline |')
  print('|---|---:|---:|---:|---:|')
  for name, (maps, views) in rows.items():
    view_cells = '- | -' if views is None else f'{views:.3g} | {views / base_views:.3g}'
    print(f'| {name} | {maps:.3g} | {maps / base_maps:.3g} | {view_cells} |')
  sphere_diff, view_diff = check_agreement(meshes, rotations, args)
  print(f'\nbatched vs naive: {100 * sphere_diff:.3f}% of map values and {100 * view_diff:.3f}% '
        'of pixels differ by > 1e-3 (float32 vs float64 at silhouette edges)')
  peak = peak_batch_memory(next(iter(meshes.values())), rotations, args)
  max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  print(f'peak memory: {peak:.1f} MiB traced in one batch of {args.rotations} maps + views; '
        f'process max RSS {max_rss:.0f} MiB')


if __name__ == '__main__':
  main()
