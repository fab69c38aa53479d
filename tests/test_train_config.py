"""Training config: YAML + --set overrides, type checks, unknown keys, round trip of the resolved config."""

from pathlib import Path

import pytest

from train.config import (
    ConfigError,
    TrainConfig,
    config_from_flat,
    flatten_config,
    load_config,
    parse_set_args,
    save_config,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_yaml_and_set_overrides_apply_in_order(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "iterations: 50\nmodel.num_queries: 7\nloss.weight_proj: 3\nlr_milestones: [0.5]\n"
    )
    cfg = load_config(path, overrides=parse_set_args(["iterations=60", "model.backbone=resnet18"]))
    assert cfg.iterations == 60  # --set wins over the file
    assert cfg.model.num_queries == 7 and cfg.model.backbone == "resnet18"
    assert cfg.loss.weight_proj == 3.0 and isinstance(cfg.loss.weight_proj, float)  # int -> float
    assert cfg.lr_milestones == (0.5,)
    assert TrainConfig().model.num_queries == 100  # defaults untouched


def test_unknown_key_names_the_key_and_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("iterations: 5\nmodel.num_querys: 7\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*'model\.num_querys'"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"--set.*'lrr'"):
        load_config(None, overrides=parse_set_args(["lrr=0.1"]))
    with pytest.raises(ConfigError, match=r"'nosection\.x'"):
        load_config(None, overrides={"nosection.x": 1})


def test_wrong_types_are_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"'iterations' expects int"):
        load_config(None, overrides={"iterations": "many"})
    with pytest.raises(ConfigError, match=r"'lr' expects a number"):
        load_config(None, overrides={"lr": True})
    with pytest.raises(ConfigError, match=r"'model' is a section"):
        load_config(None, overrides={"model": 3})
    with pytest.raises(ConfigError, match="key=value"):
        parse_set_args(["iterations"])
    # Optional fields accept None and their type
    assert load_config(None, {"model.backbone_weights": None}).model.backbone_weights is None
    assert load_config(None, {"model.backbone_weights": "w.pt"}).model.backbone_weights == "w.pt"


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(None, overrides={"iterations": 9, "model.dec_layers": 2, "amp": "fp32"})
    save_config(cfg, tmp_path / "run" / "config.yaml")
    assert load_config(tmp_path / "run" / "config.yaml") == cfg
    assert config_from_flat(flatten_config(cfg), source="ckpt") == cfg


@pytest.mark.parametrize("name", ["tiny_cpu.yaml", "box2mask_r50_coco.yaml"])
def test_shipped_configs_load(name):
    cfg = load_config(CONFIGS / name)
    assert cfg.image_size % 32 == 0


def test_r50_config_has_the_reference_hyperparameters():
    cfg = load_config(CONFIGS / "box2mask_r50_coco.yaml")
    assert (cfg.lr, cfg.weight_decay, cfg.backbone_lr_mult, cfg.clip_grad_norm) == (
        1e-4,
        0.05,
        0.1,
        0.01,
    )
    assert (cfg.model.backbone, cfg.model.num_queries, cfg.model.dec_layers) == ("resnet50", 100, 9)
    assert (cfg.min_scale, cfg.max_scale) == (0.1, 2.0)  # large-scale jitter


def test_repeated_set_flags_accumulate():
    """`--set a=1 --set b=2` keeps both overrides (argparse's default would keep only the last)."""
    import argparse

    from train.train_cmd import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        ["--data", "d", "--set", "iterations=5", "lr=0.1", "--set", "model.width=4"]
    )
    assert args.set == ["iterations=5", "lr=0.1", "model.width=4"]
    assert parser.parse_args(["--data", "d"]).set == []
