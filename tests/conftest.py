"""Fixtures shared by the test modules."""
import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope='session')
def shared_meshes_dir():
  """The team's real meshes, `../shared/data/meshes/<source>/<category>/*.off` (never copied here).

  Skips the test where the folder is absent (a checkout without shared/).
  """
  path = (REPO_ROOT / '..' / 'shared' / 'data' / 'meshes').resolve()
  if not path.is_dir():
    pytest.skip(f'shared meshes not found at {path}')
  return path
