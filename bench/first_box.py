"""First-box latency with and without the background encodings cache, against the hundredth box.

    python -m bench.first_box --checkpoint runs/tiny_balloon/last.pt [--data ../shared/data/balloon]
                              [--images 8] [--image-size 320 1024] [--device cpu]

For each of the first `--images` images of the dataset (one prompt: the first ground-truth box):

- no cache: opening the image calls `set_image`, so the first box pays the encoding;
- background cache: an `annotator.prefetch.Prefetcher` encodes the images ahead while the person
  works on the current one (simulated: the bench waits until the prefetcher is idle before it
  opens the next image); the first box pays `activate` (cache read + `set_state`) + predict;
- hundredth box: one more box on an image that is already encoded (predict only).

Image loading is outside every timing (the annotator reads the image to show it anyway). Without
`--checkpoint`, a randomly initialised tiny model is built and saved under a temporary folder.
Prints one table: median ms per first box, per hundredth box, and their ratio.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import random_checkpoint
from train.box_prompt_eval import load_dataset


def _tiny_checkpoint(folder: Path) -> Path:
    """A random-init model with the tiny_cpu.yaml sizes, saved as a checkpoint."""
    return random_checkpoint(
        folder / "tiny.pt", num_classes=1, model_version="tiny-random", config={"image_size": 320}
    )


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000


def measure(checkpoint, items, image_size: int, device: str, sync) -> dict:
    """Median ms: first box without cache, first box with the prefetcher, hundredth box."""
    from annotator.prefetch import Prefetcher
    from box2mask.io.embedding_cache import EmbeddingCache
    from box2mask.io.image_io import load_image
    from box2mask.model.predictor import Box2MaskPredictor

    predictor = Box2MaskPredictor.from_checkpoint(checkpoint, device=device, image_size=image_size)
    images = [load_image(path) for path, _ in items]
    boxes = [inst[0][1][None] for _, inst in items]
    predictor.set_image(images[0])  # warm-up: first-call allocations are not what we measure
    predictor.predict(boxes[0])
    cold, warm, hundredth, hits = [], [], [], 0
    with tempfile.TemporaryDirectory() as cache_dir:
        cache = EmbeddingCache(cache_dir, max_bytes=2 * 1024**3)
        with Prefetcher(predictor, cache, images, load=lambda im: im, lookahead=2) as prefetcher:
            # the three measurements of an image are taken back to back (the load drifts)
            for index, (image, box) in enumerate(zip(images, boxes, strict=True)):
                prefetcher.set_position(index)
                prefetcher.wait_idle()  # the person spends longer on an image than one encoding
                start = time.perf_counter()
                hits += prefetcher.activate(image)
                predictor.predict(box)
                sync()
                warm.append(_ms(start))
                start = time.perf_counter()
                predictor.set_image(image)
                predictor.predict(box)
                sync()
                cold.append(_ms(start))
                for _ in range(3):
                    start = time.perf_counter()
                    predictor.predict(box)
                    sync()
                    hundredth.append(_ms(start))
    return {
        "cold": float(np.median(cold)),
        "warm": float(np.median(warm)),
        "hundredth": float(np.median(hundredth)),
        "hits": hits,
        "count": len(images),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--checkpoint", default=None, help="model checkpoint (default: tiny random)"
    )
    parser.add_argument(
        "--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "balloon")
    )
    parser.add_argument("--images", type=int, default=8, help="how many images (default 8)")
    parser.add_argument(
        "--image-size",
        type=int,
        nargs="+",
        default=[320, 1024],
        help="network input long sides to measure (default 320 1024)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)

    def sync():
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    items = [(p, inst) for p, inst in load_dataset(args.data, limit=args.images * 2) if inst]
    items = items[: args.images]
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint or _tiny_checkpoint(Path(tmp))
        rows = {
            size: measure(checkpoint, items, size, args.device, sync) for size in args.image_size
        }
    print(
        f"\n{Path(checkpoint).name}, {len(items)} images of {Path(args.data).name}, "
        f"device {args.device}, median ms\n"
    )
    print(
        "| network input | first box, no cache | first box, background cache (hits) "
        "| hundredth box | no cache / hundredth | cache / hundredth |"
    )
    print("|---|---|---|---|---|---|")
    for size, r in rows.items():
        print(
            f"| {size} px | {r['cold']:.0f} | {r['warm']:.0f} ({r['hits']}/{r['count']}) "
            f"| {r['hundredth']:.0f} | {r['cold'] / r['hundredth']:.1f}x "
            f"| {r['warm'] / r['hundredth']:.1f}x |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
