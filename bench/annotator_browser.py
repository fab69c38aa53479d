"""Browser timings of `box2mask annotate` for bench/annotator_latency.py --browser: the Gradio UI
(`/`) against the canvas front-end (`/b2m/`), box release -> mask shown and click -> mask shown,
on an image holding 0 or 99 labels before the box (so 1 or 100 with it), and the bytes that
cross the network per event (request bodies + received data, from Chromium's DevTools events).
"""

import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from annotator.store import Label, SQLiteStore
from box2mask.io.rle import encode_rle

__all__ = ["add_labels", "serve", "Bytes", "time_gradio", "time_canvas", "time_large_image"]

REPO = Path(__file__).resolve().parents[1]
OLD_COUNT = "document.querySelectorAll('#b2m-labels label').length"


def add_labels(images_dir: Path, name: str, n: int, shape: tuple, seed: int = 1) -> None:
    """Store `n` labels (small disc masks at random places) on image `name`."""
    rng = np.random.default_rng(seed)
    store = SQLiteStore(images_dir / "box2mask_labels.sqlite", images_dir)
    h, w = shape
    yy, xx = np.ogrid[:h, :w]
    for _ in range(n):
        cx, cy, r = rng.uniform(20, w - 20), rng.uniform(20, h - 20), rng.uniform(6, 18)
        mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
        box = [float(cx - r), float(cy - r), float(cx + r), float(cy + r)]
        store.add(Label(name, box, "object", encode_rle(mask), "model", "seeded", False))
    store.close()


@contextmanager
def serve(images_dir: Path):
    """`box2mask annotate images_dir` on a free port; yields its URL."""
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "box2mask", "annotate", str(images_dir), "--port", str(port)]
    app = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(url, timeout=5)
                break
            except OSError:
                time.sleep(0.5)
        yield url
    finally:
        app.terminate()
        app.wait(timeout=30)


class Bytes:
    """Bytes sent (request bodies) + received (encoded data) by the page, from DevTools."""

    def __init__(self, page):
        self.total = 0
        cdp = page.context.new_cdp_session(page)
        cdp.send("Network.enable")
        cdp.on("Network.dataReceived", lambda e: self._add(e.get("encodedDataLength", 0)))
        cdp.on(
            "Network.requestWillBeSent", lambda e: self._add(len(e["request"].get("postData", "")))
        )

    def _add(self, n):
        self.total += int(n)

    def take(self) -> int:
        value, self.total = self.total, 0
        return value


def _drag(page, to_page, box):
    x0, y0, x1, y1 = box
    page.mouse.move(*to_page(x0, y0))
    page.mouse.down()
    page.mouse.move(*to_page(x1, y1), steps=4)
    t = time.perf_counter()
    page.mouse.up()
    return t


def _boxes(rng, w, h, n):
    out = []
    for _ in range(n):
        bw, bh = rng.uniform(48, 200, 2)
        x0, y0 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
        out.append((x0, y0, x0 + bw, y0 + bh))
    return out


def time_gradio(browser, url, shape, n_events, before: int, seed=0) -> dict:
    """Old UI: per event seconds (box release -> label listed; click in the zoom -> zoom
    redrawn) and bytes; `before` labels already on the image."""
    h, w = shape
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url, wait_until="load")
    page.wait_for_function(f"{OLD_COUNT} === {before}", timeout=60000)
    time.sleep(1.5)
    c = page.locator("#b2m-annotator canvas").first.bounding_box()
    s = min(c["width"] / w, c["height"] / h)
    ox, oy = c["x"] + (c["width"] - w * s) / 2, c["y"] + (c["height"] - h * s) / 2
    meter, rng = Bytes(page), np.random.default_rng(seed)
    out = dict(box=[], click=[], box_bytes=[], click_bytes=[])
    page.click("text=click +")
    for i, box in enumerate(_boxes(rng, w, h, n_events + 1)):
        meter.take()
        t = _drag(page, lambda x, y: (ox + x * s, oy + y * s), box)
        page.wait_for_function(f"{OLD_COUNT} === {before + 1}", polling=5, timeout=60000)
        page.wait_for_function("document.querySelector('#b2m-crop img')", polling=5)
        dt, nb = time.perf_counter() - t, meter.take()
        src = page.get_attribute("#b2m-crop img", "src")
        time.sleep(0.5)
        meter.take()
        t = time.perf_counter()
        page.locator("#b2m-crop img").click()
        page.wait_for_function(
            f"document.querySelector('#b2m-crop img').src !== {src!r}", polling=5, timeout=60000
        )
        if i:  # the first one warms up
            out["box"].append(dt)
            out["box_bytes"].append(nb)
            out["click"].append(time.perf_counter() - t)
            out["click_bytes"].append(meter.take())
        for _ in range(2):  # undo the click and the box
            page.click("#b2m-undo")
            time.sleep(0.3)
        page.wait_for_function(f"{OLD_COUNT} === {before}", polling=20, timeout=60000)
        time.sleep(1.0)
    page.close()
    return out


def _canvas_page(browser, url, viewport=(1400, 1000)):
    page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
    t0 = time.perf_counter()
    page.goto(f"{url}/b2m/", wait_until="load")
    page.wait_for_function("window.b2m && window.b2m.img", timeout=60000, polling=5)
    return page, time.perf_counter() - t0


def _to_page(page):
    v = page.evaluate("window.b2m.view")
    r = page.locator("#view").bounding_box()
    return lambda x, y: (r["x"] + v["x"] + x * v["s"], r["y"] + v["y"] + y * v["s"])


SHOWN = "(n) => window.b2m.order.length === n && window.b2m.answers > {}"


def time_canvas(browser, url, shape, n_events, before: int, seed=0) -> dict:
    """New UI: the same events; "shown" = the page drew the answer on its canvas."""
    h, w = shape
    page, _ = _canvas_page(browser, url)
    page.wait_for_function(f"window.b2m.order.length === {before}")
    meter, rng = Bytes(page), np.random.default_rng(seed)
    to_page = _to_page(page)
    out = dict(box=[], click=[], box_bytes=[], click_bytes=[])
    for i, box in enumerate(_boxes(rng, w, h, n_events + 1)):
        page.evaluate("window.b2m.mode = 'box'")
        drawn = page.evaluate("window.b2m.answers")
        meter.take()
        t = _drag(page, to_page, box)
        page.wait_for_function(SHOWN.format(drawn), arg=before + 1, polling=5)
        dt, nb = time.perf_counter() - t, meter.take()
        page.evaluate("window.b2m.mode = 'pos'")
        drawn = page.evaluate("window.b2m.answers")
        t = time.perf_counter()
        page.mouse.click(*to_page((box[0] + box[2]) / 2 + 7, (box[1] + box[3]) / 2 + 5))
        page.wait_for_function(SHOWN.format(drawn), arg=before + 1, polling=5)
        if i:
            out["box"].append(dt)
            out["box_bytes"].append(nb)
            out["click"].append(time.perf_counter() - t)
            out["click_bytes"].append(meter.take())
        page.evaluate(
            "async () => { for (const a of ['undo', 'undo']) await window.b2m_send('action', {name: a}); }"
        )
        page.wait_for_function(f"window.b2m.order.length === {before}")
    page.close()
    return out


def time_large_image(browser, url, shape) -> dict:
    """A big picture in the new UI: open -> picture shown; open -> first mask shown; and the
    requests a wheel zoom + a pan make (0: both are drawn from the picture the page has)."""
    h, w = shape
    t0 = time.perf_counter()
    page, opened = _canvas_page(browser, url)
    to_page = _to_page(page)
    _drag(page, to_page, (w * 0.3, h * 0.3, w * 0.45, h * 0.5))
    page.wait_for_function("window.b2m.order.length === 1", polling=5)
    first_mask = time.perf_counter() - t0
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    page.mouse.move(*to_page(w / 2, h / 2))
    for _ in range(5):
        page.mouse.wheel(0, -200)
    page.mouse.down(button="right")
    page.mouse.move(300, 300, steps=5)
    page.mouse.up(button="right")
    page.wait_for_timeout(300)
    page.close()
    return dict(opened=opened, first_mask=first_mask, pan_zoom_requests=len(requests))
