"""SQLiteStore: round trips, revisions, stale-write refusal, image status, crash safety."""

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

from annotator.store import Label, SQLiteStore, StaleWriteError, list_image_files
from box2mask.rle import decode_rle, encode_rle

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


def test_add_get_update_delete_round_trip(store):
    added = store.add(_label(image="a.jpg"))
    assert added.id is not None and added.revision == 1
    got = store.get(added.id)
    assert got == added
    assert np.array_equal(decode_rle(got.mask_rle)[5:10, 4:12], np.ones((5, 8), bool))

    changed = store.update(
        _label(image="a.jpg", id=added.id, revision=1, verified=True, source="human-corrected")
    )
    assert changed.revision == 2
    again = store.get(added.id)
    assert again.verified and again.source == "human-corrected" and again.revision == 2

    store.delete(added.id, revision=2)
    with pytest.raises(KeyError, match=f"label {added.id}"):
        store.get(added.id)


def test_stale_update_and_delete_are_refused(tmp_path):
    # two store objects on one file = two tabs / two processes
    first = SQLiteStore(tmp_path / "s.sqlite")
    second = SQLiteStore(tmp_path / "s.sqlite")
    label = first.add(_label())
    seen_by_second = second.get(label.id)
    first.update(_label(id=label.id, revision=1, class_name="mug"))  # now revision 2
    with pytest.raises(StaleWriteError, match="revision 2 but this edit was based on revision 1"):
        second.update(seen_by_second)
    with pytest.raises(StaleWriteError, match="revision 2"):
        second.delete(label.id, revision=1)
    assert second.get(label.id).class_name == "mug"  # nothing overwritten
    first.delete(label.id, revision=2)
    with pytest.raises(StaleWriteError, match="deleted elsewhere"):
        second.update(seen_by_second)
    first.close()
    second.close()


def test_image_listing_and_status(store):
    assert store.list_images() == ["a.jpg", "b.png", "sub/c.PNG"]
    assert store.image_status("b.png") == "unlabeled"
    label = store.add(_label(image="b.png"))
    assert store.image_status("b.png") == "in progress"
    store.set_image_done("b.png", True)
    assert store.image_status("b.png") == "done"
    store.set_image_done("b.png", False)
    assert store.image_status("b.png") == "in progress"
    store.delete(label.id, revision=1)
    assert store.image_status("b.png") == "unlabeled"
    assert [x.image for x in store.labels("a.jpg")] == []


def test_invalid_labels_are_rejected_with_the_field_named(store):
    with pytest.raises(ValueError, match="source"):
        store.add(_label(source="robot"))
    with pytest.raises(ValueError, match="x1 > x0"):
        store.add(_label(box_xyxy=[5, 5, 5, 9]))
    with pytest.raises(ValueError, match="update needs a label with an id"):
        store.update(_label())


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
