"""Training configuration: one dataclass with a comment per field, plus flat YAML overrides.

A YAML file (or `--set key=value`) lists only what changes, as flat dotted keys:

    iterations: 2000
    model.backbone: resnet18
    loss.weight_proj: 5.0

Unknown keys and values of the wrong type are errors naming the key and the file. The resolved
config is written back in the same flat form (`config.yaml` in each run directory), so a run can be
reproduced with `--config runs/NAME/config.yaml`.
"""

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from box2mask.io.atomic_write import write_text_atomic
from box2mask.model.config import LossConfig, ModelConfig

__all__ = [
    "ConfigError",
    "TrainConfig",
    "apply_overrides",
    "load_config",
    "flatten_config",
    "config_from_flat",
    "parse_set_args",
    "save_config",
    "default_config_path",
]


class ConfigError(ValueError):
    """A bad config file or override; the message names the key and where it came from."""


@dataclass
class TrainConfig:
    # --- data ---
    data_dir: str = ""  # dataset folder with annotations.json + images/ (set by --data)
    annotations: str = "annotations.json"  # COCO file name inside data_dir
    image_dir: str = "images"  # image folder inside data_dir
    train_split: str = "train"  # images whose `split` field equals this ("" = all images)
    val_split: str = "val"  # split used for evaluation during/after training ("" = none)
    # --- mask targets (train/dataset.py, train/teacher.py; box supervision alone when both off) ---
    mask_supervision: bool = False  # annotations with a `segmentation` get a mask loss (mixed
    # supervision: human masks where the data has them, box losses on every instance)
    teacher: str = ""  # "" = none | "levelset": the embedded level-set default's mask of each
    # box-only instance is a soft mask target (a classical teacher, computed once per run)
    teacher_weight: float = 0.5  # weight of a teacher mask's loss relative to a human mask's (1)
    # --- augmentation (see train/augment.py) ---
    image_size: int = 384  # training crop side in px (multiple of 32); eval resizes the long side
    min_scale: float = 0.5  # scale jitter: long side becomes image_size * U(min_scale, max_scale)
    max_scale: float = 1.5  # (large-scale jitter uses 0.1 .. 2.0)
    flip_prob: float = 0.5  # probability of a horizontal flip
    min_box_size: float = (
        4.0  # boxes smaller than this (px, either side) after cropping are dropped
    )
    # --- optimisation ---
    batch_size: int = 4  # images per optimizer step, summed over all processes (effective batch)
    num_workers: int = 2  # DataLoader worker processes per training process
    iterations: int = 2000  # total optimizer steps
    lr: float = 1e-4  # AdamW base learning rate
    weight_decay: float = 0.05  # AdamW weight decay (not applied to norms, biases, embeddings)
    backbone_lr_mult: float = 0.1  # learning-rate multiplier for the backbone
    clip_grad_norm: float = 0.01  # clip the full-model gradient norm to this (0 = off)
    lr_warmup_steps: int = 10  # linear learning-rate warm-up steps
    lr_schedule: str = "step"  # "step" (x lr_gamma at each milestone) or "cosine" (to 0)
    lr_milestones: tuple[float, ...] = (0.889, 0.963)  # step milestones as fractions of iterations
    lr_gamma: float = 0.1  # step-schedule decay factor
    levelset_warmup_steps: int = 100  # projection-only warm-up: level-set terms off before this
    amp: str = (
        "auto"  # "bf16" | "fp16" | "fp32" | "auto" (box2mask.model.fast_inference.resolve_amp)
    )
    seed: int = 0  # seeds model init, data order and augmentation
    init_checkpoint: str = ""  # fine-tune: start from this checkpoint's model (its architecture
    # and weights; optimizer and step start fresh; a class head of another size starts anew)
    # --- serving: how predictors built from this run's checkpoints answer a box ---
    serve_region_refine: bool = False  # refine the network's mask with the colour-histogram level
    # set started from it (Box2MaskPredictor.region_refine); false = the network's mask as is
    # --- bookkeeping ---
    out_dir: str = "runs/box2mask"  # run directory: config.yaml, metrics.jsonl, last.pt
    checkpoint_every: int = 200  # write last.pt every this many steps (and at the end)
    log_every: int = 10  # append a metrics.jsonl line every this many steps
    eval_every: int = 0  # box-prompt mIoU on val_split every this many steps (0 = only at the end)
    eval_max_images: int = 0  # cap on val images per evaluation (0 = all)
    # --- the model and its losses (box2mask/model/config.py) ---
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)


def flatten_config(cfg) -> dict:
    """Dataclass -> {"dotted.key": value} with nested dataclasses flattened, tuples as lists."""
    flat = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            for key, sub in flatten_config(value).items():
                flat[f"{f.name}.{key}"] = sub
        else:
            flat[f.name] = list(value) if isinstance(value, tuple) else value
    return flat


def _coerce(value, hint, key: str, source: str):
    """`value` as type `hint` (int -> float, list -> tuple, Optional); ConfigError otherwise."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key, source)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{source}: bad value for {key!r}")
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{source}: {key!r} expects a list, got {value!r}")
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        item = args[0] if args else typing.Any
        items = [_coerce(v, item, key, source) for v in value]
        return tuple(items) if origin is tuple else items
    if hint is typing.Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is bool and not isinstance(value, bool):
        raise ConfigError(f"{source}: {key!r} expects true/false, got {value!r}")
    if hint in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{source}: {key!r} expects a number, got {value!r}")
    if isinstance(hint, type) and not isinstance(value, hint):
        raise ConfigError(
            f"{source}: {key!r} expects {hint.__name__}, got {type(value).__name__} {value!r}"
        )
    return value


MAX_CONFIG_ENTRIES = 10_000  # a config has ~100 keys: more is a YAML alias bomb, not a config


def _flatten_mapping(mapping: dict, source: str, prefix: str = "", seen=None) -> dict:
    """Accept nested YAML mappings too: {"model": {"backbone": x}} -> {"model.backbone": x}.

    ConfigError naming `source` past MAX_CONFIG_ENTRIES entries or 50 levels (aliases repeated
    into billions of keys, or mappings nested for nothing)."""
    seen = [0] if seen is None else seen
    if prefix.count(".") > 50:
        raise ConfigError(f"{source}: mappings nested over 50 levels deep ({prefix[:80]}...)")
    flat = {}
    for key, value in mapping.items():
        seen[0] += 1
        if seen[0] > MAX_CONFIG_ENTRIES:
            raise ConfigError(f"{source}: over {MAX_CONFIG_ENTRIES} entries (YAML aliases?)")
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten_mapping(value, source, prefix=f"{name}.", seen=seen))
        else:
            flat[name] = value
    return flat


def apply_overrides(cfg, overrides: dict, source: str):
    """Return a copy of dataclass `cfg` with dotted-key `overrides` applied.

    Raises ConfigError naming the key and `source` (a file name or "--set") for unknown keys
    and values of the wrong type.
    """
    cfg = dataclasses.replace(cfg)
    for key, value in _flatten_mapping(overrides, source).items():
        *parents, leaf = key.split(".")
        target = cfg
        for part in parents:
            child = getattr(target, part, None)
            if not dataclasses.is_dataclass(child):
                raise ConfigError(f"{source}: unknown config key {key!r} (no section {part!r})")
            child = dataclasses.replace(child)  # copy: never mutate the caller's config
            setattr(target, part, child)
            target = child
        hints = typing.get_type_hints(type(target))
        if leaf not in {f.name for f in dataclasses.fields(target)}:
            known = ", ".join(f.name for f in dataclasses.fields(target))
            raise ConfigError(f"{source}: unknown config key {key!r} (known here: {known})")
        if dataclasses.is_dataclass(getattr(target, leaf)):
            raise ConfigError(f"{source}: {key!r} is a section; set its fields as {key}.NAME")
        setattr(target, leaf, _coerce(value, hints[leaf], key, source))
    return cfg


def read_config_file(path: str | os.PathLike) -> dict:
    """The mapping in a YAML config file; ConfigError naming the file when it is missing, not
    YAML, or not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        text = path.read_bytes().decode("utf-8")
        # libyaml when present: the pure-Python scanner takes seconds on a few thousand "["
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text ({err})") from None
    except (yaml.YAMLError, ValueError, RecursionError) as err:  # ValueError: e.g. "\U0110364B"
        raise ConfigError(f"{path}: not valid YAML ({type(err).__name__}: {err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    return data


def load_config(
    path: str | os.PathLike | None = None, overrides: dict | None = None
) -> TrainConfig:
    """Defaults <- the YAML file at `path` (if any) <- `overrides` (from --set)."""
    cfg = TrainConfig()
    if path is not None:
        cfg = apply_overrides(cfg, read_config_file(path), source=str(path))
    if overrides:
        cfg = apply_overrides(cfg, overrides, source="--set")
    return cfg


def default_config_path(name: str) -> Path:
    """A config shipped with box2mask (`configs/NAME` of the source tree).

    An installed wheel carries the folder as the package `train.configs` (see pyproject.toml); a
    source checkout or an editable install reads the repository's `configs/` folder.
    """
    try:
        from importlib.resources import files

        packaged = Path(str(files("train.configs") / name))
    except ModuleNotFoundError:
        packaged = None
    if packaged is not None and packaged.is_file():
        return packaged
    source = Path(__file__).resolve().parents[1] / "configs" / name
    if source.is_file():
        return source
    raise ConfigError(f"{name}: no such packaged config (looked in train.configs and {source})")


def config_from_flat(flat: dict, source: str) -> TrainConfig:
    """Rebuild a TrainConfig from `flatten_config` output (e.g. the config inside a checkpoint)."""
    return apply_overrides(TrainConfig(), flat, source=source)


def parse_set_args(items: list[str] | None) -> dict:
    """["a.b=3", "amp=bf16"] -> {"a.b": 3, "amp": "bf16"}; values are parsed as YAML scalars."""
    overrides = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set: expected key=value, got {item!r}")
        try:
            overrides[key.strip()] = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"--set: cannot parse the value of {key!r} ({err})") from None
    return overrides


def save_config(cfg, path: str | os.PathLike) -> None:
    """Write the resolved config as flat dotted keys (loadable by `load_config`), atomically."""
    write_text_atomic(path, yaml.safe_dump(flatten_config(cfg), sort_keys=False))
