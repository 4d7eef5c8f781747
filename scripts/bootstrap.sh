#!/usr/bin/env bash
# Create or reuse ./.venv and install the project (editable) with its test extra.
# Re-running is cheap: the install is redone only when setup.py changed since the last one.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating ./.venv with $($PYTHON --version)" >&2
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.installed-setup-py
if [ ! -f "$stamp" ] || ! cmp -s setup.py "$stamp"; then
  echo "bootstrap: installing the project and its dependencies into ./.venv" >&2
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e '.[test]'
  cp setup.py "$stamp"
fi
