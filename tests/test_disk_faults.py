"""A full disk and read-only folders under the annotator's store and export, retrain's work
folder and the model registry: a clear message, nothing half-written, the previous model still
the promoted one.

Disk full: SQLite's own SQLITE_FULL (a page limit on the store), and for files an fsync that
fails with ENOSPC (where a real full disk reports it once writes are buffered). Read-only: a
folder without write permission; root ignores permissions, so as root the command runs as user
`nobody` (setpriv) on a folder that user cannot write.
"""

import errno
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from box2mask.io.rle import encode_rle
from box2mask.labels import Label, SQLiteStore
from tests.test_retrain import store  # noqa: F401  (6 images, verified blob masks)
from tests.test_train_loop import TINY
from tests.torchrun_helpers import launch_env

REPO = Path(__file__).resolve().parents[1]
REAL_FSYNC = os.fsync


def disk_full_under(monkeypatch, folder: Path) -> None:
    """From now on an fsync of a file under `folder` fails with ENOSPC (a full disk)."""
    folder = str(Path(folder).resolve())

    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").startswith(folder):
            raise OSError(errno.ENOSPC, "No space left on device")
        return REAL_FSYNC(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def as_user_who_cannot_write(cmd: list[str]) -> list[str]:
    """`cmd` run by a user that cannot write a folder made read-only (nobody, when root)."""
    if os.geteuid() != 0:
        return cmd
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot make a folder read-only")
    return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]


@pytest.fixture(autouse=True)
def _remove_scratch():
    """Remove the folders `read_only_copy` and the tests made outside tmp_path."""
    yield
    for root in Path(tempfile.gettempdir()).glob(f"b2m-r[ow]-{os.getpid()}-*"):
        for path in [root, *root.rglob("*")]:
            if path.is_dir():
                path.chmod(0o755)
        shutil.rmtree(root, ignore_errors=True)


def read_only_copy(folder: Path) -> Path:
    """A copy of `folder` that the user of `as_user_who_cannot_write` can read, not write."""
    root = Path(tempfile.mkdtemp(prefix=f"b2m-ro-{os.getpid()}-"))
    copy = root / folder.name
    shutil.copytree(folder, copy)
    for path in [root, *copy.rglob("*"), copy]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    return copy


def files(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# ---------------------------------------------------------------- the label store


def test_store_on_a_full_disk_refuses_the_write_and_keeps_every_label(tmp_path):
    labels = SQLiteStore(tmp_path / "labels.sqlite")
    first = labels.add(Label("a.png", [1, 1, 5, 5], "x", None, "human", None, False))
    pages = labels._db.execute("PRAGMA page_count").fetchone()[0]
    labels._db.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full
    mask = np.random.default_rng(0).random((400, 400)) > 0.5  # needs new pages
    big = Label("a.png", [1, 1, 5, 5], "x", encode_rle(mask), "human", None, False)
    with pytest.raises(OSError) as err:
        labels.add(big)
    assert err.value.errno == errno.ENOSPC and str(labels.path) in str(err.value)
    assert "not saved" in str(err.value)
    assert [x.id for x in labels.labels("a.png")] == [first.id]  # nothing half-stored
    labels._db.execute("PRAGMA max_page_count = 1073741823")  # space freed
    assert labels.add(big).revision == 1 and len(labels.labels("a.png")) == 2
    labels.close()


def test_store_that_turned_read_only_refuses_writes_with_a_message(tmp_path):
    labels = SQLiteStore(tmp_path / "labels.sqlite")
    first = labels.add(Label("a.png", [1, 1, 5, 5], "x", None, "human", None, False))
    labels._db.execute("PRAGMA query_only = ON")  # SQLITE_READONLY, as a read-only file gives
    with pytest.raises(PermissionError, match="read-only, the change was not saved"):
        labels.update(Label(**{**first.__dict__, "verified": True}))
    labels._db.execute("PRAGMA query_only = OFF")
    assert labels.get(first.id).revision == 1 and not labels.get(first.id).verified
    labels.close()


@pytest.mark.slow
def test_annotate_on_a_read_only_folder_says_so_and_changes_nothing(tmp_path):
    """15-50 s: the command imports Gradio before it opens the store."""
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(REPO / "demo" / "chelsea.png", images / "chelsea.png")
    labels = SQLiteStore(images / "box2mask_labels.sqlite", images)
    labels.add(Label("chelsea.png", [1, 1, 5, 5], "x", None, "human", None, False))
    labels.close()
    ro = read_only_copy(images)
    before = files(ro)
    cmd = [sys.executable, "-m", "box2mask", "annotate", str(ro), "--port", "1"]
    done = subprocess.run(
        as_user_who_cannot_write(cmd), env=launch_env(), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, done.stderr
    assert "cannot open the label store" in done.stderr and "read-only" in done.stderr
    assert "Traceback" not in done.stderr and files(ro) == before


# ---------------------------------------------------------------- export


MASK = encode_rle(np.ones((8, 8), bool))  # labels with a mask: the export needs no image file


def test_export_on_a_full_disk_keeps_the_previous_export(tmp_path, monkeypatch):
    from annotator.export import export_coco

    labels = SQLiteStore(tmp_path / "labels.sqlite")
    labels.add(Label("a.png", [1, 1, 5, 5], "x", MASK, "human", None, False))
    out = tmp_path / "export"
    export_coco(labels, out / "coco.json")
    before = files(out)
    labels.add(Label("a.png", [2, 2, 6, 6], "x", MASK, "human", None, False))
    disk_full_under(monkeypatch, out)
    with pytest.raises(OSError) as err:
        export_coco(labels, out / "coco.json")
    assert err.value.errno == errno.ENOSPC
    assert files(out) == before  # the previous export, whole; no temporary file
    labels.close()


def test_export_into_a_read_only_folder_fails_cleanly(tmp_path):
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "coco.json").write_text("{}")
    ro = read_only_copy(tmp_path / "export")
    code = f"""
import tempfile
from annotator.export import export_coco
from box2mask.labels import Label, SQLiteStore
from tests.test_disk_faults import MASK
labels = SQLiteStore(tempfile.mkdtemp() + "/labels.sqlite")
labels.add(Label("a.png", [1, 1, 5, 5], "x", MASK, "human", None, False))
try:
    export_coco(labels, {str(ro / "coco.json")!r})
except PermissionError as err:
    print("refused:", err)
"""
    done = subprocess.run(
        as_user_who_cannot_write([sys.executable, "-c", code]),
        env={**launch_env(), "HOME": "/tmp"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout.startswith("refused:"), done.stdout + done.stderr
    assert files(ro) == {Path("coco.json"): b"{}"}


# ---------------------------------------------------------------- retrain and the registry


def _retrain(labels, registry: Path, *extra) -> list[str]:
    sets = [x for k, v in {**TINY, "iterations": 2}.items() for x in ("--set", f"{k}={v}")]
    return ["retrain", "--store", str(labels.path), "--images", str(labels.images_dir),
            "--registry", str(registry), "--device", "cpu", "--eval-fraction", "0.5",
            "--margin", "-1", *sets, *extra]  # fmt: skip


@pytest.mark.slow
def test_retrain_on_a_full_disk_keeps_the_promoted_model(store, tmp_path, monkeypatch, capsys):  # noqa: F811
    """15-40 s: a first round promotes v1; the second fills the disk while the registry copies
    the candidate in: exit 1 with a message, v1 still promoted, no half-written version."""
    from box2mask.cli import main
    from train.registry import ModelRegistry

    registry = tmp_path / "models"
    assert main(_retrain(store, registry)) == 0
    promoted = ModelRegistry(registry).promoted().version
    before = files(registry / "versions")
    disk_full_under(monkeypatch, registry / "versions")
    assert main(_retrain(store, registry)) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "still" in err and "Traceback" not in err
    assert ModelRegistry(registry).promoted().version == promoted
    assert files(registry / "versions") == before  # no new version, no temporary folder
    monkeypatch.setattr(os, "fsync", REAL_FSYNC)  # space freed: the next round works
    assert main(_retrain(store, registry)) == 0


@pytest.mark.slow
def test_retrain_with_a_read_only_registry_or_work_folder_says_so(store, tmp_path):  # noqa: F811
    """20-60 s (subprocesses): a read-only registry, then a read-only work folder."""
    shared = Path(
        tempfile.mkdtemp(prefix=f"b2m-rw-{os.getpid()}-")
    )  # the store and images, writable by all
    for path in [store.path, *store.path.parent.glob("labels.sqlite-*")]:
        shutil.copy(path, shared / path.name)
    shutil.copytree(store.images_dir, shared / "images")
    for path in [shared, *shared.rglob("*")]:
        path.chmod(0o777 if path.is_dir() else 0o666)
    labels = SQLiteStore(shared / "labels.sqlite", shared / "images")
    (tmp_path / "models" / "versions").mkdir(parents=True)
    ro = read_only_copy(tmp_path / "models")
    writable = shared / "models"
    env = {**launch_env(), "HOME": "/tmp"}
    for registry, extra in ((ro, ()), (writable, ("--work", str(ro / "round")))):
        args = _retrain(labels, registry, *extra)
        cmd = as_user_who_cannot_write([sys.executable, "-m", "box2mask", *args])
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 1, done.stderr
        assert "Permission denied" in done.stderr or "Read-only" in done.stderr, done.stderr
        assert "is unchanged" in done.stderr and "Traceback" not in done.stderr
    labels.close()
    assert files(ro) == {}
