"""Refining existing masks: GT masks degraded, then refined by `segment --refine-existing`.

    python -m bench.refine --data ../shared/data/balloon [--steps 3,20] [--limit N] [--threads 1]

Every GT mask of the dataset is degraded in one of four ways (polygon simplification at 3 and
5 px tolerance, as hand-drawn or imported polygons; 2 px erosion; 2 px dilation) and then
refined by the embedded default started from it, through the same code path as `box2mask
segment --refine-existing` (`box2mask.segment.image.segment_image`). The prompt box is the tight box of
the GT mask. One table: mIoU to GT of the degraded masks (start), of the refined masks, the
change, and how many masks got better / worse by more than 0.01 IoU, for each number of
evolution steps in `--steps` (`box2mask.segment.image.REFINE_STEPS`, 3, is what refining uses; 20 is
the default's own from a box); the last row is the default segmenting from the box alone (no
mask to start from), for reference.
"""

import argparse
import sys
import time

import numpy as np
import torch

from annotator.polygons import mask_to_polygons
from box2mask.io.image_io import load_image
from box2mask.io.rle import decode_rle, decode_segmentation, encode_rle
from box2mask.levelset.segmenter import LevelSetSegmenter
from box2mask.ops.mask_morphology import dilate, erode
from box2mask.ops.metrics import mask_iou
from box2mask.segment import image as segment
from train.box_prompt_eval import load_dataset

# name -> (H, W) bool GT mask -> COCO segmentation of the degraded mask
DEGRADATIONS = {
    "polygon simplified, 3 px": lambda gt: mask_to_polygons(gt, tolerance_px=3.0),
    "polygon simplified, 5 px": lambda gt: mask_to_polygons(gt, tolerance_px=5.0),
    "eroded 2 px": lambda gt: encode_rle(erode(torch.from_numpy(gt)[None], 2)[0].numpy()),
    "dilated 2 px": lambda gt: encode_rle(dilate(torch.from_numpy(gt)[None], 2)[0].numpy()),
}
BOX_ONLY = "from the box alone (no mask)"
CHANGED = 0.01  # an IoU change larger than this counts as better / worse


def run(data, steps=(segment.REFINE_STEPS,), limit=None) -> dict:
    """{(row name, steps): {"start": [IoU], "refined": [IoU]}} over every GT mask of the
    dataset, refining with the default at each number of evolution `steps`."""
    from tqdm import tqdm

    predictor = LevelSetSegmenter()
    keys = [(name, n) for n in steps for name in DEGRADATIONS] + [
        (BOX_ONLY, predictor.config.steps)
    ]
    rows = {key: {"start": [], "refined": []} for key in keys}
    for path, instances in tqdm(load_dataset(data, limit=limit), desc="refine", unit="img"):
        if not instances:
            continue
        image = load_image(path)
        height, width = image.shape[:2]
        boxes = [[x0, y0, x1 - x0, y1 - y0] for _, (x0, y0, x1, y1) in instances]
        plain = [(i, {"id": i, "bbox": box}) for i, box in enumerate(boxes)]
        results = segment.segment_image(predictor, image, plain)
        for (gt, _), (_, rle, _, _) in zip(instances, results, strict=True):
            rows[keys[-1]]["refined"].append(mask_iou(decode_rle(rle), gt))
        for name, degrade in DEGRADATIONS.items():
            starts = [degrade(gt) for gt, _ in instances]
            anns = [
                (i, {"id": i, "bbox": box, "segmentation": seg})
                for i, (box, seg) in enumerate(zip(boxes, starts, strict=True))
            ]
            for n in steps:
                segment.REFINE_STEPS = n  # what segment --refine-existing passes as `steps`
                results = segment.segment_image(predictor, image, anns, refine_existing=True)
                for (gt, _), seg, (*_, rle, _, error) in zip(
                    instances, starts, results, strict=True
                ):
                    assert error is None, error
                    start = decode_segmentation(seg, height, width)
                    rows[name, n]["start"].append(mask_iou(start, gt))
                    rows[name, n]["refined"].append(mask_iou(decode_rle(rle), gt))
    return rows


def format_table(rows: dict) -> str:
    lines = [
        "| start mask | steps | masks | mIoU start | mIoU refined | change | better / worse (> 0.01) |",
        "|---|---|---|---|---|---|---|",
    ]
    for (name, steps), row in rows.items():
        refined = np.array(row["refined"])
        if not row["start"]:
            lines.append(
                f"| {name} | {steps} | {len(refined)} | - | {refined.mean():.3f} | - | - |"
            )
            continue
        start = np.array(row["start"])
        better, worse = (
            int((refined > start + CHANGED).sum()),
            int((refined < start - CHANGED).sum()),
        )
        lines.append(
            f"| {name} | {steps} | {len(refined)} | {start.mean():.3f} | {refined.mean():.3f} | "
            f"{refined.mean() - start.mean():+.3f} | {better} / {worse} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="dataset folder (annotations.json, images/)")
    parser.add_argument(
        "--steps", default="3,20", help="evolution steps of the refinement, comma-separated"
    )
    parser.add_argument("--limit", type=int, default=None, help="first N images only")
    parser.add_argument("--threads", type=int, default=1, help="torch / OpenCV threads")
    args = parser.parse_args(argv)
    import cv2

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    start = time.perf_counter()
    rows = run(args.data, steps=[int(n) for n in args.steps.split(",")], limit=args.limit)
    print(format_table(rows))
    print(f"({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
