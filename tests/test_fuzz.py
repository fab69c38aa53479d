"""Fuzzed inputs at every parser boundary end in a clean error naming the input or a correct
result: never an uncaught exception, a hang, a partial output or a changed input (bench/fuzz.py
runs the same checks on 10,000 cases; here the hand-picked cases and a few hundred draws, each
kind through `python -m bench.fuzz` in a subprocess)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("hypothesis", reason="hypothesis is not installed (pip install hypothesis)")

ROOT = Path(__file__).resolve().parents[1]
DRAWS = {
    "coco segment": 5,
    "coco import": 40,
    "image bytes": 100,
    "yaml config": 40,
    "checkpoint": 8,
}


def _fuzz(*args) -> subprocess.CompletedProcess:
    """`python -m bench.fuzz ARGS` from the repository root, one intra-op thread."""
    return subprocess.run(
        [sys.executable, "-m", "bench.fuzz", *args],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.parametrize("kind", list(DRAWS))
def test_fuzzed_inputs_end_in_a_clean_error_or_a_correct_result(kind):
    # a segment run is slow: of its hand-picked cases, those of the index's own fixes
    examples = ["--examples", "0:7,20:22"] if kind == "coco segment" else []
    done = _fuzz("--only", kind, "--draws", str(DRAWS[kind]), "--shrink", *examples)
    assert done.returncode == 0, done.stderr[-3000:]  # --shrink: the minimal crashing case


def test_the_checks_see_a_crash_a_hang_and_a_partial_output():
    """The judge itself: an uncaught exception, a hang and a file left behind are not passes."""
    done = _fuzz("--self-check")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("an uncaught exception: crash: uncaught KeyError")
    assert lines[1].startswith("a hang: hang:")
    assert lines[2].startswith("a file left behind: crash: left behind")


@pytest.mark.parametrize(
    "example, code",
    [pytest.param(0, 0, marks=pytest.mark.slow), (2, 2)],  # a good COCO file; b"{"
)
def test_the_real_segment_command_exits_0_or_2_without_a_traceback(example, code):
    done = _fuzz(
        "--only", "segment exit", "--draws", "0", "--examples", f"{example}:{example + 1}", "--list"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    status = "correct" if code == 0 else "clean error"
    assert f"segment exit: {status}: exit {code}" in done.stdout.splitlines(), done.stdout
