"""Save a crop-learner model as a checkpoint, the way `box2mask train` does, for tests that need one."""

from box2mask.crop.learner import KIND, CropUNet
from box2mask.io.checkpoint import save_checkpoint


def save_crop_model(path, model: CropUNet, *, class_names=("thing",), model_version="crop-test"):
    """Write `model` (its own config as the model config, no training config) to `path`; returns `path`."""
    save_checkpoint(
        path,
        model=model,
        model_config=model.cfg,
        class_names=list(class_names),
        config={},
        model_version=model_version,
        kind=KIND,
    )
    return path
