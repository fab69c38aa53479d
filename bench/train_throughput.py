"""Training throughput: images/s and peak memory of one optimizer step, per config.

    python -m bench.train_throughput [--device cpu|cuda] [--steps 3] [--threads 1]
        [--case tiny:configs/tiny_cpu.yaml:320:4] [--case r50:configs/box2mask_r50_coco.yaml:256:2]

Each case (name:config:image size:batch) runs in its own process (so peak memory is its own) on a
synthetic batch (random images, 8 random boxes per image, boxes only like real training): one
warm-up step, then `--steps` timed steps of forward + losses (level-set on) + backward + AdamW.
Peak memory is torch.cuda.max_memory_allocated on CUDA, the process's peak RSS on CPU. The CPU
load average is printed with the table: on a shared machine, compare rows of the same run only.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

from bench.common import REPO

DEFAULT_CASES = ["tiny:configs/tiny_cpu.yaml:320:4", "r50:configs/box2mask_r50_coco.yaml:256:2"]


def measure(config: str, image_size: int, batch: int, steps: int, device: str) -> dict:
    """Time `steps` training steps of `config` at `image_size` px with `batch` images."""
    import torch

    from box2mask.model.box2mask_model import build_model
    from box2mask.model.fast_inference import amp_dtype, resolve_amp
    from train.config import load_config
    from train.engine import build_criterion, build_optimizer, train_one_step

    cfg = load_config(REPO / config, {"image_size": image_size, "model.backbone_weights": None})
    dev = torch.device(device)
    torch.manual_seed(0)
    model = build_model(cfg.model).to(dev).train()
    criterion = build_criterion(cfg, dev)
    optimizer = build_optimizer(model, cfg)
    dtype = amp_dtype(resolve_amp(cfg.amp, dev), dev)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(batch, 8, 2, generator=gen) * image_size * 0.6
    wh = torch.rand(batch, 8, 2, generator=gen) * image_size * 0.35 + 8
    targets = [
        {"boxes": torch.cat([xy[b], xy[b] + wh[b]], 1), "labels": torch.zeros(8, dtype=torch.long)}
        for b in range(batch)
    ]
    batch_dict = {
        "images": torch.rand(batch, 3, image_size, image_size, generator=gen) * 255,
        "targets": targets,
        "image_ids": list(range(batch)),
        "file_names": [f"synthetic{b}" for b in range(batch)],
    }

    def one_step():
        train_one_step(
            model,
            criterion,
            batch_dict,
            optimizer,
            scaler,
            step=0,
            device=dev,
            autocast_dtype=dtype,
            clip_grad_norm=cfg.clip_grad_norm,
            levelset_on=True,
            prompt_boxes=[t["boxes"] for t in targets],
            prompt_targets=[{"boxes": t["boxes"]} for t in targets],
        )
        if dev.type == "cuda":
            torch.cuda.synchronize()

    one_step()  # warm-up
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        one_step()
    seconds = (time.perf_counter() - start) / steps
    if dev.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {
        "config": config,
        "backbone": cfg.model.backbone,
        "queries": cfg.model.num_queries,
        "layers": cfg.model.dec_layers,
        "image_size": image_size,
        "batch": batch,
        "amp": str(dtype).removeprefix("torch.") if dtype else "fp32",
        "s_per_step": seconds,
        "images_per_s": batch / seconds,
        "peak_mb": peak_mb,
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", action="append", help="name:config:image_size:batch (repeatable)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per case")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (CPU)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: run one case, print JSON
    args = parser.parse_args(argv)
    if args.worker:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        config, size, batch = args.worker.split(":")
        print(json.dumps(measure(config, int(size), int(batch), args.steps, args.device)))
        return 0

    rows = []
    for case in args.case or DEFAULT_CASES:
        name, config, size, batch = case.split(":")
        command = [sys.executable, __file__, "--worker", f"{config}:{size}:{batch}"]
        command += ["--steps", str(args.steps), "--device", args.device]
        command += ["--threads", str(args.threads)] if args.threads else []
        done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
        if done.returncode != 0:
            print(f"{name}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
            return 1
        rows.append({"name": name, **json.loads(done.stdout.strip().splitlines()[-1])})
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\nTraining throughput (forward + losses + backward + AdamW), load average {load}\n")
    print(
        "| case | backbone | queries x layers | image | batch | precision | device (threads) "
        "| s / step | images / s | peak memory (MiB) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['name']} | {r['backbone']} | {r['queries']} x {r['layers']} | "
            f"{r['image_size']} px | {r['batch']} | {r['amp']} | {r['device']} ({r['threads']}) | "
            f"{r['s_per_step']:.2f} | {r['images_per_s']:.2f} | {r['peak_mb']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
