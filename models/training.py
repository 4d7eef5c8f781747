"""The one custom training loop of the project, shared by the teacher, the students and synthesis.

A model is trained by handing a `Task` to `train(task, config, strategy)`. The task knows its data,
its model and its loss; this module knows distribution, optimisation, checkpoints, summaries and
evaluation. Keras `model.fit` is not used: it fails under MultiWorkerMirroredStrategy in Keras 3.

The Task interface (subclass `Task`, override what you need):

  make_model() -> keras.Model
      Called once, inside `strategy.scope()`. The model must be built (functional models are).
  train_dataset(batch_size, input_context=None) -> tf.data.Dataset
      Infinite dataset of batches of `batch_size` (the PER-REPLICA batch) example dicts,
      batched with `drop_remainder=True`. `input_context` is a `tf.distribute.InputContext`
      (or None) for sharding across input pipelines.
  eval_dataset(batch_size, input_context=None) -> tf.data.Dataset
      Finite dataset of batches (the last one may be short) of the evaluation split. In a
      multi-worker run every worker must yield the same number of batches.
  loss_and_metrics(model, batch, training) -> (per_example_loss [N], {name: per_example_value [N]})
      Per-example values, not means: the loop averages them over the GLOBAL batch, so the result
      does not depend on how many replicas share a batch. Regularisation losses in `model.losses`
      are added by the loop.
  image_summaries(model, batch) -> {name: float images [k, H, W, 1 or 3] in [0, 1]}   (optional)
  jit_compile (class attribute, default False)                                       (optional)
      Compile the loss and gradients with XLA (`TrainConfig.jit_compile` overrides it; one
      replica only). Worth it for models of many small ops (the teacher's spectral layers: 2.7x
      faster steps on CPU), not for convolutions, which oneDNN runs faster than XLA's CPU code.
  export(model, export_dir) -> None                                                  (optional)
      Called at the end of training with `config.model_dir/export` (on other workers of a
      multi-worker run, with a temporary directory that is deleted afterwards).

Checkpoints (`tf.train.Checkpoint` of the model and optimizer, the step being the optimizer's
iteration count) are written every `checkpoint_every` steps and at the end; a rerun with the same
`model_dir` resumes from the latest one, exactly: with `TrainConfig.seed` set it draws the batches
and augmentation of an uninterrupted run (`Trainer._train_data`) and ends with the same weights
and metrics, digit for digit. TensorBoard summaries go to `model_dir/train` and
`model_dir/eval`, their tags grouped under the task's name (`teacher/loss`, `student/loss`,
`synthesis/...`; images `teacher/images/...`), so that runs of different models under one logdir
do not share a chart. With `TrainConfig.run_info` (train.py passes its flags and data set), a run
also writes a text summary of them (`<task>/run`) and their scalar values as hparams (the
TensorBoard HParams dashboard), and adds them to the export's model card (`trained_on`).
"""
import dataclasses
import json
import os
import shutil
import tempfile
import time

from absl import logging
import keras
import numpy as np
import tensorflow as tf

STRATEGIES = ('one_device', 'mirrored', 'multi_worker_mirrored', 'tpu')
# The last training window's means at the last checkpoint (model_dir), for a resumed run.
LAST_WINDOW_JSON = 'last_window.json'


class Task:
  """Base class of a trainable task; see the module docstring for the contract."""

  name = 'task'
  jit_compile = False

  def make_model(self):
    raise NotImplementedError(f'{type(self).__name__}.make_model')

  def train_dataset(self, batch_size, input_context=None):
    raise NotImplementedError(f'{type(self).__name__}.train_dataset')

  def eval_dataset(self, batch_size, input_context=None):
    raise NotImplementedError(f'{type(self).__name__}.eval_dataset')

  def loss_and_metrics(self, model, batch, training):
    raise NotImplementedError(f'{type(self).__name__}.loss_and_metrics')

  def image_summaries(self, model, batch):
    del model, batch
    return {}

  def export(self, model, export_dir):
    del model, export_dir


@dataclasses.dataclass
class TrainConfig:
  """Settings of a training run (train.py fills these from its flags).

  `lr_boundaries` are step numbers; `lr_values` has one more entry than `lr_boundaries`
  (piecewise-constant learning rate). `momentum` is Adam's beta_1. Cadences are in steps; 0
  disables.
  An evaluation also runs at the end. `eval_batches` caps each evaluation (None: the whole eval
  split). `jit_compile` (None: the task's `jit_compile`) compiles the loss and gradients with
  XLA (one replica only). `seed` (None: unseeded) seeds the training data's random operations
  (shuffling, augmentation) when its pipeline is made, so that a resumed run draws the batches
  of an uninterrupted one (see `Trainer.train_steps`).
  """
  model_dir: str
  batch_size: int = 32
  max_steps: int = 1000
  lr_boundaries: tuple = ()
  lr_values: tuple = (1e-3,)
  momentum: float = 0.9
  beta_2: float = 0.999
  adam_epsilon: float = 1e-8
  checkpoint_every: int = 1000
  summary_every: int = 100
  eval_every: int = 0
  eval_batches: int = None
  keep_checkpoints: int = 3
  export: bool = True
  jit_compile: bool = None
  # {'flags': {name: value}, 'dataset': {...}, ...}: written as a text summary and hparams, and
  # kept in the export's model card (models.model_card); None writes neither.
  run_info: dict = None
  seed: int = None

  def __post_init__(self):
    if self.batch_size < 1:
      raise ValueError(f'--batch_size must be positive, got {self.batch_size}')
    if self.max_steps < 0:
      raise ValueError(f'--max_steps must be non-negative, got {self.max_steps}')
    bounds = [int(b) for b in self.lr_boundaries]
    if len(self.lr_values) != len(bounds) + 1:
      raise ValueError(f'--lr_values needs one more entry than --lr_boundaries, got '
                       f'{len(self.lr_values)} values for {len(bounds)} boundaries')
    if any(b1 >= b2 for b1, b2 in zip(bounds, bounds[1:])) or any(b < 1 for b in bounds):
      raise ValueError(f'--lr_boundaries must be positive and increasing, got {bounds}')
    if any(v <= 0 for v in self.lr_values):
      raise ValueError(f'--lr_values must be positive, got {list(self.lr_values)}')
    self.lr_boundaries = tuple(bounds)
    self.lr_values = tuple(float(v) for v in self.lr_values)


def make_strategy(name, tpu=''):
  """A `tf.distribute.Strategy` by name: one of `STRATEGIES`.

  `one_device` uses the first GPU if any, else the CPU; `mirrored` all local GPUs (or all logical
  CPUs when there are no GPUs); `multi_worker_mirrored` reads the cluster from TF_CONFIG; `tpu`
  connects to `tpu` (an address or name, '' for the local one).
  """
  if name == 'one_device':
    gpus = tf.config.list_logical_devices('GPU')
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else '/cpu:0')
  if name == 'mirrored':
    gpus = tf.config.list_logical_devices('GPU')
    devices = [d.name for d in gpus or tf.config.list_logical_devices('CPU')]
    return tf.distribute.MirroredStrategy(devices)
  if name == 'multi_worker_mirrored':
    return tf.distribute.MultiWorkerMirroredStrategy()
  if name == 'tpu':
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)
  raise ValueError(f'--distribution_strategy must be one of {STRATEGIES}, got {name!r}')


def make_optimizer(config):
  """Adam with a piecewise-constant learning rate over the optimizer's iteration count."""
  if config.lr_boundaries:
    lr = keras.optimizers.schedules.PiecewiseConstantDecay(list(config.lr_boundaries),
                                                           list(config.lr_values))
  else:
    lr = config.lr_values[0]
  return keras.optimizers.Adam(learning_rate=lr, beta_1=config.momentum, beta_2=config.beta_2,
                               epsilon=config.adam_epsilon)


def learning_rate_at(config, step):
  """The learning rate `make_optimizer(config)` uses at `step` (python float), for summaries."""
  index = int(np.searchsorted(config.lr_boundaries, step, side='left'))
  return config.lr_values[index]


def _is_chief(strategy):
  resolver = getattr(strategy, 'cluster_resolver', None)
  if resolver is None or not resolver.task_type:
    return True
  return resolver.task_type == 'chief' or (resolver.task_type == 'worker' and resolver.task_id == 0
                                           and 'chief' not in resolver.cluster_spec().as_dict())


def _checkpoint_dir(model_dir, strategy):
  """Every worker saves (collective ops need all of them); only the chief's copy is kept."""
  if _is_chief(strategy):
    return model_dir
  resolver = strategy.cluster_resolver
  return os.path.join(tempfile.gettempdir(),
                      f'workertemp_{resolver.task_type}_{resolver.task_id}_{os.getpid()}')


def _sum_over_replicas(strategy, per_replica):
  return {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
          for k, v in per_replica.items()}


def _means(sums):
  count = max(float(sums.pop('count')), 1.0)
  return {k: float(v) / count for k, v in sums.items()}


def _per_example_sums(per_example_loss, metrics):
  sums = {'loss': tf.reduce_sum(per_example_loss)}
  for name, values in metrics.items():
    sums[name] = tf.reduce_sum(tf.cast(values, tf.float32))
  sums['count'] = tf.cast(tf.shape(per_example_loss)[0], tf.float32)
  return sums


class Trainer:
  """Builds model, optimizer and checkpoint under a strategy, and runs training and evaluation.

  `train(task, config, strategy)` is the usual entry point; the class exists so tests and tools can
  run single steps (`train_steps`) and evaluations (`evaluate`) on the same state.
  """

  def __init__(self, task, config, strategy=None):
    self.task = task
    self.config = config
    self.strategy = strategy or tf.distribute.get_strategy()
    self.is_chief = _is_chief(self.strategy)
    replicas = self.strategy.num_replicas_in_sync
    if config.batch_size % replicas:
      raise ValueError(f'--batch_size={config.batch_size} is not divisible by the '
                       f'{replicas} replicas of the distribution strategy')
    self.per_replica_batch = config.batch_size // replicas
    with self.strategy.scope():
      self.model = task.make_model()
      self.optimizer = make_optimizer(config)
      self.optimizer.build(self.model.trainable_variables)
      self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer)
    self.manager = tf.train.CheckpointManager(
        self.checkpoint, _checkpoint_dir(config.model_dir, self.strategy),
        max_to_keep=config.keep_checkpoints)
    self._train_iterator = None
    self._train_step = self._make_train_step()
    self._eval_step = self._make_eval_step()

  @property
  def step(self):
    return int(self.optimizer.iterations.numpy())

  def restore(self):
    """Restores the latest checkpoint of `model_dir` if there is one; returns the step reached."""
    latest = tf.train.latest_checkpoint(self.config.model_dir)
    if latest:
      try:
        self.checkpoint.restore(latest).assert_existing_objects_matched()
      except (AssertionError, ValueError, tf.errors.OpError) as e:
        raise ValueError(f'{latest} does not fit the model built from the current flags (was '
                         f'--model_dir={self.config.model_dir} written with other settings?): '
                         f'{e}') from None
      logging.info('restored %s at step %d', latest, self.step)
    return self.step

  def save(self):
    path = self.manager.save(checkpoint_number=self.step)
    if not self.is_chief:
      shutil.rmtree(os.path.dirname(path), ignore_errors=True)
    return path

  def _make_train_step(self):
    task, model, optimizer, strategy = self.task, self.model, self.optimizer, self.strategy
    global_batch = float(self.config.batch_size)

    def gradients(batch):
      with tf.GradientTape() as tape:
        per_example, metrics = task.loss_and_metrics(model, batch, training=True)
        loss = tf.reduce_sum(per_example) / global_batch
        if model.losses:
          loss += tf.add_n(model.losses) / strategy.num_replicas_in_sync
      return tape.gradient(loss, model.trainable_variables), _per_example_sums(per_example, metrics)

    if self._jit_compile():
      # The optimizer's update stays outside XLA, with the variables' bookkeeping.
      gradients = tf.function(gradients, jit_compile=True)

    def step_fn(batch):
      grads, sums = gradients(batch)
      optimizer.apply_gradients(zip(grads, model.trainable_variables))
      return sums

    @tf.function
    def train_step(iterator):
      return strategy.run(step_fn, args=(next(iterator),))

    return train_step

  def _jit_compile(self):
    """Whether the replicas' loss and gradients run under XLA: as configured, else as the task
    prefers, and only with one replica (batch norm updates its statistics across replicas, which
    XLA cannot compile)."""
    wanted = self.config.jit_compile
    replicas = self.strategy.num_replicas_in_sync
    if wanted and replicas > 1:
      raise ValueError(f'--jit_compile=true needs one replica; the distribution strategy has '
                       f'{replicas} (use --jit_compile=auto or false)')
    return replicas == 1 and (self.task.jit_compile if wanted is None else wanted)

  def _make_eval_step(self):
    task, model, strategy = self.task, self.model, self.strategy

    def step_fn(batch):
      per_example, metrics = task.loss_and_metrics(model, batch, training=False)
      return _per_example_sums(per_example, metrics)

    @tf.function
    def eval_step(batch):
      return strategy.run(step_fn, args=(batch,))

    return eval_step

  def _train_data(self):
    """The training batches from the current step on: the same batches, with the same random
    augmentation, that an uninterrupted run would draw from here.

    Why: the task's pipeline (shuffle(...).repeat(), random augmentation) is stateful and starts
    over in a new process, so a run resumed from a checkpoint would see the first batches again.
    The pipeline's random operations are seeded afresh from `config.seed` when it is made (global
    seed reset: op seeds then depend only on the order the pipeline creates them), and the
    `step` batches the checkpoint has already trained on are drawn and dropped. Drawing costs
    input-pipeline time only (no model); the stateful random ops in the pipeline advance exactly
    as they did, which a `skip` of a re-seeded dataset or iterator checkpointing (that cannot save
    the random ops' state, and would save shuffle buffers and caches) would not guarantee.
    """
    if self._train_iterator is None:
      if self.config.seed is not None:
        tf.random.set_seed(self.config.seed)
      dataset = self.strategy.distribute_datasets_from_function(
          lambda ctx: self.task.train_dataset(self.per_replica_batch, ctx))
      self._train_iterator = iter(dataset)
      drop = self.step
      if drop:
        start = time.perf_counter()
        for _ in range(drop):
          next(self._train_iterator)
        logging.info('resume: skipped the %d batches trained before (%.1f s)', drop,
                     time.perf_counter() - start)
    return self._train_iterator

  def train_steps(self, num_steps):
    """Runs `num_steps` optimisation steps; returns the mean loss and metrics over them."""
    iterator = self._train_data()
    totals = {}
    for _ in range(num_steps):
      sums = _sum_over_replicas(self.strategy, self._train_step(iterator))
      for k, v in sums.items():
        totals[k] = totals.get(k, 0.0) + float(v)
    return _means(totals) if totals else {}

  def evaluate(self, max_batches=None):
    """Loss and metrics averaged over the eval split (or its first `max_batches` batches)."""
    dataset = self.strategy.distribute_datasets_from_function(
        lambda ctx: self.task.eval_dataset(self.per_replica_batch, ctx))
    totals = {}
    for i, batch in enumerate(dataset):
      if max_batches is not None and i >= max_batches:
        break
      sums = _sum_over_replicas(self.strategy, self._eval_step(batch))
      for k, v in sums.items():
        totals[k] = totals.get(k, 0.0) + float(v)
    if not totals:
      raise ValueError(f'the eval dataset of task {self.task.name!r} is empty')
    return _means(totals)

  def first_local_batch(self, dataset_fn):
    """The first batch of `dataset_fn(per_replica_batch, None)`, undistributed (for images)."""
    return next(iter(dataset_fn(self.per_replica_batch, None)))


def _write_scalars(writer, values, step, prefix=''):
  if writer is None:
    return
  with writer.as_default(step=step):
    for name, value in values.items():
      tf.summary.scalar(prefix + name, value)


def _write_images(writer, images, step, prefix=''):
  if writer is None or not images:
    return
  with writer.as_default(step=step):
    for name, value in images.items():
      tf.summary.image(prefix + name, tf.clip_by_value(tf.cast(value, tf.float32), 0.0, 1.0),
                       max_outputs=int(value.shape[0]))


def channel_images(maps, max_channels=3):
  """Spherical (or any) maps `[k, H, W, C]` -> images `[k, n H, W, 1]` in [0, 1] for TensorBoard:
  the first n = min(C, max_channels) channels stacked vertically, each scaled to [0, 1]."""
  rows = []
  for c in range(min(max_channels, maps.shape[-1])):
    channel = tf.cast(maps[..., c:c + 1], tf.float32)
    low = tf.reduce_min(channel, axis=[1, 2, 3], keepdims=True)
    high = tf.reduce_max(channel, axis=[1, 2, 3], keepdims=True)
    rows.append((channel - low) / tf.maximum(high - low, 1e-12))
  return tf.concat(rows, axis=1)


def hparams_of(run_info):
  """The scalar flags of `run_info` as an hparams dict (bool, int, float, str values; lists and
  None as text), plus the data set name."""
  values = {}
  for name, value in sorted((run_info.get('flags') or {}).items()):
    if isinstance(value, (bool, int, float, str)):
      values[name] = value
    else:
      values[name] = json.dumps(value)
  dataset = run_info.get('dataset') or {}
  if dataset.get('name'):
    values['dataset'] = dataset['name']
  return values


def run_summary_text(task_name, run_info):
  """Markdown of a run's flags and data set (the `<task>/run` text summary)."""
  lines = [f'### {task_name} run', '']
  dataset = run_info.get('dataset') or {}
  if dataset:
    lines += ['**Data set**', '', '| setting | value |', '|---|---|']
    lines += [f'| {k} | {json.dumps(v)} |' for k, v in sorted(dataset.items())]
    lines.append('')
  lines += ['**Flags**', '', '| flag | value |', '|---|---|']
  flags = sorted((run_info.get('flags') or {}).items())
  lines += [f'| --{k} | {json.dumps(v)} |' for k, v in flags]
  for key, value in sorted(run_info.items()):
    if key not in ('flags', 'dataset'):
      lines.append(f'\n**{key}**: {json.dumps(value)}')
  return '\n'.join(lines)


def _write_run_info(writer, task_name, run_info, step):
  """The text summary and hparams of a run (a resumed run writes them again at its start)."""
  if writer is None or not run_info:
    return
  from tensorboard.plugins.hparams import api as hparams_api  # pylint: disable=g-import-not-at-top
  with writer.as_default(step=step):
    tf.summary.text(f'{task_name}/run', run_summary_text(task_name, run_info))
    hparams_api.hparams(hparams_of(run_info), trial_id=f'{task_name}:{writer_trial(run_info)}')


def writer_trial(run_info):
  """The trial name of a run in the HParams dashboard: its model_dir flag, else 'run'."""
  return str((run_info.get('flags') or {}).get('model_dir', 'run'))


def _write_json_atomic(path, payload):
  tmp = f'{path}.tmp{os.getpid()}'
  with tf.io.gfile.GFile(tmp, 'w') as f:
    json.dump(payload, f, indent=2, sort_keys=True)
  tf.io.gfile.rename(tmp, path, overwrite=True)


def train(task, config, strategy=None):
  """Trains `task` to `config.max_steps`, resuming from `config.model_dir`; returns a summary dict.

  The dict holds `start_step`, `step`, the last training window's means under `train`, the last
  evaluation under `eval` (empty if none ran) and `images_per_sec`. It is also written to
  `model_dir/train_result.json` by the chief.
  """
  tf.io.gfile.makedirs(config.model_dir)
  trainer = Trainer(task, config, strategy)
  start_step = trainer.restore()
  logging.info('task %s: training from step %d to %d', task.name, start_step, config.max_steps)
  print(f'start_step={start_step}', flush=True)
  chief = trainer.is_chief
  train_writer = tf.summary.create_file_writer(os.path.join(config.model_dir, 'train')) if chief \
      else None
  eval_writer = tf.summary.create_file_writer(os.path.join(config.model_dir, 'eval')) if chief \
      else None

  last_train, last_eval, images_per_sec = {}, {}, 0.0
  step = start_step
  eval_step = None
  window_path = os.path.join(config.model_dir, LAST_WINDOW_JSON)
  if start_step and tf.io.gfile.exists(window_path):
    # The training means of the window that ended at the checkpoint: a run resumed at its last
    # step reports them as the uninterrupted run did.
    with tf.io.gfile.GFile(window_path) as f:
      window = json.load(f)
    if window.get('step') == start_step:
      last_train = window.get('train', {})

  def save():
    trainer.save()
    if chief:
      _write_json_atomic(window_path, {'step': step, 'train': last_train})

  prefix = f'{task.name}/'
  _write_run_info(train_writer, task.name, config.run_info, start_step)

  def run_eval():
    nonlocal eval_step
    eval_step = step
    metrics = trainer.evaluate(config.eval_batches)
    _write_scalars(eval_writer, metrics, step, prefix)
    if chief:
      batch = trainer.first_local_batch(task.eval_dataset)
      _write_images(eval_writer, task.image_summaries(trainer.model, batch), step,
                    prefix + 'images/')
    logging.info('step %d eval %s', step, metrics)
    return metrics

  window = max(config.summary_every, 1) if config.summary_every else config.max_steps
  while step < config.max_steps:
    # Run up to the next summary, checkpoint or eval boundary, whichever comes first.
    stops = [config.max_steps, (step // window + 1) * window]
    for every in (config.checkpoint_every, config.eval_every):
      if every:
        stops.append((step // every + 1) * every)
    num = min(stops) - step
    start = time.perf_counter()
    last_train = trainer.train_steps(num)
    elapsed = time.perf_counter() - start
    step = trainer.step
    images_per_sec = num * config.batch_size / max(elapsed, 1e-9)
    if not np.isfinite(last_train['loss']):
      raise FloatingPointError(f'task {task.name}: loss is {last_train["loss"]} at step {step}')
    if config.summary_every and step % config.summary_every == 0 or step == config.max_steps:
      scalars = dict(last_train, learning_rate=learning_rate_at(config, step - 1),
                     images_per_sec=images_per_sec)
      _write_scalars(train_writer, scalars, step, prefix)
      logging.info('step %d train %s (%.1f images/s)', step, last_train, images_per_sec)
    if config.checkpoint_every and step % config.checkpoint_every == 0:
      save()
    if config.eval_every and step % config.eval_every == 0:
      last_eval = run_eval()

  if step > start_step and not (config.checkpoint_every and step % config.checkpoint_every == 0):
    save()
  if eval_step != step:
    last_eval = run_eval()
  if config.export:
    # Every worker exports (saving distributed variables may need all of them); only the
    # chief's export is kept.
    export_dir = os.path.join(_checkpoint_dir(config.model_dir, trainer.strategy), 'export')
    task.export(trainer.model, export_dir)
    if chief and config.run_info:
      from models import model_card  # pylint: disable=g-import-not-at-top
      model_card.add_training_record(export_dir, dict(config.run_info, steps=step))
  if not chief:
    shutil.rmtree(_checkpoint_dir(config.model_dir, trainer.strategy), ignore_errors=True)
  for writer in (train_writer, eval_writer):
    if writer is not None:
      writer.flush()
  result = {'start_step': start_step, 'step': step, 'train': last_train, 'eval': last_eval,
            'images_per_sec': images_per_sec}
  if chief:
    _write_json_atomic(os.path.join(config.model_dir, 'train_result.json'), result)
  return result


def parse_data_config(text):
  """The `--data_config` JSON object (settings of `datasets.builders.load_split`) -> dict.

  Raises:
    ValueError (pipeline.cli.InputError) naming the flag for bad JSON or a non-object.
  """
  from pipeline import cli  # pylint: disable=g-import-not-at-top  (light; the one flag checker)
  return cli.parse_json_object('--data_config', text)
