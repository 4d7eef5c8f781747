#!/usr/bin/env bash
# Create or reuse ./.venv and install the project (editable) with its test extra, at the versions
# in constraints.txt (those the test suite passed with). EIE_FLOATING=1 installs the newest
# versions setup.py allows instead (no constraints).
# Re-running is cheap: the install is redone only when setup.py or constraints.txt changed (or
# the mode did) since the last one.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating ./.venv with $($PYTHON --version)" >&2
  "$PYTHON" -m venv .venv
fi
floating=${EIE_FLOATING:-0}
stamp=.venv/.installed-setup-py
wanted=.venv/.wanted-setup-py
{ cat setup.py constraints.txt; echo "floating=$floating"; } > "$wanted"
if [ ! -f "$stamp" ] || ! cmp -s "$wanted" "$stamp"; then
  if [ "$floating" = 1 ]; then
    echo "bootstrap: installing the project and the newest allowed dependencies into ./.venv" >&2
    constraints=()
  else
    echo "bootstrap: installing the project and its dependencies (constraints.txt) into ./.venv" >&2
    constraints=(-c constraints.txt)
  fi
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet "${constraints[@]}" -e '.[test]'
  mv "$wanted" "$stamp"
else
  rm -f "$wanted"
fi
