"""Kill the learning loop: `box2mask retrain` SIGKILLed inside a checkpoint write and a promotion
(bench/kill_loop.py, driven as a subprocess) leaves a registry of complete versions, a served
model that loads, the labels unchanged, and a next retrain that finishes cleaning up."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_two_kill_points_leave_the_loop_servable(tmp_path):
    out = tmp_path / "kill.json"
    cmd = [sys.executable, "-m", "bench.kill_loop", "--points", "2", "--iterations", "4"]
    cmd += ["--phases", "checkpoint,promotion", "--seed", "1", "--json", str(out)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    points = json.loads(out.read_text())["points"]
    assert [p["phase"] for p in points] == ["checkpoint", "promotion"]
    for point in points:
        assert point["exit"] == -9 and point["killed_in"] == point["phase"], point
        assert point["problems"] == [], point
    assert "2/2 points passed every check" in done.stdout
