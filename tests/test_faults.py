"""Faults during training: SIGKILL or SIGTERM then --resume, and a disk that fills up while saving
last.pt.

The other faults of the reliability issue are tested beside their code: SIGKILL during
`segment` (tests/test_segment.py), during a store write (tests/test_store.py), disk full while
`segment` writes OUT.json (tests/test_segment.py).
"""

import contextlib
import errno
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from box2mask.io.checkpoint import load_checkpoint
from tests.test_train_loop import TINY, tiny_config

REPO = Path(__file__).resolve().parents[1]
STEPS = 6  # training steps of every run here (checkpoint every 2)
REAL_SAVE = torch.save  # before any test replaces it


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def straight(shapes, tmp_path_factory):
    """An uninterrupted run of STEPS steps: the reference every interrupted run must match."""
    from train.train_cmd import train

    out = tmp_path_factory.mktemp("straight") / "run"
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as every run here: another thread count sums in another order
    try:
        train(tiny_config(shapes, out, iterations=STEPS, checkpoint_every=2), progress=False)
    finally:
        torch.set_num_threads(before)
    return out


def train_args(shapes: Path, out: Path) -> list[str]:
    """`box2mask train` arguments: the tiny config, STEPS steps, a checkpoint every 2 steps."""
    settings = {**TINY, "iterations": STEPS, "checkpoint_every": 2}
    return ["train", "--data", str(shapes), "--out", str(out), "--threads", "1", "--set"] + [
        f"{k}={v}" for k, v in settings.items()
    ]


def resume(out: Path) -> int:
    """`box2mask train --out OUT --resume` in this process; its exit status."""
    from box2mask.cli import main

    return main(["train", "--out", str(out), "--resume", "--threads", "1"])


def differences(out: Path, straight: Path) -> list[str]:
    """How run `out` differs from the uninterrupted `straight`: step count, metrics.jsonl (one
    valid line per step), weights. Empty when they are the same run."""
    found = []
    try:
        lines = (out / "metrics.jsonl").read_text().splitlines()
        steps = [json.loads(line)["step"] for line in lines]
    except (OSError, ValueError, KeyError) as err:
        return [f"metrics.jsonl unreadable: {err}"]
    if steps != list(range(1, STEPS + 1)):
        found.append(f"metrics.jsonl steps {steps}")
    ours, reference = load_checkpoint(out / "last.pt"), load_checkpoint(straight / "last.pt")
    if ours["extra"]["step"] != STEPS:
        found.append(f"last.pt at step {ours['extra']['step']}")
    for name, value in reference["model_state"].items():
        if not torch.allclose(ours["model_state"][name], value):
            found.append(f"weight {name} differs")
    return found


def kill_after_first_checkpoint(shapes: Path, out: Path) -> int:
    """Run `box2mask train` in a subprocess and SIGKILL it as soon as last.pt first appears;
    the step of the last.pt it left."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "box2mask", *train_args(shapes, out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not (out / "last.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    if proc.poll() is not None:
        raise RuntimeError(f"training ended before the kill:\n{proc.stderr.read()!r}")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    return load_checkpoint(out / "last.pt")["extra"]["step"]


def sigterm_after_first_checkpoint(shapes: Path, out: Path) -> tuple[int, float, str]:
    """Run `box2mask train` in a subprocess and SIGTERM it once last.pt first appears: its exit
    status, the seconds it took to stop, its stderr."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "box2mask", *train_args(shapes, out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not (out / "last.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    if proc.poll() is not None:
        raise RuntimeError(f"training ended before the signal:\n{proc.stderr.read()!r}")
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    return proc.returncode, time.monotonic() - start, stderr.decode()


def disk_full_after(n_bytes: int):
    """A stand-in for torch.save that writes the first `n_bytes` of the real file, then ENOSPC."""

    def save(obj, f, *args, **kwargs):
        buffer = io.BytesIO()
        REAL_SAVE(obj, buffer, *args, **kwargs)
        f.write(buffer.getvalue()[:n_bytes])
        raise OSError(errno.ENOSPC, "No space left on device")

    return save


@contextlib.contextmanager
def disk_full_at_step(step: int):
    """Within the block, saving a checkpoint of `step` fills the disk; yields the steps saved."""
    calls = []

    def save(obj, f, *args, **kwargs):
        calls.append(obj["extra"]["step"])
        if obj["extra"]["step"] == step:
            return disk_full_after(1000)(obj, f, *args, **kwargs)
        return REAL_SAVE(obj, f, *args, **kwargs)

    torch.save = save
    try:
        yield calls
    finally:
        torch.save = REAL_SAVE


def test_sigkill_during_training_then_resume_ends_like_an_uninterrupted_run(
    shapes, straight, tmp_path
):
    out = tmp_path / "killed"
    killed_at = kill_after_first_checkpoint(shapes, out)
    assert 2 <= killed_at < STEPS
    assert resume(out) == 0
    assert differences(out, straight) == []


def test_sigterm_during_training_stops_cleanly_then_resume_ends_like_an_uninterrupted_run(
    shapes, straight, tmp_path
):
    """SIGTERM (a scheduler's stop) takes Ctrl-C's path: exit 143 within seconds, a message
    that says how to go on, no temporary file, and --resume ends like the uninterrupted run."""
    out = tmp_path / "stopped"
    code, took, stderr = sigterm_after_first_checkpoint(shapes, out)
    assert code == 143 and took < 10, stderr
    assert "stopped by SIGTERM" in stderr and "--resume" in stderr and "Traceback" not in stderr
    assert not [p.name for p in out.iterdir() if ".tmp" in p.name]
    assert resume(out) == 0
    assert differences(out, straight) == []


def test_differences_finds_a_run_that_is_not_the_reference(shapes, straight, tmp_path):
    out = tmp_path / "copy"
    out.mkdir()
    (out / "metrics.jsonl").write_bytes((straight / "metrics.jsonl").read_bytes())
    ckpt = load_checkpoint(straight / "last.pt")
    name = next(iter(ckpt["model_state"]))
    ckpt["model_state"][name] = ckpt["model_state"][name] + 1
    del ckpt["path"]
    torch.save(ckpt, out / "last.pt")
    with open(out / "metrics.jsonl", "a") as handle:
        handle.write(json.dumps({"step": 3}) + "\n")
    assert differences(out, straight) == [
        f"metrics.jsonl steps {[1, 2, 3, 4, 5, 6, 3]}",
        f"weight {name} differs",
    ]


def test_disk_full_while_saving_a_checkpoint_keeps_the_previous_one(monkeypatch, tmp_path):
    from box2mask.io.checkpoint import save_checkpoint
    from box2mask.model.config import ModelConfig

    model = torch.nn.Linear(3, 2)
    args = dict(model_config=ModelConfig(), class_names=["blob"], config={}, model_version="v")
    path = tmp_path / "ckpt" / "last.pt"
    save_checkpoint(path, model=model, extra={"step": 2}, **args)
    before = path.read_bytes()
    with torch.no_grad():
        model.weight.add_(1.0)
    monkeypatch.setattr(torch, "save", disk_full_after(len(before) // 2))
    with pytest.raises(OSError) as err:
        save_checkpoint(path, model=model, extra={"step": 4}, **args)
    assert err.value.errno == errno.ENOSPC
    assert path.read_bytes() == before  # the previous checkpoint, untouched
    assert load_checkpoint(path)["extra"]["step"] == 2
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]  # no temp file left


def test_disk_full_during_training_then_resume_ends_like_an_uninterrupted_run(
    shapes, straight, tmp_path, capsys
):
    """The disk fills up at the step-4 checkpoint: step 2's last.pt survives and --resume works."""
    from box2mask.cli import main

    out = tmp_path / "full"
    with disk_full_at_step(4) as saved:
        assert main(train_args(shapes, out)) == 1  # a clear message, not a traceback
    assert saved == [2, 4]
    message = capsys.readouterr().err
    assert "No space left on device" in message and "--resume" in message
    assert load_checkpoint(out / "last.pt")["extra"]["step"] == 2
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "last.pt", "metrics.jsonl"]
    assert resume(out) == 0  # space freed
    assert differences(out, straight) == []
