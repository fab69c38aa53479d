"""Self-describing checkpoints: the model's weights with everything needed to rebuild it.

The format, `save_checkpoint` and `load_checkpoint` with every check, for any kind of model (the
Box2Mask-T network is rebuilt by `box2mask.model.checkpoint`). A checkpoint is a dict saved with
torch.save and read with `torch.load(weights_only=True)`:
    format          "box2mask-checkpoint"
    format_version  FORMAT_VERSION
    model_version   str, the name the annotator records with every proposed mask
    kind            "box2mask-t" (the full-image network) | "crop-learner" (box2mask/crop/learner.py)
    model_config    dataclasses.asdict of the model's config (ModelConfig, CropLearnerConfig)
    model_state     the model's state_dict (unwrapped from DDP)
    class_names     list of K foreground class names
    config          the resolved full (training) config, a plain dict
    extra           optimizer / scheduler / scaler state, step, epoch... when saved by training
"""

import dataclasses
import os

import torch

from box2mask.io.atomic_write import atomic_write

__all__ = [
    "FORMAT_VERSION",
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
]

FORMAT = "box2mask-checkpoint"
FORMAT_VERSION = 1


_FIELD_TYPES = {  # the type every checkpoint field must have (a hostile file may hold anything)
    "model_version": str,
    "model_config": dict,
    "model_state": dict,
    "class_names": list,
    "config": dict,
}


class CheckpointError(RuntimeError):
    """A file that is not a usable box2mask checkpoint; the message names the file."""


def save_checkpoint(
    path,
    *,
    model: torch.nn.Module,
    model_config,
    class_names: list[str],
    config: dict,
    model_version: str,
    extra: dict | None = None,
    kind: str = "box2mask-t",
) -> None:
    """Write a checkpoint atomically (`box2mask.io.atomic_write`).

    model_config: the model's config dataclass; kind: which model it is (see the module docstring).
    """
    path = os.fspath(path)
    model = getattr(model, "module", model)  # DistributedDataParallel wrapper
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_version": str(model_version),
        "kind": str(kind),
        "model_config": dataclasses.asdict(model_config),
        "model_state": model.state_dict(),
        "class_names": list(class_names),
        "config": config,
        "extra": extra or {},
    }
    with atomic_write(path, "wb") as f:
        torch.save(payload, f)


def load_checkpoint(path, map_location="cpu") -> dict:
    """Read and check a checkpoint; raises CheckpointError naming the file and the problem."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, pickle with code, random bytes...
        raise CheckpointError(
            f"{path}: not a readable box2mask checkpoint (truncated or another format): {err}"
        ) from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a box2mask checkpoint (no '{FORMAT}' format tag)")
    version = ckpt.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version!r}, this box2mask reads version "
            f"{FORMAT_VERSION}"
        )
    missing = {"model_config", "model_state", "class_names", "config", "model_version"} - set(ckpt)
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {sorted(missing)}")
    for key, kind in _FIELD_TYPES.items():
        if not isinstance(ckpt[key], kind):
            raise CheckpointError(
                f"{path}: '{key}' must be a {kind.__name__}, not {type(ckpt[key]).__name__}"
            )
    if not all(isinstance(name, str) for name in ckpt["class_names"]):
        raise CheckpointError(f"{path}: 'class_names' must be a list of strings")
    if not all(isinstance(value, torch.Tensor) for value in ckpt["model_state"].values()):
        raise CheckpointError(f"{path}: 'model_state' holds something that is not a tensor")
    ckpt.setdefault("kind", "box2mask-t")  # checkpoints written before kinds existed
    ckpt["path"] = path
    return ckpt
