"""The canvas endpoints refuse events off the image with a 4xx and write nothing (found by
bench/fuzz_http.py: such a box, click or brush was answered 200 and some were stored)."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_web_api import client  # noqa: F401 (the fixture)

REPO = Path(__file__).resolve().parents[1]


def _rows(store):
    return [(lb.box_xyxy, lb.mask_rle, lb.revision) for lb in store.labels("chelsea.png")]


def test_boxes_clicks_and_brushes_off_the_image_are_refused_and_write_nothing(client):  # noqa: F811
    http, store = client
    opened = http.post("/b2m/api/open", json={}).json()
    sid, w, h = opened["sid"], opened["width"], opened["height"]
    assert http.post("/b2m/api/box", json={"sid": sid, "box": [140, 20, 330, 240]}).is_success
    before = _rows(store)
    refused = [
        ("box", {"box": [w + 10, 10, w + 60, 60]}, "outside the"),  # right of the image
        ("box", {"box": [-400, 10, -350, 60]}, "outside the"),
        ("box", {"box": [0, 0, 1e5, 50]}, "outside the"),  # over one image side past the edge
        ("box", {"box": [20, 5, 20.4, 50]}, "too small"),  # under a pixel
        ("click", {"x": w + 5, "y": 10, "inside": True}, "x must be finite and within"),
        ("click", {"x": 10, "y": -1, "inside": False}, "y must be finite and within"),
        ("brush", {"x": 10, "y": h + 1, "radius": 5, "erase": False}, "y must be finite"),
        ("select", {"index": 1}, "this image has 1 labels"),
        ("select", {"index": None}, "index is required"),
        ("class", {"number": None}, "number is required"),  # was a 500 (TypeError)
    ]
    for name, body, error in refused:
        r = http.post(f"/b2m/api/{name}", json={"sid": sid, **body})
        assert r.status_code == 400 and error in r.json()["error"], (name, body, r.text)
        assert _rows(store) == before, (name, body)
    # a drag that ends a little past the edge is clipped to the image, not refused
    r = http.post("/b2m/api/box", json={"sid": sid, "box": [w - 40, h - 40, w + 25, h + 25]})
    assert r.status_code == 200
    assert max(lb.box_xyxy[2] for lb in store.labels("chelsea.png")) == w


@pytest.mark.slow
def test_the_endpoint_fuzz_through_the_real_server_refuses_every_case(tmp_path):
    out = tmp_path / "fuzz.json"
    cmd = [sys.executable, "-m", "bench.fuzz_http", "--cases", "300", "--json", str(out)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    import json

    result = json.loads(out.read_text())
    bad = [r for r in result["results"] if not r["ok"]]
    assert not bad and result["down"] == 0 and not result["new_files"], bad[:5]
    assert {r["kind"] for r in result["results"]} >= {"auth", "size", "path", "payload", "stale"}
