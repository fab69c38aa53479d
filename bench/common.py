"""What several benchmarks share: where things are, and untrained checkpoints for timing."""

from pathlib import Path

__all__ = ["REPO", "SHARED", "SHARED_DATA", "DEMO", "CONFIGS", "random_model", "random_checkpoint"]

REPO = Path(__file__).resolve().parents[1]  # the repository root
SHARED = REPO.parent / "shared"  # data and notes shared beside the repository
SHARED_DATA = SHARED / "data"  # balloon/, nuclei/ (COCO folders)
DEMO = REPO / "demo"  # small photos with a free license
CONFIGS = {  # model sizes the timing benchmarks build
    "tiny": REPO / "configs" / "tiny_cpu.yaml",
    "r50": REPO / "configs" / "box2mask_r50_coco.yaml",
}


def random_model(name: str = "tiny", num_classes: int | None = None):
    """The model of CONFIGS[name] with random weights (seed 0; nothing is downloaded): timings
    do not depend on the weights."""
    import torch

    from box2mask.model.box2mask_model import build_model
    from train.config import load_config

    overrides = {"model.backbone_weights": None}
    if num_classes is not None:
        overrides["model.num_classes"] = num_classes
    torch.manual_seed(0)
    return build_model(load_config(CONFIGS[name], overrides).model)


def random_checkpoint(
    path: Path,
    name: str = "tiny",
    *,
    num_classes: int | None = None,
    config: dict | None = None,
    model_version: str | None = None,
) -> Path:
    """`random_model(name, num_classes)` saved as a self-describing checkpoint at `path`;
    `config` is the run config stored with it (e.g. {"image_size": 320}, the predictor's input
    size). Classes are named "object" (one class) or "class0", "class1", ..."""
    from box2mask.io.checkpoint import save_checkpoint
    from train.config import load_config

    overrides = {"model.backbone_weights": None}
    if num_classes is not None:
        overrides["model.num_classes"] = num_classes
    cfg = load_config(CONFIGS[name], overrides).model
    names = ["object"] if cfg.num_classes == 1 else [f"class{i}" for i in range(cfg.num_classes)]
    save_checkpoint(
        path,
        model=random_model(name, num_classes),
        model_config=cfg,
        class_names=names,
        config=config or {},
        model_version=model_version or f"{name}-random-init",
    )
    return path
