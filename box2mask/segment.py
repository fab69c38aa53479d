"""`box2mask segment`: boxes in a COCO file -> the same file with an RLE mask and a score per box.

    box2mask segment --images DIR --boxes IN.json --out OUT.json [--checkpoint CKPT] [--device cpu|cuda]
                     [--refine-existing] [--batch-images N] [--amp off|bf16|fp16] [--channels-last]
                     [--compile]

The run, in three steps that a torchrun launch shares out between processes:

1. `prepare_work_dir` (rank 0): stream IN.json into an on-disk index (`coco_index`) in the work
   folder `OUT.json.partial/`, or, when that folder holds a run of the same input, images folder
   and model, resume it: the images already finished are not redone.
2. `segment_shard` (every rank): load the shard's images `batch_images` at a time (default one;
   the pending images dealt out to ranks by box count, `coco_index.iter_pending_images`), encode
   them in one `encode_states` call when the predictor has it, segment all boxes of an image in
   one `predict` call, append each finished image to the rank's part file. A bad image or box is
   reported on stderr and recorded, and the run goes on.
3. `finish` (rank 0): merge the part files and write OUT.json atomically (temp + rename) in the
   input's order; then remove the work folder.

Failed annotations are written unchanged plus a `box2mask_error` string; the exit status is 1 when
any annotation failed, 2 when the run could not start (bad arguments, malformed IN.json, an
unloadable checkpoint, CUDA asked for but absent). The command line itself (arguments, device,
process group, predictor) is `box2mask/segment_cmd.py`.
"""

import inspect
import itertools
import shutil
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from box2mask import coco_index
from box2mask.box_ops import BoxError, validate_box, xywh_to_xyxy
from box2mask.image_io import DEFAULT_MAX_PIXELS, ImageLoadError, load_image
from box2mask.rle import decode_segmentation, encode_rle
from box2mask.shards import broadcast

__all__ = [
    "SegmentError",
    "WorkDir",
    "segment_coco",
    "segment_image",
    "check_refines",
    "takes_init_masks",
    "refine_options",
    "REFINE_STEPS",
    "prepare_work_dir",
    "segment_shard",
    "finish",
]

MAX_MASK_BYTES = 1 << 28  # boxes per predict call are capped so (N, H, W) bool masks stay < 256 MiB
# Level-set steps when refining a given mask (the default's own 20 from a box): a short evolution
# keeps what is right in the start and moves its outline to the image's edges; on balloon's GT
# masks degraded four ways, 3 steps beat 20 on every degradation (README, bench/refine.py).
REFINE_STEPS = 3
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


def segment_image(
    predictor,
    image: np.ndarray,
    anns: list,
    state: dict | None = None,
    refine_existing: bool = False,
) -> list:
    """Segment the annotations of one image with one predictor.

    Args:
        predictor: has `set_image(image)` and `predict(boxes_xyxy) -> (masks, scores)`; with
            `refine_existing`, `predict` must also take `init_masks` (N, H, W) bool.
        image: (H, W, 3) uint8 RGB.
        anns: [(ord, annotation dict with a COCO XYWH `bbox`)].
        state: the image's `predictor.encode_states` result, used instead of `set_image`.
        refine_existing: an annotation that carries a non-empty `segmentation` (RLE or polygons)
            is refined by the predictor started from that mask instead of from its box
            (`refine_options`: a short evolution of REFINE_STEPS).
    Returns:
        [(ord, RLE dict or None, score or None, error or None)], one per annotation, in order;
        a bad box (or, with `refine_existing`, a bad segmentation) gets an error naming the
        annotation id and the problem.
    """
    height, width = image.shape[:2]
    results, plain, refined = {}, [], []  # [(ord, box XYXY, segmentation to start from)]
    for ord_, ann in anns:
        name = f"annotation {ann['id']!r}" if "id" in ann else f"annotation #{ord_} (no id)"
        try:
            if "bbox" not in ann:
                raise BoxError("it has no 'bbox'")
            bbox_xywh = np.asarray(ann["bbox"], dtype=np.float64)
            if bbox_xywh.shape != (4,):
                raise BoxError(f"bbox must be 4 numbers [x, y, w, h], got {ann['bbox']!r}")
            box = validate_box(xywh_to_xyxy(bbox_xywh), width, height)
        except (BoxError, ValueError, TypeError) as err:
            results[ord_] = (ord_, None, None, f"{name}: bad bbox: {err}")
            continue
        if refine_existing and ann.get("segmentation"):
            try:  # decoded here to check it, again per chunk below (flat memory)
                empty = not decode_segmentation(ann["segmentation"], height, width).any()
            except (ValueError, TypeError, KeyError) as err:
                results[ord_] = (ord_, None, None, f"{name}: bad segmentation: {err}")
                continue
            if not empty:  # an empty mask has nothing to refine: segmented from its box
                refined.append((ord_, box, ann["segmentation"]))
                continue
        plain.append((ord_, box, None))
    if plain or refined:
        if state is None:
            predictor.set_image(image)
        else:
            predictor.set_state(state)
        chunk = max(1, MAX_MASK_BYTES // (height * width))
        for group in (plain, refined):
            for begin in range(0, len(group), chunk):
                part = group[begin : begin + chunk]
                boxes = np.stack([box for _, box, _ in part])
                options = {}
                if group is refined:
                    starts = np.stack([decode_segmentation(seg, height, width) for *_, seg in part])
                    options = refine_options(predictor, starts)
                masks, scores = predictor.predict(boxes, **options)
                for (ord_, *_), mask, score in zip(part, masks, scores, strict=True):
                    results[ord_] = (ord_, encode_rle(mask), float(score), None)
    return [results[ord_] for ord_, _ in anns]


def takes_init_masks(predictor) -> bool:
    """Whether `predictor.predict` accepts `init_masks` (can refine a given mask)."""
    parameters = inspect.signature(predictor.predict).parameters
    return "init_masks" in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    )


def refine_options(predictor, init_masks: np.ndarray) -> dict:
    """`predict` options that refine the given (N, H, W) bool masks: `init_masks`, plus
    `steps=REFINE_STEPS` where the predictor takes `steps` (a short evolution)."""
    parameters = inspect.signature(predictor.predict).parameters
    options = {"init_masks": init_masks}
    if "steps" in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    ):
        options["steps"] = REFINE_STEPS
    return options


def check_refines(predictor) -> None:
    """Raise SegmentError unless `predictor.predict` takes `init_masks` (needed to refine)."""
    if not takes_init_masks(predictor):
        raise SegmentError(
            f"--refine-existing: {type(predictor).__name__} cannot start from a mask (its "
            "predict has no init_masks); use the embedded default or a crop-learner checkpoint"
        )


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


def _encode_batch(predictor, images: list) -> list:
    """`predictor.encode_states(images)`, or None per image (each then gets `set_image`) for a
    single image, a predictor without `encode_states`, or a failed batch (e.g. out of memory:
    encoding the images one at a time reports a bad one by name)."""
    if len(images) < 2 or not hasattr(predictor, "encode_states"):
        return [None] * len(images)
    try:
        return predictor.encode_states(images)
    except Exception as err:
        _say(f"encoding {len(images)} images in one batch failed ({type(err).__name__}: {err}); "
             "encoding them one at a time")  # fmt: skip
        return [None] * len(images)


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
    batch_images: int = 1,
    refine_existing: bool = False,
) -> int:
    """Segment the pending images of shard `rank`, appending each to `part_path`.

    `batch_images` images are loaded and encoded together (`_encode_batch`), then segmented and
    written one by one; `refine_existing` as in `segment_image`. Returns the number of annotations that failed in this call (bad images
    and bad boxes).
    """
    from tqdm import tqdm

    n_images, n_boxes = coco_index.count_pending(conn, rank, world_size)
    desc = "segment" if world_size == 1 else f"segment rank {rank}/{world_size}"
    writer = coco_index.PartWriter(part_path)
    failures = 0
    bar = tqdm(total=n_images, desc=desc, unit="img", disable=not progress, dynamic_ncols=True)
    boxes_done = 0
    try:
        tasks = coco_index.iter_pending_images(conn, rank, world_size)
        while batch := list(itertools.islice(tasks, batch_images)):
            images = []  # an image, or the ImageLoadError of a bad one
            for task in batch:
                try:
                    path = Path(images_dir) / task.file_name
                    images.append(_load_checked(path, task.width, task.height, max_pixels))
                except ImageLoadError as err:
                    images.append(err)
            good = [image for image in images if isinstance(image, np.ndarray)]
            states = iter(_encode_batch(predictor, good))
            for task, image in zip(batch, images, strict=True):
                path = Path(images_dir) / task.file_name
                if isinstance(image, ImageLoadError):
                    _say(f"{image}; its {len(task.anns)} boxes are skipped")
                    results = [(ord_, None, None, str(image)) for ord_, _ in task.anns]
                else:
                    try:
                        results = segment_image(
                            predictor, image, task.anns, next(states), refine_existing
                        )
                    except Exception as err:  # a segmenter failure must not stop the others
                        message = f"{path}: segmenter failed: {type(err).__name__}: {err}"
                        _say(message)
                        results = [(ord_, None, None, message) for ord_, _ in task.anns]
                    else:
                        for *_, error in results:
                            if error is not None:
                                _say(f"{path}: {error}")
                failures += sum(error is not None for *_, error in results)
                writer.write(task.idx, results)
                boxes_done += len(task.anns)
                bar.set_postfix(boxes=f"{boxes_done}/{n_boxes}", refresh=False)
                bar.update(1)
            del images, good, states
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
    batch_images: int = 1,
    refine_existing: bool = False,
) -> int:
    """The whole run for one process of `world_size` (a process group must exist when > 1).

    Returns the number of failed annotations (the same on every rank). Raises SegmentError when
    the run cannot start or finish.
    """
    work = WorkDir.for_output(out_path)
    if refine_existing:
        check_refines(predictor)
    extra = {"model": getattr(predictor, "model_version", "unknown"), **(fingerprint_extra or {})}
    if refine_existing:  # a half-finished run of the other mode is not resumed
        extra["refine_existing"] = True
    conn, error = None, None
    if rank == 0:
        try:
            conn = prepare_work_dir(work, boxes_path, images_dir, extra)
        except SegmentError as err:
            error = str(err)
    error = broadcast(error, world_size)
    if error is not None:
        raise SegmentError(error)
    if conn is None:
        conn = coco_index.open_index(work.index)
    segment_shard(
        conn,
        predictor,
        images_dir,
        work.part(rank),
        rank,
        world_size,
        max_pixels,
        progress,
        batch_images=batch_images,
        refine_existing=refine_existing,
    )
    broadcast(None, world_size)  # every shard is finished
    result = None
    if rank == 0:
        try:
            result = finish(conn, work, out_path)
        except SegmentError as err:
            result = str(err)
    else:
        conn.close()
    result = broadcast(result, world_size)
    if isinstance(result, str):
        raise SegmentError(result)
    return result
