"""Apache Beam generation of the `EquivariantShapes` splits: one unit of work per mesh.

`EquivariantShapes` uses this module instead of its local generator when the download config
names a Beam runner or Beam options; the examples and their keys are the same either way (both
call `builders.examples_for_mesh`). The pipeline of one split:

  records -Create-> -Reshuffle-> -ParDo(examples of one mesh)-> (key, example) pairs to TFDS
                                          `-> stats, failures -> <split>.build_summary.json

The Reshuffle matters on a cluster: without it the runner fuses Create and the ParDo into one
stage and a single worker would ray cast every mesh. A mesh that fails is logged, counted in the
summary and skipped, as in the local build.

apache_beam is an optional extra (`pip install .[beam]`; it pins protobuf and pyarrow
differently from the main install), so only a Beam build imports this module.
"""
import json
import time

from absl import logging
import apache_beam as beam
from etils import epath

from datasets import builders

_STATS = 'stats'
_FAILURES = 'failures'


def pipeline_options(options):
  """`beam.options.pipeline_options.PipelineOptions` from 'key=value,key=value' text.

  The format of `tfds build --beam_pipeline_options`, e.g.
  'runner=DirectRunner,direct_num_workers=2,direct_running_mode=multi_processing'.

  Raises:
    ValueError naming the bad item (no '=').
  """
  flags = []
  for item in (i.strip() for i in options.split(',')):
    if not item:
      continue
    if '=' not in item:
      raise ValueError(f'--beam_pipeline_options: {item!r} is not key=value (in {options!r})')
    flags.append(f'--{item}')
  return beam.options.pipeline_options.PipelineOptions(flags)


class _ExamplesOfMesh(beam.DoFn):
  """Record -> its (key, example) pairs, and on the side a (label, examples, seconds) stat or
  a failure."""

  def __init__(self, config):
    super().__init__()
    self._config = config

  def process(self, record):
    start = time.time()
    try:
      examples = builders.examples_for_mesh(record, self._config)
    except Exception as e:  # pylint: disable=broad-except  (one bad mesh never stops a build)
      failure = builders.mesh_failure(record, e)
      logging.warning('skipping %s (%s): %s', record.instance, record.origin, failure['reason'])
      yield beam.pvalue.TaggedOutput(_FAILURES, failure)
      return
    yield beam.pvalue.TaggedOutput(_STATS, (record.label, len(examples), time.time() - start))
    yield from examples


def _write_summary(stats, failures, num_records, path):
  """Writes the split summary (`builders.split_summary`) as JSON to `path`, atomically."""
  examples_per_label = {}
  for label, count, _ in stats:
    examples_per_label[label] = examples_per_label.get(label, 0) + count
  summary = builders.split_summary(num_records, examples_per_label, failures,
                                   sum(seconds for _, _, seconds in stats), 'beam')
  path = epath.Path(path)
  temporary = path.with_name(path.name + '.tmp')
  temporary.write_text(json.dumps(summary))
  temporary.replace(path)


class MeshExamples(beam.PTransform):
  """PBegin -> PCollection of (key, example) of every usable mesh of `records`.

  Also writes the split summary to `summary_path` (a path every worker can write: local for the
  DirectRunner, e.g. gs:// on Dataflow; the builder passes its data folder).
  """

  def __init__(self, records, config, summary_path):
    super().__init__()
    self._records = list(records)
    self._config = config
    self._summary_path = str(summary_path)

  def expand(self, pbegin):
    outputs = (pbegin
               | 'Records' >> beam.Create(self._records)
               | 'SpreadOverWorkers' >> beam.Reshuffle()
               | 'ExamplesOfMesh' >> beam.ParDo(_ExamplesOfMesh(self._config)).with_outputs(
                   _STATS, _FAILURES, main='examples'))
    failures = outputs[_FAILURES] | 'AllFailures' >> beam.combiners.ToList()
    _ = (outputs[_STATS]
         | 'AllStats' >> beam.combiners.ToList()
         | 'WriteSummary' >> beam.Map(_write_summary, failures=beam.pvalue.AsSingleton(failures),
                                      num_records=len(self._records), path=self._summary_path))
    return outputs.examples
