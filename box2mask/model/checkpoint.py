"""A Box2Mask-T network rebuilt from a checkpoint read by `box2mask.io.checkpoint.load_checkpoint`,
and the predictor options its training config chose for serving it."""

import dataclasses

import torch

from box2mask.io.checkpoint import CheckpointError
from box2mask.model.box2mask_model import build_model
from box2mask.model.config import ModelConfig

__all__ = ["model_config_from_checkpoint", "build_model_from_checkpoint", "serving_options"]


def model_config_from_checkpoint(ckpt: dict) -> ModelConfig:
    """The ModelConfig stored in a checkpoint dict (backbone_weights None: the state holds them)."""
    name = ckpt.get("path", "checkpoint")
    if ckpt.get("kind", "box2mask-t") != "box2mask-t":
        raise CheckpointError(f"{name}: a {ckpt['kind']} checkpoint, not a Box2Mask-T model")
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = set(ckpt["model_config"]) - fields
    if unknown:
        raise CheckpointError(f"{name}: model_config has unknown fields {sorted(unknown)}")
    values = dict(ckpt["model_config"])
    values["backbone_weights"] = None  # the state dict holds every weight
    for key in ("pixel_mean", "pixel_std"):
        if key in values:
            values[key] = tuple(values[key])
    return ModelConfig(**values)


def build_model_from_checkpoint(ckpt: dict) -> torch.nn.Module:
    """The model stored in a checkpoint dict (from `load_checkpoint`), in eval mode on CPU."""
    name = ckpt.get("path", "checkpoint")
    model = build_model(model_config_from_checkpoint(ckpt))
    try:
        model.load_state_dict(ckpt["model_state"])
    except RuntimeError as err:
        raise CheckpointError(f"{name}: weights do not fit the stored model_config: {err}") from err
    return model.eval()


def serving_options(config: dict) -> dict:
    """The predictor options a training run's (flat) config chooses for serving its model: the
    network's input size and `serve_region_refine`. `Box2MaskPredictor.from_checkpoint` and the
    evaluation during training both use them, so a run's val numbers are the served model's."""
    return {
        "image_size": int(config.get("image_size", 512)),
        "region_refine": bool(config.get("serve_region_refine", False)),
    }
