"""Load: simulated annotators on a real `box2mask annotate` server lose and mix up no write.

The short run (3 users x 15 s, ~50 s with the server start) is `-m slow`; the check it relies on
(`python -m bench.load_checks`) is tested by default against a store with hand-made damage. The
benches run as subprocesses from the repository root (`python -m bench.NAME`).
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from annotator.store import Label, SQLiteStore

ROOT = Path(__file__).resolve().parents[1]


def _bench(module: str, *args, timeout: float = 120) -> str:
    """The stdout of `python -m bench.MODULE ARGS` run from the repository root."""
    done = subprocess.run(
        [sys.executable, "-m", f"bench.{module}", *map(str, args)],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


class Ledger:
    """What the users were told, in the JSON form bench/load_checks.py reads."""

    def __init__(self):
        self.added, self.deleted, self.accepted, self.updates = set(), set(), set(), {}

    def to_json(self) -> dict:
        keys = {"added": self.added, "deleted": self.deleted, "accepted": self.accepted}
        out = {name: [[i, list(box), c] for i, box, c in sorted(s)] for name, s in keys.items()}
        updates = [[[i, list(box), c], n] for (i, box, c), n in self.updates.items()]
        return {**out, "uncertain": [], "updates": updates}


def check_store(store_path: Path, ledger: Ledger) -> dict:
    result = store_path.with_name("result.json")
    result.write_text(json.dumps({"ledger": ledger.to_json()}))
    return json.loads(_bench("load_checks", result, "--store", store_path))["checks"]


def _keys(items: list) -> set:
    """Label keys (image, box, class) of a ledger's JSON list."""
    return {(image, tuple(box), name) for image, box, name in items}


def _run_load(tmp_path: Path, *args) -> dict:
    """`python -m bench.load ARGS --json`: its results (bench/load.py's result_json)."""
    out = tmp_path / "result.json"
    _bench("load", *args, "--json", out, timeout=600)
    return json.loads(out.read_text())


def _label(image, box, name, **kw):
    fields = dict(mask_rle=None, source="model", model_version="v1", verified=False)
    return Label(image=image, box_xyxy=[float(v) for v in box], class_name=name, **{**fields, **kw})


def test_check_store_finds_each_kind_of_damage(tmp_path):
    store = SQLiteStore(tmp_path / "s.sqlite")
    ledger = Ledger()
    keys = {}
    for i, name in enumerate(["u0", "u1"] * 3):
        box = (10 * i, 5, 10 * i + 20, 40)
        key = ("a.png", box, name)
        keys[i] = (key, store.add(_label("a.png", box, name)))
        ledger.added.add(key)
    # a healthy history first: u0's label 0 accepted by its owner, then by u1 (two updates)
    key0, label0 = keys[0]
    label0 = store.update(_label("a.png", key0[1], "u0", id=label0.id, revision=1, verified=True))
    store.update(_label("a.png", key0[1], "u0", id=label0.id, revision=2, verified=True))
    ledger.accepted.add(key0)
    ledger.updates[key0] = 2
    key5, label5 = keys[5]  # deleted by its owner
    store.delete(label5.id, revision=1)
    ledger.deleted.add(key5)
    clean = {"lost": 0, "mixed up": 0, "revision": 0, "resurrected": 0, "labels stored": 5}
    assert check_store(store.path, ledger) == clean

    key1, label1 = keys[1]  # an accept u1 was told succeeded never reached the store
    ledger.accepted.add(key1)
    ledger.updates[key1] = 1
    store.update(_label("a.png", key1[1], "u1", id=label1.id, revision=1))
    key2, label2 = keys[2]  # u0's label carries a box u0 never drew
    store.update(_label("a.png", (1, 1, 9, 9), "u0", id=label2.id, revision=1))
    key3, label3 = keys[3]  # a label vanished
    store.delete(label3.id, revision=1)
    store.add(_label("a.png", key5[1], "u1"))  # the deleted one came back
    store.close()
    # lost: label 1's accept, label 3, and label 2's drawn box (no longer in the store);
    # the foreign box of label 2 is mixed up and at revision 2 with no update recorded for it
    assert check_store(store.path, ledger) == {
        "lost": 3,
        "mixed up": 1,
        "revision": 1,
        "resurrected": 1,
        "labels stored": 5,
    }


def test_memory_summary_reports_growth_over_the_second_half(tmp_path):
    samples = [(float(t), 100.0 + (t >= 6) * 50.0) for t in range(11)]
    (tmp_path / "result.json").write_text(json.dumps({"rss": samples}))
    mem = json.loads(_bench("load_checks", tmp_path / "result.json"))["memory"]
    series = [100.0] * 6 + [150.0] * 5  # 11 samples: every tenth is one sample
    want = {"quarter": 100.0, "end": 150.0, "peak": 150.0, "second_half": 50.0, "series": series}
    assert mem == want


@pytest.mark.slow
def test_three_users_for_fifteen_seconds_lose_nothing(tmp_path):
    args = ("--users", 3, "--seconds", 15, "--think", 0.3, "--balloon", 1)
    result = _run_load(tmp_path, *args)
    ledger, checks = result["ledger"], result["checks"]
    assert result["errors"] == []
    assert len(ledger["added"]) >= 3 and result["outcome"].get("accept ok", 0) >= 1
    alive = len(_keys(ledger["added"]) - _keys(ledger["deleted"]))
    assert checks == {
        "lost": 0,
        "mixed up": 0,
        "revision": 0,
        "resurrected": 0,
        "labels stored": alive,
    }
    assert result["timed"].get("draw box") and result["timed"].get("accept")
    assert len(result["rss"]) >= 10


def test_soak_series_reports_growth_after_the_warm_up(tmp_path):
    columns = ("t", "rss_mb", "fds", "threads", "temp_mb", "wal_mb")
    samples = [(10.0 * i, 700 + min(i, 5), 40, 12, 1.0 + i, 0.5) for i in range(60)]
    soak = [dict(zip(columns, sample, strict=True)) for sample in samples]
    (tmp_path / "result.json").write_text(json.dumps({"soak": soak}))
    out = _bench("load_soak", tmp_path / "result.json", "--warmup", 120)
    assert out.count("\n| ") == 1 + 11  # the header, a row a minute (0..9) and the last
    assert "rss_mb 705.0 -> +0.0" in out  # flat after the warm-up
    temp_growth = float(re.search(r"temp_mb [0-9.]+ -> \+([0-9.]+)", out).group(1))
    assert temp_growth > 30  # a growing temp folder


@pytest.mark.slow
def test_two_servers_on_one_store_lose_nothing(tmp_path):
    """1-4 min: 2 `box2mask annotate` processes on one folder, 2 users each, for 15 s."""
    args = ("--users", 4, "--servers", 2, "--seconds", 15, "--think", 0.3, "--balloon", 1)
    result = _run_load(tmp_path, *args, "--soak-every", 5)
    assert result["errors"] == []
    assert {k: v for k, v in result["checks"].items() if k != "labels stored"} == {
        "lost": 0,
        "mixed up": 0,
        "revision": 0,
        "resurrected": 0,
    }
    assert len(result["soak"]) >= 2 and result["soak"][0]["fds"] > 0
