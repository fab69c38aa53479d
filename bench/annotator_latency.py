"""Annotator latency: time from box release to the mask overlay being ready, one table.

    python -m bench.annotator_latency [--boxes 50] [--size 640] [--checkpoint CKPT ...] [--tiny-random]
                                      [--browser]

Session level, on the bundled demo images resized to `--size` px (longer side): for each of
`--boxes` boxes (random, 48-320 px sides, seeded), one timed step is exactly what the app does
when the mouse is released: `session.on_boxes_changed(boxes)` (model decode of the new box, RLE,
SQLite write with fsync) + `session.overlay()` + the JPEG encode sent to the browser. Boxes
accumulate on each image, as when a person annotates it. Encoding the image (`set_image`) happens
once per image on opening it and is reported apart. Rows: the embedded default, each
`--checkpoint`, and with `--tiny-random` an untrained tiny Box2Mask-T (configs/tiny_cpu.yaml
sizes: the decode cost does not depend on the weights).

With `--browser` it also runs `box2mask annotate` (embedded default) and drags the boxes with the
mouse in headless chromium (/usr/bin/chromium), timing mouse release -> the label list showing the
new mask's label (the overlay image arrives in the same response). Each box is undone before the
next one, so every box is drawn on a free canvas.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from annotator.predictor_service import PredictorService
from annotator.session import AnnotationSession
from annotator.store import SQLiteStore
from bench.common import DEMO, random_checkpoint
from box2mask import build_predictor
from box2mask.io.image_io import load_image


class Timed:
    """Wraps a predictor and records how long each set_image / predict call took (seconds)."""

    def __init__(self, predictor):
        self.inner, self.model_version = predictor, predictor.model_version
        self.set_image_s, self.predict_s = [], []

    def set_image(self, image):
        t = time.perf_counter()
        self.inner.set_image(image)
        self.set_image_s.append(time.perf_counter() - t)

    def predict(self, boxes_xyxy, **options):
        t = time.perf_counter()
        out = self.inner.predict(boxes_xyxy, **options)
        self.predict_s.append(time.perf_counter() - t)
        return out


def make_images(folder: Path, size: int) -> list[str]:
    names = []
    for path in sorted(DEMO.glob("*.png")):
        image = load_image(path)
        h, w = image.shape[:2]
        s = size / max(h, w)
        image = cv2.resize(image, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(folder / path.name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        names.append(path.name)
    return names


def measure(predictor, images_dir: Path, names: list[str], n_boxes: int, seed: int = 0) -> dict:
    """Per-box wall time (s) of release -> overlay JPEG ready, and its parts."""
    timed = Timed(predictor)
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "labels.sqlite", images_dir)
        session = AnnotationSession(store, images_dir, PredictorService(timed), ["object"])
        per_image = -(-n_boxes // len(names))
        totals, overlay_s = [], []
        session.open_image(names[0])
        session.on_boxes_changed([dict(xmin=10, ymin=10, xmax=80, ymax=80)])  # warm-up, not timed
        timed.predict_s.clear()
        for i in range(n_boxes):
            if i % per_image == 0:
                session.open_image(names[i // per_image])
                boxes = []
            h, w = session.image.shape[:2]
            bw, bh = rng.uniform(48, 320, 2)
            x0, y0 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            boxes = boxes + [dict(xmin=x0, ymin=y0, xmax=x0 + bw, ymax=y0 + bh, label="object")]
            t = time.perf_counter()
            session.on_boxes_changed(boxes)
            t_overlay = time.perf_counter()
            ok, _ = cv2.imencode(
                ".jpg",
                cv2.cvtColor(session.overlay(), cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_JPEG_QUALITY, 90],
            )
            end = time.perf_counter()
            totals.append(end - t)
            overlay_s.append(end - t_overlay)
        store.close()
    return dict(
        total=totals, predict=timed.predict_s, overlay=overlay_s, set_image=timed.set_image_s[1:]
    )


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


def measure_browser(images_dir: Path, names: list[str], n_boxes: int, seed: int = 0) -> list[float]:
    """Per-box seconds from mouse release to the app showing the new label, in a real browser."""
    import socket
    import subprocess
    import urllib.request

    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "box2mask", "annotate", str(images_dir), "--port", str(port)]
    app = subprocess.Popen(
        cmd,
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(url, timeout=5)
                break
            except OSError:
                time.sleep(0.5)
        rng = np.random.default_rng(seed)
        times = []
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path="/usr/bin/chromium", headless=True, args=["--no-sandbox"]
            )
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url, wait_until="load")
            page.wait_for_selector("#b2m-annotator canvas", timeout=60000)
            page.wait_for_function("document.querySelector('#b2m-image-info').innerText.length > 0")
            name = page.inner_text("#b2m-image-info").split(":")[0].strip()
            h, w = load_image(images_dir / name).shape[:2]
            c = stable_box(page.locator("#b2m-annotator canvas").first)
            scale = min(c["width"] / w, c["height"] / h)
            ox, oy = c["x"] + (c["width"] - w * scale) / 2, c["y"] + (c["height"] - h * scale) / 2
            count = "document.querySelectorAll('#b2m-labels label').length"
            for _ in range(n_boxes + 1):  # the first one warms up
                bw, bh = rng.uniform(48, 320, 2)
                x0, y0 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
                page.mouse.move(ox + x0 * scale, oy + y0 * scale)
                page.mouse.down()
                page.mouse.move(ox + (x0 + bw) * scale, oy + (y0 + bh) * scale, steps=4)
                t = time.perf_counter()
                page.mouse.up()
                page.wait_for_function(f"{count} === 1", polling=5, timeout=60000)
                times.append(time.perf_counter() - t)
                page.click("#b2m-undo")
                page.wait_for_function(f"{count} === 0", polling=20, timeout=60000)
                time.sleep(1.0)  # let the canvas load the new picture before the next drag
            browser.close()
        return times[1:]
    finally:
        app.terminate()
        app.wait(timeout=30)


def p95(values) -> float:
    return float(np.percentile(values, 95))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boxes", type=int, default=50, help="boxes to time (default 50)")
    parser.add_argument(
        "--size", type=int, default=640, help="longer image side in px (default 640)"
    )
    parser.add_argument(
        "--checkpoint", action="append", default=[], help="a trained checkpoint (repeatable)"
    )
    parser.add_argument(
        "--tiny-random", action="store_true", help="also time an untrained tiny model"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--browser", action="store_true", help="also time it in headless chromium")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        images_dir = Path(tmp) / "images"
        images_dir.mkdir()
        names = make_images(images_dir, args.size)
        checkpoints = [None] + list(args.checkpoint)
        if args.tiny_random:
            checkpoints.append(
                random_checkpoint(
                    Path(tmp) / "tiny.pt", num_classes=1, model_version="tiny-untrained"
                )
            )
        print(
            f"{args.boxes} boxes, {len(names)} images at {args.size} px, device {args.device}, "
            f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f} "
            f"on {os.cpu_count()} cores\n"
        )
        print(
            "| model | release -> overlay median ms | p95 ms | model decode median ms | "
            "store + overlay + JPEG median ms | set_image median ms |"
        )
        print("|---|---|---|---|---|---|")
        for ckpt in checkpoints:
            predictor = build_predictor(ckpt, args.device)
            r = measure(predictor, images_dir, names, args.boxes)
            rest = [t - p for t, p in zip(r["total"], r["predict"], strict=True)]
            ms = lambda v: f"{1000 * v:.0f}"  # noqa: E731
            print(
                f"| {predictor.model_version} | {ms(statistics.median(r['total']))} | "
                f"{ms(p95(r['total']))} | {ms(statistics.median(r['predict']))} | "
                f"{ms(statistics.median(rest))} | {ms(statistics.median(r['set_image']))} |"
            )
        if args.browser:
            t = measure_browser(images_dir, names, args.boxes)
            print(
                f"| in the browser: {build_predictor(None).model_version} (release -> label "
                f"shown) | {ms(statistics.median(t))} | {ms(p95(t))} | | | |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
