"""Data set build throughput: Apache Beam (DirectRunner, local worker processes) against the local
build, on the shared meshes, and a projection of the ShapeNetCore build time on N workers.

Run it in .venv-beam (scripts/bootstrap_beam.sh), the venv that has apache_beam:

  .venv-beam/bin/python benchmarks/bench_beam_build.py [--views=4] [--workers=2] [--json=PATH]

The psb and modelnet meshes (70) are linked into one temporary folder of categories
'<source>-<category>' so that each build is one TFDS build (one Beam pipeline). Measured, every
build into a fresh folder, TFDS encoding and writing included, wall time:
  - the local build (one process) at --views and at --projection_views views per mesh;
  - the Beam build with DirectRunner on --workers worker processes (multi_processing), the same;
  - `o`: a Beam build of 2 procedural meshes and 1 view, the fixed cost of a Beam run here
    (starting the worker processes, which import TensorFlow, the TFDS shuffle and write stages,
    teardown).
Rates: examples per second of wall time, and the marginal rate between the two view counts
(extra examples / extra seconds), which leaves out the fixed costs.

Projection (a model, not a measurement): a ShapeNetCore build of --shapenet_models meshes at
--projection_views views on N workers takes about  o + M * c / N,  with `c` the local build's wall
time per mesh at --projection_views views (loading, ray casting, TFDS encoding and writing). The
model is checked on this machine against the Beam build at --projection_views views. It assumes
that ShapeNet meshes cost what the shared meshes cost (ShapeNet OBJ files are larger on average:
loading grows with size, ray casting only with log(faces)), perfect load balance, workers as fast
as one core here, and no cluster start-up (Dataflow adds minutes of VM start-up; not measured).
"""
import argparse
import json
import os
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
import tensorflow_datasets as tfds  # pylint: disable=wrong-import-position

from datasets import builders  # pylint: disable=wrong-import-position

DEFAULT_MESHES_DIR = pathlib.Path(__file__).resolve().parent.parent.parent / 'shared/data/meshes'
SOURCES = ('psb', 'modelnet')


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--meshes_dir', type=pathlib.Path, default=DEFAULT_MESHES_DIR)
  parser.add_argument('--views', type=int, default=4, help='views per mesh of builds 1 and 2')
  parser.add_argument('--projection_views', type=int, default=20)
  parser.add_argument('--bandwidth', type=int, default=32)
  parser.add_argument('--image_size', type=int, default=64)
  parser.add_argument('--workers', type=int, default=2)
  parser.add_argument('--shapenet_models', type=int, default=51000)
  parser.add_argument('--projection_workers', default='1,8,64,512')
  parser.add_argument('--json', type=pathlib.Path, default=None, help='also write the results')
  return parser.parse_args(argv)


def beam_options(workers):
  return (f'runner=DirectRunner,direct_num_workers={workers},'
          'direct_running_mode=multi_processing')


def timed_build(data_dir, beam_pipeline_options=None, **config):
  """(wall seconds, examples, meshes, bytes written) of one fresh build of `config`."""
  builder = builders.make_builder(data_dir, **config)
  options = None
  if beam_pipeline_options:
    options = builders.import_beam_generation().pipeline_options(beam_pipeline_options)
  start = time.perf_counter()
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(beam_options=options))
  seconds = time.perf_counter() - start
  summary = builders.build_summary(builder)
  return (seconds, sum(s['examples'] for s in summary.values()),
          sum(s['instances'] for s in summary.values()), int(builder.info.dataset_size))


def link_shared_meshes(meshes_dir, link_dir):
  """Links every shared mesh into `link_dir`/<source>-<category>/; returns `link_dir`."""
  for source in SOURCES:
    for category in sorted(os.listdir(meshes_dir / source)):
      if not (meshes_dir / source / category).is_dir():
        continue
      target = os.path.join(link_dir, f'{source}-{category}')
      os.makedirs(target)
      for name in sorted(os.listdir(meshes_dir / source / category)):
        os.symlink(meshes_dir / source / category / name, os.path.join(target, name))
  return link_dir


def main(args):
  if not all((args.meshes_dir / s).is_dir() for s in SOURCES):
    sys.exit(f'--meshes_dir={args.meshes_dir}: needs the sub-folders {SOURCES}')
  results = {'cpus': os.cpu_count(), 'load_average_before': os.getloadavg(),
             'settings': {k: str(v) for k, v in vars(args).items()}, 'builds': {}}
  builds = results['builds']
  with tempfile.TemporaryDirectory() as work_dir:
    mesh_dir = link_shared_meshes(args.meshes_dir, os.path.join(work_dir, 'meshes'))
    for runner, options in (('local', None), (f'beam_{args.workers}_workers',
                                              beam_options(args.workers))):
      for views in (args.views, args.projection_views):
        name = f'{runner}_{views}_views'
        seconds, examples, meshes, size = timed_build(
            os.path.join(work_dir, name), options, source='folder', mesh_dir=mesh_dir,
            views_per_instance=views, bandwidth=args.bandwidth, image_size=args.image_size)
        builds[name] = {'seconds': seconds, 'examples': examples, 'meshes': meshes,
                        'examples_per_s': examples / seconds, 'bytes': size}
        print(f'{name:>24}: {examples} examples of {meshes} meshes in {seconds:.1f} s = '
              f'{examples / seconds:.1f} examples/s', flush=True)
      small, large = (builds[f'{runner}_{v}_views'] for v in (args.views, args.projection_views))
      marginal = (large['examples'] - small['examples']) / (large['seconds'] - small['seconds'])
      builds[f'{runner}_marginal_examples_per_s'] = marginal
      print(f'{runner + " marginal":>24}: {marginal:.1f} examples/s', flush=True)
    seconds, _, _, _ = timed_build(os.path.join(work_dir, 'overhead'), beam_options(args.workers),
                                categories=('mug',), instances_per_category=2,
                                test_per_category=1, views_per_instance=1,
                                bandwidth=args.bandwidth, image_size=args.image_size)
    results['beam_fixed_cost_seconds'] = seconds
    print(f'{"beam fixed cost o":>24}: {seconds:.1f} s (2 meshes, 1 view, {args.workers} workers)')
  results['load_average_after'] = os.getloadavg()

  local = builds[f'local_{args.projection_views}_views']
  per_mesh = local['seconds'] / local['meshes']
  overhead = results['beam_fixed_cost_seconds']
  check = builds[f'beam_{args.workers}_workers_{args.projection_views}_views']
  predicted = overhead + check['meshes'] * per_mesh / args.workers
  results['model_check'] = {'predicted_seconds': predicted, 'measured_seconds': check['seconds']}
  print(f'Model check here: o + {check["meshes"]} c / {args.workers} = {predicted:.1f} s '
        f'predicted, {check["seconds"]:.1f} s measured (Beam, {args.projection_views} views)')
  projection = {}
  print(f'\nProjection (a model, not a measurement): ShapeNetCore, {args.shapenet_models} meshes '
        f'x {args.projection_views} views, T(N) = o + M c / N with c = {per_mesh:.3f} s per mesh '
        f'(measured at {args.projection_views} views) and o = {overhead:.0f} s:')
  for workers in (int(n) for n in args.projection_workers.split(',')):
    seconds = overhead + args.shapenet_models * per_mesh / workers
    projection[workers] = seconds
    print(f'  N = {workers:>4} workers: {seconds / 3600:8.2f} h  ({seconds:,.0f} s)')
  size = args.shapenet_models * local['bytes'] / local['meshes']
  per_example = local['bytes'] / local['examples']
  print(f'  Written data: about {size / 1e9:.0f} GB ({per_example / 1e3:.1f} kB per example '
        'measured here), which the TFDS shuffle and write stages move once.')
  results['projection'] = {'model': 'o + M * c / N', 'c_seconds_per_mesh': per_mesh,
                           'o_seconds': overhead, 'M': args.shapenet_models,
                           'views': args.projection_views, 'seconds_by_workers': projection,
                           'bytes': size}
  print(f'CPUs: {results["cpus"]}, load average before {results["load_average_before"][0]:.1f}, '
        f'after {results["load_average_after"][0]:.1f} (a shared machine: rates are lower bounds)')
  if args.json:
    temporary = args.json.with_name(args.json.name + '.tmp')
    temporary.write_text(json.dumps(results, indent=2))
    os.replace(temporary, args.json)


if __name__ == '__main__':
  main(parse_args())
