"""Throughput of `box2mask fiftyone apply`: images/s and boxes/s, 1 vs 2 processes; one table.

    .venv/bin/python -m bench.fiftyone_throughput [--data ../shared/data/balloon] [--limit 74]
        [--repeat 2] [--copies 4] [--device cpu]

Input: a temporary FiftyOne dataset of the first `--limit` images of a COCO dataset, its
ground-truth boxes (masks dropped) in `ground_truth`. Each configuration runs the real command in
fresh processes, one thread per process (OMP_NUM_THREADS=1, as torchrun sets it):
`box2mask fiftyone apply` (1 process) and `torchrun --nproc-per-node 2 -m box2mask fiftyone
apply` (2 processes, gloo), each into a new field. The fixed cost of a run (Python, torch and
FiftyOne imports, database connection, the pending-sample scan, process-group start, the final
schema update) is the same command rerun on a finished field (nothing pending), subtracted for
the "net" rates: scaling efficiency = net time of 1 process / (2 x net time of 2 processes).
Peak RSS is the largest process of a run. `--copies K` adds one more 1-process run on a dataset
listing every image K times: its peak RSS shows whether memory grows with the number of samples.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.common import REPO, SHARED

# runs a command and prints the peak RSS (KiB) of its largest process, waited-for descendants
# included (torchrun waits for its workers), on the last line of stderr
_PEAK_RSS = (
    "import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
    "sys.exit(code)"
)


def make_dataset(fo, data: Path, limit: int, copies: int = 1):
    """A non-persistent dataset of the first `limit` images (each listed `copies` times).

    Returns (dataset, images, boxes) counted over the samples.
    """
    coco = json.loads((data / "annotations.json").read_text())
    names = {c["id"]: c["name"] for c in coco.get("categories", [])}
    images = coco["images"][:limit]
    by_image = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    samples, n_boxes = [], 0
    for _ in range(copies):
        for im in images:
            width, height = im["width"], im["height"]
            dets = [
                fo.Detection(
                    label=names.get(a["category_id"], str(a["category_id"])),
                    bounding_box=[
                        a["bbox"][0] / width,
                        a["bbox"][1] / height,
                        a["bbox"][2] / width,
                        a["bbox"][3] / height,
                    ],
                )
                for a in by_image.get(im["id"], [])
            ]
            n_boxes += len(dets)
            path = str(data / "images" / im["file_name"])
            samples.append(fo.Sample(filepath=path, ground_truth=fo.Detections(detections=dets)))
    dataset = fo.Dataset()
    dataset.add_samples(samples, progress=False)
    return dataset, len(samples), n_boxes


def timed_run(procs: int, dataset_name: str, out_field: str, device: str) -> tuple[float, int]:
    """Wall seconds and peak RSS (MiB, largest process) of one complete apply run."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    args = ["fiftyone", "apply", "--dataset", dataset_name, "--boxes", "ground_truth"]
    args += ["--out", out_field, "--device", device]
    if procs == 1:
        cmd = [sys.executable, "-m", "box2mask", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(procs)]
        cmd += ["--master-port", str(29600 + os.getpid() % 300), "-m", "box2mask", *args]
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS, *cmd], env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    if result.returncode not in (0, 1):
        sys.exit(f"apply failed ({' '.join(cmd)}):\n{result.stderr[-3000:]}")
    return seconds, int(result.stderr.strip().splitlines()[-1]) // 1024


def same_labels(dataset, field_a: str, field_b: str) -> bool:
    """True when two fields hold the same detections (label, box, mask bits, scores) everywhere."""

    def key(det):
        return (det.label, det.bounding_box, det.mask.tobytes(), det.mask.shape, det.confidence)

    for a, b in zip(
        dataset.values(f"{field_a}.detections"),
        dataset.values(f"{field_b}.detections"),
        strict=True,
    ):
        if [key(d) for d in a or []] != [key(d) for d in b or []]:
            return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED / "data" / "balloon")
    parser.add_argument("--limit", type=int, default=74, help="number of images")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--repeat", type=int, default=2, help="runs per configuration (fastest kept)"
    )
    parser.add_argument(
        "--copies", type=int, default=0, help="also: 1 process on every image K times (RSS)"
    )
    args = parser.parse_args()
    import fiftyone as fo

    load_before = os.getloadavg()
    dataset, n_images, n_boxes = make_dataset(fo, args.data, args.limit)
    rows = {}
    try:
        for procs in (1, 2):  # the fastest of --repeat runs: other jobs only ever slow a run down
            runs = [
                timed_run(procs, dataset.name, f"out{procs}_{i}", args.device)
                for i in range(args.repeat)
            ]
            fixed = [
                timed_run(procs, dataset.name, f"out{procs}_0", args.device)
                for _ in range(args.repeat)
            ]
            rows[procs] = (
                min(s for s, _ in runs),
                min(s for s, _ in fixed),
                max(r for _, r in runs),
            )
            print(f"{procs} process(es): {rows[procs]}", file=sys.stderr)
        dataset.reload()
        same = same_labels(dataset, "out1_0", "out2_0")
        big = None
        if args.copies > 1:
            copy, n_copy, _ = make_dataset(fo, args.data, args.limit, args.copies)
            try:
                big = (n_copy, *timed_run(1, copy.name, "out", args.device))
            finally:
                copy.delete()
    finally:
        dataset.delete()
    load_after = os.getloadavg()

    print(
        f"{args.data.name}: {n_images} images, {n_boxes} boxes, device {args.device}, "
        f"1 thread per process, {os.cpu_count()} CPU cores; load average (1 min) "
        f"{load_before[0]:.1f} before, {load_after[0]:.1f} after; "
        f"fields of 1 and 2 processes identical: {same}\n"
    )
    print("| processes | wall s | fixed s | images/s | boxes/s | net images/s | net boxes/s "
          "| peak RSS MiB |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for procs, (total, fixed, rss) in rows.items():
        net = max(total - fixed, 1e-9)
        print(
            f"| {procs} | {total:.1f} | {fixed:.1f} | {n_images / total:.2f} | "
            f"{n_boxes / total:.2f} | {n_images / net:.2f} | {n_boxes / net:.2f} | {rss} |"
        )
    net1, net2 = rows[1][0] - rows[1][1], rows[2][0] - rows[2][1]
    print(f"\nscaling efficiency, 2 processes (net): {net1 / (2 * net2):.2f}")
    print(f"end to end: {rows[1][0] / (2 * rows[2][0]):.2f}")
    if big is not None:
        n_copy, seconds, rss = big
        print(
            f"memory: 1 process on {n_copy} samples ({args.copies} x {n_images}): "
            f"peak RSS {rss} MiB (vs {rows[1][2]} MiB on {n_images}), {n_copy / seconds:.2f} images/s"
        )


if __name__ == "__main__":
    main()
