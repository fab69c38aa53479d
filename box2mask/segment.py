"""`box2mask segment`: boxes in a COCO file -> the same file with an RLE mask and a score per box.

    box2mask segment --images DIR --boxes IN.json --out OUT.json [--checkpoint CKPT] [--device cpu|cuda]

The run, in three steps that a torchrun launch shares out between processes:

1. `prepare_work_dir` (rank 0): stream IN.json into an on-disk index (`coco_index`) in the work
   folder `OUT.json.partial/`, or, when that folder holds a run of the same input, images folder
   and model, resume it: the images already finished are not redone.
2. `segment_shard` (every rank): load the shard's images one at a time (the pending images dealt
   out to ranks by box count, `coco_index.iter_pending_images`), segment all boxes of an image in
   one `predict` call, append each finished image to the rank's part file. A bad image or box is reported on stderr and recorded, and the run goes on.
3. `finish` (rank 0): merge the part files and write OUT.json atomically (temp + rename) in the
   input's order; then remove the work folder.

Failed annotations are written unchanged plus a `box2mask_error` string; the exit status is 1 when
any annotation failed, 2 when the run could not start (bad arguments, malformed IN.json, an
unloadable checkpoint, CUDA asked for but absent).
"""

import argparse
import os
import shutil
import sqlite3
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np

from box2mask import coco_index
from box2mask.box_ops import BoxError, validate_box, xywh_to_xyxy
from box2mask.image_io import DEFAULT_MAX_PIXELS, ImageLoadError, load_image
from box2mask.rle import encode_rle

__all__ = [
    "SegmentError",
    "WorkDir",
    "add_arguments",
    "run",
    "segment_coco",
    "segment_image",
    "prepare_work_dir",
    "segment_shard",
    "finish",
]

MAX_MASK_BYTES = 1 << 28  # boxes per predict call are capped so (N, H, W) bool masks stay < 256 MiB
DIST_TIMEOUT = timedelta(hours=24)  # ranks wait for the slowest shard at the end: allow long runs
MAX_PROBLEM_LINES = 50  # problems found while indexing IN.json printed (all are in OUT.json)


class SegmentError(RuntimeError):
    """The run cannot start or finish; the message says why (exit status 2)."""


@dataclass(frozen=True)
class WorkDir:
    """The work folder of one output: `OUT.json.partial/` beside OUT.json."""

    root: Path  # the folder

    @classmethod
    def for_output(cls, out_path) -> "WorkDir":
        out_path = Path(out_path)
        return cls(out_path.with_name(out_path.name + ".partial"))

    @property
    def index(self) -> Path:
        return self.root / "index.sqlite"

    def part(self, rank: int) -> Path:
        return self.root / "parts" / f"rank{rank:05d}.jsonl"

    def parts(self) -> list[Path]:
        return sorted((self.root / "parts").glob("rank*.jsonl"))


def _say(message: str) -> None:
    """One line on stderr, without breaking a tqdm bar."""
    from tqdm import tqdm

    tqdm.write(f"box2mask segment: {message}", file=sys.stderr)


# ---------------------------------------------------------------- one image


def segment_image(predictor, image: np.ndarray, anns: list) -> list:
    """Segment the annotations of one image with one predictor.

    Args:
        predictor: has `set_image(image)` and `predict(boxes_xyxy) -> (masks, scores)`.
        image: (H, W, 3) uint8 RGB.
        anns: [(ord, annotation dict with a COCO XYWH `bbox`)].
    Returns:
        [(ord, RLE dict or None, score or None, error or None)], one per annotation, in order;
        a bad box gets an error naming the annotation id and the problem.
    """
    height, width = image.shape[:2]
    results, good, boxes = {}, [], []
    for ord_, ann in anns:
        name = f"annotation {ann['id']!r}" if "id" in ann else f"annotation #{ord_} (no id)"
        try:
            if "bbox" not in ann:
                raise BoxError("it has no 'bbox'")
            bbox_xywh = np.asarray(ann["bbox"], dtype=np.float64)
            if bbox_xywh.shape != (4,):
                raise BoxError(f"bbox must be 4 numbers [x, y, w, h], got {ann['bbox']!r}")
            boxes.append(validate_box(xywh_to_xyxy(bbox_xywh), width, height))
            good.append(ord_)
        except (BoxError, ValueError, TypeError) as err:
            results[ord_] = (ord_, None, None, f"{name}: bad bbox: {err}")
    if good:
        predictor.set_image(image)
        chunk = max(1, MAX_MASK_BYTES // (height * width))
        for start in range(0, len(good), chunk):
            masks, scores = predictor.predict(np.stack(boxes[start : start + chunk]))
            for ord_, mask, score in zip(good[start : start + chunk], masks, scores, strict=True):
                results[ord_] = (ord_, encode_rle(mask), float(score), None)
    return [results[ord_] for ord_, _ in anns]


def _load_checked(path: Path, width: int, height: int, max_pixels: int) -> np.ndarray:
    """Load an image and check its size against the COCO record; ImageLoadError names the file."""
    image = load_image(path, max_pixels=max_pixels)
    h, w = image.shape[:2]
    if (w, h) != (width, height):
        hint = " (its EXIF orientation rotates it)" if (h, w) == (width, height) else ""
        raise ImageLoadError(
            f"{path}: image is {w}x{h} but the COCO record says {width}x{height}{hint}"
        )
    return image


# ---------------------------------------------------------------- the three steps


def prepare_work_dir(
    work: WorkDir, boxes_path, images_dir, fingerprint_extra: dict
) -> sqlite3.Connection:
    """Index IN.json into the work folder, or resume a matching earlier run. Rank 0 only.

    Raises SegmentError for a malformed IN.json (nothing else is written then).
    """
    fingerprint = {
        "input_sha256": coco_index.file_sha256(boxes_path),
        "images_dir": str(Path(images_dir).resolve()),
        **fingerprint_extra,
    }
    if work.index.exists():
        conn = coco_index.open_index(work.index)
        if coco_index.read_fingerprint(conn) == fingerprint:
            coco_index.import_parts(conn, work.parts())
            done = conn.execute("SELECT COUNT(*) FROM done").fetchone()[0]
            _say(f"resuming the run in {work.root}: {done} images already done")
            return conn
        conn.close()
        _say(f"{work.root} holds a run of another input or model: starting over")
    shutil.rmtree(work.root, ignore_errors=True)
    work.root.mkdir(parents=True)
    try:
        problems = coco_index.build_index(boxes_path, work.index, fingerprint)
    except coco_index.CocoFormatError as err:
        shutil.rmtree(work.root, ignore_errors=True)
        raise SegmentError(str(err)) from None
    for line in problems[:MAX_PROBLEM_LINES]:
        _say(f"{boxes_path}: {line}")
    if len(problems) > MAX_PROBLEM_LINES:
        _say(f"... and {len(problems) - MAX_PROBLEM_LINES} more problems in {boxes_path}")
    return coco_index.open_index(work.index)


def segment_shard(
    conn,
    predictor,
    images_dir,
    part_path,
    rank: int = 0,
    world_size: int = 1,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: bool = True,
) -> int:
    """Segment the pending images of shard `rank`, appending each to `part_path`.

    Returns the number of annotations that failed in this call (bad images and bad boxes).
    """
    from tqdm import tqdm

    n_images, n_boxes = coco_index.count_pending(conn, rank, world_size)
    desc = "segment" if world_size == 1 else f"segment rank {rank}/{world_size}"
    writer = coco_index.PartWriter(part_path)
    failures = 0
    bar = tqdm(total=n_images, desc=desc, unit="img", disable=not progress, dynamic_ncols=True)
    boxes_done = 0
    try:
        for task in coco_index.iter_pending_images(conn, rank, world_size):
            path = Path(images_dir) / task.file_name
            try:
                image = _load_checked(path, task.width, task.height, max_pixels)
            except ImageLoadError as err:
                _say(f"{err}; its {len(task.anns)} boxes are skipped")
                results = [(ord_, None, None, str(err)) for ord_, _ in task.anns]
            else:
                try:
                    results = segment_image(predictor, image, task.anns)
                except Exception as err:  # a segmenter failure must not stop the other images
                    message = f"{path}: segmenter failed: {type(err).__name__}: {err}"
                    _say(message)
                    results = [(ord_, None, None, message) for ord_, _ in task.anns]
                else:
                    for *_, error in results:
                        if error is not None:
                            _say(f"{path}: {error}")
                del image
            failures += sum(error is not None for *_, error in results)
            writer.write(task.idx, results)
            boxes_done += len(task.anns)
            bar.set_postfix(boxes=f"{boxes_done}/{n_boxes}", refresh=False)
            bar.update(1)
    finally:
        bar.close()
        writer.close()
    return failures


def finish(conn, work: WorkDir, out_path) -> int:
    """Merge the part files, write OUT.json atomically, remove the work folder. Rank 0 only.

    Returns the number of annotations without a mask.
    """
    coco_index.import_parts(conn, work.parts())
    pending_images, _ = coco_index.count_pending(conn)
    if pending_images:
        raise SegmentError(f"{pending_images} images were not segmented; rerun to finish them")
    try:
        coco_index.write_coco(conn, out_path)
    except OSError as err:  # e.g. disk full: the finished work stays in the work folder
        raise SegmentError(
            f"cannot write {out_path}: {err}; the finished work is kept in {work.root}, "
            "rerun the same command to write it"
        ) from None
    failed = coco_index.count_failures(conn)
    conn.close()
    shutil.rmtree(work.root, ignore_errors=True)
    return failed


# ---------------------------------------------------------------- the whole run


def _broadcast(value, world_size: int):
    """Rank 0's `value` on every rank (a barrier too); identity in a single process."""
    if world_size == 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def segment_coco(
    images_dir,
    boxes_path,
    out_path,
    predictor,
    fingerprint_extra: dict | None = None,
    rank: int = 0,
    world_size: int = 1,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: bool = True,
) -> int:
    """The whole run for one process of `world_size` (a process group must exist when > 1).

    Returns the number of failed annotations (the same on every rank). Raises SegmentError when
    the run cannot start or finish.
    """
    work = WorkDir.for_output(out_path)
    extra = {"model": getattr(predictor, "model_version", "unknown"), **(fingerprint_extra or {})}
    conn, error = None, None
    if rank == 0:
        try:
            conn = prepare_work_dir(work, boxes_path, images_dir, extra)
        except SegmentError as err:
            error = str(err)
    error = _broadcast(error, world_size)
    if error is not None:
        raise SegmentError(error)
    if conn is None:
        conn = coco_index.open_index(work.index)
    segment_shard(
        conn, predictor, images_dir, work.part(rank), rank, world_size, max_pixels, progress
    )
    _broadcast(None, world_size)  # every shard is finished
    result = None
    if rank == 0:
        try:
            result = finish(conn, work, out_path)
        except SegmentError as err:
            result = str(err)
    else:
        conn.close()
    result = _broadcast(result, world_size)
    if isinstance(result, str):
        raise SegmentError(result)
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "Every annotation of IN.json is written to OUT.json with its id and all its fields, plus\n"
        "`segmentation` (COCO RLE, counts as a string) and `score`. An annotation that fails (bad\n"
        "image, bad box) is written unchanged plus `box2mask_error`, reported on stderr, and the\n"
        "exit status is 1. A killed run resumes from OUT.json.partial/ when rerun with the same\n"
        "arguments. Under `torchrun --nproc-per-node N` each process segments its share of images."
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
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _resolve_device(device: str | None, local_rank: int) -> str:
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise SegmentError(
                "--device cuda: CUDA is not available here "
                f"(torch {torch.__version__}, {torch.cuda.device_count()} GPUs visible); "
                "use --device cpu"
            )
        torch.cuda.set_device(local_rank)
        return f"cuda:{local_rank}"
    return device


def run(args) -> int:
    import torch.distributed as dist

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    try:
        if not Path(args.images).is_dir():
            raise SegmentError(f"--images {args.images}: no such folder")
        if not Path(args.boxes).is_file():
            raise SegmentError(f"--boxes {args.boxes}: no such file")
        if not Path(args.out).resolve().parent.is_dir():
            raise SegmentError(f"--out {args.out}: its folder does not exist")
        device = _resolve_device(args.device, local_rank)
        if world_size > 1 and not dist.is_initialized():
            backend = "nccl" if device.startswith("cuda") else "gloo"
            dist.init_process_group(backend=backend, timeout=DIST_TIMEOUT)
        predictor = _build_predictor(args.checkpoint, device)
        failed = segment_coco(
            images_dir=args.images,
            boxes_path=args.boxes,
            out_path=args.out,
            predictor=predictor,
            fingerprint_extra={"checkpoint": _checkpoint_key(args.checkpoint)},
            rank=rank,
            world_size=world_size,
            max_pixels=args.max_pixels,
            progress=not args.no_progress,
        )
    except (SegmentError, OSError) as err:  # OSError: e.g. disk full while writing a part file
        print(f"box2mask segment: error: {err}", file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if rank == 0:
        if failed:
            _say(f"{failed} annotations failed (see box2mask_error in {args.out})")
        print(f"box2mask segment: wrote {args.out}", file=sys.stderr)
    return 1 if failed else 0


def _checkpoint_key(checkpoint) -> str | None:
    """Path, size and mtime of the checkpoint: a changed file invalidates a half-finished run."""
    if checkpoint is None:
        return None
    st = os.stat(checkpoint)
    return f"{Path(checkpoint).resolve()}:{st.st_size}:{st.st_mtime_ns}"


def _build_predictor(checkpoint, device: str):
    import box2mask

    if checkpoint is not None and not Path(checkpoint).is_file():
        raise SegmentError(f"--checkpoint {checkpoint}: no such file")
    try:
        return box2mask.build_predictor(checkpoint, device=device)
    except Exception as err:  # any failure to load is reported the same way, naming the file
        where = checkpoint if checkpoint is not None else "the embedded default"
        raise SegmentError(f"cannot load {where}: {type(err).__name__}: {err}") from None
