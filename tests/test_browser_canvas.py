"""End to end in a real browser: the canvas front-end (`/b2m/`, annotator/web/index.html).

Box, positive click, brush erase, undo, accept, next image and export, driven with the mouse
and keys; after each, the mask the page drew (its label layer, read back from the canvas) must
equal the stored one. Saves docs/screenshots/canvas-1366x768.png and canvas-1920x1080.png and
checks that the image, the zoom, the label list and the main actions fit without scrolling.
"""

import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from annotator.store import SQLiteStore
from box2mask.io.rle import decode_rle
from tests.test_browser import app  # noqa: F401 (the fixture: `box2mask annotate` on 2 images)

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.browser

# the label layer of label `id` as the page draws it, at image resolution: "0"/"1" per pixel
DRAWN_MASK = """(id) => { const S = window.b2m, L = S.labels.get(id);
  const c = document.createElement("canvas"); c.width = S.W; c.height = S.H;
  const ctx = c.getContext("2d"); if (L.canvas) ctx.drawImage(L.canvas, L.mask.left, L.mask.top);
  const a = ctx.getImageData(0, 0, S.W, S.H).data; let s = "";
  for (let i = 3; i < a.length; i += 4) s += a[i] ? "1" : "0"; return s; }"""
VISIBLE = ["#view", "#zoom", "#labels", "#b-accept", "#b-undo", "#b-next", "#modes", "#b-export"]


def _drawn(page, shape) -> np.ndarray:
    ids = page.evaluate("window.b2m.order")
    (only,) = ids
    bits = page.evaluate(DRAWN_MASK, only)
    return np.frombuffer(bits.encode(), np.uint8).reshape(shape) == ord("1")


def _image_to_page(page, x, y):
    v = page.evaluate("window.b2m.view")
    r = page.locator("#view").bounding_box()
    return r["x"] + v["x"] + x * v["s"], r["y"] + v["y"] + y * v["s"]


def _wait_store(labels, condition, what, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = labels()
        if value and condition(value[0]):
            return value[0]
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def _fits(page, width, height, name):
    page.set_viewport_size({"width": width, "height": height})
    page.wait_for_timeout(400)
    for sel in VISIBLE:
        b = page.locator(sel).bounding_box()
        assert b and b["x"] >= 0 and b["y"] >= 0, sel
        assert b["x"] + b["width"] <= width + 1 and b["y"] + b["height"] <= height + 1, sel
    assert page.evaluate("document.documentElement.scrollHeight") <= height
    shot = Image.open(io.BytesIO(page.screenshot())).convert("RGB")
    out = REPO / "docs" / "screenshots" / name
    out.parent.mkdir(exist_ok=True)
    shot.resize((width * 2 // 3, height * 2 // 3)).quantize(colors=96).save(out, optimize=True)
    assert out.stat().st_size < 500_000


def test_canvas_box_click_brush_undo_accept_next_export(app, chromium):  # noqa: F811
    url, images = app
    store = SQLiteStore(images / "box2mask_labels.sqlite", images)

    def labels():
        return store.labels("chelsea.png")

    page = chromium.new_page(viewport={"width": 1366, "height": 768})
    page.goto(f"{url}/b2m/", wait_until="load")
    page.wait_for_function("window.b2m && window.b2m.img && window.b2m.image === 'chelsea.png'")
    iw, ih = Image.open(images / "chelsea.png").size
    shape = (ih, iw)

    page.mouse.move(*_image_to_page(page, 140, 20))  # a box over the cat's head
    page.mouse.down()
    page.mouse.move(*_image_to_page(page, 330, 240), steps=6)
    page.mouse.up()
    boxed = _wait_store(labels, lambda x: x.mask_rle is not None, "the box's mask")
    page.wait_for_function("window.b2m.order.length === 1 && window.b2m.selected === 0")
    assert np.array_equal(_drawn(page, shape), decode_rle(boxed.mask_rle))
    _fits(page, 1366, 768, "canvas-1366x768.png")

    page.keyboard.press("c")  # positive click inside the box, outside the mask if possible
    page.mouse.click(*_image_to_page(page, 300, 200))
    clicked = _wait_store(labels, lambda x: x.revision > boxed.revision, "the click's mask")
    page.wait_for_function(
        f"window.b2m.labels.get(window.b2m.order[0]).revision === {clicked.revision}"
    )
    assert np.array_equal(_drawn(page, shape), decode_rle(labels()[0].mask_rle))

    page.keyboard.press("e")  # erase a disc of radius 6 at (235, 131)
    page.mouse.click(*_image_to_page(page, 235, 131))
    erased = _wait_store(labels, lambda x: x.revision > clicked.revision, "the brush")
    page.wait_for_function(
        f"window.b2m.labels.get(window.b2m.order[0]).revision === {erased.revision}"
    )
    drawn = _drawn(page, shape)
    assert np.array_equal(drawn, decode_rle(erased.mask_rle)) and not drawn[129:133, 233:237].any()

    page.keyboard.press("Control+z")  # undo the brush: the click's mask again
    undone = _wait_store(labels, lambda x: x.revision > erased.revision, "undo")
    assert undone.mask_rle == clicked.mask_rle
    page.wait_for_function(
        f"window.b2m.labels.get(window.b2m.order[0]).revision === {undone.revision}"
    )
    assert np.array_equal(_drawn(page, shape), decode_rle(clicked.mask_rle))

    page.keyboard.press("a")
    _wait_store(labels, lambda x: x.verified, "accept")
    page.wait_for_function("document.querySelector('#labels').innerText.includes('accepted')")
    _fits(page, 1920, 1080, "canvas-1920x1080.png")

    page.keyboard.press("n")
    page.wait_for_function("window.b2m.image === 'coffee.png'")
    page.click("#b-export")
    page.wait_for_function("document.querySelector('#note').innerText.includes('Exported')")
    coco = json.loads((images / "box2mask_export" / "coco.json").read_text())
    (ann,) = coco["annotations"]
    assert np.array_equal(decode_rle(ann["segmentation"]), decode_rle(clicked.mask_rle))
    page.close()
    store.close()
