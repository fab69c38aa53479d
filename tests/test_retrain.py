"""`box2mask retrain` end to end on a tiny store: export, fine-tune, evaluate, gate, register."""

import numpy as np
import pytest
from PIL import Image

from annotator.store import Label, SQLiteStore
from box2mask.io.rle import encode_rle
from tests.test_train_loop import TINY
from train.registry import ModelRegistry
from train.retrain import retrain


@pytest.fixture
def store(tmp_path):
    rng = np.random.default_rng(0)
    images = tmp_path / "images"
    images.mkdir()
    yy, xx = np.mgrid[:64, :64]
    s = SQLiteStore(tmp_path / "labels.sqlite", images)
    for i in range(6):
        image = rng.integers(0, 60, (64, 64, 3)).astype(np.uint8)
        cx, cy = rng.uniform(20, 44, 2)
        mask = ((xx - cx) / 10) ** 2 + ((yy - cy) / 8) ** 2 <= 1
        image[mask] = (220, 60, 40)
        Image.fromarray(image).save(images / f"{i}.png")
        ys, xs = np.nonzero(mask)
        box = [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
        s.add(Label(f"{i}.png", box, "blob", encode_rle(mask), "human-corrected", "m0", True))
    yield s
    s.close()


def _round(store, registry, tmp_path, name, **kw):
    return retrain(
        store=store,
        images_dir=store.images_dir,
        registry=registry,
        config_path=None,
        overrides={**TINY, "iterations": 2},
        eval_fraction=0.5,
        work_dir=tmp_path / name,
        device="cpu",
        progress=False,
        **kw,
    )


def test_rounds_promote_only_a_better_model_and_fine_tune_the_promoted_one(store, tmp_path):
    registry = ModelRegistry(tmp_path / "models")
    first = _round(store, registry, tmp_path, "r1", margin=-1.0)  # anything beats -1: promoted
    assert first["promoted"] and registry.promoted().version == first["version"]
    assert first["data"].eval_masks > 0 and 0 <= first["candidate"]["miou"] <= 1
    assert first["current"]["miou"] > 0  # the embedded default was the current model
    second = _round(store, registry, tmp_path, "r2", margin=1.0)  # nothing beats +1: kept
    assert not second["promoted"] and "not better" in second["note"]
    assert registry.promoted().version == first["version"]
    versions = registry.list_versions()
    assert [v.version for v in versions] == [first["version"], second["version"]]
    assert versions[1].parent == first["version"]  # fine-tuned from the promoted model
    assert versions[1].data_snapshot == versions[0].data_snapshot  # same labels, same snapshot


def test_a_crash_in_the_middle_of_a_retrain_leaves_the_registry_untouched(
    store, tmp_path, monkeypatch
):
    registry = ModelRegistry(tmp_path / "models")
    first = _round(store, registry, tmp_path, "r1", margin=-1.0)

    def crash(*args, **kwargs):
        raise RuntimeError("killed in the middle of training")

    monkeypatch.setattr("train.train_cmd.train", crash)
    with pytest.raises(RuntimeError, match="killed"):
        _round(store, registry, tmp_path, "r2", margin=-1.0)
    assert [v.version for v in registry.list_versions()] == [first["version"]]
    assert registry.promoted().version == first["version"]
    with registry.lock():  # the lock was released
        pass


def test_mask_supervision_trains_on_the_verified_masks_of_training_images(store, tmp_path):
    import json

    registry = ModelRegistry(tmp_path / "models")
    mixed = _round(store, registry, tmp_path, "mixed", margin=-1.0, mask_supervision=True)
    data = mixed["data"]
    # every verified training image's masks are mask targets; held-out ones stay out of train/
    assert data.mask_supervised == data.train_boxes - data.eval_masks > 0
    rows = [json.loads(x) for x in (tmp_path / "mixed/candidate/metrics.jsonl").open()]
    assert all(r["loss_prompt_mask_bce"] > 0 for r in rows if "loss_prompt_mask_bce" in r)
    assert any("loss_prompt_mask_bce" in r for r in rows)
    assert registry.list_versions()[0].config["mask_supervision"] is True
    boxes_only = _round(store, registry, tmp_path, "boxes", margin=-1.0)
    rows = [json.loads(x) for x in (tmp_path / "boxes/candidate/metrics.jsonl").open()]
    assert not any("loss_prompt_mask_bce" in r for r in rows)
    assert boxes_only["data"].mask_supervised == 0


def test_a_store_without_boxes_is_an_error_not_an_exit(tmp_path):
    from train.retrain import RetrainError

    (tmp_path / "images").mkdir()
    empty = SQLiteStore(tmp_path / "empty.sqlite", tmp_path / "images")
    registry = ModelRegistry(tmp_path / "models")
    with pytest.raises(RetrainError, match="no boxes"):
        _round(empty, registry, tmp_path, "r0")
    empty.close()
    assert registry.list_versions() == []


def test_the_retrain_command_opens_the_store_and_reports_bad_arguments(tmp_path, capsys):
    from box2mask.cli import main

    assert main(["retrain", "--store", str(tmp_path / "missing.sqlite"), "--images", "x"]) == 2
    assert "no such label store" in capsys.readouterr().err
    (tmp_path / "images").mkdir()
    SQLiteStore(tmp_path / "empty.sqlite", tmp_path / "images").close()
    args = ["retrain", "--store", str(tmp_path / "empty.sqlite"), "--images", str(tmp_path)]
    assert main([*args, "--work", str(tmp_path / "w"), "--device", "cpu"]) == 2
    assert "no boxes" in capsys.readouterr().err
