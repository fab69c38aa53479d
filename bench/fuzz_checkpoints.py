"""The checkpoint check of bench/fuzz.py: a good crop-learner or Box2Mask-T checkpoint with broken
bytes or fields -> `box2mask.build_predictor` (a CheckpointError naming the file, or a predictor
that answers a box)."""

import functools
import io
import math
import tempfile
from pathlib import Path

import numpy as np

from bench.fuzz_files import leftovers, mutate_bytes, names_path, snapshot


@functools.cache
def good_checkpoint_bytes(kind: str) -> bytes:
    """A valid checkpoint: a small crop learner, or the tests' tiny Box2Mask-T."""
    import torch

    from box2mask.crop.learner import KIND, CropLearnerConfig, CropUNet
    from box2mask.io.checkpoint import save_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.pt"
        if kind == "crop-learner":
            torch.manual_seed(0)
            model = CropUNet(CropLearnerConfig(base="ellipse", crop_size=16, width=4, levels=2))
            save_checkpoint(path, model=model, model_config=model.cfg, class_names=["thing"],
                            config={}, model_version="fuzz-crop", kind=KIND)  # fmt: skip
        else:
            from tests.tiny_model import save_tiny_checkpoint

            save_tiny_checkpoint(path, "fuzz-tiny", config={"image_size": 64})
        return path.read_bytes()


def _broken_tensor(value, how: str):
    """A weight made unusable: another shape or dtype, NaN, a scalar, or not a tensor at all."""
    import torch

    if how == "shape":
        return torch.zeros(*(s + 1 for s in value.shape), 2)
    if how == "dtype":
        return value.to(torch.int64)
    if how == "nan":
        return torch.full_like(value.float(), math.nan)
    return torch.tensor(1.0) if how == "scalar" else "x"


def _edit_fields(data: bytes, edits) -> bytes:
    """The checkpoint with its fields removed or replaced, or one weight broken."""
    import torch

    ckpt = torch.load(io.BytesIO(data), weights_only=True)
    for edit in edits:
        if edit[0] == "drop":
            ckpt.pop(edit[1], None)
        elif edit[0] == "set":
            ckpt[edit[1]] = edit[2]
        elif edit[0] == "config" and isinstance(ckpt.get("model_config"), dict):
            value = edit[2]
            if ckpt.get("kind") == "box2mask-t" and isinstance(value, int) and value > 4096:
                value = 4096  # a Box2Mask-T network this wide is built before its weights are
                # checked: tens of GB (a known limit; the crop learner checks its sizes first)
            ckpt["model_config"][edit[1] or "width"] = value
        elif edit[0] == "tensor" and isinstance(ckpt.get("model_state"), dict):
            state = ckpt["model_state"]
            if not state:
                continue
            name = sorted(state)[edit[1] % len(state)]
            if edit[2] == "drop":
                del state[name]
            elif isinstance(state[name], torch.Tensor):
                state[name] = _broken_tensor(state[name], edit[2])
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    return buf.getvalue()


def check_checkpoint(case: dict, folder: Path) -> tuple[str, str]:
    import box2mask
    from box2mask.io.checkpoint import CheckpointError

    data = good_checkpoint_bytes(case["base"])
    if "bytes" in case:
        data = mutate_bytes(data, case["bytes"])
    else:
        data = _edit_fields(data, case["fields"])
    path = folder / "model.pt"
    path.write_bytes(data)
    before = snapshot(folder)
    try:
        predictor = box2mask.build_predictor(path)
    except CheckpointError as err:
        if not names_path(err, path):
            return "crash", f"CheckpointError without the file's name: {err}"
        problem = leftovers(before, folder, set())
        return ("crash", problem) if problem else ("clean error", str(err)[:160])
    image = np.full((24, 32, 3), 40, np.uint8)
    image[6:18, 8:24] = 200
    predictor.set_image(image)
    masks, scores = predictor.predict(np.array([[8.0, 6.0, 24.0, 18.0]]))
    if np.asarray(masks).shape != (1, 24, 32) or np.asarray(scores).shape != (1,):
        return "crash", f"masks {np.asarray(masks).shape}, scores {np.asarray(scores).shape}"
    problem = leftovers(before, folder, set())
    return ("crash", problem) if problem else ("correct", f"{predictor.model_version!r}")
