"""Robustness: every bad input and fault of issue 8 items 1-2 fed to box2mask; one table.

    .venv/bin/python bench/robustness.py [--details] [--only fault]

Each case runs in a fresh temporary folder, on tiny images, through the public entry points:
`load_image`, `box2mask segment` (in process, as `box2mask.cli` would run it) and
`box2mask.build_predictor(checkpoint)`; faults: SIGKILL of `segment`, of `train` (then --resume,
compared with an uninterrupted run) and of a process writing the label store, a disk that fills
up while a checkpoint is saved (the training scenarios are those of tests/test_faults.py). A case is

    handled      the expected outcome: an error naming the file / annotation and the problem (and,
                 for segment, exit status 1 with every other box segmented, or 2 with nothing
                 written), or a correct result for an odd but valid input (CMYK, 16-bit, ...)
    wrong        it ran, without a clear error, but the result is wrong (e.g. an empty mask)
    crash        an unexpected exception, a traceback, a wrong exit status or no message
    labels lost  input annotations missing from OUT.json (segment cases that write it); for the
                 label store, labels reported committed that are missing or not as written
"""

import argparse
import contextlib
import io
import json
import math
import os
import pickle
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from box2mask.cli import main as cli_main  # noqa: E402
from box2mask.io.image_io import ImageLoadError, load_image  # noqa: E402
from box2mask.io.rle import decode_rle  # noqa: E402

H, W = 40, 56  # every test image


def _good_image(path: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    img = rng.integers(20, 60, (H, W, 3)).astype(np.uint8)
    img[8:28, 10:36] = (210, 50, 40)
    Image.fromarray(img).save(path)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _bomb_png(path: Path, side: int = 30000) -> None:
    """A PNG declaring side x side pixels with 1 kB of data."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1000)
    header = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
    path.write_bytes(header + _png_chunk(b"IEND", b""))


def _truncated(path: Path, fmt: str) -> None:
    noise = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, format=fmt)
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])


# -------------------------------------------------------------- bad and odd image files

BAD_FILES = {
    "0-byte .jpg": ("empty.jpg", lambda p: p.write_bytes(b"")),
    "truncated JPEG": ("cut.jpg", lambda p: _truncated(p, "JPEG")),
    "truncated PNG": ("cut.png", lambda p: _truncated(p, "PNG")),
    "text file named .jpg": ("notes.jpg", lambda p: p.write_text("not an image\n")),
    "HTML page named .png": ("page.png", lambda p: p.write_text("<html><body>404</body></html>")),
    "missing file": ("gone.png", lambda p: None),
    "30000x30000 PNG (bomb)": ("bomb.png", _bomb_png),
}


def _scene() -> Image.Image:
    """The test scene: a red rectangle (rows 8:28, columns 10:36) on noisy dark ground."""
    rng = np.random.default_rng(0)
    img = rng.integers(20, 60, (H, W, 3)).astype(np.uint8)
    img[8:28, 10:36] = (210, 50, 40)
    return Image.fromarray(img)


def _exif_rotated(path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise: W x H on screen
    _scene().save(path, exif=exif, quality=95)


def _sixteen_bit(path: Path) -> None:
    gray = np.asarray(_scene().convert("L")).astype(np.uint16) * 257
    Image.fromarray(gray).save(path)


def _palette(path: Path) -> None:
    _scene().convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(path, transparency=0)


ODD_FILES = {  # name -> (file name, writer, expected (H, W), a box XYWH around the rectangle)
    "CMYK JPEG": ("cmyk.jpg", lambda p: _scene().convert("CMYK").save(p, quality=95), (H, W)),
    "16-bit PNG": ("deep.png", _sixteen_bit, (H, W)),
    "palette PNG + transparency": ("pal.png", _palette, (H, W)),
    "grayscale + alpha PNG": ("la.png", lambda p: _scene().convert("LA").save(p), (H, W)),
    "grayscale PNG": ("gray.png", lambda p: _scene().convert("L").save(p), (H, W)),
    "EXIF-rotated JPEG (orientation 6)": ("rot.jpg", _exif_rotated, (W, H)),
    "flat one-colour image": (
        "flat.png",
        lambda p: Image.new("RGB", (W, H), (90, 90, 90)).save(p),
        (H, W),
    ),
}
ODD_BOXES = {"EXIF-rotated JPEG (orientation 6)": [10, 8, 24, 30]}  # others: [8, 6, 30, 24]


def load_case(folder: Path, name: str) -> tuple[str, str, int]:
    """load_image on one file: bad files must raise ImageLoadError naming the file."""
    if name in BAD_FILES:
        file_name, write = BAD_FILES[name]
        path = folder / file_name
        write(path)
        try:
            load_image(path)
        except ImageLoadError as err:
            ok = str(path) in str(err)
            return ("handled" if ok else "crash"), str(err).replace(str(folder) + "/", ""), 0
        return "wrong", "loaded without an error", 0
    file_name, write, shape = ODD_FILES[name]
    path = folder / file_name
    write(path)
    image = load_image(path)
    ok = image.shape == (*shape, 3) and image.dtype == np.uint8
    return ("handled" if ok else "wrong"), f"loaded as {image.shape} {image.dtype}", 0


# -------------------------------------------------------------- segment runs


def _coco(images, anns, categories=True):
    coco = {"images": images, "annotations": anns}
    if categories:
        coco["categories"] = [{"id": 1, "name": "thing"}]
    return coco


def _good_coco(folder: Path, n: int = 2):
    images, anns = [], []
    for i in range(n):
        _good_image(folder / f"good{i}.png", seed=i)
        images.append({"id": i + 1, "file_name": f"good{i}.png", "width": W, "height": H})
        anns.append(
            {"id": 10 * (i + 1), "image_id": i + 1, "category_id": 1, "bbox": [8, 6, 30, 24]}
        )
    return images, anns


def run_segment(folder: Path, boxes_text: str, *extra) -> tuple[int, str, dict | None]:
    boxes, out = folder / "boxes.json", folder / "out.json"
    boxes.write_text(boxes_text)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        args = ["segment", "--images", str(folder), "--boxes", str(boxes), "--out", str(out)]
        code = cli_main(args + ["--no-progress", *extra])
    result = json.loads(out.read_text()) if out.exists() else None
    return code, err.getvalue(), result


def _lost(coco_in: dict, coco_out: dict | None) -> int:
    if coco_out is None:
        return len(coco_in["annotations"])
    ids_out = [
        json.dumps(a) if not isinstance(a, dict) else json.dumps(a.get("id"))
        for a in coco_out["annotations"]
    ]
    ids_in = [
        json.dumps(a) if not isinstance(a, dict) else json.dumps(a.get("id"))
        for a in coco_in["annotations"]
    ]
    return sum(max(0, ids_in.count(i) - ids_out.count(i)) for i in set(ids_in))


def _judge(code, err, out, coco_in, want_code, words, folder) -> tuple[str, str, int]:
    """handled when the exit status and the stderr words are as expected and the good boxes got masks."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if "Traceback" in err:
        return "crash", "traceback: " + lines[-1][:120], _lost(coco_in, out)
    message = next((ln for ln in lines if all(w in ln for w in words)), None)
    lost = _lost(coco_in, out) if want_code != 2 else 0
    if code != want_code or message is None:
        return "crash", f"exit {code}, stderr: {' | '.join(lines)[:150]}", lost
    if out is not None:
        for a in out["annotations"]:
            if (
                isinstance(a, dict)
                and "segmentation" in a
                and not decode_rle(a["segmentation"]).any()
            ):
                return "wrong", f"annotation {a.get('id')}: empty mask", lost
    message = message.replace("box2mask segment: ", "").replace(str(folder) + "/", "")
    return "handled", message, lost


def segment_file_case(folder: Path, name: str) -> tuple[str, str, int]:
    """A COCO file with two good images and one bad/odd file: the bad one reported, the rest done."""
    images, anns = _good_coco(folder)
    spec = BAD_FILES.get(name) or ODD_FILES[name]
    file_name, write = spec[0], spec[1]
    write(folder / file_name)
    h, w = spec[2] if name in ODD_FILES else (H, W)
    images.append({"id": 9, "file_name": file_name, "width": w, "height": h})
    bbox = ODD_BOXES.get(name, [8, 6, 30, 24])
    anns.append({"id": 90, "image_id": 9, "category_id": 1, "bbox": bbox})
    coco = _coco(images, anns)
    code, err, out = run_segment(folder, json.dumps(coco))
    if name in BAD_FILES:
        return _judge(code, err, out, coco, 1, [file_name], folder)
    return _judge(code, err, out, coco, 0, ["wrote"], folder)


BAD_BOXES = {  # name -> (bbox XYWH, expected exit, words in the message)
    "NaN coordinate": ([math.nan, 5, 10, 10], 1, ["annotation 90", "non-finite"]),
    "+inf size": ([5, 5, math.inf, 10], 1, ["annotation 90", "non-finite"]),
    "-inf coordinate": ([5, -math.inf, 10, 10], 1, ["annotation 90", "non-finite"]),
    "negative width": ([30, 5, -10, 10], 1, ["annotation 90", "inverted"]),
    "negative height": ([5, 30, 10, -10], 1, ["annotation 90", "inverted"]),
    "zero area": ([5, 5, 0, 0], 1, ["annotation 90", "zero area"]),
    "entirely outside": ([500, 500, 10, 10], 1, ["annotation 90", "outside"]),
    "3 numbers": ([5, 5, 10], 1, ["annotation 90", "4 numbers"]),
    "a string": ("5 5 10 10", 1, ["annotation 90", "bad bbox"]),
    "no bbox": (None, 1, ["annotation 90", "no 'bbox'"]),
    "partly outside (clipped)": ([-10, -10, 30, 30], 0, ["wrote"]),
    "1 px wide": ([20, 6, 1, 20], 0, ["wrote"]),
    "1 px tall": ([10, 15, 30, 1], 0, ["wrote"]),
}


def segment_box_case(folder: Path, name: str) -> tuple[str, str, int]:
    images, anns = _good_coco(folder)
    bbox, want, words = BAD_BOXES[name]
    ann = {"id": 90, "image_id": 1, "category_id": 1}
    if bbox is not None:
        ann["bbox"] = bbox
    coco = _coco(images, anns + [ann])
    code, err, out = run_segment(folder, json.dumps(coco))  # NaN/inf: Python writes NaN/Infinity
    return _judge(code, err, out, coco, want, words, folder)


def _coco_cases():
    """name -> (function of (images, anns) -> (text, coco), expected exit, words)."""

    def text(coco):
        return json.dumps(coco), coco

    def dup_ann(images, anns):
        anns[1]["id"] = anns[0]["id"]
        return text(_coco(images, anns))

    def dup_image(images, anns):
        images[1]["id"] = images[0]["id"]
        return text(_coco(images, anns))

    def missing_image(images, anns):
        anns[1]["image_id"] = 77
        return text(_coco(images, anns))

    def unknown_cat(images, anns):
        anns[1]["category_id"] = 5
        return text(_coco(images, anns))

    def no_file_name(images, anns):
        del images[1]["file_name"]
        return text(_coco(images, anns))

    def bad_width(images, anns):
        images[1]["width"] = -3
        return text(_coco(images, anns))

    def not_object(images, anns):
        return text(_coco(images, anns + ["oops"]))

    def truncated(images, anns):
        t, coco = text(_coco(images, anns))
        return t[: len(t) // 2], coco

    def trailing(images, anns):
        t, coco = text(_coco(images, anns))
        return t + " }", coco

    def top_array(images, anns):
        return json.dumps([_coco(images, anns)]), _coco(images, anns)

    def no_anns(images, anns):
        return json.dumps({"images": images}), _coco(images, anns)

    def empty(images, anns):
        return "", _coco(images, anns)

    def binary(images, anns):
        return "\x00\x01\x02garbage", _coco(images, anns)

    return {
        "malformed JSON (truncated)": (truncated, 2, ["malformed JSON"]),
        "malformed JSON (trailing garbage)": (trailing, 2, ["malformed JSON"]),
        "empty file": (empty, 2, ["malformed JSON"]),
        "binary garbage": (binary, 2, ["malformed JSON"]),
        "top level is a list": (top_array, 2, ["top level must be a JSON object"]),
        "no annotations list": (no_anns, 2, ["'annotations' is missing"]),
        "duplicate annotation ids": (dup_ann, 0, ["annotation id 10 appears 2 times"]),
        "duplicate image ids": (dup_image, 1, ["image id 1 is used by 2 image records"]),
        "annotation of a missing image": (missing_image, 1, ["image_id 77 is not in images"]),
        "unknown category": (unknown_cat, 0, ["category_id 5 is not in categories"]),
        "image record without file_name": (no_file_name, 1, ["lacks 'file_name'"]),
        "image record with width -3": (bad_width, 1, ["'width' must be a positive integer"]),
        "annotation that is not an object": (not_object, 1, ["annotation is not a JSON object"]),
    }


def segment_coco_case(folder: Path, name: str) -> tuple[str, str, int]:
    make, want, words = _coco_cases()[name]
    text, coco = make(*_good_coco(folder))
    code, err, out = run_segment(folder, text)
    status, message, lost = _judge(code, err, out, coco, want, words, folder)
    if status == "handled" and want == 2 and (folder / "out.json").exists():
        return "crash", "wrote OUT.json for an unusable input", 0
    return status, message, lost


# -------------------------------------------------------------- checkpoints


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def checkpoint_case(folder: Path, name: str) -> tuple[str, str, int]:
    import torch

    import box2mask

    try:
        from box2mask.io.checkpoint import CheckpointError
    except ImportError:
        return "pending", "box2mask/io/checkpoint.py not there yet", 0
    tag = {"format": "box2mask-checkpoint", "format_version": 1, "model_state": {}}
    path = folder / "model.pt"
    if name == "truncated":
        torch.save({**tag, "model_state": {"w": torch.randn(1000)}}, path)
        path.write_bytes(path.read_bytes()[:3000])
    elif name == "other format version":
        torch.save({**tag, "format_version": 99}, path)
    elif name == "plain state dict":
        torch.save({"w": torch.zeros(3)}, path)
    elif name == "random bytes":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif name == "JSON file":
        path.write_text('{"format": "box2mask-checkpoint"}')
    elif name == "pickle that runs code":
        with open(path, "wb") as f:
            pickle.dump({"model_state": _RunsCode(folder / "pwned")}, f)
    elif name == "a folder":
        path.mkdir()
    elif name == "missing":
        pass
    try:
        box2mask.build_predictor(str(path))
    except CheckpointError as err:
        if (folder / "pwned").exists():
            return "crash", "the pickled command ran", 0
        ok = str(path) in str(err)
        return ("handled" if ok else "crash"), str(err).replace(str(folder) + "/", "")[:150], 0
    except Exception as err:
        return "crash", f"{type(err).__name__}: {err}"[:150], 0
    return "wrong", "loaded without an error", 0


CHECKPOINTS = [
    "truncated",
    "other format version",
    "plain state dict",
    "random bytes",
    "JSON file",
    "pickle that runs code",
    "a folder",
    "missing",
]


# -------------------------------------------------------------- a fault: SIGKILL mid-run


def sigkill_case(folder: Path, name: str) -> tuple[str, str, int]:
    images, anns = [], []
    for i in range(12):
        _good_image(folder / f"im{i}.png", seed=i)
        images.append({"id": i, "file_name": f"im{i}.png", "width": W, "height": H})
        anns.append({"id": i, "image_id": i, "category_id": 1, "bbox": [8, 6, 30, 24]})
    coco = _coco(images, anns)
    (folder / "boxes.json").write_text(json.dumps(coco))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}

    def cmd(out):
        return [sys.executable, "-m", "box2mask", "segment", "--images", str(folder),
                "--boxes", str(folder / "boxes.json"), "--out", str(out), "--no-progress"]  # fmt: skip

    subprocess.run(cmd(folder / "ref.json"), env=env, check=True, capture_output=True)
    part = folder / "out.json.partial" / "parts" / "rank00000.jsonl"
    proc = subprocess.Popen(cmd(folder / "out.json"), env=env, stderr=subprocess.DEVNULL)
    while proc.poll() is None and not (part.exists() and part.read_bytes().count(b"\n") >= 4):
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = part.read_bytes().count(b"\n")
    rerun = subprocess.run(cmd(folder / "out.json"), env=env, capture_output=True, text=True)
    same = (folder / "out.json").read_bytes() == (folder / "ref.json").read_bytes()
    out = json.loads((folder / "out.json").read_text())
    status = "handled" if rerun.returncode == 0 and same else "crash"
    return status, f"killed after {done}/12 images; rerun identical: {same}", _lost(coco, out)


# -------------------------------------------------------------- faults: training, checkpoints, store


def _faults():
    """The training-fault scenarios of tests/test_faults.py (imported: one version of each)."""
    import torch

    from tests import test_faults

    torch.set_num_threads(1)  # the same thread count as the subprocess runs: same sums
    return test_faults


def _reference_run(folder: Path, faults) -> tuple[Path, Path]:
    """A tiny dataset and an uninterrupted training run on it (the reference)."""
    from tests.test_train_loop import make_shapes_dataset
    from train.train_cmd import train

    shapes = make_shapes_dataset(folder / "data")
    straight = folder / "straight"
    config = faults.tiny_config(shapes, straight, iterations=faults.STEPS, checkpoint_every=2)
    train(config, progress=False)
    return shapes, straight


def train_sigkill_case(folder: Path, name: str) -> tuple[str, str, int]:
    faults = _faults()
    shapes, straight = _reference_run(folder, faults)
    out = folder / "killed"
    killed_at = faults.kill_after_first_checkpoint(shapes, out)
    code = faults.resume(out)
    problems = faults.differences(out, straight)
    message = f"killed with last.pt at step {killed_at}; --resume exit {code}; " + (
        "; ".join(problems) or f"{faults.STEPS} steps, weights identical to an uninterrupted run"
    )
    return ("handled" if code == 0 and not problems else "crash"), message, 0


def train_disk_full_case(folder: Path, name: str) -> tuple[str, str, int]:
    """Disk full at the step-4 checkpoint of `box2mask train`: step 2 kept, then --resume."""
    from box2mask.io.checkpoint import load_checkpoint

    faults = _faults()
    shapes, straight = _reference_run(folder, faults)
    out = folder / "full"
    err = io.StringIO()
    try:
        with faults.disk_full_at_step(4), contextlib.redirect_stderr(err):
            code = cli_main(faults.train_args(shapes, out))
        last_line = err.getvalue().strip().splitlines()[-1]
        how = f"exit {code}: {last_line[:60]}... {'names' if 'last.pt' in last_line else 'does not name'} last.pt"
    except OSError as error:
        code, how = None, f"traceback ({error.strerror}, no message naming last.pt)"
    kept = load_checkpoint(out / "last.pt")["extra"]["step"]
    temps = [p.name for p in out.iterdir() if p.name.startswith(".tmp")]
    resumed = faults.resume(out)
    problems = faults.differences(out, straight)
    message = f"{how}; last.pt kept at step {kept}, temp files {len(temps)}; --resume: " + (
        "; ".join(problems) or "weights identical to an uninterrupted run"
    )
    intact = kept == 2 and not temps and resumed == 0 and not problems
    clear = code not in (None, 0) and "names last.pt" in how
    return ("handled" if intact and clear else "crash" if intact else "wrong"), message, 0


def checkpoint_disk_full_case(folder: Path, name: str) -> tuple[str, str, int]:
    """save_checkpoint when the disk fills up half way: the previous file intact, no temp file."""
    import errno

    import torch

    from box2mask.io.checkpoint import load_checkpoint, save_checkpoint
    from box2mask.model.config import ModelConfig

    faults = _faults()
    model = torch.nn.Linear(3, 2)
    args = dict(model_config=ModelConfig(), class_names=["c"], config={}, model_version="v")
    path = folder / "last.pt"
    save_checkpoint(path, model=model, extra={"step": 2}, **args)
    before = path.read_bytes()
    torch.save = faults.disk_full_after(len(before) // 2)
    try:
        save_checkpoint(path, model=model, extra={"step": 4}, **args)
        return "wrong", "no error although the disk was full", 0
    except OSError as err:
        raised = err.errno == errno.ENOSPC
    finally:
        torch.save = faults.REAL_SAVE
    intact = path.read_bytes() == before and load_checkpoint(path)["extra"]["step"] == 2
    others = [p.name for p in folder.iterdir() if p.name != "last.pt"]
    ok = raised and intact and not others
    message = (
        f"OSError ENOSPC raised: {raised}; previous last.pt intact: {intact}; temp files: {others}"
    )
    return ("handled" if ok else "wrong"), message, 0


_STORE_WRITER = """
import sys
from annotator.store import Label, SQLiteStore
store = SQLiteStore(sys.argv[1])
rle = {"size": [40, 56], "counts": "0" * 30}
while True:
    label = store.add(Label(image="a.png", box_xyxy=[1, 2, 30, 40], class_name="c", mask_rle=rle,
                            source="model", model_version="v", verified=False))
    label = store.update(Label(**{**label.__dict__, "verified": True}))
    print(label.id, label.revision, flush=True)
"""


def store_sigkill_case(folder: Path, name: str, kills: int = 5) -> tuple[str, str, int]:
    """SIGKILL a process adding and accepting labels, `kills` times at random moments; after
    each, every label it reported as committed must be in the store, accepted, and the file sound."""
    import random
    import sqlite3

    from annotator.store import SQLiteStore

    db_path = folder / "labels.sqlite"
    committed, rng = {}, random.Random(0)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for _ in range(kills):
        proc = subprocess.Popen(
            [sys.executable, "-c", _STORE_WRITER, str(db_path)], stdout=subprocess.PIPE, env=env
        )
        proc.stdout.readline()  # writing has started
        time.sleep(rng.uniform(0.05, 0.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for line in proc.stdout.read().split(b"\n")[:-1]:  # complete lines only
            label_id, revision = line.decode().split()
            committed[label_id] = int(revision)
    sound = sqlite3.connect(db_path).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store = SQLiteStore(db_path)
    lost = 0
    for label_id, revision in committed.items():
        try:
            label = store.get(label_id)
            lost += not (label.verified and label.revision == revision)
        except KeyError:
            lost += 1
    store.close()
    message = f"{kills} kills, {len(committed)} labels committed, integrity_check ok: {sound}"
    return ("handled" if sound and not lost else "crash"), message, lost


# -------------------------------------------------------------- the table


def all_cases():
    cases = [("image file (load_image)", n, load_case) for n in [*BAD_FILES, *ODD_FILES]]
    cases += [("image file (segment)", n, segment_file_case) for n in [*BAD_FILES, *ODD_FILES]]
    cases += [("box (segment)", n, segment_box_case) for n in BAD_BOXES]
    cases += [("COCO file (segment)", n, segment_coco_case) for n in _coco_cases()]
    cases += [("checkpoint (build_predictor)", n, checkpoint_case) for n in CHECKPOINTS]
    cases += [("fault (segment)", "SIGKILL mid-run, rerun", sigkill_case)]
    cases += [("fault (train)", "SIGKILL after the first checkpoint, --resume", train_sigkill_case)]
    cases += [("fault (train)", "disk full at a checkpoint, --resume", train_disk_full_case)]
    cases += [("fault (checkpoint)", "disk full half way through save", checkpoint_disk_full_case)]
    cases += [("fault (label store)", "5 SIGKILLs during a burst of writes", store_sigkill_case)]
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--details", action="store_true", help="also print one row per case")
    parser.add_argument("--only", default="", help="run the groups whose name contains this")
    args = parser.parse_args()
    rows = []
    for group, name, fn in all_cases():
        if args.only not in group:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            try:
                status, message, lost = fn(Path(tmp), name)
            except Exception as err:  # the harness records crashes instead of stopping
                status, message, lost = "crash", f"{type(err).__name__}: {err}"[:150], 0
        rows.append((group, name, status, lost, message))
        print(f"  {status:8s} {group}: {name}", file=sys.stderr)

    if args.details:
        print("| group | case | outcome | labels lost | message |\n|---|---|---|---|---|")
        for group, name, status, lost, message in rows:
            message = message.replace("|", "/").replace("\n", " ")
            print(f"| {group} | {name} | {status} | {lost} | {message} |")
        print()
    print(
        "| inputs | cases tried | handled (clear error or correct result) | wrong result | crashes | pending | labels lost |"
    )
    print("|---|---|---|---|---|---|---|")
    groups = dict.fromkeys(r[0] for r in rows)
    for group in [*groups, "all"]:
        sel = [r for r in rows if group in ("all", r[0])]
        count = {s: sum(r[2] == s for r in sel) for s in ("handled", "wrong", "crash", "pending")}
        lost = sum(r[3] for r in sel)
        print(
            f"| {group} | {len(sel)} | {count['handled']} | {count['wrong']} | {count['crash']} "
            f"| {count['pending']} | {lost} |"
        )


if __name__ == "__main__":
    main()
