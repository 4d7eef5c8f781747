"""The shared training loop: learning, checkpoints and resume, summaries, strategies, train.py."""
import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tensorflow as tf

from models import student_task
from models import training
from tests.test_students import TINY, in_memory_split, make_examples, save_teacher_standin
from tests.test_students import write_npz_splits

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def teacher_dir(tmp_path_factory):
  return save_teacher_standin(str(tmp_path_factory.mktemp('teacher') / 'teacher'))


def _subprocess_env():
  return dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH=ROOT, CUDA_VISIBLE_DEVICES='')


def _task(teacher_dir, kind='student', num_train=8):
  examples = {'train': make_examples(num_train), 'test': make_examples(4, seed=1)}
  return student_task.StudentTask(kind, in_memory_split(examples), teacher_dir,
                                  model_options=TINY, range_examples=num_train)


def test_config_validation_names_the_flag(tmp_path):
  with pytest.raises(ValueError, match='--lr_values'):
    training.TrainConfig(str(tmp_path), lr_boundaries=(10,), lr_values=(1e-3,))
  with pytest.raises(ValueError, match='--lr_boundaries'):
    training.TrainConfig(str(tmp_path), lr_boundaries=(10, 5), lr_values=(1, 2, 3))
  with pytest.raises(ValueError, match='--data_config'):
    training.parse_data_config('{bandwidth: 16}')


def test_learning_rate_schedule_is_piecewise_constant(tmp_path):
  config = training.TrainConfig(str(tmp_path), lr_boundaries=(2, 4), lr_values=(1.0, 0.5, 0.25))
  optimizer = training.make_optimizer(config)
  rates = []
  for step in range(6):
    optimizer.iterations.assign(step)
    rates.append(float(optimizer.learning_rate))
    assert training.learning_rate_at(config, step) == rates[-1]
  assert rates == [1.0, 1.0, 1.0, 0.5, 0.5, 0.25]


@pytest.mark.parametrize('kind', ['student', 'synthesis'])
def test_a_few_steps_lower_the_loss_on_a_fixed_batch(teacher_dir, tmp_path, kind):
  """8 examples, batch 8: every step sees the same batch; the loss must fall clearly."""
  config = training.TrainConfig(str(tmp_path), batch_size=8, lr_values=(3e-3,))
  trainer = training.Trainer(_task(teacher_dir, kind), config)
  first = trainer.train_steps(1)['loss']
  trainer.train_steps(15)
  last = trainer.train_steps(3)['loss']
  assert trainer.step == 19
  assert last < 0.5 * first, (first, last)


def test_xla_compiled_steps_match_plain_steps(teacher_dir, tmp_path):
  """`jit_compile` changes how a step runs, not what it computes (same weights, same batches)."""
  results, weights = {}, None
  for jit in (False, True):
    # A large Adam epsilon makes the update ~ lr * gradient, so rounding differences stay small.
    config = training.TrainConfig(str(tmp_path / str(jit)), batch_size=8, lr_values=(0.1,),
                                  adam_epsilon=1.0, jit_compile=jit)
    trainer = training.Trainer(_task(teacher_dir), config)
    assert trainer._jit_compile() == jit
    if weights is None:
      weights = trainer.model.get_weights()
    trainer.model.set_weights(weights)
    results[jit] = ([trainer.train_steps(1)['loss'] for _ in range(3)],
                    trainer.model.get_weights())
  np.testing.assert_allclose(results[True][0], results[False][0], rtol=1e-4)
  assert results[False][0][2] != results[False][0][0]  # it did train
  for a, b in zip(results[True][1], results[False][1]):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


def test_train_writes_checkpoints_summaries_export_and_resumes(teacher_dir, tmp_path):
  model_dir = str(tmp_path / 'run')
  config = training.TrainConfig(model_dir, batch_size=4, max_steps=4, checkpoint_every=2,
                                summary_every=2, eval_every=2)
  task = _task(teacher_dir)
  result = training.train(task, config)
  assert (result['start_step'], result['step']) == (0, 4)
  assert set(result['eval']) == {'loss', 'relative_error'}
  assert {'student/loss', 'student/relative_error', 'student/images/input_view',
          'student/images/embedding_pred_vs_target'} <= _summary_tags(
              os.path.join(model_dir, 'eval'))
  assert tf.train.latest_checkpoint(model_dir).endswith('ckpt-4')
  with open(os.path.join(model_dir, 'train_result.json')) as f:
    assert json.load(f)['step'] == 4
  embedder = tf.saved_model.load(os.path.join(model_dir, 'export'))
  images = make_examples(2)['image']
  assert embedder.embed(images)['embedding'].shape == (2, 4, 4, 3)

  trainer = training.Trainer(task, config)
  trainer.restore()
  np.testing.assert_allclose(embedder.embed(images)['embedding'],
                             trainer.model(images, training=False)['embedding'], atol=1e-6)
  config.max_steps = 6
  resumed = training.train(task, config)
  assert (resumed['start_step'], resumed['step']) == (4, 6)


def _stopped_and_resumed_vs_uninterrupted(teacher_dir, tmp_path, stop_at, **options):
  """(uninterrupted, resumed) results and weights of 6-step runs: one straight through, one
  stopped at `stop_at` and resumed by a new Trainer (as a new process would)."""
  import keras  # pylint: disable=g-import-not-at-top
  runs = {}
  for name, stops in (('straight', (6,)), ('resumed', (stop_at, 6))):
    keras.utils.set_random_seed(5)  # the same initial weights for both
    model_dir = str(tmp_path / name)
    for max_steps in stops:
      config = training.TrainConfig(model_dir, batch_size=4, max_steps=max_steps,
                                    checkpoint_every=2, summary_every=1, eval_every=3, seed=7,
                                    export=False)
      task = student_task.StudentTask(
          'student', in_memory_split({'train': make_examples(12), 'test': make_examples(4, seed=1)}),
          teacher_dir, model_options=TINY, range_examples=12, **options)
      result = training.train(task, config)
      if max_steps == stop_at and stop_at % 2:
        # As if killed after step `stop_at`: its last checkpoint is the one before.
        previous = os.path.join(model_dir, f'ckpt-{stop_at - 1}')
        tf.compat.v1.train.update_checkpoint_state(model_dir, previous, [previous])
    # A new Trainer restores the run (what a rerun in a new process does).
    runs[name] = (result, training.Trainer(task, config))
    runs[name][1].restore()
  return runs


@pytest.mark.parametrize('stop_at', [3, 4])
def test_a_stopped_and_resumed_run_ends_as_an_uninterrupted_one(teacher_dir, tmp_path, stop_at):
  """Shuffled, repeated data with random augmentation and in-plane turns: the resumed run sees
  the batches the uninterrupted one saw, and ends with the same weights and metrics, exactly
  (stopped at a checkpoint, 4, and killed between checkpoints, 3: it resumes from step 2)."""
  runs = _stopped_and_resumed_vs_uninterrupted(teacher_dir, tmp_path, stop_at, augment=True,
                                               inplane_rotations=True)
  (straight, a), (resumed, b) = runs['straight'], runs['resumed']
  assert resumed['start_step'] == (stop_at // 2) * 2 and resumed['step'] == straight['step'] == 6
  assert resumed['eval'] == straight['eval']
  assert resumed['train'] == straight['train']
  for x, y in zip(a.model.get_weights(), b.model.get_weights()):
    np.testing.assert_array_equal(x, y)
  for x, y in zip(a.optimizer.variables, b.optimizer.variables):
    np.testing.assert_array_equal(x.numpy(), y.numpy())


def _summary_tags(directory):
  tags = set()
  for name in os.listdir(directory):
    for event in tf.compat.v1.train.summary_iterator(os.path.join(directory, name)):
      tags.update(v.tag for v in event.summary.value)
  return tags


def test_synthesis_run_writes_summaries_and_a_synthesizer(teacher_dir, tmp_path):
  model_dir = str(tmp_path / 'run')
  config = training.TrainConfig(model_dir, batch_size=4, max_steps=2, checkpoint_every=0,
                                summary_every=1)
  result = training.train(_task(teacher_dir, 'synthesis'), config)
  assert result['eval'] and result['step'] == 2  # an evaluation runs at the end
  assert {'synthesis/loss', 'synthesis/relative_error', 'synthesis/learning_rate',
          'synthesis/images_per_sec'} <= _summary_tags(os.path.join(model_dir, 'train'))
  assert {'synthesis/loss', 'synthesis/relative_error',
          'synthesis/images/synthesised_vs_true_view'} <= _summary_tags(
              os.path.join(model_dir, 'eval'))
  synthesizer = tf.saved_model.load(os.path.join(model_dir, 'export'))
  images = synthesizer.synthesize(np.zeros((2, 4, 4, 3), np.float32))['image']
  assert images.shape == (2, 16, 16, 1)


def test_resuming_with_other_model_flags_is_a_clear_error(teacher_dir, tmp_path):
  config = training.TrainConfig(str(tmp_path), batch_size=4, max_steps=1, export=False)
  training.train(_task(teacher_dir), config)
  examples = {'train': make_examples(8), 'test': make_examples(4, seed=1)}
  wider = student_task.StudentTask('student', in_memory_split(examples), teacher_dir,
                                   model_options=dict(TINY, max_channels=32), range_examples=8)
  with pytest.raises(ValueError, match='current flags'):
    training.Trainer(wider, config).restore()


_MIRRORED_SCRIPT = textwrap.dedent("""
    import dataclasses, json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices('CPU')[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from models import student_task, training
    from tests.test_students import TINY, make_examples

    class FixedOrder(student_task.StudentTask):
      # The same 8 examples in the same order every epoch: replica r gets rows 4r..4r+3.
      def train_dataset(self, batch_size, input_context=None):
        return self._examples('train', None).repeat().batch(batch_size, drop_remainder=True)

    examples = {'train': make_examples(8), 'test': make_examples(4, seed=1)}
    split = lambda s: tf.data.Dataset.from_tensor_slices(examples[s])
    results = {}
    weights = None
    for name, strategy in [('one', tf.distribute.OneDeviceStrategy('/cpu:0')),
                           ('mirrored', tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1']))]:
      task = FixedOrder('student', split, sys.argv[1], model_options=TINY, range_examples=8)
      # A large Adam epsilon makes the update ~ lr * gradient: Adam's early steps ~ lr * sign(g)
      # would turn rounding differences of near-zero gradients into lr-sized weight differences.
      config = training.TrainConfig(sys.argv[2] + name, batch_size=8, lr_values=(0.1,),
                                    adam_epsilon=1.0)
      trainer = training.Trainer(task, config, strategy)
      if weights is None:
        weights = trainer.model.get_weights()
      trainer.model.set_weights(weights)
      losses = [trainer.train_steps(1)['loss'] for _ in range(3)]
      results[name] = {'replicas': strategy.num_replicas_in_sync, 'losses': losses,
                       'weights': [w.tolist() for w in trainer.model.get_weights()[:4]]}
    # XLA cannot compile batch norm's cross-replica updates: asking for it is a clear error.
    try:
      training.Trainer(task, dataclasses.replace(config, jit_compile=True), strategy)
    except ValueError as e:
      results['jit_error'] = str(e)
    print('RESULT' + json.dumps(results))
""")


@pytest.mark.slow
def test_mirrored_on_two_cpus_matches_one_device(teacher_dir, tmp_path):
  proc = subprocess.run([sys.executable, '-c', _MIRRORED_SCRIPT, teacher_dir, str(tmp_path) + '/'],
                        cwd=ROOT, env=_subprocess_env(), capture_output=True, text=True,
                        timeout=300)
  lines = [l for l in proc.stdout.splitlines() if l.startswith('RESULT')]
  assert proc.returncode == 0 and lines, proc.stderr[-3000:]
  results = json.loads(lines[0][len('RESULT'):])
  assert results['mirrored']['replicas'] == 2 and results['one']['replicas'] == 1
  np.testing.assert_allclose(results['mirrored']['losses'], results['one']['losses'], rtol=1e-4)
  assert results['one']['losses'][2] != results['one']['losses'][0]  # it did train
  for a, b in zip(results['mirrored']['weights'], results['one']['weights']):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
  assert '--jit_compile=true needs one replica' in results['jit_error']


def _train_py_command(model_dir, npz_dir, teacher_dir, max_steps, *extra):
  """The train.py command line of a tiny student run."""
  return [sys.executable, os.path.join(ROOT, 'train.py'), '--model=student',
          f'--model_dir={model_dir}', f'--npz_dir={npz_dir}', f'--tgt_embed_dir={teacher_dir}',
          f'--max_steps={max_steps}', '--batch_size=4', '--checkpoint_every=2',
          '--summary_every=2', '--layers_per_block=1', '--base_channels=8', '--max_channels=16',
          '--n_latent=16', *extra]


def _train_py(model_dir, npz_dir, teacher_dir, max_steps, *extra):
  return subprocess.run(
      _train_py_command(model_dir, npz_dir, teacher_dir, max_steps, '--target_range_examples=8',
                        *extra),
      cwd=ROOT, env=_subprocess_env(), capture_output=True, text=True, timeout=300)


def _train_first_two_steps(model_dir, npz_dir, teacher_dir):
  """A fresh two-step run of train.py (no export) that must start at 0 and end at 2."""
  first = _train_py(model_dir, npz_dir, teacher_dir, 2, '--noexport')
  assert first.returncode == 0, first.stderr[-3000:]
  assert 'start_step=0' in first.stdout and 'final_step=2' in first.stdout


@pytest.mark.slow
def test_train_py_killed_run_resumes_at_its_last_checkpoint(teacher_dir, tmp_path):
  """A run SIGKILLed after its step-2 checkpoint resumes there, not at 0."""
  npz_dir = write_npz_splits(str(tmp_path / 'data'), num_train=16, num_test=4, image_size=16)
  model_dir = str(tmp_path / 'run')
  _train_first_two_steps(model_dir, npz_dir, teacher_dir)
  # Now a long run, killed once it has written its step-4 checkpoint.
  proc = subprocess.Popen(
      _train_py_command(model_dir, npz_dir, teacher_dir, 100000),
      cwd=ROOT, env=_subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
      latest = tf.train.latest_checkpoint(model_dir)
      if latest and int(latest.rsplit('-', 1)[1]) >= 4:
        break
      time.sleep(0.5)
  finally:
    proc.kill()
    proc.wait()
  killed_at = int(tf.train.latest_checkpoint(model_dir).rsplit('-', 1)[1])
  assert killed_at >= 4
  resumed = _train_py(model_dir, npz_dir, teacher_dir, killed_at + 2)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f'start_step={killed_at}' in resumed.stdout
  assert f'final_step={killed_at + 2}' in resumed.stdout
  embedder = tf.saved_model.load(os.path.join(model_dir, 'export'))
  assert embedder.embed(make_examples(1)['image'])['embedding'].shape == (1, 4, 4, 3)


@pytest.mark.slow
def test_train_py_resumes_with_a_larger_max_steps(teacher_dir, tmp_path):
  npz_dir = write_npz_splits(str(tmp_path / 'data'), num_train=8, num_test=4, image_size=16)
  model_dir = str(tmp_path / 'run')
  _train_first_two_steps(model_dir, npz_dir, teacher_dir)
  second = _train_py(model_dir, npz_dir, teacher_dir, 3, '--noexport')
  assert second.returncode == 0, second.stderr[-3000:]
  assert 'start_step=2' in second.stdout and 'final_step=3' in second.stdout


def test_train_py_errors_are_clear(tmp_path):
  proc = subprocess.run([sys.executable, os.path.join(ROOT, 'train.py'), '--model=student',
                         f'--model_dir={tmp_path}', f'--npz_dir={tmp_path}',
                         '--tgt_embed_dir=/nonexistent/teacher'],
                        cwd=ROOT, env=_subprocess_env(), capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode != 0 and '/nonexistent/teacher' in proc.stderr


def _free_ports(count):
  sockets = [socket.socket() for _ in range(count)]
  for sock in sockets:
    sock.bind(('localhost', 0))
  ports = [sock.getsockname()[1] for sock in sockets]
  for sock in sockets:
    sock.close()
  return ports


@pytest.mark.slow
def test_train_py_multi_worker_mirrored_on_two_local_workers(teacher_dir, tmp_path):
  """Two worker processes on this machine (TF_CONFIG): the custom loop trains, the chief keeps
  the checkpoints and the export, the other worker leaves nothing behind."""
  npz_dir = write_npz_splits(str(tmp_path / 'data'), num_train=16, num_test=4, image_size=16)
  model_dir = str(tmp_path / 'run')
  cluster = {'worker': [f'localhost:{port}' for port in _free_ports(2)]}
  procs = []
  for index in range(2):
    env = dict(_subprocess_env(), TF_CONFIG=json.dumps(
        {'cluster': cluster, 'task': {'type': 'worker', 'index': index}}))
    procs.append(subprocess.Popen(
        [sys.executable, os.path.join(ROOT, 'train.py'), '--model=student',
         f'--model_dir={model_dir}', f'--npz_dir={npz_dir}', f'--tgt_embed_dir={teacher_dir}',
         '--max_steps=2', '--batch_size=4', '--checkpoint_every=1', '--summary_every=1',
         '--layers_per_block=1', '--base_channels=8', '--max_channels=16', '--n_latent=16',
         '--target_range_examples=8', '--distribution_strategy=multi_worker_mirrored'],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
  outputs = []
  try:
    for proc in procs:
      outputs.append(proc.communicate(timeout=400))
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
  for proc, (out, err) in zip(procs, outputs):
    assert proc.returncode == 0, err[-3000:]
    assert 'final_step=2' in out
  assert tf.train.latest_checkpoint(model_dir).endswith('ckpt-2')
  assert os.path.exists(os.path.join(model_dir, 'export', 'saved_model.pb'))


def _checkpoint_values(model_dir):
  reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(model_dir))
  names = sorted(n for n in reader.get_variable_to_shape_map() if '/model/' in n or
                 n.startswith('model/'))
  return {n: reader.get_tensor(n) for n in names}


@pytest.mark.slow
def test_train_py_seed_repeats_a_run(teacher_dir, tmp_path):
  """Same --seed: the same weights after two steps (init, data order, turns); another seed: not."""
  npz_dir = write_npz_splits(str(tmp_path / 'data'), num_train=16, num_test=4, image_size=16)
  values = {}
  for name, seed in (('a', 3), ('b', 3), ('c', 4)):
    run = _train_py(str(tmp_path / name), npz_dir, teacher_dir, 2, '--noexport', f'--seed={seed}')
    assert run.returncode == 0, run.stderr[-3000:]
    values[name] = _checkpoint_values(str(tmp_path / name))
  assert values['a'] and values['a'].keys() == values['c'].keys()
  for n, v in values['a'].items():
    np.testing.assert_allclose(values['b'][n], v, rtol=1e-5, atol=1e-6, err_msg=n)
  assert any(not np.allclose(values['c'][n], v) for n, v in values['a'].items())
