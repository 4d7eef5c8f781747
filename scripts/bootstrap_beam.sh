#!/usr/bin/env bash
# Create or reuse ./.venv-beam: the project (editable) with its test and beam extras.
# Apache Beam pins protobuf and pyarrow differently from the main ./.venv, so it lives in its own
# virtualenv; the Beam tests (pytest -m beam) run here and skip in ./.venv.
# Re-running is cheap: the install is redone only when setup.py changed since the last one.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv-beam/bin/python ]; then
  echo "bootstrap_beam: creating ./.venv-beam with $($PYTHON --version)" >&2
  "$PYTHON" -m venv .venv-beam
fi
stamp=.venv-beam/.installed-setup-py
if [ ! -f "$stamp" ] || ! cmp -s setup.py "$stamp"; then
  echo "bootstrap_beam: installing the project with its test and beam extras into ./.venv-beam" >&2
  .venv-beam/bin/python -m pip install --quiet --upgrade pip
  .venv-beam/bin/python -m pip install --quiet -e '.[test,beam]'
  # Fail here, not in the tests, if the resolver picked versions that do not work together.
  .venv-beam/bin/python -c 'import apache_beam, tensorflow, tensorflow_datasets, trimesh'
  cp setup.py "$stamp"
fi
