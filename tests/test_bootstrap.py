"""constraints.txt and scripts/bootstrap.sh: the pinned versions are those installed here, cover
every dependency setup.py names, and the bootstrap installs with them (re-installing when setup.py
or the constraints change)."""
import importlib.metadata
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _canonical(name):
  return re.sub(r'[-_.]+', '-', name).lower()


def _pins():
  pins = {}
  with open(os.path.join(ROOT, 'constraints.txt')) as f:
    for line in f:
      line = line.strip()
      if line and not line.startswith('#'):
        name, sep, version = line.partition('==')
        assert sep, f'constraints.txt: not a pin: {line!r}'
        pins[_canonical(name)] = version
  return pins


def _setup_requirements():
  text = re.sub(r'#.*', '', open(os.path.join(ROOT, 'setup.py')).read())  # no comments
  install = re.search(r'INSTALL_REQUIRES = \[(.*?)\]', text, re.S).group(1)
  test = re.search(r"'test': \[(.*?)\]", text, re.S).group(1)
  names = re.findall(r"'([A-Za-z0-9_.\-]+)", install + test)
  return {_canonical(n) for n in names}


def test_every_dependency_is_pinned_at_the_installed_version():
  pins = _pins()
  missing = _setup_requirements() - set(pins)
  assert not missing, f'constraints.txt lacks {sorted(missing)}'
  assert pins['tensorflow'].startswith('2.21.')
  for name in _setup_requirements():
    assert importlib.metadata.version(name) == pins[name], name
  assert 'equivariant-image-embeddings' not in pins  # the project itself is not a constraint


def test_bootstrap_installs_with_the_constraints_and_watches_both_files():
  script = open(os.path.join(ROOT, 'scripts', 'bootstrap.sh')).read()
  assert '-c constraints.txt' in script and "-e '.[test]'" in script
  assert 'cat setup.py constraints.txt' in script  # the stamp covers both
  assert 'EIE_FLOATING' in script
