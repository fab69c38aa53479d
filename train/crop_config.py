"""The crop learner's training config: a YAML file with `learner: crop` (configs/crop_*.yaml).

    box2mask train --config configs/crop_nuclei.yaml --data ../shared/data/nuclei --out runs/nuclei

Keys are the fields below (nested sections as `model.crop_size`, `loss.distill`); `--set KEY=VALUE`
overrides them. Unknown keys and wrong types are errors naming the file and the key.
"""

from dataclasses import dataclass, field
from pathlib import Path

from box2mask.crop.learner import CropLearnerConfig
from train.config import ConfigError, apply_overrides, read_config_file

__all__ = ["CropLossWeights", "CropTrainConfig", "is_crop_config", "load_crop_config"]


@dataclass
class CropLossWeights:
    proj: float = 1.0  # box projection dice
    lcm: float = 0.5  # local consistency (affinity-propagated mask vs the mask)
    cv_image: float = 0.2  # Chan-Vese region energy on the crop's colours
    cv_feat: float = 0.05  # Chan-Vese region energy on the learner's features
    pairwise: float = 0.0  # similar-colour neighbours share a label (BoxInst's pairwise term)
    distill: float = 1.0  # BCE to the embedded default's mask (with `teacher: default`)
    mask_bce: float = 1.0  # BCE to verified masks (with `mask_supervision`)
    mask_dice: float = 1.0  # dice to verified masks
    # click consistency (click-aware learners): BCE of the mask at each simulated click's disc to
    # the click's sign, on the clicked crops (0 = off, as before)
    click: float = 0.0

    def as_dict(self) -> dict[str, float]:
        """{"loss_<name>": weight}, the names of box2mask.crop.losses.crop_losses."""
        return {f"loss_{k}": float(v) for k, v in vars(self).items()}


@dataclass
class CropTrainConfig:
    learner: str = "crop"  # which trainer reads this config ("crop": the crop learner)
    data_dir: str = ""  # COCO dataset folder: annotations.json + images/
    train_split: str = "train"  # images whose `split` field is this ("" = all images)
    val_split: str = "val"  # evaluated with GT boxes during and after training ("" = none)
    out_dir: str = "runs/crop"  # run directory: config.yaml, metrics.jsonl, last.pt
    model: CropLearnerConfig = field(default_factory=CropLearnerConfig)  # the network and crop
    loss: CropLossWeights = field(default_factory=CropLossWeights)  # the one weight dict
    # distillation target: "default" (the embedded default), a crop-learner checkpoint's path
    # (self-training: distil a trained learner's masks; needs base: ellipse), or "" (none)
    teacher: str = "default"
    mask_supervision: bool = False  # annotations with a `segmentation` are verified mask targets
    # weight of the box terms and the distillation on crops with a verified mask (1: as on
    # box-only crops; 0: the mask alone teaches them). Balloon val (docs/training.md): 0 -> 0.860,
    # 0.25 -> 0.900, 1 -> 0.869: the mask dominates, the weak terms still regularise
    weak_on_verified: float = 0.25
    # click-aware learners (model.click_channels; train/crop_click_sim.py), verified crops only:
    click_free_share: float = 0.25  # share trained without clicks (the box-only path)
    click_empty_share: float = 0.25  # share of clicked crops starting from an empty mask
    max_sim_clicks: int = 4  # simulated clicks per clicked crop, uniform in 1..this
    # weight of the box terms and the distillation (to the default's unclicked mask) on crops
    # with simulated clicks: they pull against every click. < 0 = weak_on_verified (as before)
    weak_on_clicked: float = -1.0
    # extra verified-mask BCE weight on the pixels the previous mask got wrong, on clicked crops
    # (the mask loss then centres on the region the clicks correct; 0 = off, as before)
    click_error_weight: float = 0.0
    iterations: int = 6000  # optimizer steps in all
    batch_size: int = 32  # crops per step
    lr: float = 2e-3  # AdamW peak learning rate (linear warmup, cosine decay)
    weight_decay: float = 1e-4  # AdamW weight decay
    warmup_steps: int = 100  # linear warmup of the learning rate
    augment: bool = True  # random flips and transposes of each crop
    views: int = 1  # crops per training box in the bank: the served window + views-1 jittered ones
    view_margin: float = 0.4  # jittered windows: margin per side up to this x the box side
    colour_jitter: float = 0.0  # per step: gamma, saturation, channel order (0 = off; 0.3 mild)
    log_every: int = 50  # steps between metrics.jsonl lines
    eval_every: int = 1000  # steps between val evaluations on crops (0 = only at the end)
    checkpoint_every: int = 500  # steps between last.pt writes
    final_eval_limit: int = 0  # val images of the served (full-resolution) evaluation, 0 = all
    init_checkpoint: str = ""  # start from this crop-learner checkpoint's weights (fine-tuning)
    seed: int = 0  # data order and augmentation
    device: str = ""  # "cpu" | "cuda" | "" (cuda when available)


def is_crop_config(path) -> bool:
    """Whether the YAML file at `path` configures the crop learner (`learner: crop`)."""
    return path is not None and read_config_file(path).get("learner") == "crop"


def load_crop_config(path=None, overrides: dict | None = None) -> CropTrainConfig:
    """Defaults <- the YAML file at `path` (if any) <- `overrides` (dotted keys)."""
    cfg = CropTrainConfig()
    if path is not None:
        cfg = apply_overrides(cfg, read_config_file(path), source=str(path))
    if overrides:
        cfg = apply_overrides(cfg, overrides, source="--set")
    if cfg.learner != "crop":
        raise ConfigError(f"{path}: learner {cfg.learner!r}; this trainer reads learner: crop")
    if cfg.model.base not in ("default", "ellipse"):
        raise ConfigError(
            f"{path}: model.base must be 'default' or 'ellipse', not {cfg.model.base!r}"
        )
    if cfg.teacher not in ("", "default"):
        if not Path(cfg.teacher).is_file():
            raise ConfigError(
                f"{path}: teacher must be 'default', '' or a crop-learner checkpoint file; "
                f"{cfg.teacher!r} is none of these"
            )
        if cfg.model.base != "ellipse":
            raise ConfigError(f"{path}: a checkpoint teacher needs model.base: ellipse")
    if cfg.views < 1:
        raise ConfigError(f"{path}: views must be at least 1, got {cfg.views}")
    levels = cfg.model.levels
    if not 1 <= levels <= 6:  # checked before 2 ** (levels - 1): a huge level count is no config
        raise ConfigError(f"{path}: model.levels must be 1 to 6, got {levels}")
    if cfg.model.crop_size % 2 ** (cfg.model.levels - 1):
        raise ConfigError(
            f"{path}: model.crop_size {cfg.model.crop_size} is not divisible by "
            f"2 ** (levels - 1) = {2 ** (cfg.model.levels - 1)}"
        )
    return cfg
