"""Load: simulated annotators on a real `box2mask annotate` server lose and mix up no write.

The short run (3 users x 15 s, ~50 s with the server start) is `-m slow`; the check it relies on
(`check_store`) is tested by default against a store with hand-made damage.
"""

import pytest

from annotator.store import Label, SQLiteStore
from bench.load import LoadConfig, run_load
from bench.load_checks import check_store, memory_summary
from bench.load_users import Ledger


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


def test_memory_summary_reports_growth_over_the_second_half():
    samples = [(float(t), 100.0 + (t >= 6) * 50.0) for t in range(11)]
    mem = memory_summary(samples)
    series = [100.0] * 6 + [150.0] * 5  # 11 samples: every tenth is one sample
    want = {"quarter": 100.0, "end": 150.0, "peak": 150.0, "second_half": 50.0, "series": series}
    assert mem == want


@pytest.mark.slow
def test_three_users_for_fifteen_seconds_lose_nothing(tmp_path):
    result = run_load(LoadConfig(users=3, seconds=15, think_s=0.3, balloon=1), tmp_path)
    ledger, checks = result["ledger"], result["checks"]
    assert result["errors"] == []
    assert len(ledger.added) >= 3 and ledger.outcome[("accept", "ok")] >= 1
    alive = len(ledger.added - ledger.deleted)
    assert checks == {
        "lost": 0,
        "mixed up": 0,
        "revision": 0,
        "resurrected": 0,
        "labels stored": alive,
    }
    assert ledger.times["draw box"] and ledger.times["accept"]
    assert len(result["rss"]) >= 10


def test_soak_series_reports_growth_after_the_warm_up(capsys):
    from bench.load_soak import Sample, flat_after_warmup, print_series

    samples = [Sample(10.0 * i, 700 + min(i, 5), 40, 12, 1.0 + i, 0.5) for i in range(60)]
    assert flat_after_warmup(samples, "rss_mb", warmup_s=120) == (705, 0)
    assert flat_after_warmup(samples, "temp_mb", warmup_s=120)[1] > 30  # a growing temp folder
    print_series(samples)
    out = capsys.readouterr().out
    assert out.count("\n| ") == 1 + 11  # the header, a row a minute (0..9) and the last
    assert "rss_mb 705.0 -> +0.0" in out


@pytest.mark.slow
def test_two_servers_on_one_store_lose_nothing(tmp_path):
    """1-4 min: 2 `box2mask annotate` processes on one folder, 2 users each, for 15 s."""
    result = run_load(
        LoadConfig(users=4, servers=2, seconds=15, think_s=0.3, balloon=1, soak_every_s=5),
        tmp_path,
    )
    assert result["errors"] == []
    assert {k: v for k, v in result["checks"].items() if k != "labels stored"} == {
        "lost": 0,
        "mixed up": 0,
        "revision": 0,
        "resurrected": 0,
    }
    assert len(result["soak"]) >= 2 and result["soak"][0].fds > 0
