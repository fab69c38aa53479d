"""Training-set faults: an image that is unreadable or changed mid-run is skipped, named."""

import warnings

import numpy as np
import pytest
from PIL import Image

from tests.test_segment import make_dataset


def test_the_crop_bank_skips_an_unreadable_and_a_resized_image_and_names_them(tmp_path):
    from train.crop_bank import build_crop_bank
    from train.crop_config import load_crop_config
    from train.dataset import CocoBoxDataset

    make_dataset(tmp_path)  # im000..im002, two boxes each
    (tmp_path / "boxes.json").rename(tmp_path / "annotations.json")
    dataset = CocoBoxDataset(tmp_path, split="")
    cfg = load_crop_config(None, {"model.crop_size": 16, "model.base": "ellipse"})
    (tmp_path / "images" / "im001.png").write_bytes(b"\x89PNG truncated")  # unreadable
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(tmp_path / "images" / "im002.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bank = build_crop_bank(dataset, cfg.model, progress=False)
    messages = [str(w.message) for w in caught if "crop bank: skipped" in str(w.message)]
    assert len(messages) == 2
    assert "im001.png" in messages[0] and "im002.png" in messages[1]
    assert "12x10" in messages[1] and "64x44" in messages[1]  # what it is, what labels expect
    assert len(bank) == 2 and set(bank.image_index.tolist()) == {0}  # im000's two boxes only


def test_a_crop_bank_with_every_image_broken_is_a_clear_error(tmp_path):
    from train.crop_bank import build_crop_bank
    from train.crop_config import load_crop_config
    from train.dataset import CocoBoxDataset, DatasetError

    make_dataset(tmp_path, n_images=1)
    (tmp_path / "boxes.json").rename(tmp_path / "annotations.json")
    dataset = CocoBoxDataset(tmp_path, split="")
    cfg = load_crop_config(None, {"model.crop_size": 16, "model.base": "ellipse"})
    (tmp_path / "images" / "im000.png").write_bytes(b"")
    with (
        pytest.warns(UserWarning, match="im000.png"),
        pytest.raises(DatasetError, match="no usable"),
    ):
        build_crop_bank(dataset, cfg.model, progress=False)
