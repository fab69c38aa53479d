"""Robustness cases: files that are not usable checkpoints, given to `box2mask.build_predictor`
(each must raise CheckpointError naming the file; a pickle must not run its code)."""

import os
import pickle
from pathlib import Path

import numpy as np


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
