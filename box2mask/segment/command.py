"""The `box2mask segment` command line: arguments, device, process group, predictor.

    box2mask segment --images DIR --boxes IN.json --out OUT.json [--checkpoint CKPT] [--device cpu|cuda]
                     [--refine-existing] [--batch-images N] [--amp off|bf16|fp16] [--channels-last]
                     [--compile]

The run itself (index, shards, merge, resume) is `box2mask/segment/run.py`; its output format is a
contract (README "Segment boxes from the shell") that none of the speed options changes.
"""

import argparse
import os
import sys
from pathlib import Path

from box2mask.io.image_io import DEFAULT_MAX_PIXELS
from box2mask.model.fast_inference import AMP_CHOICES, amp_dtype
from box2mask.segment.errors import SegmentError, say
from box2mask.segment.run import segment_coco
from box2mask.segment.shards import (
    DIST_TIMEOUT,
    Ranks,
    rank_device,
    start_process_group,
    stop_process_group,
)

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "Every annotation of IN.json is written to OUT.json with its id and all its fields, plus\n"
        "`segmentation` (COCO RLE, counts as a string), `score` and `box2mask_tight_bbox` (the\n"
        "mask's tight XYWH box; `bbox` is kept as it was). An annotation that fails (bad\n"
        "image, bad box) is written unchanged plus `box2mask_error`, reported on stderr, and the\n"
        "exit status is 1. A killed run resumes from OUT.json.partial/ when rerun with the same\n"
        "arguments. Under `torchrun --nproc-per-node N` each process segments its share of images.\n"
        "Clicks: an annotation may carry `box2mask_points`, [[x, y, label], ...] in image pixels\n"
        "(label 1 object, 0 background); its box is then segmented with those clicks, as the\n"
        "annotator's clicks are, and with --refine-existing they correct its `segmentation`."
    )
    parser.add_argument("--images", required=True, metavar="DIR", help="folder of the images")
    parser.add_argument(
        "--boxes", required=True, metavar="IN.json", help="COCO instances file with boxes"
    )
    parser.add_argument("--out", required=True, metavar="OUT.json", help="output COCO file")
    parser.add_argument(
        "--checkpoint",
        default=None,
        metavar="CKPT",
        help="trained Box2Mask checkpoint (default: the embedded level-set segmenter)",
    )
    parser.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default=None,
        help="where to run (default: cuda when available, else cpu)",
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help=f"refuse images with more pixels, as decompression bombs (default {DEFAULT_MAX_PIXELS})",
    )
    parser.add_argument(
        "--refine-existing",
        action="store_true",
        help="annotations that already carry a `segmentation` (RLE or polygons) are refined by "
        "the model started from that mask instead of segmented from their box (ids, fields and "
        "order kept; the mask is replaced by the refined one). Needs the embedded default or a "
        "crop-learner checkpoint",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    speed = parser.add_argument_group(
        "speed (--amp, --channels-last and --compile need a --checkpoint model; none of these "
        "options changes the output format)"
    )
    speed.add_argument(
        "--batch-images",
        type=_positive_int,
        default=1,
        metavar="N",
        help="images loaded and encoded together (default 1). On CUDA, images of the same "
        "size share one forward pass of the model; on CPU they are still encoded one at a "
        "time (a batch is no faster there) and the output is byte-identical to N = 1",
    )
    speed.add_argument(
        "--amp",
        choices=AMP_CHOICES,
        default="off",
        help="mixed precision of the model on CUDA (default off: float32); bf16 and fp16 "
        "need --device cuda; masks and scores are computed in float32 from the model's output",
    )
    speed.add_argument(
        "--channels-last",
        action="store_true",
        help="run the model's image encoder in channels_last memory layout (faster "
        "convolutions on recent GPUs, especially with --amp)",
    )
    speed.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the model's image encoder: compiles once per image size (up to "
        "minutes), worth it for many images of few sizes",
    )


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _model_options(args, device: str) -> dict:
    """The predictor options of --amp / --channels-last / --compile (SegmentError if invalid)."""
    import torch

    options = {}
    if args.amp != "off":
        options["amp"] = args.amp
    if args.channels_last:
        options["channels_last"] = True
    if args.compile:
        options["compile"] = True
    if options and args.checkpoint is None:
        flags = ", ".join("--" + name.replace("_", "-") for name in options)
        raise SegmentError(
            f"{flags}: options of a trained model (--checkpoint); the embedded level-set "
            "default has no network"
        )
    try:
        amp_dtype(args.amp, torch.device(device))
    except ValueError as err:
        raise SegmentError(f"--amp {args.amp}: {err}") from None
    return options


def _resolve_device(device: str | None, local_rank: int) -> str:
    try:
        return rank_device(device, local_rank)
    except ValueError as err:
        raise SegmentError(str(err)) from None


def run(args) -> int:
    ranks = Ranks.from_env()
    world_size, rank, local_rank = ranks.world_size, ranks.rank, ranks.local_rank
    try:
        if not Path(args.images).is_dir():
            raise SegmentError(f"--images {args.images}: no such folder")
        if not Path(args.boxes).is_file():
            raise SegmentError(f"--boxes {args.boxes}: no such file")
        if not Path(args.out).resolve().parent.is_dir():
            raise SegmentError(f"--out {args.out}: its folder does not exist")
        device = _resolve_device(args.device, local_rank)
        if world_size > 1:
            start_process_group("nccl" if device.startswith("cuda") else "gloo", DIST_TIMEOUT)
        options = _model_options(args, device)
        predictor = _build_predictor(args.checkpoint, device, options)
        failed = segment_coco(
            images_dir=args.images,
            boxes_path=args.boxes,
            out_path=args.out,
            predictor=predictor,
            fingerprint_extra={"checkpoint": _checkpoint_key(args.checkpoint), "amp": args.amp},
            rank=rank,
            world_size=world_size,
            max_pixels=args.max_pixels,
            progress=not args.no_progress,
            batch_images=args.batch_images,
            refine_existing=args.refine_existing,
        )
    except (SegmentError, OSError) as err:  # OSError: e.g. disk full while writing a part file
        print(f"box2mask segment: error: {err}", file=sys.stderr)
        return 2
    finally:
        stop_process_group()
    if rank == 0:
        if failed:
            say(f"{failed} annotations failed (see box2mask_error in {args.out})")
        print(f"box2mask segment: wrote {args.out}", file=sys.stderr)
    return 1 if failed else 0


def _checkpoint_key(checkpoint) -> str | None:
    """Path, size and mtime of the checkpoint: a changed file invalidates a half-finished run."""
    if checkpoint is None:
        return None
    st = os.stat(checkpoint)
    return f"{Path(checkpoint).resolve()}:{st.st_size}:{st.st_mtime_ns}"


def _build_predictor(checkpoint, device: str, options: dict):
    import box2mask

    if checkpoint is not None and not Path(checkpoint).is_file():
        raise SegmentError(f"--checkpoint {checkpoint}: no such file")
    try:
        return box2mask.build_predictor(checkpoint, device=device, **options)
    except Exception as err:  # any failure to load is reported the same way, naming the file
        where = checkpoint if checkpoint is not None else "the embedded default"
        raise SegmentError(f"cannot load {where}: {type(err).__name__}: {err}") from None
