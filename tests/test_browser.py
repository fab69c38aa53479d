"""End to end in a real browser: `box2mask annotate` on two demo images, driven with the mouse.

Set BOX2MASK_UPDATE_SCREENSHOT=1 to also refresh docs/annotator.png (the README's screenshot),
and BOX2MASK_SCREENSHOTS=1 to refresh docs/walkthrough/*.png (the README's "Labeling a dataset"
steps: box, correct, refine, tighten, export). Neither changes what is checked.
"""

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from annotator.store import SQLiteStore
from box2mask.io.rle import decode_rle, rle_to_bbox_xywh
from box2mask.levelset.segmenter import LevelSetSegmenter

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http_status(url: str, data: bytes | None = None, headers=None) -> int:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


@pytest.fixture
def app(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("chelsea.png", "coffee.png"):
        shutil.copy(REPO / "demo" / name, images / name)
    port = _free_port()
    cmd = [sys.executable, "-m", "box2mask", "annotate", str(images), "--port", str(port)]
    cmd += ["--classes", "cat,cup", "--max-upload-mb", "1"]
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while _http_status_or_none(url) != 200:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"annotator did not start:\n{proc.stdout.read()}")
        time.sleep(0.5)
    yield url, images
    proc.terminate()
    proc.wait(timeout=20)


def stable_box(locator, timeout: float = 20.0) -> dict:
    """The element's page rectangle once it stops changing (the canvas grows when the image loads)."""
    last, deadline = None, time.monotonic() + timeout
    while time.monotonic() < deadline:
        box = locator.bounding_box()
        if box is not None and box == last:
            return box
        last = box
        time.sleep(0.5)
    return last


def walkthrough_shot(page, name: str) -> None:
    """With BOX2MASK_SCREENSHOTS=1, save what the page shows as docs/walkthrough/NAME: the
    1400 x 1000 viewport at 3/4 size with 128 colours (about 100 KB); otherwise do nothing."""
    if not os.environ.get("BOX2MASK_SCREENSHOTS"):
        return
    time.sleep(1.0)  # the canvas and the zoomed view redraw after the value arrives
    shot = Image.open(io.BytesIO(page.screenshot())).convert("RGB")
    small = shot.resize((shot.width * 3 // 4, shot.height * 3 // 4)).quantize(colors=128)
    out = REPO / "docs" / "walkthrough" / name
    out.parent.mkdir(exist_ok=True)
    small.save(out, optimize=True)


def _http_status_or_none(url):
    try:
        return _http_status(url)
    except OSError:
        return None


def test_draw_box_see_mask_accept_next_export(app, chromium, tmp_path):
    url, images = app
    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url, wait_until="load")
    page.wait_for_selector("#b2m-annotator canvas", timeout=30000)
    page.wait_for_function(
        "document.querySelector('#b2m-image-info').innerText.includes('chelsea.png')"
    )
    assert "0 / 2 images done" in page.inner_text("#b2m-progress")
    time.sleep(1.0)  # the canvas draws the image after the value arrives
    canvas = page.locator("#b2m-annotator canvas").first
    before = np.asarray(Image.open(io.BytesIO(canvas.screenshot())).convert("RGB"), np.float32)

    # drag a box over the cat's head: image pixels -> page pixels through the centred canvas
    c = stable_box(canvas)
    iw, ih = Image.open(images / "chelsea.png").size
    scale = min(c["width"] / iw, c["height"] / ih)
    ox, oy = c["x"] + (c["width"] - iw * scale) / 2, c["y"] + (c["height"] - ih * scale) / 2
    box = (140, 20, 330, 240)  # x0, y0, x1, y1 in image pixels
    page.mouse.move(ox + box[0] * scale, oy + box[1] * scale)
    page.mouse.down()
    page.mouse.move(ox + 240 * scale, oy + 140 * scale, steps=5)
    page.mouse.move(ox + box[2] * scale, oy + box[3] * scale, steps=5)
    page.mouse.up()
    page.wait_for_selector("#b2m-labels label", timeout=30000)
    assert "1. cat · model" in page.inner_text("#b2m-labels")
    time.sleep(1.0)
    after = np.asarray(Image.open(io.BytesIO(canvas.screenshot())).convert("RGB"), np.float32)

    # the mask overlay tints pixels inside the box, and nothing far outside it
    def region(img, x0, y0, x1, y1):
        s = img.shape[1] / c["width"]  # device pixels per CSS pixel
        x0, x1 = [int((ox - c["x"] + v * scale) * s) for v in (x0, x1)]
        y0, y1 = [int((oy - c["y"] + v * scale) * s) for v in (y0, y1)]
        return img[y0:y1, x0:x1]

    inside = np.abs(region(after, 170, 60, 300, 200) - region(before, 170, 60, 300, 200))
    outside = np.abs(region(after, 0, 260, 120, 300) - region(before, 0, 260, 120, 300))
    assert inside.mean() > 15 and outside.mean() < 3
    walkthrough_shot(page, "1-box.png")

    shot = tmp_path / "annotator.png"
    page.screenshot(path=str(shot))
    if os.environ.get("BOX2MASK_UPDATE_SCREENSHOT"):
        small = Image.open(shot).convert("RGB").resize((1050, 750)).quantize(colors=128)
        small.save(REPO / "docs" / "annotator.png", optimize=True)

    # brush: B switches to erase, a click in the zoomed view erases a disc at the box centre
    page.keyboard.press("b")
    page.wait_for_function("document.querySelector('input[value=erase]').checked")
    page.locator("#b2m-crop img").click()  # the centre of the view = the centre of the crop
    page.wait_for_function("document.querySelector('#b2m-labels').innerText.includes('corrected')")
    walkthrough_shot(page, "2-correct.png")

    other_tab = chromium.new_page(viewport={"width": 1400, "height": 1000})
    other_tab.goto(url, wait_until="load")  # opens the first image not done: the same one
    other_tab.wait_for_selector("#b2m-labels label", timeout=30000)
    other_tab.click("#b2m-labels label")  # select the label (revision 2, after the brush)

    page.keyboard.press("a")  # accept (keyboard shortcut): revision 3
    page.wait_for_function("document.querySelector('#b2m-labels').innerText.includes('accepted')")
    other_tab.click("#b2m-reject")  # based on revision 2: refused, visibly
    other_tab.wait_for_function(
        "document.querySelector('#b2m-status').innerText.includes('Refused')"
    )
    assert "at revision 3 but this edit was based on revision 2" in other_tab.inner_text(
        "#b2m-status"
    )
    assert "accepted" in other_tab.inner_text("#b2m-labels")  # now shows the stored version
    other_tab.close()
    page.click("#b2m-next")
    page.wait_for_function(
        "document.querySelector('#b2m-image-info').innerText.includes('coffee.png')"
    )

    store = SQLiteStore(images / "box2mask_labels.sqlite", images)
    (label,) = store.labels("chelsea.png")
    store.close()
    assert label.verified and label.source == "human-corrected" and label.class_name == "cat"
    assert label.model_version == LevelSetSegmenter.model_version
    assert all(abs(a - b) <= 2 for a, b in zip(label.box_xyxy, box, strict=True))
    mask = decode_rle(label.mask_rle)
    assert mask.shape == (ih, iw) and 0.2 < mask[20:240, 140:330].mean() and not mask[:, :130].any()
    assert not mask[127:135, 231:239].any()  # erased by the brush (crop centre = (235, 131))

    page.click("text=Export / import")
    page.click("#b2m-export")
    page.wait_for_function("document.querySelector('#b2m-status').innerText.includes('Exported')")
    walkthrough_shot(page, "5-export.png")
    coco = json.loads((images / "box2mask_export" / "coco.json").read_text())
    (ann,) = coco["annotations"]
    assert ann["box2mask"]["verified"] and np.array_equal(decode_rle(ann["segmentation"]), mask)
    yolo = images / "box2mask_export" / "yolo"
    (label_file,) = (yolo / "labels").rglob("chelsea.txt")  # labels/<train|val>/chelsea.txt
    assert label_file.read_text().startswith("0 ") and (yolo / "data.yaml").is_file()
    page.close()

    # only the app's own pictures are served: no image file, nothing outside; uploads are capped
    assert _http_status(f"{url}/gradio_api/file={images / 'coffee.png'}") in (403, 404)
    assert _http_status(f"{url}/gradio_api/file=/etc/passwd") in (403, 404)
    body = b'--x\r\nContent-Disposition: form-data; name="files"; filename="big.json"\r\n\r\n'
    body += b"0" * (2 * 1024 * 1024) + b"\r\n--x--\r\n"
    status = _http_status(
        f"{url}/gradio_api/upload",
        data=body,
        headers={"Content-Type": "multipart/form-data; boundary=x"},
    )
    assert status == 413


def _wait(condition, what: str, timeout: float = 30.0):
    """Poll `condition()` until it returns something truthy, then give the page half a second
    to show the answer (the store is written before the picture is sent); fail naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            time.sleep(0.5)
            return value
        time.sleep(0.3)
    pytest.fail(f"timed out waiting for {what}")


def test_number_keys_tighten_refine_undo_delete_escape(app, chromium):
    """The labeling keys in a real browser: 1-9 classes (the next box gets the last one used),
    T tighten, R refine, Ctrl+Z one step at a time, Esc deselects, Delete removes the selected
    label only. What the store holds is checked after each key."""
    url, images = app
    store = SQLiteStore(images / "box2mask_labels.sqlite", images)

    def labels():
        return store.labels("chelsea.png")

    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url, wait_until="load")
    page.wait_for_selector("#b2m-annotator canvas", timeout=30000)
    page.wait_for_function(
        "document.querySelector('#b2m-image-info').innerText.includes('chelsea.png')"
    )
    time.sleep(1.0)
    page.keyboard.press("2")  # nothing selected: only the next box's class
    page.wait_for_function(
        "document.querySelector('#b2m-image-info').innerText.includes('next box: cup')"
    )
    canvas = page.locator("#b2m-annotator canvas").first
    c = stable_box(canvas)
    iw, ih = Image.open(images / "chelsea.png").size
    scale = min(c["width"] / iw, c["height"] / ih)
    ox, oy = c["x"] + (c["width"] - iw * scale) / 2, c["y"] + (c["height"] - ih * scale) / 2
    # loose around the cat's head: tightening shrinks it (the default's mask of (120, 10, 350, 260)
    # now touches all four sides, so T there is a no-op that writes nothing)
    box = (100, 5, 380, 290)
    page.mouse.move(ox + box[0] * scale, oy + box[1] * scale)
    page.mouse.down()
    page.mouse.move(ox + box[2] * scale, oy + box[3] * scale, steps=8)
    page.mouse.up()
    page.wait_for_selector("#b2m-labels label", timeout=30000)
    assert "1. cup · model" in page.inner_text("#b2m-labels")  # the class used last
    page.click("#b2m-image-info")  # focus off the canvas (it keeps some keys for itself)

    page.keyboard.press("1")  # the new label is selected: it becomes a cat
    _wait(lambda: [x.class_name for x in labels()] == ["cat"], "the label to become a cat")
    drawn = labels()[0]

    page.keyboard.press("t")  # tighten: the box becomes the mask's tight box
    tightened = _wait(
        lambda: next((x for x in labels() if x.revision > drawn.revision), None), "tighten"
    )
    x, y, w, h = rle_to_bbox_xywh(drawn.mask_rle)
    assert tightened.box_xyxy == [x, y, x + w, y + h] != drawn.box_xyxy
    assert tightened.mask_rle == drawn.mask_rle
    walkthrough_shot(page, "4-tighten.png")

    page.keyboard.press("r")  # refine from the mask
    refined = _wait(
        lambda: next((x for x in labels() if x.revision > tightened.revision), None), "refine"
    )
    assert refined.box_xyxy == tightened.box_xyxy
    walkthrough_shot(page, "3-refine.png")

    page.keyboard.press("Control+z")  # undo the refine only: the tightened label's mask
    undone = _wait(
        lambda: next((x for x in labels() if x.revision > refined.revision), None), "undo 1"
    )
    assert undone.mask_rle == tightened.mask_rle and undone.box_xyxy == tightened.box_xyxy
    page.keyboard.press("Control+z")  # then the tighten: the drawn box again
    undone = _wait(
        lambda: next((x for x in labels() if x.revision > undone.revision), None), "undo 2"
    )
    assert undone.box_xyxy == drawn.box_xyxy and undone.class_name == "cat"

    page.keyboard.press("Escape")  # deselect: Delete then removes nothing
    page.wait_for_function("!document.querySelector('#b2m-labels input:checked')")
    page.keyboard.press("Delete")
    page.wait_for_function(
        "document.querySelector('#b2m-status').innerText.includes('select a label first')"
    )
    assert len(labels()) == 1
    page.click("#b2m-labels label")  # select it, then Delete removes it
    time.sleep(1.0)  # the selection reaches the server
    page.click("#b2m-image-info")
    page.keyboard.press("Delete")
    _wait(lambda: labels() == [], "the selected label to be deleted")
    page.close()
    store.close()
