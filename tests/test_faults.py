"""Faults during training: SIGKILL then --resume, and a disk that fills up while saving last.pt.

The other faults of the reliability issue are tested beside their code: SIGKILL during
`segment` (tests/test_segment.py), during a store write (tests/test_store.py), disk full while
`segment` writes OUT.json (tests/test_segment.py).
"""

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

from box2mask.checkpoint import load_checkpoint
from tests.test_train_loop import TINY, make_shapes_dataset, tiny_config

REPO = Path(__file__).resolve().parents[1]
STEPS = 6  # training steps of every run here (checkpoint every 2)
REAL_SAVE = torch.save  # before any test replaces it


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on a shared 2-core machine, 2 threads per process thrash."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes") / "data")


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


def _train_args(shapes: Path, out: Path) -> list[str]:
    settings = {**TINY, "iterations": STEPS, "checkpoint_every": 2}
    return ["train", "--data", str(shapes), "--out", str(out), "--threads", "1", "--set"] + [
        f"{k}={v}" for k, v in settings.items()
    ]


def _metric_steps(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def _assert_same_run(out: Path, straight: Path) -> None:
    """Same step count, one valid metrics line per step, the same weights as the reference."""
    assert _metric_steps(out) == list(range(1, STEPS + 1))
    ours, reference = load_checkpoint(out / "last.pt"), load_checkpoint(straight / "last.pt")
    assert ours["extra"]["step"] == STEPS
    for name, value in reference["model_state"].items():
        torch.testing.assert_close(ours["model_state"][name], value, msg=name)


def test_sigkill_during_training_then_resume_ends_like_an_uninterrupted_run(
    shapes, straight, tmp_path
):
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cli = [sys.executable, "-m", "annotator.cli"]
    proc = subprocess.Popen(
        cli + _train_args(shapes, out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.time() + 120
    while not (out / "last.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, f"training ended before the kill:\n{proc.stderr.read()!r}"
    os.kill(proc.pid, signal.SIGKILL)  # right after the first checkpoint (step 2)
    proc.wait()
    proc.stderr.close()
    killed_at = load_checkpoint(out / "last.pt")["extra"]["step"]
    assert 2 <= killed_at < STEPS

    from annotator.cli import main

    assert main(["train", "--out", str(out), "--resume", "--threads", "1"]) == 0
    _assert_same_run(out, straight)


def _disk_full_after(n_bytes: int):
    """A stand-in for torch.save that writes the first `n_bytes` of the real file, then ENOSPC."""

    def save(obj, f, *args, **kwargs):
        buffer = io.BytesIO()
        REAL_SAVE(obj, buffer, *args, **kwargs)
        f.write(buffer.getvalue()[:n_bytes])
        raise OSError(errno.ENOSPC, "No space left on device")

    return save


def test_disk_full_while_saving_a_checkpoint_keeps_the_previous_one(shapes, monkeypatch, tmp_path):
    from box2mask.checkpoint import save_checkpoint
    from box2mask.config import ModelConfig

    model = torch.nn.Linear(3, 2)
    args = dict(model_config=ModelConfig(), class_names=["blob"], config={}, model_version="v")
    path = tmp_path / "ckpt" / "last.pt"
    save_checkpoint(path, model=model, extra={"step": 2}, **args)
    before = path.read_bytes()
    with torch.no_grad():
        model.weight.add_(1.0)
    monkeypatch.setattr(torch, "save", _disk_full_after(len(before) // 2))
    with pytest.raises(OSError) as err:
        save_checkpoint(path, model=model, extra={"step": 4}, **args)
    assert err.value.errno == errno.ENOSPC
    assert path.read_bytes() == before  # the previous checkpoint, untouched
    assert load_checkpoint(path)["extra"]["step"] == 2
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]  # no temp file left


def test_disk_full_during_training_then_resume_ends_like_an_uninterrupted_run(
    shapes, straight, monkeypatch, tmp_path
):
    """The disk fills up at the step-4 checkpoint: step 2's last.pt survives and --resume works."""
    from annotator.cli import main

    calls = []

    def save(obj, f, *args, **kwargs):
        calls.append(obj["extra"]["step"])
        if obj["extra"]["step"] == 4:
            return _disk_full_after(1000)(obj, f, *args, **kwargs)
        return REAL_SAVE(obj, f, *args, **kwargs)

    out = tmp_path / "full"
    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(OSError, match="No space left"):
        main(_train_args(shapes, out))
    assert calls == [2, 4]
    assert load_checkpoint(out / "last.pt")["extra"]["step"] == 2
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "last.pt", "metrics.jsonl"]
    monkeypatch.setattr(torch, "save", REAL_SAVE)  # space freed
    assert main(["train", "--out", str(out), "--resume", "--threads", "1"]) == 0
    _assert_same_run(out, straight)
