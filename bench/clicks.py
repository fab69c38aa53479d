"""Corrective clicks measured by the robot annotator: one table, all methods in one run.

    python -m bench.clicks --data ../shared/data/balloon [--split all|train|val] [--stride K]
                           [--max-clicks 20] [--checkpoint CKPT ...] [--methods default,disc,grabcut]
                           [--threads 1]

Protocol (RITM, SimpleClick, SAM; `train/robot_clicks.py`): the prompt is each GT mask's tight
box; the robot's next click goes to the pixel deepest inside the error, positive on a missed
object pixel, negative on a false one; every click so far goes with the box, at most
`--max-clicks`. A predictor that takes `init_masks` also gets its previous mask, as the
annotator sends it (a click refines the mask it sees). An instance stops once it has had 10
clicks and has reached IoU 0.90 (no column depends on later clicks), or when no error is left.

Columns: mIoU after 0/1/2/3/5/10 clicks; NoC@85 / NoC@90, the mean number of clicks to reach
IoU 0.85 / 0.90 (`--max-clicks` when never reached); the share of instances never reaching 0.90;
NoC@90 and mIoU after 3 clicks by COCO size of the GT mask (small < 32^2, medium < 96^2, large);
the share of clicks that lowered the IoU; median ms of a box's first mask (ms / box) and of a
click's new mask (ms / click), one box per call, set_image excluded.
"""

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from box2mask.ops.metrics import mask_iou
from box2mask.segment.image import takes_init_masks
from train.box_prompt_eval import load_dataset
from train.robot_clicks import next_click

CURVE = (0, 1, 2, 3, 5, 10)  # mIoU columns: after this many clicks
BUCKETS = ("small", "medium", "large")
STOP_AFTER = 10  # clicks an instance gets at least (the last mIoU column)


class GrabCutClicks:
    """Baseline: OpenCV GrabCut on a crop around the box (grown by `crop_frac` x its side +
    `crop_px`), the box as the probable object, every click a hard seed disc of `seed_radius`
    image pixels (object or background), `iterations` iterations from the box each call."""

    model_version = "grabcut-crop-seeds"

    def __init__(self, iterations=5, seed_radius=5, crop_frac=0.25, crop_px=10):
        self.iterations, self.seed_radius = iterations, seed_radius
        self.crop_frac, self.crop_px = crop_frac, crop_px

    def set_image(self, image):
        self._bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)

    def _one(self, box, points, labels):
        height, width = self._bgr.shape[:2]
        x0, y0, x1, y1 = np.round(box).astype(int)
        mx = int(self.crop_frac * (x1 - x0) + self.crop_px)
        my = int(self.crop_frac * (y1 - y0) + self.crop_px)
        cx0, cy0 = max(x0 - mx, 0), max(y0 - my, 0)
        cx1, cy1 = min(x1 + mx, width), min(y1 + my, height)
        patch = np.ascontiguousarray(self._bgr[cy0:cy1, cx0:cx1])
        seeds = np.full(patch.shape[:2], cv2.GC_BGD, dtype=np.uint8)
        seeds[y0 - cy0 : y1 - cy0, x0 - cx0 : x1 - cx0] = cv2.GC_PR_FGD
        for (x, y), label in zip(points, labels, strict=True):
            value = cv2.GC_FGD if label else cv2.GC_BGD
            centre = (int(x) - cx0, int(y) - cy0)
            cv2.circle(seeds, centre, self.seed_radius, value, thickness=-1)
        full = np.zeros((height, width), dtype=bool)
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        try:
            cv2.grabCut(patch, seeds, None, bgd, fgd, self.iterations, cv2.GC_INIT_WITH_MASK)
        except cv2.error:  # degenerate crop (no background or object sample): the box itself
            full[y0:y1, x0:x1] = True
            return full
        full[cy0:cy1, cx0:cx1] = (seeds == cv2.GC_FGD) | (seeds == cv2.GC_PR_FGD)
        full[:y0], full[y1:], full[:, :x0], full[:, x1:] = False, False, False, False
        return full

    def predict(self, boxes_xyxy, points=None, point_labels=None):
        points = np.zeros((0, 2)) if points is None else np.asarray(points).reshape(-1, 2)
        labels = np.zeros(0) if point_labels is None else np.asarray(point_labels).reshape(-1)
        masks = np.stack([self._one(b, points, labels) for b in boxes_xyxy])
        return masks, np.ones(len(boxes_xyxy), dtype=np.float32)


@dataclass
class Track:
    """One method's results over the instances run so far."""

    ious: list = field(default_factory=list)  # per instance: IoU after 0..max_clicks clicks
    areas: list = field(default_factory=list)  # per instance: GT mask area, pixels
    lowered: int = 0  # clicks whose new mask had a lower IoU than the one before
    clicks: int = 0  # clicks made in all
    box_ms: list = field(default_factory=list)  # ms of each box's first mask
    click_ms: list = field(default_factory=list)  # ms of each click's new mask


def run_instance(predictor, gt, box, track: Track, max_clicks: int, previous: bool) -> None:
    """The robot's clicks on one instance (the predictor holds its image); appends to `track`."""
    ys, xs = np.nonzero(gt)
    boxes = np.asarray(box, dtype=np.float64)[None]
    start = time.perf_counter()
    pred = predictor.predict(boxes)[0][0]
    track.box_ms.append((time.perf_counter() - start) * 1000)
    ious = [mask_iou(pred, gt)]
    points, labels = [], []
    clicked = np.zeros_like(gt)
    while len(points) < max_clicks and not (len(points) >= STOP_AFTER and max(ious) >= 0.90):
        click = next_click(gt, pred, clicked)
        if click is None:  # nothing left to correct
            break
        x, y, label = click
        clicked[int(y), int(x)] = True
        points.append((x, y))
        labels.append(label)
        options = {"points": np.array(points), "point_labels": np.array(labels, dtype=np.int64)}
        if previous:
            options["init_masks"] = pred[None]
        start = time.perf_counter()
        pred = predictor.predict(boxes, **options)[0][0]
        track.click_ms.append((time.perf_counter() - start) * 1000)
        ious.append(mask_iou(pred, gt))
        track.clicks += 1
        track.lowered += ious[-1] < ious[-2] - 1e-9
    ious += [ious[-1]] * (max_clicks + 1 - len(ious))  # the mask stays as it is
    track.ious.append(ious)
    track.areas.append(len(xs))


def run_robot(predictors: dict, items, max_clicks=20, stride=1, progress=True) -> dict:
    """{name: Track} for every predictor over every `stride`-th instance of `items`
    (`load_dataset`'s list). `predictors`: {name: (predictor, previous)}, `previous` True to
    send each click with the previous mask as `init_masks`."""
    from box2mask.io.image_io import load_image

    tracks = {name: Track() for name in predictors}
    count = 0
    for path, instances in tqdm(items, desc="images", disable=not progress, file=sys.stderr):
        chosen = [inst for k, inst in enumerate(instances, start=count) if k % stride == 0]
        count += len(instances)
        if not chosen:
            continue
        image = load_image(path)
        for name, (predictor, previous) in predictors.items():
            predictor.set_image(image)
            for gt, box in chosen:
                run_instance(predictor, gt, box, tracks[name], max_clicks, previous)
    return tracks


def summarize(track: Track, max_clicks: int) -> dict:
    """The table's numbers for one method (see the module docstring)."""
    ious = np.array(track.ious)  # (I, max_clicks + 1)
    areas = np.array(track.areas)

    def noc(values, threshold):
        reached = values >= threshold
        return np.where(reached.any(1), reached.argmax(1), max_clicks)

    buckets = {"small": areas < 32**2, "medium": (areas >= 32**2) & (areas < 96**2)}
    buckets["large"] = areas >= 96**2
    row = {f"miou_{k}": float(ious[:, min(k, max_clicks)].mean()) for k in CURVE}
    row.update(
        count=len(ious),
        noc_85=float(noc(ious, 0.85).mean()),
        noc_90=float(noc(ious, 0.90).mean()),
        never_90=float((~(ious >= 0.90).any(1)).mean()),
        lowered=track.lowered / max(track.clicks, 1),
        ms_box=float(np.median(track.box_ms)),
        ms_click=float(np.median(track.click_ms)) if track.click_ms else float("nan"),
    )
    for name, members in buckets.items():
        part = ious[members]
        row[f"count_{name}"] = len(part)
        row[f"noc_90_{name}"] = float(noc(part, 0.90).mean()) if len(part) else float("nan")
        row[f"miou_3_{name}"] = float(part[:, min(3, max_clicks)].mean()) if len(part) else np.nan
    return row


def format_table(rows: dict) -> str:
    """A Markdown table of `summarize` rows."""
    curve = " | ".join(f"{k}" for k in CURVE)
    sizes = "S / M / L"
    lines = [
        f"| method | mIoU after {curve} clicks | NoC@85 | NoC@90 | never >= 0.90 | "
        f"NoC@90 {sizes} | mIoU@3 {sizes} | clicks lowering IoU | ms / box | ms / click |",
        "|---|" + "---|" * (len(CURVE) + 9),
    ]

    def fmt(value, digits=3):
        return "-" if value != value else f"{value:.{digits}f}"  # NaN -> "-"

    for name, r in rows.items():
        curve = " | ".join(fmt(r[f"miou_{k}"]) for k in CURVE)
        noc_sizes = " / ".join(fmt(r[f"noc_90_{b}"], 1) for b in BUCKETS)
        miou_sizes = " / ".join(fmt(r[f"miou_3_{b}"]) for b in BUCKETS)
        lines.append(
            f"| {name} | {curve} | {fmt(r['noc_85'], 2)} | {fmt(r['noc_90'], 2)} "
            f"| {r['never_90']:.1%} | {noc_sizes} | {miou_sizes} | {r['lowered']:.1%} "
            f"| {fmt(r['ms_box'], 1)} | {fmt(r['ms_click'], 1)} |"
        )
    return "\n".join(lines)


def build_methods(names, checkpoints, device="cpu") -> dict:
    """{table name: (predictor, previous)} for the named methods (`METHODS`) and the
    checkpoints (which get the previous mask when their predict takes `init_masks`, as the
    annotator sends it: `takes_init_masks`)."""
    from box2mask import build_predictor

    predictors = {}
    for name in names:
        title, make, previous = METHODS[name]
        predictors[title] = (make(device), previous)
    for ckpt in checkpoints:
        path = Path(ckpt)
        label = f"{path.parent.name}/{path.name}" if path.name == "last.pt" else path.name
        predictor = build_predictor(ckpt, device=device)
        predictors[f"checkpoint {label}"] = (predictor, takes_init_masks(predictor))
    return predictors


def _default(device):
    from box2mask import build_predictor

    return build_predictor(None, device)


def _disc(device):
    """The default with clicks as before #27: a pinned disc, the box evolved again."""
    from box2mask.levelset.segmenter import LevelSetConfig, LevelSetSegmenter

    return LevelSetSegmenter(LevelSetConfig(click_mode="disc"), device=device)


METHODS = {  # --methods name: (table name, maker(device), clicks sent with the previous mask)
    "default": ("embedded default", _default, True),
    "disc": ("default, disc pin (before #27)", _disc, False),
    "grabcut": ("GrabCut crop, 5 px seeds, 5 it.", lambda device: GrabCutClicks(), False),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="dataset folder: annotations.json + images/")
    parser.add_argument("--split", default="all", choices=["all", "train", "val"])
    parser.add_argument("--stride", type=int, default=1, help="every K-th instance only")
    parser.add_argument("--max-clicks", type=int, default=20, help="clicks per instance at most")
    parser.add_argument("--checkpoint", nargs="*", default=[], help="trained models to add")
    parser.add_argument(
        "--methods",
        default=",".join(METHODS),
        help=f"comma-separated, from {','.join(METHODS)} (default: all)",
    )
    parser.add_argument("--device", default="cpu", help="device for the default and checkpoints")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch and OpenCV")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    names = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(names) - set(METHODS))
    if unknown:
        parser.error(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    predictors = build_methods(names, args.checkpoint, args.device)
    items = load_dataset(args.data, args.split)
    tracks = run_robot(predictors, items, args.max_clicks, args.stride)
    rows = {name: summarize(track, args.max_clicks) for name, track in tracks.items()}
    count = next(iter(rows.values()))["count"] if rows else 0
    print(
        f"\n{Path(args.data).name}, split {args.split}, every {args.stride} instance(s): {count}, "
        f"GT tight boxes, at most {args.max_clicks} clicks, {args.device}, {args.threads} "
        "thread(s)\n"
    )
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
