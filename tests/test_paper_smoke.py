"""The paper preset, both recipes, end to end for a few steps on a few shapes (slow job).

`--preset=paper` is the GPU configuration (B = 32 spheres, 64 px views, full-width students at
batch 32, the 8-block two-branch teacher); nothing else runs it. Here every stage runs with the
preset's models and batch sizes and only the data and the step counts overridden, so a shape or
memory error meets this test before it meets a GPU user. It prints the peak memory of the largest
program and each model's step time on this machine (docs/results.md has the numbers).
"""
import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
# Three shapes per category (two to train, one to test) x two views: 40 training views, enough
# for a batch of 32 without repeating.
SMALL = ['--instances_per_category=3', '--test_per_category=1', '--views_per_instance=2',
         '--teacher_steps=3', '--student_steps=3', '--synthesis_steps=3']


_WRAPPER = ('import resource, subprocess, sys\n'
            'code = subprocess.run(sys.argv[1:]).returncode\n'
            "print('peak_kib', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
            'sys.exit(code)')


@pytest.mark.slow
@pytest.mark.parametrize('recipe', ['ours', 'original'])
def test_paper_preset_runs_end_to_end(recipe, tmp_path):
  out = tmp_path / 'out'
  # A wrapper process, so that the peak is this run's (RUSAGE_CHILDREN: the largest of the
  # programs main.py ran), not the largest of every earlier child of the test process.
  run = subprocess.run([sys.executable, '-c', _WRAPPER, sys.executable, 'main.py',
                        '--preset=paper', f'--recipe={recipe}', f'--output_dir={out}', *SMALL],
                       cwd=REPO, capture_output=True, text=True, timeout=3000, check=False)
  assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
  peak_kib = int(run.stdout.strip().splitlines()[-1].split()[-1])
  results = (out / 'results.md').read_text()
  assert f'paper preset, recipe {recipe}' in results
  report = {'recipe': recipe, 'peak_rss_mib': round(peak_kib / 1024)}
  for model, batch in (('teacher', 16 if recipe == 'original' else 32), ('student', 32),
                       ('synthesis', 32)):
    result = json.loads((out / model / 'train_result.json').read_text())
    assert result['step'] == 3
    # The last window is one step after the first (compiled) ones: images/s of a warm step.
    report[f'{model}_s_per_step'] = round(batch / result['images_per_sec'], 2)
  assert (out / 'eval' / 'test_embeddings.npz').exists()
  print(json.dumps(report))
  with open(os.path.join(tmp_path, 'paper_smoke.json'), 'w') as f:
    json.dump(report, f)
