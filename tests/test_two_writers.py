"""Two processes on one SQLite label store (two people, one folder, two `box2mask annotate`
servers): every committed label is there, a stale write is refused across processes with the
message the annotator shows, and no revision is skipped or counted twice.

Each process writes through the store API, as a server's session does: adds its own labels,
updates (accepts) labels of both, deletes some of its own, and reports what it was told.
"""

import json
import os
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from box2mask.labels import Label, SQLiteStore, StaleWriteError
from tests.torchrun_helpers import launch_env

SHARED = "shared.png"  # the image both processes label
STEPS = 80  # writes per process


def wait_for(path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.005)


def writer(db: str, name: str, other: str, report: str, seed: int) -> None:
    """One process: first both update one label read before either wrote (exactly one must be
    refused), then STEPS random writes; its ledger goes to `report` as JSON."""
    store, folder = SQLiteStore(db), Path(db).parent
    rng = random.Random(seed)
    told = {"added": {}, "updates": [], "refused": [], "deleted": []}
    first = next(x for x in store.labels(SHARED) if x.class_name == "seed")
    (folder / f"read-{name}").touch()  # both read revision 1, then both write
    wait_for(folder / f"read-{other}")
    told["first"] = _update(store, first, told)
    for _step in range(STEPS):
        roll = rng.random()
        if roll < 0.4:
            box = [rng.randint(0, 40), rng.randint(0, 40), 0, 0]
            box[2:] = [box[0] + rng.randint(1, 20), box[1] + rng.randint(1, 20)]
            label = store.add(Label(SHARED, box, name, None, "human", None, False))
            told["added"][label.id] = box
        elif roll < 0.9:
            labels = store.labels(SHARED)
            time.sleep(rng.random() * 0.004)  # the other process may write meanwhile
            _update(store, rng.choice(labels), told)
        else:
            own = [x for x in store.labels(SHARED) if x.class_name == name]
            if own:
                victim = rng.choice(own)
                try:
                    store.delete(victim.id, victim.revision)
                    told["deleted"].append(victim.id)
                except StaleWriteError as err:
                    told["refused"].append(str(err))
    store.close()
    Path(report).write_text(json.dumps(told))


def _update(store, label, told) -> bool:
    """Flip a label's verified flag (an accept), based on the revision read; True if stored."""
    try:
        new = store.update(Label(**{**label.__dict__, "verified": not label.verified}))
    except StaleWriteError as err:
        told["refused"].append(str(err))
        return False
    told["updates"].append([label.id, new.revision])
    return True


def test_two_processes_on_one_store_lose_nothing_and_refuse_stale_writes(tmp_path):
    db = tmp_path / "box2mask_labels.sqlite"
    store = SQLiteStore(db)
    store.add(Label(SHARED, [1, 1, 9, 9], "seed", None, "human", None, False))
    store.close()
    procs = []
    for i, (name, other) in enumerate([("alice", "bob"), ("bob", "alice")]):
        code = (
            "from tests.test_two_writers import writer; "
            f"writer({str(db)!r}, {name!r}, {other!r}, {str(tmp_path / name)!r}, {i})"
        )
        procs.append(
            subprocess.Popen([sys.executable, "-c", code], env=launch_env(), cwd=os.getcwd())
        )
    for proc in procs:
        assert proc.wait(timeout=120) == 0
    told = [json.loads((tmp_path / name).read_text()) for name in ("alice", "bob")]

    conn = sqlite3.connect(db)
    rows = {str(i): (json.loads(b), c, r) for i, b, c, r in conn.execute(
        "SELECT id, box_xyxy, class_name, revision FROM labels")}  # fmt: skip
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()

    # the first write of each process was based on the same revision: exactly one refused
    assert sorted(t["first"] for t in told) == [False, True]
    deleted = {i for t in told for i in t["deleted"]}
    for t, name in zip(told, ("alice", "bob"), strict=True):
        for label_id, box in t["added"].items():  # every committed add is there, as written
            if label_id not in deleted:
                assert rows[label_id][:2] == ([float(v) for v in box], name)
    assert not deleted & set(rows)
    updates = {}
    for t in told:
        for label_id, revision in t["updates"]:
            updates.setdefault(label_id, []).append(revision)
    for label_id, revisions in updates.items():  # no revision skipped or given out twice
        assert sorted(revisions) == list(range(2, 2 + len(revisions))), label_id
    for label_id, (_, _, revision) in rows.items():
        assert revision == 1 + len(updates.get(label_id, [])), label_id
    refused = [m for t in told for m in t["refused"]]
    assert refused and all(
        "changed in another tab or process" in m or "deleted elsewhere" in m for m in refused
    )
