"""SQLiteStore specifics: the image folder scan, WAL mode, crash safety (the LabelStore contract
itself is tests/test_store_contract.py)."""

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from annotator.store import Label, SQLiteStore, list_image_files
from box2mask.io.rle import encode_rle

REPO = Path(__file__).resolve().parents[1]


def _label(image="a.png", **kw):
    mask = np.zeros((20, 30), bool)
    mask[5:10, 4:12] = True
    base = dict(
        image=image,
        box_xyxy=[4.0, 5.0, 12.0, 10.0],
        class_name="cup",
        mask_rle=encode_rle(mask),
        source="model",
        model_version="levelset-v1",
        verified=False,
        score=0.8,
    )
    base.update(kw)
    return Label(**base)


@pytest.fixture
def store(tmp_path):
    (tmp_path / "imgs" / "sub").mkdir(parents=True)
    for name in ("b.png", "a.jpg", "sub/c.PNG", "notes.txt"):
        (tmp_path / "imgs" / name).write_bytes(b"x")
    s = SQLiteStore(tmp_path / "labels.sqlite", tmp_path / "imgs")
    yield s
    s.close()


def test_images_are_the_folder_s_image_files_plus_labelled_ones(store):
    # the store contract (round trips, revisions, stale writes, status) is
    # tests/test_store_contract.py, run on SQLite and FiftyOne
    assert store.list_images() == ["a.jpg", "b.png", "sub/c.PNG"]  # notes.txt is not an image
    store.add(_label(image="elsewhere/d.png"))
    assert store.list_images() == ["a.jpg", "b.png", "elsewhere/d.png", "sub/c.PNG"]


def test_wal_mode_and_missing_folder(tmp_path):
    s = SQLiteStore(tmp_path / "deep" / "x.sqlite")
    assert s._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    s.close()
    with pytest.raises(FileNotFoundError, match="no such images folder"):
        list_image_files(tmp_path / "nope")


_WRITER = textwrap.dedent(
    """
    import sys
    from annotator.store import Label, SQLiteStore
    store = SQLiteStore(sys.argv[1])
    rle = {"size": [64, 64], "counts": "0" * 40}
    i = 0
    while True:
        i += 1
        label = store.add(Label(image=f"img{i % 7}.png", box_xyxy=[1, 2, 30, 40], class_name="c",
                                mask_rle=rle, source="model", model_version="v", verified=False))
        if i % 3 == 0:
            label = store.update(label)
        print(label.id, label.revision, flush=True)
    """
)


def test_sigkill_during_burst_of_writes_keeps_every_committed_label(tmp_path):
    db_path = tmp_path / "crash.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(db_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    committed = {}
    deadline = time.monotonic() + 30
    while len(committed) < 150 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        label_id, revision = line.split()
        committed[label_id] = int(revision)
    os.kill(proc.pid, signal.SIGKILL)  # mid-burst: the writer never stops on its own
    proc.wait()
    for line in proc.stdout:  # lines printed before the kill but not read yet were committed too
        label_id, revision = line.split()
        committed[label_id] = int(revision)
    assert len(committed) >= 150, "writer produced too few labels before the deadline"

    assert sqlite3.connect(db_path).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store = SQLiteStore(db_path)
    for label_id, revision in committed.items():
        assert store.get(label_id).revision >= revision
    store.add(_label())  # and it is writable again
    store.close()
