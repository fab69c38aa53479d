"""Level-set + LCM training loss: forward + backward, vectorized vs a naive per-box loop. One table.

    python -m bench.levelset_loss [--images 8] [--boxes 50] [--size 512] [--channels 256]
                                  [--device cpu|cuda] [--repeat 3] [--naive-repeat 1]

Setup (seeded): `--images` RGB images of `--size` px, stride-4 masks (128 x 128 for 512 px),
`--boxes` random boxes per image (16-256 px sides), mask logits that require grad, deep features
with `--channels` channels (256 = the R50 config's mask_dim). Both rows compute the same loss,
0.05 E(m, image) + 5.0 E(m, smoothed features) + 0.2 LCM, averaged over all boxes, and
backpropagate it to the mask logits. The per-image context (normalised image, bilateral-smoothed
features, LCM affinities: `Box2MaskCriterion.image_context`) does not depend on the boxes; it is
the same code for both rows, timed apart and added to both in the "total" column.

- naive: a Python loop over boxes with the textbook formulas per box (c_in, c_out as weighted
  means, |F - c|^2 maps over all channels, the LCM propagation of that one mask).
- vectorized: `Box2MaskCriterion.mask_losses`: all boxes of an image at once, region sums as
  einsum contractions against the shared feature map (no N x C x H x W tensor), LCM on (N, H, W).
The two totals are checked to agree before timing.
"""

import argparse
import statistics
import sys
import time

import torch

from box2mask.model.config import LossConfig
from box2mask.model.losses import MASK_STRIDE, Box2MaskCriterion
from box2mask.ops.lcm import propagate
from box2mask.ops.levelset import box_masks_from_boxes

W_IMG, W_FEAT, W_LCM = 0.05, 5.0, 0.2


def make_batch(images: int, boxes: int, size: int, channels: int, device):
    gen = torch.Generator().manual_seed(0)
    grid = size // MASK_STRIDE
    batch = {
        "images": (torch.rand(images, 3, size, size, generator=gen) * 255).to(device),
        "mask_features": torch.randn(images, channels, grid, grid, generator=gen).to(device),
        "logits": [],
        "boxes": [],
    }
    for _ in range(images):
        wh = torch.rand(boxes, 2, generator=gen) * 240 + 16
        xy = torch.rand(boxes, 2, generator=gen) * (size - wh)
        batch["boxes"].append(torch.cat([xy, xy + wh], dim=1).to(device))
        logits = torch.randn(boxes, grid, grid, generator=gen).to(device)
        batch["logits"].append(logits.requires_grad_(True))
    return batch


def naive_energy(probs, features, box_mask, eps=1e-6):
    """Chan-Vese region energy of ONE box, straight from the formula. probs/box (H, W), F (C, H, W)."""
    w_in, w_out = probs * box_mask, (1 - probs) * box_mask
    c_in = (features * w_in).sum(dim=(1, 2)) / (w_in.sum() + eps)
    c_out = (features * w_out).sum(dim=(1, 2)) / (w_out.sum() + eps)
    inside = ((features - c_in[:, None, None]) ** 2).sum(0) * w_in
    outside = ((features - c_out[:, None, None]) ** 2).sum(0) * w_out
    return (inside + outside).sum() / box_mask.sum().clamp_min(eps)


def naive_loss(crit: Box2MaskCriterion, batch, ctx) -> float:
    """Forward + backward one box at a time (each box's graph is freed before the next: keeping
    400 graphs of C x H x W temporaries alive would need tens of GB)."""
    cfg = crit.cfg
    grid = batch["mask_features"].shape[-1]
    count = sum(len(b) for b in batch["boxes"])
    total = 0.0
    for b, (logits, boxes) in enumerate(zip(batch["logits"], batch["boxes"], strict=True)):
        for j in range(len(boxes)):  # one box at a time
            probs = logits[j].sigmoid()
            box_mask = box_masks_from_boxes(boxes[j : j + 1] / MASK_STRIDE, grid, grid)[0]
            e_img = naive_energy(probs, ctx["image"][b], box_mask)
            e_feat = naive_energy(probs, ctx["features"][b], box_mask)
            with torch.no_grad():
                refined = propagate(
                    probs[None], ctx["affinity"][b : b + 1], cfg.lcm_steps, cfg.lcm_dilation
                )[0]
            lcm = ((refined - probs).abs() * box_mask).sum() / box_mask.sum().clamp_min(1)
            loss = (W_IMG * e_img + W_FEAT * e_feat + W_LCM * lcm) / count
            loss.backward()
            total += loss.item()
    return total


def vectorized_loss(crit: Box2MaskCriterion, batch, ctx) -> float:
    """Forward + backward of all boxes at once."""
    terms = crit.mask_losses(batch["logits"], batch["boxes"], ctx, levelset_on=True)
    loss = W_IMG * terms["levelset_img"] + W_FEAT * terms["levelset_feat"] + W_LCM * terms["lcm"]
    loss.backward()
    return loss.item()


def timed(fn, crit, batch, ctx, repeat: int, device) -> tuple[float, float]:
    """Median wall time (ms) of forward + backward over `repeat` runs, and the loss value."""
    times, value = [], 0.0
    for _ in range(repeat):
        for logits in batch["logits"]:
            logits.grad = None
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        value = fn(crit, batch, ctx)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=8, help="images per batch")
    parser.add_argument("--boxes", type=int, default=50, help="boxes per image")
    parser.add_argument("--size", type=int, default=512, help="image side in px")
    parser.add_argument("--channels", type=int, default=256, help="deep feature channels")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--repeat", type=int, default=3, help="timed vectorized runs (median)")
    parser.add_argument("--naive-repeat", type=int, default=1, help="timed naive runs (median)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.set_grad_enabled(True)
    crit = Box2MaskCriterion(1, LossConfig()).to(device)
    batch = make_batch(args.images, args.boxes, args.size, args.channels, device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    context_ms = []
    for _ in range(args.repeat):
        sync()
        start = time.perf_counter()
        ctx = crit.image_context(batch["images"], batch["mask_features"])
        sync()
        context_ms.append((time.perf_counter() - start) * 1000)
    ctx_ms = statistics.median(context_ms)

    timed(vectorized_loss, crit, batch, ctx, 1, device)  # warm-up
    vec_ms, vec_value = timed(vectorized_loss, crit, batch, ctx, args.repeat, device)
    naive_ms, naive_value = timed(naive_loss, crit, batch, ctx, args.naive_repeat, device)
    if abs(vec_value - naive_value) > 1e-3 * abs(naive_value):
        raise SystemExit(f"implementations disagree: {vec_value} vs {naive_value}")

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    threads = torch.get_num_threads()
    print(
        f"level-set + LCM loss, forward + backward: {args.images} images x {args.boxes} boxes, "
        f"{args.size} px images, {args.size // MASK_STRIDE}^2 masks, {args.channels} feature "
        f"channels; {name} ({threads} threads); loss {vec_value:.5f} (both agree)"
    )
    print()
    print(
        "| implementation | loss terms fwd+bwd (ms) | total with context (ms) | speed-up terms | speed-up total |"
    )
    print("|---|---:|---:|---:|---:|")
    print(f"| naive per-box loop | {naive_ms:.0f} | {naive_ms + ctx_ms:.0f} | 1.0x | 1.0x |")
    print(
        f"| vectorized (box2mask.model.losses) | {vec_ms:.0f} | {vec_ms + ctx_ms:.0f} | "
        f"{naive_ms / vec_ms:.1f}x | {(naive_ms + ctx_ms) / (vec_ms + ctx_ms):.1f}x |"
    )
    print(f"\nper-image context (same code in both rows): {ctx_ms:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
