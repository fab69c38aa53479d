"""Predictor latency: set_image and per-box decode, tiny and R50 configs, 512 and 1024 px; one table.

    .venv/bin/python -m bench.latency [--device cpu|cuda] [--sizes 512 1024] [--models tiny r50 default]
                                      [--repeat 5] [--compile] [--threads 1]

For each model and size, one demo photo (demo/astronaut.png) is resized so its long side is the
size, and the network input is that size too (`image_size`). Timed, after two warm-up calls, as
the median of `--repeat` calls (CUDA synchronised before and after every call):
- set_image: one image (`set_image`); on CUDA also `encode_states` of 4 images of that size in
  one forward pass, per image;
- decode: `predict` for 1 box and for 50 boxes (random, 5-30% of the image side, seeded) after
  set_image, per box: the decoder, the crop, the threshold and the paste into (N, H, W) NumPy
  masks; and 10 of the boxes with 10 steps of level-set refinement (batched on the device;
  its (N, mask_dim, S, S) feature crops, S up to 256, need about 3 GB for R50 on a CPU).
Models: `tiny` (configs/tiny_cpu.yaml) and `r50` (configs/box2mask_r50_coco.yaml, 100 queries,
9 decoder layers), both RANDOM-INIT (no download; the time does not depend on the weights), and
`default`, the embedded level-set segmenter (no network). On CUDA each model runs in float32
(TF32 off) and with AMP (bf16, or fp16 where the GPU has no bf16) + channels_last (+ torch.compile
with --compile). Issue 9 targets on a GPU: decode <= 3 ms per box, R50 set_image at 1024 px
<= 30 ms with AMP.
"""

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from bench.common import REPO, random_model
from box2mask.io.image_io import load_image
from box2mask.levelset.segmenter import LevelSetSegmenter
from box2mask.model.predictor import Box2MaskPredictor


def test_image(size: int) -> np.ndarray:
    """demo/astronaut.png resized so that its long side is `size` px (aspect kept)."""
    image = load_image(REPO / "demo" / "astronaut.png")
    h, w = image.shape[:2]
    s = size / max(h, w)
    return cv2.resize(image, (round(w * s), round(h * s)), interpolation=cv2.INTER_LINEAR)


def random_boxes(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """(n, 4) XYXY boxes with sides 5-30% of the long image side, inside the image."""
    rng = np.random.default_rng(seed)
    side = max(height, width)
    bw = np.minimum(rng.uniform(0.05, 0.3, n) * side, width - 1)
    bh = np.minimum(rng.uniform(0.05, 0.3, n) * side, height - 1)
    x0, y0 = rng.uniform(0, width - bw), rng.uniform(0, height - bh)
    return np.stack([x0, y0, x0 + bw, y0 + bh], axis=1)


def median_ms(fn, repeat: int, device: torch.device, warmup: int = 2) -> float:
    """Median wall time of fn() in ms; CUDA is synchronised before and after each call."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def measure(predictor, image: np.ndarray, repeat: int, device: torch.device) -> dict:
    """set_image ms, encode_states(4 images) ms per image (None if not batched), decode ms/box."""
    h, w = image.shape[:2]
    one, fifty = random_boxes(1, h, w), random_boxes(50, h, w)
    row = {"set_image": median_ms(lambda: predictor.set_image(image), repeat, device)}
    if getattr(predictor, "batch_encode", False):
        batch = [image] * 4
        row["batch4"] = median_ms(lambda: predictor.encode_states(batch), repeat, device) / 4
    predictor.set_image(image)
    row["box1"] = median_ms(lambda: predictor.predict(one), repeat, device)
    row["box50"] = median_ms(lambda: predictor.predict(fifty), repeat, device) / 50
    if isinstance(predictor, Box2MaskPredictor):  # 10 boxes: (N, mask_dim, S, S) crops are big
        refine = lambda: predictor.predict(fifty[:10], steps=10)  # noqa: E731
        row["refine10"] = median_ms(refine, repeat, device) / 10
    return row


def variants(device: torch.device, compile: bool) -> list[tuple[str, dict]]:
    """(label, predictor options) to time: float32, and on CUDA AMP + channels_last (+ compile)."""
    rows = [("fp32", {})]
    if device.type == "cuda":
        amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        rows.append((f"{amp} + channels_last", {"amp": amp, "channels_last": True}))
        if compile:
            options = {"amp": amp, "channels_last": True, "compile": True}
            rows.append((f"{amp} + channels_last + compile", options))
    return rows


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{props.name} ({props.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}"
    model = platform.processor() or "CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {torch.get_num_threads()} torch thread(s) of {os.cpu_count()} cores"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--models", nargs="+", default=["tiny", "r50", "default"])
    parser.add_argument("--repeat", type=int, default=5, help="timed calls per cell (median)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (CUDA)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":  # float32 means float32
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.benchmark = True
    load_before = os.getloadavg()[0]
    rows = []
    for name in args.models:
        for size in args.sizes:
            image = test_image(size)
            if name == "default":
                runs = [("embedded default (level set)", "fp32", None)]
            else:
                runs = [
                    (f"{name} (random init)", label, o)
                    for label, o in variants(device, args.compile)
                ]
            for model_name, label, options in runs:
                if options is None:
                    predictor = LevelSetSegmenter(device=str(device))
                else:  # a fresh model each time: channels_last converts the weights in place
                    model = random_model(name)
                    predictor = Box2MaskPredictor(
                        model, device=str(device), image_size=size, **options
                    )
                rows.append(
                    (model_name, label, image.shape, measure(predictor, image, args.repeat, device))
                )
                print(f"done: {model_name} {label} {size} px", file=sys.stderr)
                del predictor
    load_after = os.getloadavg()[0]

    print(f"device: {device_name(device)}; torch {torch.__version__}")
    print(
        f"load average {load_before:.1f} before, {load_after:.1f} after, on {os.cpu_count()} "
        f"cores; median of {args.repeat} calls after 2 warm-up calls; weights random-init\n"
    )
    ms = lambda v: "-" if v is None else f"{v:.1f}" if v >= 1 else f"{v:.2f}"  # noqa: E731
    print(
        "| model | precision | image (W x H) | set_image ms | set_image ms/image, batch of 4 "
        "| decode 1 box ms | decode 50 boxes ms/box | 10 boxes + 10 level-set steps ms/box |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for model_name, label, shape, row in rows:
        print(
            f"| {model_name} | {label} | {shape[1]} x {shape[0]} | {ms(row['set_image'])} "
            f"| {ms(row.get('batch4'))} | {ms(row['box1'])} | {ms(row['box50'])} "
            f"| {ms(row.get('refine10'))} |"
        )
    if device.type == "cuda":
        for model_name, label, shape, row in rows:
            if model_name.startswith("r50") and label != "fp32" and max(shape[:2]) == 1024:
                verdict = "met" if row["set_image"] <= 30 else "NOT met"
                print(f"\ntarget R50 set_image at 1024 px <= 30 ms ({label}): {verdict}")
        worst = max(row["box50"] for name, _, _, row in rows if not name.startswith("embedded"))
        print(f"target decode <= 3 ms per box (worst, 50 boxes): {ms(worst)} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
