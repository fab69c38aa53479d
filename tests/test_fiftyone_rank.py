"""`box2mask fiftyone rank` on a real, temporary dataset: the uncertainty field is written, its
rank field and saved view follow `label_order` exactly, samples without boxes come last and done
ones are left out. Skipped only when FiftyOne's database cannot start."""

import numpy as np
import pytest
from PIL import Image

from box2mask import build_predictor
from box2mask.cli import main
from tests.disc_scenes import disc_scene
from tests.test_crop_serving import _box_filling_checkpoint
from train.label_next import image_uncertainty, label_order

SEEDS = [3, 1, 4, 5, 9]  # scenes whose label order is not their file order


@pytest.fixture
def ranked(tmp_path, capsys):
    """i0..i4: i2 without boxes, i3 marked done; ranked once by the CLI with a box-filling
    learner against the embedded default."""
    fo = pytest.importorskip("fiftyone")
    try:
        dataset = fo.Dataset()
    except Exception as err:  # noqa: BLE001 - any failure to start the database
        pytest.skip(f"FiftyOne's database (mongod) cannot start here: {err}")
    ckpt = _box_filling_checkpoint(tmp_path / "fills.pt")
    scenes = {}
    for tag in range(5):
        image, boxes, _ = disc_scene(48, 64, seed=SEEDS[tag], n_discs=1 + tag % 2)
        boxes = np.round(boxes)  # whole pixels: exact through FiftyOne's relative boxes
        path = tmp_path / f"i{tag}.png"
        Image.fromarray(image).save(path)
        dets = [
            fo.Detection(
                label="disc", bounding_box=[x0 / 64, y0 / 48, (x1 - x0) / 64, (y1 - y0) / 48]
            )
            for x0, y0, x1, y1 in boxes
        ]
        sample = fo.Sample(filepath=str(path))
        if tag != 2:
            sample["ground_truth"] = fo.Detections(detections=dets)
        if tag == 3:
            sample["ground_truth_done"] = True
        dataset.add_sample(sample)
        scenes[sample.id] = (image, boxes if tag != 2 else np.zeros((0, 4)))
    argv = ["fiftyone", "rank", "--dataset", dataset.name, "--boxes", "ground_truth"]
    code = main(argv + ["--checkpoint", str(ckpt), "--no-progress"])
    yield dataset, scenes, ckpt, (code, capsys.readouterr().out)
    dataset.delete()


def test_rank_writes_the_uncertainty_and_the_label_order(ranked, capsys):
    dataset, scenes, ckpt, (code, out) = ranked
    assert code == 0
    assert (
        "b2m_label_next: 3 samples ranked (crop-fills-boxes vs levelset-default-3), 1 without boxes last, 1 done left out"
        in out
    )
    base, learner = build_predictor(None), build_predictor(ckpt)
    ids = dataset.values("id")
    todo = [i for n, i in enumerate(ids) if n != 3]
    expected = label_order([(i, *scenes[i]) for i in todo], base=base, learner=learner)
    assert expected[-1] == ids[2]  # no boxes: last
    assert expected[:3] != [ids[0], ids[1], ids[4]]  # not the file order: the ranking shows
    scores = dict(zip(ids, dataset.values("b2m_label_next"), strict=True))
    for sample_id in expected[:3]:
        direct = image_uncertainty(*scenes[sample_id], base=base, learner=learner)
        assert 0 < scores[sample_id] == pytest.approx(direct, abs=1e-9)
    assert scores[ids[2]] is None and scores[ids[3]] is None  # no boxes; done
    assert len({round(scores[i], 6) for i in expected[:3]}) == 3  # distinct: sort_by is exact
    by_score = dataset.exists("b2m_label_next").sort_by("b2m_label_next", reverse=True)
    assert by_score.values("id") == expected[:3]
    assert dataset.load_saved_view("label_next").values("id") == expected  # done left out
    ranks = dict(zip(ids, dataset.values("b2m_label_next_rank"), strict=True))
    assert [ranks[i] for i in expected] == [1, 2, 3, 4] and ranks[ids[3]] is None


def test_rank_explains_itself_and_names_a_missing_field(ranked, capsys, tmp_path):
    dataset, _, _, _ = ranked
    with pytest.raises(SystemExit):
        main(["fiftyone", "rank", "--help"])
    assert 'sort_by("b2m_label_next", reverse=True)' in capsys.readouterr().out
    argv = ["fiftyone", "rank", "--dataset", dataset.name, "--boxes", "nope"]
    assert main(argv + ["--checkpoint", str(tmp_path / "fills.pt")]) == 2
    assert "has no field 'nope'" in capsys.readouterr().err
