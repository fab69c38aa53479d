"""The canvas front-end's JSON endpoints (annotator/web_api.py), without a browser: a box event
answers with only the new label's crop-sized mask, the same label the store holds."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from annotator.predictor_service import PredictorService
from annotator.store import SQLiteStore
from annotator.web_api import web_routes
from box2mask import build_predictor
from box2mask.io.rle import decode_rle

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def client(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("chelsea.png", "coffee.png"):
        shutil.copy(REPO / "demo" / name, images / name)
    store = SQLiteStore(tmp_path / "labels.sqlite", images)
    service = PredictorService(build_predictor(None, "cpu"))
    routes = web_routes(
        store=store,
        images_dir=images,
        service=service,
        classes=["cat", "cup"],
        export_dir=tmp_path / "export",
    )
    with TestClient(Starlette(routes=routes)) as http:
        yield http, store
    store.close()


def test_box_answer_is_the_label_crop_only(client):
    http, store = client
    opened = http.post("/b2m/api/open", json={}).json()
    assert opened["image"] == "chelsea.png" and opened["changed"] == []
    sid = opened["sid"]
    picture = http.get(f"/b2m/api/image?sid={sid}")
    assert picture.headers["content-type"] == "image/jpeg" and len(picture.content) > 10_000

    response = http.post("/b2m/api/box", json={"sid": sid, "box": [140, 20, 330, 240]})
    assert response.status_code == 200
    # no picture in it, and small: the JPEG above is ~40x larger
    assert len(response.content) < 2_000 < len(picture.content) / 10
    assert b"image" not in response.content and b"base64" not in response.content
    answer = response.json()
    (label,) = answer["changed"]
    assert answer["order"] == [label["id"]] and answer["selected"] == 0
    m = label["mask"]
    crop = decode_rle({"size": [m["h"], m["w"]], "counts": m["counts"]})
    (stored,) = store.labels("chelsea.png")
    full = decode_rle(stored.mask_rle)
    rows, cols = np.flatnonzero(full.any(1)), np.flatnonzero(full.any(0))
    assert (m["top"], m["left"]) == (rows[0], cols[0])  # the mask's own bounding rectangle
    assert np.array_equal(full[m["top"] : m["top"] + m["h"], m["left"] : m["left"] + m["w"]], crop)

    # a second event on another label sends nothing about the first one
    again = http.post("/b2m/api/action", json={"sid": sid, "name": "accept"}).json()
    assert [x["verified"] for x in again["changed"]] == [True] and "order" not in again
    undo = http.post("/b2m/api/action", json={"sid": sid, "name": "undo"}).json()
    assert [x["verified"] for x in undo["changed"]] == [False]


def test_bad_inputs_are_refused_naming_the_field(client):
    http, _ = client
    sid = http.post("/b2m/api/open", json={}).json()["sid"]
    cases = [
        ({"sid": sid, "box": [1, 2, 3]}, "box must be a list"),
        ({"sid": sid, "box": [1, 2, "x", 4]}, "must be a number"),
        ({"sid": sid, "box": [1, 2, 1e308, 4]}, "within"),
    ]
    for body, error in cases:
        r = http.post("/b2m/api/box", json=body)
        assert r.status_code == 400 and error in r.json()["error"]
    assert http.post("/b2m/api/box", json={"sid": "nope", "box": [0, 0, 9, 9]}).status_code == 404
    r = http.post("/b2m/api/action", json={"sid": sid, "name": "rm -rf"})
    assert r.status_code == 400 and "name must be one of" in r.json()["error"]
    r = http.post("/b2m/api/click", json={"sid": sid, "x": 5, "y": 5, "inside": True})
    assert r.status_code == 422 and "select a label first" in r.json()["error"]
    r = http.post("/b2m/api/open", json={"sid": sid, "image": "../../etc/passwd"})
    assert r.status_code == 422 and "outside the images folder" in r.json()["error"]
    r = http.post("/b2m/api/box", content=b"{" + b" " * 20000 + b"}")
    assert r.status_code == 400 and "limit" in r.json()["error"]


def test_a_big_picture_comes_as_a_preview_then_once_in_full(tmp_path):
    """Over PREVIEW_SIDE px, the page gets a preview URL (longer side 2048) and the full one;
    each is encoded once (the same bytes again), and neither is re-sent by a box."""
    import cv2

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    cv2.imwrite(str(images / "wide.png"), rng.integers(0, 255, (300, 3000, 3), dtype=np.uint8))
    store = SQLiteStore(tmp_path / "labels.sqlite", images)
    service = PredictorService(build_predictor(None, "cpu"))
    routes = web_routes(
        store=store, images_dir=images, service=service, classes=["a"], export_dir=tmp_path
    )
    with TestClient(Starlette(routes=routes)) as http:
        opened = http.post("/b2m/api/open", json={}).json()
        assert (opened["width"], opened["height"]) == (3000, 300)
        preview = http.get(opened["preview_url"]).content
        full = http.get(opened["image_url"]).content
        shape = lambda data: cv2.imdecode(np.frombuffer(data, np.uint8), 1).shape  # noqa: E731
        assert shape(preview) == (205, 2048, 3) and shape(full) == (300, 3000, 3)
        assert http.get(opened["preview_url"]).content == preview  # cached, not re-encoded
        box = http.post("/b2m/api/box", json={"sid": opened["sid"], "box": [100, 50, 400, 250]})
        assert box.status_code == 200 and len(box.content) < len(preview) / 10
    store.close()
