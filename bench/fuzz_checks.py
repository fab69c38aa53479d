"""The checks of bench/fuzz.py: feed one fuzzed input to a parser, judge what came out.

Each check(case, folder) writes the input into the empty `folder`, runs the parser, and returns
(status, detail): "clean error" (the parser's own error naming the input), "correct" (the result
passes the checks), or "crash" (a wrong result, a changed input file, a partial output or a
temporary file left behind). An exception escaping a check is a crash too (bench/fuzz.py). The
checkpoint check is bench/fuzz_checkpoints.py, the files all checks use bench/fuzz_files.py.
"""

import contextlib
import functools
import io
import json
import math
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np

from bench.fuzz_checkpoints import good_checkpoint_bytes
from bench.fuzz_files import (
    good_image_bytes,
    leftovers,
    mutate_bytes,
    names_path,
    snapshot,
    write_good_images,
)
from bench.fuzz_inputs import GOOD_IMAGES

REPO = Path(__file__).resolve().parents[1]


@functools.cache
def warm_up() -> None:
    """Import what the checks use and make the good files once, before cases are forked (a
    forked child would import and build them again, per case)."""
    import annotator.export  # noqa: F401
    import box2mask.cli  # noqa: F401
    import box2mask.crop.predictor  # noqa: F401
    import box2mask.model.predictor  # noqa: F401
    import box2mask.segment.command  # noqa: F401
    import train.crop_config  # noqa: F401
    from box2mask.levelset.segmenter import LevelSetSegmenter

    LevelSetSegmenter()
    for fmt in ("PNG", "JPEG", "JPEG-EXIF", "GIF", "BMP", "TIFF", "WEBP"):
        good_image_bytes(fmt)
    for kind in ("crop-learner", "box2mask-t"):
        good_checkpoint_bytes(kind)


def _input_annotations(data: bytes):
    """The input's annotations list per Python's json (None when it is not a COCO object)."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("annotations"), list):
        return None
    return doc["annotations"]


def check_coco_segment(data: bytes, folder: Path) -> tuple[str, str]:
    from box2mask.cli import main as cli_main
    from box2mask.io.rle import decode_rle

    images = write_good_images(folder)
    boxes, out = folder / "boxes.json", folder / "out.json"
    boxes.write_bytes(data)
    before = snapshot(folder)
    err = io.StringIO()
    refine = ["--refine-existing"] if zlib.crc32(data) % 2 else []  # half the cases read masks
    args = ["--images", str(images), "--boxes", str(boxes), "--out", str(out), "--no-progress"]
    with contextlib.redirect_stderr(err):
        code = cli_main(["segment", *args, "--device", "cpu", *refine])
    text = err.getvalue()
    if "Traceback" in text:
        return "crash", "traceback on stderr: " + text.strip().splitlines()[-1][:160]
    if code == 2:
        problem = leftovers(before, folder, set())
        if problem:
            return "crash", f"exit 2 but {problem}"
        if f"error: {boxes}" not in text and str(boxes) not in text:
            return "crash", f"exit 2 without naming the input: {text.strip()[:160]}"
        return "clean error", text.strip().splitlines()[-1][:160]
    if code not in (0, 1):
        return "crash", f"exit {code}"
    problem = leftovers(before, folder, {"out.json"})
    if problem:
        return "crash", problem
    result = json.loads(out.read_text())
    anns_in, anns_out = _input_annotations(data), result.get("annotations")
    if anns_in is None or not isinstance(anns_out, list) or len(anns_out) != len(anns_in):
        return "crash", "OUT.json does not keep every input annotation"
    failed = 0
    for ann in anns_out:
        if not isinstance(ann, dict) or "box2mask_error" in ann:
            failed += 1
            continue
        if "segmentation" not in ann or "score" not in ann:
            return "crash", f"annotation {ann.get('id')!r}: no mask and no error"
        mask = decode_rle(ann["segmentation"])
        if not mask.any() or not math.isfinite(ann["score"]):
            return "crash", f"annotation {ann.get('id')!r}: empty mask or score {ann['score']}"
    if (code == 1) != (failed > 0):
        return "crash", f"exit {code} with {failed} failed annotations"
    return ("clean error" if failed else "correct"), f"exit {code}, {failed} failed"


def check_segment_exit(data: bytes, folder: Path) -> tuple[str, str]:
    """The same input through the real `box2mask segment` command (a subprocess)."""
    images = write_good_images(folder)
    boxes, out = folder / "boxes.json", folder / "out.json"
    boxes.write_bytes(data)
    before = snapshot(folder)
    cmd = [sys.executable, "-m", "box2mask", "segment", "--images", str(images), "--boxes",
           str(boxes), "--out", str(out), "--no-progress", "--device", "cpu"]  # fmt: skip
    env = {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    if "Traceback" in proc.stderr or proc.returncode not in (0, 1, 2):
        return "crash", f"exit {proc.returncode}: {proc.stderr.strip()[-160:]}"
    problem = leftovers(before, folder, {"out.json"} if proc.returncode != 2 else set())
    if problem:
        return "crash", problem
    if proc.returncode == 2 and str(boxes) not in proc.stderr:
        return "crash", f"exit 2 without naming the input: {proc.stderr.strip()[:160]}"
    if proc.returncode != 2 and not out.is_file():
        return "crash", f"exit {proc.returncode} without OUT.json"
    status = "correct" if proc.returncode == 0 else "clean error"
    return status, f"exit {proc.returncode}"


def check_coco_import(data: bytes, folder: Path) -> tuple[str, str]:
    from annotator.export import import_coco
    from box2mask.io.rle import decode_rle
    from box2mask.labels import SQLiteStore, check_label

    images = write_good_images(folder)
    coco = folder / "labels.json"
    coco.write_bytes(data)
    store = SQLiteStore(folder / "store" / "labels.sqlite", images)
    before = snapshot(folder)
    try:
        stats = import_coco(store, coco)
    except ValueError as err:
        labels = [x for key in store.list_images() for x in store.labels(key)]
        store.close()
        if labels:
            return "crash", f"refused ({err}) after adding {len(labels)} labels"
        if not names_path(err, coco):
            return "crash", f"ValueError without the file's name: {err}"
        return "clean error", str(err)[:160]
    labels = [x for key in store.list_images() for x in store.labels(key)]
    store.close()
    problem = leftovers(before, folder, set())
    if problem:
        return "crash", problem
    if len(labels) != stats["added"]:
        return "crash", f"reported {stats['added']} added, the store holds {len(labels)}"
    for label in labels:
        check_label(label)
        if label.image not in GOOD_IMAGES:
            return "crash", f"a label on {label.image!r}, not an image of the folder"
        if label.mask_rle is not None:
            if decode_rle(label.mask_rle).shape != GOOD_IMAGES[label.image]:
                return "crash", f"label mask of size {label.mask_rle['size']} on {label.image}"
    return "correct", f"{stats['added']} added, {stats['skipped']} skipped"


def _set_size(data: bytes, fmt: str, width: int, height: int) -> bytes:
    """The file with the width and height of its header replaced (PNG: IHDR with a fixed CRC;
    JPEG: the SOF0 marker; other formats: unchanged)."""
    import struct
    import zlib

    data = bytearray(data)
    if fmt == "PNG" and len(data) >= 33:
        data[16:24] = struct.pack(">II", width % 2**32, height % 2**32)
        data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    elif fmt.startswith("JPEG"):
        at = bytes(data).find(b"\xff\xc0")
        if at >= 0 and len(data) >= at + 9:
            data[at + 5 : at + 9] = struct.pack(">HH", height % 2**16, width % 2**16)
    return bytes(data)


def check_image(case: dict, folder: Path) -> tuple[str, str]:
    from box2mask.io.image_io import ImageLoadError, image_size, load_image

    fmt = case["format"]
    data = good_image_bytes(fmt)
    for edit in case["edits"]:
        if edit[0] == "size":
            data = _set_size(data, fmt, edit[1], edit[2])
        else:
            data = mutate_bytes(data, [edit])
    path = folder / ("image." + fmt.split("-")[0].lower())
    path.write_bytes(data)
    before = snapshot(folder)
    try:
        image = load_image(path)
    except ImageLoadError as err:
        image = err
    try:
        size = image_size(path)
    except ImageLoadError as err:
        size = err
    problem = leftovers(before, folder, set())
    if problem:
        return "crash", problem
    for result in (image, size):
        if isinstance(result, ImageLoadError) and not names_path(result, path):
            return "crash", f"error without the file's name: {result}"
    if isinstance(image, ImageLoadError):
        return "clean error", str(image).replace(str(path), "FILE")[:160]
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or image.size == 0:
        return "crash", f"load_image returned {image.shape} {image.dtype}"
    if not isinstance(size, ImageLoadError) and size != image.shape[:2]:
        return "crash", f"image_size {size} but load_image {image.shape[:2]}"
    return "correct", f"{image.shape}"


def check_yaml(data: bytes, folder: Path) -> tuple[str, str]:
    import yaml

    from train.config import ConfigError, apply_overrides, flatten_config, load_config
    from train.crop_config import load_crop_config

    path = folder / "config.yaml"
    path.write_bytes(data)
    before = snapshot(folder)
    outcomes = []
    for loader in (load_config, load_crop_config):
        try:
            cfg = loader(path)
        except ConfigError as err:
            if not names_path(err, path):
                return "crash", f"{loader.__name__}: ConfigError without the file's name: {err}"
            outcomes.append("clean error")
            continue
        flat = flatten_config(cfg)  # the round trip of a run's config.yaml must give it back
        again = apply_overrides(type(cfg)(), yaml.safe_load(yaml.safe_dump(flat)), "round trip")
        if repr(again) != repr(cfg):
            return "crash", f"{loader.__name__}: the config does not survive a round trip"
        outcomes.append("correct")
    problem = leftovers(before, folder, set())
    if problem:
        return "crash", problem
    status = "correct" if "correct" in outcomes else "clean error"
    return status, " / ".join(outcomes)
