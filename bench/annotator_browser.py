"""Browser timings of `box2mask annotate` for bench/annotator_latency.py --browser: the Gradio UI
(`/`) against the canvas front-end (`/b2m/`), box release -> mask shown and click -> mask shown,
on an image holding 0 or 99 labels before the box (so 1 or 100 with it), and the bytes that
cross the network per event (`Bytes`: request line + headers + body sent, headers + body
received, from Chromium's DevTools network events).

Both ends are read on the page's own clock (`performance.now()`): the press or release is taken
by a capture listener on `window` (`PAGE_CLOCK`), and "mask shown" is the first animation frame
at which the page shows the answer. Canvas: `window.b2m.shown`, set in the animation frame after
the page drew the answer on its canvas (annotator/web/index.html). Gradio: an animation-frame
poll (`GRADIO_POLL`) for the new label in the list, the new overlay picture loaded (its resource
timing entry) and the zoom picture loaded.
"""

import base64
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
VIEWPORT = (1400, 1500)  # tall enough that the Gradio zoom view is on screen without scrolling
WAIT_MS = 15000  # an answer later than this counts the event as timed out

# installed before any page script: the time of the last press / release (page clock)
PAGE_CLOCK = """
window.__b2m_t = {};
for (const ev of ["mousedown", "mouseup"])
  window.addEventListener(ev, () => { window.__b2m_t[ev] = performance.now(); }, true);
performance.setResourceTimingBufferSize(100000);
window.__b2m_arm = () => { performance.clearResourceTimings(); window.__b2m_done = null; };
"""

# Gradio: the first frame at which the label list has `n` labels, the overlay picture made
# after the event has loaded and the zoom picture is loaded (Gradio sets them in one update)
GRADIO_POLL = """(n) => { window.__b2m_arm();
  const ok = () => document.querySelectorAll('#b2m-labels label').length === n &&
    performance.getEntriesByType('resource').some((e) => e.name.endsWith('.jpg')) &&
    (() => { const im = document.querySelector('#b2m-crop img');
             return im && im.complete && im.naturalWidth > 0; })();
  const f = () => { if (ok()) window.__b2m_done = performance.now(); else requestAnimationFrame(f); };
  requestAnimationFrame(f); }"""


def add_labels(images_dir: Path, name: str, n: int, shape: tuple, seed: int = 1) -> list:
    """Store `n` labels (small disc masks at random places) on image `name`; their boxes."""
    rng = np.random.default_rng(seed)
    store = SQLiteStore(images_dir / "box2mask_labels.sqlite", images_dir)
    h, w = shape
    yy, xx = np.ogrid[:h, :w]
    boxes = []
    for _ in range(n):
        cx, cy, r = rng.uniform(20, w - 20), rng.uniform(20, h - 20), rng.uniform(6, 18)
        mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
        box = [float(cx - r), float(cy - r), float(cx + r), float(cy + r)]
        store.add(Label(name, box, "object", encode_rle(mask), "model", "seeded", False))
        boxes.append(box)
    store.close()
    return boxes


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
    """Bytes on the wire for the page: sent = request line + headers + body; received = response
    headers + body as encoded (DevTools `encodedDataLength`). A long-lived stream (Gradio's
    event stream) is counted chunk by chunk, so `take()` splits it between events."""

    def __init__(self, page):
        self.sent, self.received, self.counted = 0, 0, {}
        cdp = page.context.new_cdp_session(page)
        cdp.send("Network.enable")
        cdp.on("Network.requestWillBeSent", self._request)
        cdp.on("Network.responseReceived", lambda e: self._got(e, e["response"]))
        cdp.on("Network.dataReceived", lambda e: self._got(e, e))
        cdp.on("Network.loadingFinished", self._finished)

    def _request(self, e):
        r = e["request"]
        body = len(r.get("postData", "").encode())
        if not body:
            entries = r.get("postDataEntries", [])
            body = sum(len(base64.b64decode(x.get("bytes", ""))) for x in entries)
        headers = sum(len(k) + len(str(v)) + 4 for k, v in r.get("headers", {}).items())
        self.sent += len(r["method"]) + len(r["url"]) + 12 + headers + body

    def _got(self, e, holder):
        n = int(holder.get("encodedDataLength", 0) or 0)
        self.counted[e["requestId"]] = self.counted.get(e["requestId"], 0) + n
        self.received += n

    def _finished(self, e):  # the total, where the chunks were reported as 0
        rid, total = e["requestId"], int(e.get("encodedDataLength", 0) or 0)
        self.received += max(0, total - self.counted.get(rid, 0))
        self.counted[rid] = max(total, self.counted.get(rid, 0))

    def take(self) -> int:
        """Bytes sent + received since the last call."""
        value = self.sent + self.received
        self.sent = self.received = 0
        return value


def _drag(page, to_page, box):
    x0, y0, x1, y1 = box
    page.mouse.move(*to_page(x0, y0))
    page.mouse.down()
    page.mouse.move(*to_page(x1, y1), steps=4)
    page.mouse.up()


def _boxes(rng, w, h, n, avoid=()):
    """`n` random boxes whose first corner is 12 px or more from every box in `avoid` (a drag
    starting on a box moves it in the Gradio annotator instead of drawing a new one)."""
    out = []
    while len(out) < n:
        bw, bh = rng.uniform(48, 200, 2)
        x0, y0 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
        if all(not (a - 12 < x0 < c + 12 and b - 12 < y0 < d + 12) for a, b, c, d in avoid):
            out.append((x0, y0, x0 + bw, y0 + bh))
    return out


def _new_page(browser, viewport=VIEWPORT):
    page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
    page.add_init_script(PAGE_CLOCK)
    return page


def _gradio_event(page, n_labels: int, act, press: str) -> float:
    """Seconds from the press/release (`press`: mousedown / mouseup) to the answer shown."""
    page.evaluate(GRADIO_POLL, n_labels)
    act()
    page.wait_for_function("window.__b2m_done !== null", polling=20, timeout=WAIT_MS)
    return page.evaluate(f"(window.__b2m_done - window.__b2m_t.{press}) / 1000")


def time_gradio(browser, url, shape, n_events, before: int, seed=0, avoid=()) -> dict:
    """Old UI: box release -> new label listed with its overlay and zoom pictures loaded; a
    click + in the zoom -> the new overlay and zoom loaded; bytes of each; `before` labels
    already on the image. An event with no answer in WAIT_MS counts in `timeouts`."""
    h, w = shape
    page = _new_page(browser)
    page.goto(url, wait_until="load")
    page.wait_for_function(f"{OLD_COUNT} === {before}", timeout=WAIT_MS)
    time.sleep(1.5)
    c = page.locator("#b2m-annotator canvas").first.bounding_box()
    s = min(c["width"] / w, c["height"] / h)
    ox, oy = c["x"] + (c["width"] - w * s) / 2, c["y"] + (c["height"] - h * s) / 2
    meter, rng = Bytes(page), np.random.default_rng(seed)
    out = dict(box=[], click=[], box_bytes=[], click_bytes=[], timeouts=0)
    page.click("text=click +")
    for i, box in enumerate(_boxes(rng, w, h, n_events + 1, avoid)):
        try:
            meter.take()
            drag = lambda b=box: _drag(page, lambda x, y: (ox + x * s, oy + y * s), b)  # noqa: E731
            dt_box = _gradio_event(page, before + 1, drag, "mouseup")
            nb_box = meter.take()
            time.sleep(0.5)
            meter.take()
            crop = page.locator("#b2m-crop img").bounding_box()  # click off the crop's centre
            at = (crop["x"] + crop["width"] * 0.55, crop["y"] + crop["height"] * 0.55)
            dt_click = _gradio_event(
                page, before + 1, lambda a=at: page.mouse.click(*a), "mousedown"
            )
            if i:  # the first one warms up
                out["box"].append(dt_box)
                out["box_bytes"].append(nb_box)
                out["click"].append(dt_click)
                out["click_bytes"].append(meter.take())
        except Exception as err:  # noqa: BLE001 (Playwright's TimeoutError)
            if "Timeout" not in type(err).__name__:
                raise
            out["timeouts"] += 1
        for _ in range(2):  # undo the click and the box
            page.click("#b2m-undo")
            time.sleep(0.3)
        page.wait_for_function(f"{OLD_COUNT} === {before}", polling=20, timeout=WAIT_MS)
        time.sleep(1.0)
    page.close()
    return out


def _canvas_page(browser, url, viewport=VIEWPORT):
    """The canvas page opened; seconds from navigation to the picture drawn (page clock)."""
    page = _new_page(browser, viewport)
    page.goto(f"{url}/b2m/", wait_until="commit")
    page.wait_for_function("window.b2m && window.b2m.shown", timeout=WAIT_MS, polling=5)
    return page, page.evaluate("window.b2m.shown.at / 1000")


def _to_page(page):
    v = page.evaluate("window.b2m.view")
    r = page.locator("#view").bounding_box()
    return lambda x, y: (r["x"] + v["x"] + x * v["s"], r["y"] + v["y"] + y * v["s"])


SHOWN = "([n, k]) => window.b2m.order.length === n && window.b2m.shown.n > k"
HTTP_MS = """(name) => performance.getEntriesByType('resource')
  .filter((e) => e.name.includes('/b2m/api/' + name)).map((e) => e.duration)"""


def _canvas_event(page, n_labels: int, act, press: str, name: str) -> tuple[float, float]:
    """(seconds press/release -> the answer drawn and a frame passed, seconds of its HTTP)."""
    k = page.evaluate("window.__b2m_arm(), window.b2m.shown.n")
    act()
    page.wait_for_function(SHOWN, arg=[n_labels, k], polling=5, timeout=WAIT_MS)
    dt = page.evaluate(f"(window.b2m.shown.at - window.__b2m_t.{press}) / 1000")
    return dt, sum(page.evaluate(HTTP_MS, name)) / 1000


def time_canvas(browser, url, shape, n_events, before: int, seed=0, avoid=()) -> dict:
    """New UI: the same events; "shown" = the animation frame after the page drew the answer."""
    h, w = shape
    page, _ = _canvas_page(browser, url)
    page.wait_for_function(f"window.b2m.order.length === {before}")
    meter, rng = Bytes(page), np.random.default_rng(seed)
    to_page = _to_page(page)
    out = dict(box=[], click=[], box_bytes=[], click_bytes=[], box_http=[], click_http=[])
    out["timeouts"] = 0
    for i, box in enumerate(_boxes(rng, w, h, n_events + 1, avoid)):
        page.evaluate("window.b2m.mode = 'box'")
        meter.take()
        dt_box, http_box = _canvas_event(
            page, before + 1, lambda b=box: _drag(page, to_page, b), "mouseup", "box"
        )
        nb_box = meter.take()
        page.evaluate("window.b2m.mode = 'pos'")
        at = to_page((box[0] + box[2]) / 2 + 7, (box[1] + box[3]) / 2 + 5)
        dt_click, http_click = _canvas_event(
            page, before + 1, lambda a=at: page.mouse.click(*a), "mousedown", "click"
        )
        if i:
            out["box"].append(dt_box)
            out["box_http"].append(http_box)
            out["box_bytes"].append(nb_box)
            out["click"].append(dt_click)
            out["click_http"].append(http_click)
            out["click_bytes"].append(meter.take())
        page.evaluate(
            "async () => { for (const a of ['undo', 'undo']) await window.b2m_send('action', {name: a}); }"
        )
        page.wait_for_function(f"window.b2m.order.length === {before}")
    page.close()
    return out


def time_large_image(browser, url, shape) -> dict:
    """A big picture in the new UI: navigation -> picture drawn; box release -> its mask drawn;
    and the requests 5 wheel zooms + a pan make (0: both are drawn from the picture the page
    has). Seconds, on the page clock."""
    h, w = shape
    page, opened = _canvas_page(browser, url)
    to_page = _to_page(page)
    box, _ = _canvas_event(
        page,
        1,
        lambda: _drag(page, to_page, (w * 0.3, h * 0.3, w * 0.45, h * 0.5)),
        "mouseup",
        "box",
    )
    first_mask = page.evaluate("window.b2m.shown.at / 1000")
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
    return dict(opened=opened, box=box, first_mask=first_mask, pan_zoom_requests=len(requests))
