"""The small Box2Mask-T the tests build: ResNet-18, 32 channels, few queries and layers."""

import torch

from box2mask.io.checkpoint import save_checkpoint
from box2mask.model.box2mask_model import build_model
from box2mask.model.config import ModelConfig


def tiny_config(**overrides) -> ModelConfig:
    """A ModelConfig that builds in about a second on a CPU; `overrides` change any field."""
    values = dict(
        backbone="resnet18",
        num_classes=2,
        num_queries=4,
        hidden_dim=32,
        mask_dim=32,
        nheads=4,
        dec_layers=2,
        dim_feedforward=64,
    )
    values.update(overrides)
    return ModelConfig(**values)


def tiny_model(seed: int = 0, **overrides) -> torch.nn.Module:
    """A randomly initialised tiny model, the same weights for the same seed."""
    torch.manual_seed(seed)
    return build_model(tiny_config(**overrides))


def save_tiny_checkpoint(
    path, model_version: str, class_names=("obj",), config: dict | None = None, **overrides
):
    """Write a self-describing checkpoint of a tiny model to `path` and return the path.

    `config` is the run config stored with it (e.g. {"image_size": 64}, the predictor's input).
    """
    cfg = tiny_config(num_classes=len(class_names), **overrides)
    torch.manual_seed(0)
    save_checkpoint(
        path,
        model=build_model(cfg),
        model_config=cfg,
        class_names=list(class_names),
        config=config or {},
        model_version=model_version,
    )
    return path
