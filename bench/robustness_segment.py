"""Robustness cases of `box2mask segment` (in process, as `box2mask.cli` would run it): bad image
files, bad boxes, bad COCO files, and a SIGKILL mid-run followed by a rerun."""

import contextlib
import io
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.robustness_images import BAD_FILES, ODD_BOXES, ODD_FILES, H, W, good_image
from box2mask.cli import main as cli_main
from box2mask.io.rle import decode_rle

REPO = Path(__file__).resolve().parents[1]


def _coco(images, anns, categories=True):
    coco = {"images": images, "annotations": anns}
    if categories:
        coco["categories"] = [{"id": 1, "name": "thing"}]
    return coco


def _good_coco(folder: Path, n: int = 2):
    images, anns = [], []
    for i in range(n):
        good_image(folder / f"good{i}.png", seed=i)
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


def coco_cases():
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
    make, want, words = coco_cases()[name]
    text, coco = make(*_good_coco(folder))
    code, err, out = run_segment(folder, text)
    status, message, lost = _judge(code, err, out, coco, want, words, folder)
    if status == "handled" and want == 2 and (folder / "out.json").exists():
        return "crash", "wrote OUT.json for an unusable input", 0
    return status, message, lost


def sigkill_case(folder: Path, name: str) -> tuple[str, str, int]:
    images, anns = [], []
    for i in range(12):
        good_image(folder / f"im{i}.png", seed=i)
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
