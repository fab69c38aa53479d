"""A 6000 x 4000 photo in the canvas front-end (`/b2m/`), in a real browser (slow: ~30 s).

Made on the fly in a temporary folder. The page gets a 2048-px preview, then the full picture
once; a box's mask is drawn; wheel zooms and a pan make no request at all (the picture is never
sent again). The first mask's time is measured by bench/annotator_latency.py --browser, not
asserted here (a shared CI machine's load moves it).
"""

import subprocess
import sys
import time

import cv2
import pytest

from tests.test_browser import REPO, _free_port, _http_status_or_none

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def big_app(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    photo = cv2.resize(cv2.imread(str(REPO / "demo" / "chelsea.png")), (6000, 4000))
    cv2.imwrite(str(images / "photo.jpg"), photo, [cv2.IMWRITE_JPEG_QUALITY, 90])
    port = _free_port()
    cmd = [sys.executable, "-m", "box2mask", "annotate", str(images), "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while _http_status_or_none(url) != 200:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("annotator did not start")
        time.sleep(0.5)
    yield url
    proc.terminate()
    proc.wait(timeout=20)


def test_big_photo_preview_then_full_box_and_no_picture_per_zoom_or_pan(big_app, chromium):
    page = chromium.new_page(viewport={"width": 1366, "height": 768})
    pictures = []
    page.on("request", lambda r: pictures.append(r.url) if "/b2m/api/image" in r.url else None)
    page.goto(f"{big_app}/b2m/", wait_until="load")
    page.wait_for_function("window.b2m && window.b2m.img && window.b2m.W === 6000", timeout=60000)
    assert page.evaluate("window.b2m.img.naturalWidth") == 2048  # the preview first
    page.wait_for_function(
        "window.b2m.full && window.b2m.full.naturalWidth === 6000", timeout=60000
    )
    assert len(pictures) == 2 and "side=2048" in pictures[0] and "side=" not in pictures[1]

    v = page.evaluate("window.b2m.view")
    r = page.locator("#view").bounding_box()
    to_page = lambda x, y: (r["x"] + v["x"] + x * v["s"], r["y"] + v["y"] + y * v["s"])  # noqa: E731
    page.mouse.move(*to_page(1800, 1200))
    page.mouse.down()
    page.mouse.move(*to_page(2700, 2000), steps=4)
    page.mouse.up()
    page.wait_for_function("window.b2m.order.length === 1", timeout=60000)
    label = page.evaluate("window.b2m.labels.get(window.b2m.order[0])")
    (x0, y0, x1, y1), mask = label["box"], label["mask"]
    assert all(abs(a - b) < 12 for a, b in zip(label["box"], (1800, 1200, 2700, 2000), strict=True))
    assert mask["left"] >= x0 - 1 and mask["left"] + mask["w"] <= x1 + 1  # inside its box
    assert mask["top"] >= y0 - 1 and mask["top"] + mask["h"] <= y1 + 1 and mask["w"] > 100

    requests = []
    page.on("request", lambda req: requests.append(req.url))
    page.mouse.move(*to_page(3000, 2000))
    for _ in range(8):  # zoom in past the preview's resolution: the full picture is drawn
        page.mouse.wheel(0, -300)
    page.mouse.down(button="right")
    page.mouse.move(300, 300, steps=5)
    page.mouse.up(button="right")
    page.wait_for_timeout(300)
    assert requests == []
    assert page.evaluate("window.b2m.view.s * 6000 > 2048")
    page.close()
