"""`box2mask segment`: boxes in a COCO file -> the same file with an RLE mask and a score per box.

    box2mask segment --images DIR --boxes IN.json --out OUT.json [--checkpoint CKPT] [--device cpu|cuda]
                     [--refine-existing] [--batch-images N] [--amp off|bf16|fp16] [--channels-last]
                     [--compile]

The run, in three steps that a torchrun launch shares out between processes:

1. `prepare_work_dir` (rank 0, `workdir`): stream IN.json into an on-disk index (`index`) in the
   work folder `OUT.json.partial/`, or, when that folder holds a run of the same input, images
   folder and model, resume it: the images already finished are not redone.
2. `segment_shard` (every rank): load the shard's images `batch_images` at a time (default one;
   the pending images dealt out to ranks by box count, `index.iter_pending_images`), encode them in
   one `encode_states` call when the predictor has it, segment all boxes of an image in one
   `predict` call (`image.segment_image`), append each finished image to the rank's part file. A
   bad image or box is reported on stderr and recorded, and the run goes on.
3. `finish` (rank 0, `workdir`): merge the part files and write OUT.json atomically (temp +
   rename) in the input's order; then remove the work folder.

Failed annotations are written unchanged plus a `box2mask_error` string; the exit status is 1 when
any annotation failed, 2 when the run could not start (bad arguments, malformed IN.json, an
unloadable checkpoint, CUDA asked for but absent). The command line itself (arguments, device,
process group, predictor) is `box2mask/segment/command.py`.
"""

import itertools
from pathlib import Path

import numpy as np

from box2mask.io.image_io import DEFAULT_MAX_PIXELS, ImageLoadError, load_image
from box2mask.segment import index as coco_index
from box2mask.segment.errors import SegmentError, say
from box2mask.segment.image import check_refines, segment_image
from box2mask.segment.shards import broadcast
from box2mask.segment.workdir import WorkDir, finish, prepare_work_dir

__all__ = ["segment_coco", "segment_shard"]


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
        say(f"encoding {len(images)} images in one batch failed ({type(err).__name__}: {err}); "
             "encoding them one at a time")  # fmt: skip
        return [None] * len(images)


# ---------------------------------------------------------------- the run


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
                    say(f"{image}; its {len(task.anns)} boxes are skipped")
                    results = [(ord_, None, None, str(image)) for ord_, _ in task.anns]
                else:
                    try:
                        results = segment_image(
                            predictor, image, task.anns, next(states), refine_existing
                        )
                    except Exception as err:  # a segmenter failure must not stop the others
                        message = f"{path}: segmenter failed: {type(err).__name__}: {err}"
                        say(message)
                        results = [(ord_, None, None, message) for ord_, _ in task.anns]
                    else:
                        for *_, error in results:
                            if error is not None:
                                say(f"{path}: {error}")
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
