"""A retrain killed mid-write (SIGKILL: no cleanup runs) leaves temporary files; the next one
removes them: its work folder's, the registry's dead version folders, a dead promotion's."""

import os
import subprocess
import sys
import time

from box2mask.io.atomic_write import remove_leftovers, write_text_atomic
from train.registry import ModelRegistry


def _old(path, age_s=3600):
    os.utime(path, (time.time() - age_s, time.time() - age_s))
    return path


def test_remove_leftovers_deletes_temporary_files_only(tmp_path):
    (tmp_path / "candidate").mkdir()
    half = tmp_path / "candidate" / ".last.pt.ab12cd34.tmp"
    half.write_bytes(b"half a checkpoint")
    keep = [tmp_path / "candidate" / "last.pt", tmp_path / ".hidden", tmp_path / "x.tmp"]
    for path in keep:
        path.write_bytes(b"x")
    assert remove_leftovers(tmp_path) == []  # not recursive: nothing at the top
    assert remove_leftovers(tmp_path, recursive=True) == [half]
    assert all(p.exists() for p in keep)
    fresh = tmp_path / ".promoted.json.zz.tmp"
    fresh.write_text("{")
    assert remove_leftovers(tmp_path, min_age_s=2) == []  # a live writer's, maybe
    assert remove_leftovers(tmp_path, min_age_s=2) == [] and fresh.exists()
    assert remove_leftovers(tmp_path) == [fresh]


def test_the_registry_removes_what_killed_retrains_left(tmp_path):
    registry = ModelRegistry(tmp_path / "models")
    code = "import os; print(os.getpid())"
    dead = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    dead_dir = registry.root / "versions" / f".v0001-20260101T000000.tmp-{dead.stdout.strip()}"
    live_dir = registry.root / "versions" / f".v0001-20260101T000001.tmp-{os.getppid()}"
    for folder in (dead_dir, live_dir):
        folder.mkdir()
        (folder / "checkpoint.pt").write_bytes(b"half")
    with registry.lock():
        pass
    assert not dead_dir.exists() and live_dir.exists()  # a running writer's folder stays
    ckpt = tmp_path / "c.pt"
    ckpt.write_bytes(b"weights")
    info = registry.add_version(checkpoint=ckpt, metrics={}, data_snapshot="s")
    stale = registry.root / ".promoted.json.k1ll3d00.tmp"
    stale.write_text('{"vers')
    _old(stale)
    registry.promote(info.version)
    assert not stale.exists()
    assert registry.promoted().version == info.version
    write_text_atomic(registry.root / "x.json", "{}")  # an atomic write leaves nothing
    assert sorted(p.name for p in registry.root.iterdir()) == [
        "promoted.json",
        "retrain.lock",
        "versions",
        "x.json",
    ]
