"""Throughput of `box2mask segment`: images/s and boxes/s, 1 vs 2 processes, in one run; one table.

    .venv/bin/python -m bench.throughput [--data ../shared/data/balloon] [--limit 24] [--device cpu]
                                         [--model default|tiny|r50] [--image-size PX]
                                         [--segment-args "--batch-images 8 --amp bf16 --channels-last"]

Input: the first `--limit` images of a COCO dataset (its ground-truth boxes, masks dropped).
Each configuration runs the real command in fresh processes, one thread per process
(OMP_NUM_THREADS=1, as torchrun sets it): `box2mask segment` (1 process) and
`torchrun --nproc-per-node 2 -m box2mask segment` (2 processes, gloo on CPU). The fixed cost
of a run (Python + torch import, indexing, writing the output, process-group start) is measured in
the same run with the same images and no boxes, and subtracted for the "net" rates:
scaling efficiency = net time with 1 process / (2 x net time with 2 processes).
Also: `set_image` and per-box `predict` latency of the predictor in this process (1 thread).

`--model tiny|r50` times a RANDOM-INIT checkpoint of configs/tiny_cpu.yaml or
configs/box2mask_r50_coco.yaml (written to a temporary folder, nothing downloaded; the time does
not depend on the weights) at `--image-size` px instead of the embedded default; `--segment-args`
are added to every segment command (e.g. the speed options). On CUDA, 2 processes are timed only
with 2 or more GPUs (one GPU per process).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import REPO, SHARED


def make_input(data: Path, limit: int, folder: Path) -> tuple[Path, Path, int, int]:
    """Write the boxes-only COCO subset and the same images with no boxes; returns paths, counts."""
    coco = json.loads((data / "annotations.json").read_text())
    images = coco["images"][:limit]
    keep = {im["id"] for im in images}
    anns = [
        {k: v for k, v in a.items() if k != "segmentation"}
        for a in coco["annotations"]
        if a["image_id"] in keep
    ]
    subset = {"images": images, "annotations": anns, "categories": coco.get("categories", [])}
    boxes, empty = folder / "boxes.json", folder / "empty.json"
    boxes.write_text(json.dumps(subset))
    empty.write_text(json.dumps({**subset, "annotations": []}))
    return boxes, empty, len(images), len(anns)


def timed_run(
    procs: int, images: Path, boxes: Path, out: Path, device: str, extra: list[str]
) -> float:
    """Wall seconds of one complete segment run with `procs` processes."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    args = ["segment", "--images", str(images), "--boxes", str(boxes), "--out", str(out)]
    args += ["--no-progress", "--device", device, *extra]
    if procs == 1:
        cmd = [sys.executable, "-m", "box2mask", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(procs)]
        cmd += ["--master-port", str(29600 + os.getpid() % 300), "-m", "box2mask", *args]
    start = time.perf_counter()
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode not in (0, 1):
        sys.exit(f"segment failed ({' '.join(cmd)}):\n{result.stderr[-3000:]}")
    return seconds


def predictor_latency(
    data: Path, boxes: Path, device: str, checkpoint: Path | None, options: dict
) -> tuple[float, float, str]:
    """Median set_image ms and median predict ms per box over the images; and the image sizes."""
    import box2mask
    from box2mask.io.image_io import load_image
    from box2mask.ops.box_ops import xywh_to_xyxy

    torch.set_num_threads(1)
    coco = json.loads(boxes.read_text())
    by_image = {}
    for a in coco["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a["bbox"])
    predictor = box2mask.build_predictor(checkpoint, device=device, **options)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    set_ms, box_ms, sides = [], [], []
    for im in coco["images"]:
        if im["id"] not in by_image:
            continue
        image = load_image(data / "images" / im["file_name"])
        sides.append(max(image.shape[:2]))
        sync()
        start = time.perf_counter()
        predictor.set_image(image)
        sync()
        set_ms.append(1000 * (time.perf_counter() - start))
        boxes_xyxy = xywh_to_xyxy(np.array(by_image[im["id"]], dtype=np.float64))
        start = time.perf_counter()
        predictor.predict(boxes_xyxy)
        sync()
        box_ms.append(1000 * (time.perf_counter() - start) / len(boxes_xyxy))
    set_ms, box_ms = set_ms[1:] or set_ms, box_ms[1:] or box_ms  # the first image warms up
    return (
        statistics.median(set_ms),
        statistics.median(box_ms),
        f"long side {min(sides)}-{max(sides)} px",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED / "data" / "balloon")
    parser.add_argument("--limit", type=int, default=24, help="number of images")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--repeat", type=int, default=2, help="runs per configuration (fastest kept)"
    )
    parser.add_argument("--model", default="default", choices=["default", "tiny", "r50"])
    parser.add_argument("--image-size", type=int, default=1024, help="network input, --model")
    parser.add_argument("--segment-args", default="", help="more segment options, one string")
    args = parser.parse_args()
    extra = args.segment_args.split()
    if args.device == "cuda" and torch.cuda.device_count() < 2:
        process_counts = (1,)  # one GPU per process
    else:
        process_counts = (1, 2)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        boxes, empty, n_images, n_boxes = make_input(args.data, args.limit, folder)
        images = args.data / "images"
        checkpoint = None
        if args.model != "default":
            from bench.common import random_checkpoint

            checkpoint = random_checkpoint(
                folder / "model.pt", args.model, config={"image_size": args.image_size}
            )
            extra = ["--checkpoint", str(checkpoint), *extra]
        rows = {}
        for procs in process_counts:  # the fastest of --repeat runs: other jobs only slow it
            fixed = min(
                timed_run(procs, images, empty, folder / f"empty{procs}.json", args.device, extra)
                for _ in range(args.repeat)
            )
            total = min(
                timed_run(procs, images, boxes, folder / f"out{procs}.json", args.device, extra)
                for _ in range(args.repeat)
            )
            rows[procs] = (total, fixed)
            print(f"{procs} process(es): {total:.1f} s, fixed {fixed:.1f} s", file=sys.stderr)
        same = "-"
        if len(rows) == 2:
            same = (folder / "out1.json").read_bytes() == (folder / "out2.json").read_bytes()
        options = _speed_options(args.segment_args.split())
        set_ms, box_ms, sides = predictor_latency(
            args.data, boxes, args.device, checkpoint, options
        )

    where = args.device
    if args.device == "cuda":
        where = f"cuda ({torch.cuda.get_device_name(0)}, {torch.cuda.device_count()} GPU(s))"
    model = "embedded default (level set)"
    if args.model != "default":
        model = f"{args.model} random-init checkpoint, network input {args.image_size} px"
    print(f"{args.data.name}: {n_images} images, {n_boxes} boxes ({sides}), device {where}, ")
    print(f"model: {model}; segment options: {args.segment_args or 'none'}")
    print(
        f"1 thread per process, {os.cpu_count()} CPU cores, load average "
        f"{os.getloadavg()[0]:.1f}; outputs of 1 and 2 processes identical: {same}\n"
    )
    print("| processes | wall s | fixed s | images/s | boxes/s | net images/s | net boxes/s |")
    print("|---|---|---|---|---|---|---|")
    for procs, (total, fixed) in rows.items():
        net = max(total - fixed, 1e-9)
        print(
            f"| {procs} | {total:.1f} | {fixed:.1f} | {n_images / total:.2f} | {n_boxes / total:.2f} "
            f"| {n_images / net:.2f} | {n_boxes / net:.2f} |"
        )
    if len(rows) == 2:
        net1, net2 = rows[1][0] - rows[1][1], rows[2][0] - rows[2][1]
        print(f"\nscaling efficiency, 2 processes (net): {net1 / (2 * net2):.2f}")
        print(f"end to end: {rows[1][0] / (2 * rows[2][0]):.2f}")
    print(
        f"predictor in one thread: set_image {set_ms:.1f} ms (median), predict {box_ms:.1f} ms per box (median)"
    )


def _speed_options(segment_args: list[str]) -> dict:
    """The predictor options that --amp / --channels-last / --compile in segment_args ask for."""
    options = {}
    if "--amp" in segment_args:
        options["amp"] = segment_args[segment_args.index("--amp") + 1]
    if "--channels-last" in segment_args:
        options["channels_last"] = True
    if "--compile" in segment_args:
        options["compile"] = True
    return options


if __name__ == "__main__":
    main()
