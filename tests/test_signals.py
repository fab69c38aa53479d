"""SIGTERM stops every long-running command as Ctrl-C does: within seconds, exit status 143, a
message, nothing half-written, and the rerun resumes where the command resumes.

`box2mask train` is tested in tests/test_faults.py (beside its SIGKILL test, which shares the
uninterrupted reference run).
"""

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from box2mask.interrupt import Terminated, stop_on_sigterm, terminated
from tests.test_retrain import store  # noqa: F401  (6 images, verified blob masks)
from tests.test_segment import _segment_cmd, make_dataset, reference  # noqa: F401
from tests.test_train_loop import TINY
from tests.torchrun_helpers import launch_env

REPO = Path(__file__).resolve().parents[1]
STOP_SECONDS = 10  # "within a few seconds" on a busy 2-core machine


def sigterm_when(proc: subprocess.Popen, ready, timeout: float = 120) -> float:
    """Send SIGTERM to `proc` once ready() is true; the seconds it then takes to exit."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"exited before the signal: {proc.communicate()[1]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("never got ready")
        time.sleep(0.01)
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_SECONDS * 3)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("still running long after SIGTERM")
    return time.monotonic() - start


def temp_files(folder: Path) -> list[str]:
    """Temporary files of atomic writes left under `folder`."""
    return [p.name for p in folder.rglob("*") if ".tmp" in p.name]


def test_sigterm_raises_terminated_in_the_main_thread_once():
    before = signal.getsignal(signal.SIGTERM)
    try:
        stop_on_sigterm()
        assert not terminated()
        with pytest.raises(Terminated):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        assert terminated()
        os.kill(os.getpid(), signal.SIGTERM)  # a second one does not cut the cleanup short
        time.sleep(0.05)
    finally:
        signal.signal(signal.SIGTERM, before)
        stop_on_sigterm()  # forget them: later commands of this process start afresh
        signal.signal(signal.SIGTERM, before)


def test_segment_stops_on_sigterm_and_the_rerun_resumes(reference):  # noqa: F811
    folder, boxes, reference_out = reference
    out = folder / "stopped.json"
    part = folder / "stopped.json.partial" / "parts" / "rank00000.jsonl"
    cmd = _segment_cmd(folder, boxes, out)
    proc = subprocess.Popen(cmd, env=launch_env(), stderr=subprocess.PIPE, text=True)
    took = sigterm_when(proc, lambda: part.exists() and part.read_bytes().count(b"\n") >= 2)
    stderr = proc.stderr.read()
    assert proc.returncode == 143 and took < STOP_SECONDS, stderr
    assert "stopped by SIGTERM" in stderr and "Traceback" not in stderr
    done = part.read_bytes().count(b"\n")
    assert not out.exists() and done < 12 and temp_files(folder) == []

    rerun = subprocess.run(cmd, env=launch_env(), capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{done} images already done" in rerun.stderr
    assert out.read_bytes() == reference_out.read_bytes()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=2)
        return True
    except httpx.HTTPError:
        return False


@pytest.mark.slow
def test_annotate_stops_on_sigterm_with_the_store_closed(tmp_path):
    """15-30 s: the server starts (Gradio), a label is written, SIGTERM: the store is closed
    (its WAL checkpointed and removed), the label is there, and the server starts again."""
    pytest.importorskip("gradio")
    from box2mask.labels import Label, SQLiteStore

    images = tmp_path / "images"
    images.mkdir()
    (images / "chelsea.png").write_bytes((REPO / "demo" / "chelsea.png").read_bytes())
    db = images / "box2mask_labels.sqlite"
    env = {**launch_env(), "GRADIO_ANALYTICS_ENABLED": "False"}
    for attempt in range(2):  # the second start shows the store reopens
        port = _free_port()
        cmd = [sys.executable, "-m", "box2mask", "annotate", str(images), "--port", str(port)]
        proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True)

        def ready(port=port):
            if not _answers(f"http://127.0.0.1:{port}/"):
                return False
            other = SQLiteStore(db, images)  # another writer, as a second process would be
            other.add(Label("chelsea.png", [1, 2, 30, 40], "cat", None, "human", None, False))
            other.close()
            return True

        took = sigterm_when(proc, ready)
        stderr = proc.stderr.read()
        assert proc.returncode == 143 and took < STOP_SECONDS, stderr
        assert not (images / "box2mask_labels.sqlite-wal").exists(), stderr  # closed, not killed
        with contextlib.closing(sqlite3.connect(db)) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            assert conn.execute("SELECT COUNT(*) FROM labels").fetchone() == (attempt + 1,)


def _retrain_cmd(labels, registry: Path, iterations: int) -> list[str]:
    settings = {**TINY, "iterations": iterations}
    sets = [x for k, v in settings.items() for x in ("--set", f"{k}={v}")]
    return [sys.executable, "-m", "box2mask", "retrain", "--store", str(labels.path), "--images",
            str(labels.images_dir), "--registry", str(registry), "--device", "cpu", *sets]  # fmt: skip


@pytest.mark.slow
def test_retrain_stops_on_sigterm_leaving_the_registry_as_it_was(store, tmp_path):  # noqa: F811
    """30-60 s: SIGTERM during training; no version added or promoted, the lock is free, no
    temporary file; the rerun finishes the round."""
    registry = tmp_path / "models"
    proc = subprocess.Popen(
        _retrain_cmd(store, registry, 400), env=launch_env(), stderr=subprocess.PIPE, text=True
    )
    took = sigterm_when(proc, lambda: any(registry.glob("rounds/*/candidate/metrics.jsonl")))
    stderr = proc.stderr.read()
    assert proc.returncode == 143 and took < STOP_SECONDS, stderr
    assert "registry is unchanged" in stderr
    assert not (registry / "promoted.json").exists()
    assert not list(registry.glob("versions/*")) and temp_files(registry) == []
    rerun = subprocess.run(
        _retrain_cmd(store, registry, 2), env=launch_env(), capture_output=True, text=True
    )
    assert rerun.returncode == 0, rerun.stderr  # the lock was released
    assert len(list(registry.glob("versions/*"))) == 1


@pytest.mark.slow
def test_fiftyone_apply_stops_on_sigterm_and_the_rerun_skips_what_is_done(tmp_path):
    """30-60 s with FiftyOne's database: SIGTERM mid-run; the rerun does only the rest."""
    fo = pytest.importorskip("fiftyone")
    boxes = make_dataset(tmp_path, n_images=12)
    name = f"sigterm-{os.getpid()}"
    dataset = fo.Dataset(name, persistent=True)
    try:
        coco = json.loads(boxes.read_text())
        for image in coco["images"]:
            dets = [
                fo.Detection(
                    label="obj",
                    bounding_box=[
                        a["bbox"][0] / image["width"],
                        a["bbox"][1] / image["height"],
                        a["bbox"][2] / image["width"],
                        a["bbox"][3] / image["height"],
                    ],
                )  # fmt: skip
                for a in coco["annotations"]
                if a["image_id"] == image["id"]
            ]
            sample = fo.Sample(filepath=str(tmp_path / "images" / image["file_name"]))
            sample["ground_truth"] = fo.Detections(detections=dets)
            dataset.add_sample(sample)
        cmd = [sys.executable, "-m", "box2mask", "fiftyone", "apply", "--dataset", name,
               "--boxes", "ground_truth", "--out", "box2mask", "--chunk-size", "1",
               "--no-progress"]  # fmt: skip
        proc = subprocess.Popen(cmd, env=launch_env(), stderr=subprocess.PIPE, text=True)

        def some_done():
            dataset.reload()
            return len(dataset.exists("box2mask")) >= 2

        took = sigterm_when(proc, some_done, timeout=240)
        stderr = proc.stderr.read()
        assert proc.returncode == 143 and took < STOP_SECONDS, stderr
        dataset.reload()
        done = len(dataset.exists("box2mask"))
        assert 2 <= done < 12
        rerun = subprocess.run(cmd, env=launch_env(), capture_output=True, text=True, timeout=300)
        assert rerun.returncode == 0, rerun.stderr
        assert f"{done} already done" in rerun.stdout
    finally:
        dataset.delete()


@pytest.mark.slow
def test_fiftyone_app_stops_on_sigterm(tmp_path):
    """20-60 s: the App server comes up, SIGTERM closes the session and exits 143."""
    fo = pytest.importorskip("fiftyone")
    name = f"sigterm-app-{os.getpid()}"
    dataset = fo.Dataset(name, persistent=True)
    try:
        port = _free_port()
        cmd = [sys.executable, "-m", "box2mask", "fiftyone", "app", "--dataset", name, "--port",
               str(port)]  # fmt: skip
        proc = subprocess.Popen(cmd, env=launch_env(), stderr=subprocess.PIPE, text=True)
        took = sigterm_when(proc, lambda: _answers(f"http://127.0.0.1:{port}/"), timeout=180)
        stderr = proc.stderr.read()
        assert proc.returncode == 143 and took < STOP_SECONDS, stderr
        assert "Traceback" not in stderr
    finally:
        dataset.delete()
