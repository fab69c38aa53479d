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

With `--browser` it also runs `box2mask annotate` (embedded default) in headless chromium
(/usr/bin/chromium) and times, for the Gradio UI and the canvas front-end (/b2m/), box release ->
mask shown and click -> mask shown, with 1 and with 100 labels on the image, plus the bytes each
event moves; then a 6000 x 4000 photo's time to the first mask (bench/annotator_browser.py).
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
    parser.add_argument(
        "--browser-events", type=int, default=20, help="events per browser row (default 20)"
    )
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
            browser_table(Path(tmp), images_dir, names, args.browser_events)
    return 0


def large_photo(folder: Path) -> Path:
    """A 6000 x 4000 JPEG made on the fly (a demo photo upscaled, with sensor-like grain, so it
    weighs what a camera's does), written into `folder`."""
    photo = cv2.resize(cv2.imread(str(DEMO / "chelsea.png")), (6000, 4000))
    grain = np.random.default_rng(0).normal(0, 6, photo.shape)
    photo = np.clip(photo + grain, 0, 255).astype(np.uint8)
    path = folder / "photo.jpg"
    cv2.imwrite(str(path), photo, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return path


def browser_table(tmp: Path, images_dir: Path, names: list[str], n_events: int) -> None:
    """Gradio UI vs canvas front-end in headless chromium, 1 and 100 labels; then a 6000 x 4000
    photo in the canvas front-end (bench/annotator_browser.py)."""
    from playwright.sync_api import sync_playwright

    from bench import annotator_browser as ab

    shape = load_image(images_dir / names[0]).shape[:2]
    ms = lambda v: f"{1000 * statistics.median(v):.0f} / {1000 * p95(v):.0f}" if v else "-"  # noqa: E731
    rows = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium", headless=True, args=["--no-sandbox"]
        )
        avoid = []  # the same boxes in both UIs, none starting on a stored label
        for before in (0, 99):
            if before:
                avoid = ab.add_labels(images_dir, names[0], before, shape)
            with ab.serve(images_dir) as url:
                for ui, run in (("Gradio (/)", ab.time_gradio), ("canvas (/b2m/)", ab.time_canvas)):
                    r = run(browser, url, shape, n_events, before, avoid=avoid)
                    rows.append((ui, before + 1, r))
        big = tmp / "large"
        big.mkdir()
        photo = large_photo(big)
        with ab.serve(big) as url:
            large = ab.time_large_image(browser, url, (4000, 6000))
        browser.close()
    print(
        f"\nIn headless chromium, {n_events} events per row, load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (median / p95 ms, page clock: "
        "press or release -> first frame showing the answer; bytes per event on the wire):\n"
    )
    print(
        "| UI | labels on the image | box release -> mask shown | click -> mask shown | "
        "of which HTTP box / click (median) | bytes per box | bytes per click | timed out |"
    )
    print("|---|---|---|---|---|---|---|---|")
    med = lambda v: f"{1000 * statistics.median(v):.0f}" if v else "-"  # noqa: E731
    for ui, labels, r in rows:
        http = f"{med(r['box_http'])} / {med(r['click_http'])}" if "box_http" in r else "-"
        nb = [
            statistics.median(r[k]) if r[k] else float("nan") for k in ("box_bytes", "click_bytes")
        ]
        print(
            f"| {ui} | {labels} | {ms(r['box'])} | {ms(r['click'])} | {http} | {nb[0]:.0f} | "
            f"{nb[1]:.0f} | {r['timeouts']} |"
        )
    ratios(rows)
    print(
        f"\n6000 x 4000 JPEG ({photo.stat().st_size / 1e6:.1f} MB) in the canvas front-end: "
        f"navigation -> picture drawn {1000 * large['opened']:.0f} ms, box release -> mask drawn "
        f"{1000 * large['box']:.0f} ms (sum {1000 * (large['opened'] + large['box']):.0f} ms; "
        f"navigation -> first mask drawn, with the scripted drag, {1000 * large['first_mask']:.0f}"
        f" ms); requests made by 5 wheel zooms + a pan: {large['pan_zoom_requests']}"
    )


def ratios(rows) -> None:
    """The targets' ratios: canvas bytes as % of Gradio's; 100 labels vs 1 (p95)."""
    by = {(ui.split()[0], n): r for ui, n, r in rows}
    out = []
    for n in (1, 100):
        old, new = by[("Gradio", n)], by[("canvas", n)]
        for kind in ("box", "click"):
            a, b = old[f"{kind}_bytes"], new[f"{kind}_bytes"]
            if a and b:
                pct = 100 * statistics.median(b) / statistics.median(a)
                out.append(f"{kind} bytes at {n} label(s) {pct:.1f}% of Gradio's")
    for kind in ("box", "click"):
        one, hundred = by[("canvas", 1)][kind], by[("canvas", 100)][kind]
        if one and hundred:
            out.append(f"canvas {kind} p95 at 100 labels / at 1: {p95(hundred) / p95(one):.2f}")
    print("\n" + "; ".join(out) + ".")


if __name__ == "__main__":
    sys.exit(main())
