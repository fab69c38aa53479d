"""The checks of bench/load.py after a run: the store against the users' `Ledger`, the server's
memory over the run, and the memory the sessions' decoded masks need.

    .venv/bin/python -m bench.load_checks RESULT.json [--store STORE.sqlite]

checks a run again from the `--json` file of `python -m bench.load --keep` (its ledger and RSS
series) and the store it kept; prints {"checks": ..., "memory": ...} as JSON.
"""

import argparse
import collections
import json
import sqlite3
from pathlib import Path

import numpy as np

from bench.load_users import Ledger
from box2mask.io.rle import rle_to_bbox_xywh

PROBLEMS = ("lost", "mixed up", "revision", "resurrected")  # what check_store counts


def check_store(store_path: Path, ledger: Ledger) -> dict[str, int]:
    """Compare the store with what the users were told: a count per PROBLEMS, and labels stored."""
    db = sqlite3.connect(f"file:{store_path}?mode=ro", uri=True)
    rows = db.execute(
        "SELECT image, box_xyxy, class_name, verified, revision FROM labels"
    ).fetchall()
    db.close()
    stored = collections.defaultdict(list)
    for image, box, class_name, verified, revision in rows:
        key = (image, tuple(int(round(v)) for v in json.loads(box)), class_name)
        stored[key].append((bool(verified), revision))
    alive = ledger.added - ledger.deleted
    problems = collections.Counter()
    for key, copies in stored.items():
        if key not in ledger.added or len(copies) > 1:
            problems["mixed up"] += 1
        if key in ledger.deleted:
            problems["resurrected"] += 1
        verified, revision = copies[0]
        if key in ledger.accepted and not verified and key not in ledger.uncertain:
            problems["lost"] += 1  # an accept the owner saw succeed is not in the store
        if key not in ledger.uncertain and revision != 1 + ledger.updates[key]:
            problems["revision"] += 1
    problems["lost"] += len([k for k in alive if k not in stored and k not in ledger.uncertain])
    return {**{k: problems[k] for k in PROBLEMS}, "labels stored": len(rows)}


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def memory_summary(samples: list[tuple[float, float]]) -> dict:
    """RSS (MB) at the first quarter, at the end and at its peak; growth over the second half;
    `series`: the RSS at every tenth of the run."""
    mb = [m for _, m in samples]
    n = len(mb)
    quarter, half = mb[n // 4], mb[n // 2]
    series = [mb[min(n - 1, round(i * (n - 1) / 10))] for i in range(11)]
    return {
        "quarter": quarter,
        "end": mb[-1],
        "peak": max(mb),
        "second_half": mb[-1] - half,
        "series": series,
    }


def mask_memory_mb(store_path: Path, open_images: list[str]) -> float:
    """Memory the sessions need for their decoded masks, from the labels now in the store: each
    session keeps every mask of the image it has open as its bounding rectangle (a MaskPatch,
    one byte per pixel), the part of RSS that grows with the labels, by design."""
    db = sqlite3.connect(f"file:{store_path}?mode=ro", uri=True)
    rows = db.execute("SELECT image, mask_rle FROM labels WHERE mask_rle IS NOT NULL").fetchall()
    db.close()
    per_image = collections.Counter()
    for image, rle in rows:
        _, _, w, h = rle_to_bbox_xywh(json.loads(rle))
        per_image[image] += int(w) * int(h)
    return sum(per_image[k] for k in open_images if k) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("result", type=Path, help="the --json file of bench/load.py")
    parser.add_argument("--store", type=Path, help="the run's label store (checked against it)")
    args = parser.parse_args()
    result = json.loads(args.result.read_text())
    out = {}
    if args.store is not None:
        out["checks"] = check_store(args.store, Ledger.from_json(result["ledger"]))
    if result.get("rss"):
        out["memory"] = memory_summary([tuple(sample) for sample in result["rss"]])
    print(json.dumps(out))


if __name__ == "__main__":
    main()
