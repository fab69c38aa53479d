import json

import numpy as np
from PIL import Image

from annotator.store import Label, SQLiteStore
from box2mask.io.rle import decode_rle, encode_rle
from train.label_export import export_training_data, is_eval_image


def _mask(h, w, box):
    m = np.zeros((h, w), bool)
    x0, y0, x1, y1 = box
    m[y0:y1, x0:x1] = True
    m[y0 + 1, x0 + 1] = False  # a hole
    return m


def test_eval_split_is_fixed_and_near_the_fraction():
    keys = [f"img_{i:04d}.jpg" for i in range(2000)]
    held = [k for k in keys if is_eval_image(k, 0.2)]
    assert 0.17 < len(held) / len(keys) < 0.23
    assert held == [k for k in keys if is_eval_image(k, 0.2)]  # same answer every time
    assert set(k for k in keys if is_eval_image(k, 0.1)) <= set(held)  # a smaller split nests


def test_export_boxes_for_all_and_verified_masks_held_out(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    keys = [f"im{i}.png" for i in range(12)]
    for k in keys:
        Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(images / k)
    store = SQLiteStore(tmp_path / "labels.sqlite", images)
    held = [k for k in keys if is_eval_image(k, 0.3)]
    assert held and len(held) < len(keys)
    for k in keys:
        box = [2, 3, 12, 15]
        store.add(
            Label(
                k,
                [float(v) for v in box],
                "cat",
                encode_rle(_mask(20, 30, box)),
                "human-corrected",
                "m1",
                True,
            )
        )
        store.add(
            Label(k, [1.0, 1.0, 5.0, 6.0], "dog", None, "model", "m1", False)
        )  # unverified, no mask
    summary = export_training_data(
        store, images_dir=images, out_dir=tmp_path / "round1", eval_fraction=0.3
    )
    train = json.loads((summary.train_dir / "annotations.json").read_text())
    ev = json.loads((summary.eval_dir / "annotations.json").read_text())
    assert summary.train_boxes == 24 and len(train["annotations"]) == 24
    assert all("segmentation" not in a for a in train["annotations"])  # box supervision only
    assert [c["name"] for c in train["categories"]] == ["cat", "dog"]
    assert (summary.train_dir / "images" / keys[0]).is_file()  # images/ links to the folder
    assert train["images"][0]["width"] == 30 and train["images"][0]["height"] == 20
    assert train["annotations"][0]["bbox"] == [2.0, 3.0, 10.0, 12.0]
    assert sorted(im["file_name"] for im in ev["images"]) == sorted(held)
    assert len(ev["annotations"]) == len(held)  # only the verified human masks
    np.testing.assert_array_equal(
        decode_rle(ev["annotations"][0]["segmentation"]), _mask(20, 30, [2, 3, 12, 15])
    )
    # mixed supervision: verified masks of training images go into train.json, never eval ones
    mixed = export_training_data(
        store,
        images_dir=images,
        out_dir=tmp_path / "round1m",
        eval_fraction=0.3,
        mask_supervision=True,
    )
    assert mixed.mask_supervised == len(keys) - len(held)
    train_m = json.loads((mixed.train_dir / "annotations.json").read_text())
    with_masks = {
        train_m["images"][a["image_id"] - 1]["file_name"]
        for a in train_m["annotations"]
        if "segmentation" in a
    }
    assert with_masks == set(keys) - set(held)
    # the snapshot id identifies the data: same data, same id; a new label changes it
    again = export_training_data(
        store, images_dir=images, out_dir=tmp_path / "again", eval_fraction=0.3
    )
    assert again.snapshot_id == summary.snapshot_id
    store.add(Label(keys[0], [0.0, 0.0, 4.0, 4.0], "cat", None, "human", None, False))
    assert (
        export_training_data(
            store, images_dir=images, out_dir=tmp_path / "r2", eval_fraction=0.3
        ).snapshot_id
        != summary.snapshot_id
    )
    store.close()


def test_an_exif_rotated_photo_without_a_mask_is_exported_at_its_loaded_size(tmp_path):
    """A phone photo stored 300 x 200 with rotate-90 EXIF loads (and is labelled) as 200 x 300."""
    from box2mask.io.image_io import load_image

    images = tmp_path / "images"
    images.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    Image.fromarray(np.zeros((200, 300, 3), np.uint8)).save(images / "phone.jpg", exif=exif)
    height, width = load_image(images / "phone.jpg").shape[:2]
    assert (width, height) == (200, 300)
    store = SQLiteStore(tmp_path / "labels.sqlite", images)
    store.add(Label("phone.jpg", [10, 20, 150, 280], "cup", None, "human", None, False))
    data = export_training_data(store, images_dir=images, out_dir=tmp_path / "out")
    store.close()
    (entry,) = json.loads((data.train_dir / "annotations.json").read_text())["images"]
    assert (entry["width"], entry["height"]) == (width, height)
