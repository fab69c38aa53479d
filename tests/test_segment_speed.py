"""`box2mask segment` speed options: --batch-images keeps the output byte-identical on CPU,
--amp / --channels-last / --compile are validated with clear errors."""

import json

import pytest
import torch

from box2mask.cli import main as cli_main
from box2mask.model.predictor import Box2MaskPredictor
from box2mask.segment.run import segment_coco
from tests.disc_scenes import disc_scene, write_coco
from tests.tiny_model import save_tiny_checkpoint, tiny_model

# (H, W): with image_size 64 all but the fourth pad to the same 64 x 64 network input
SHAPES = [(60, 80), (48, 64), (64, 64), (80, 40), (50, 70), (44, 60), (64, 56)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Seven disc scenes, the third image truncated on disk (a bad image inside a batch)."""
    folder = tmp_path_factory.mktemp("speed")
    boxes = write_coco(folder, [disc_scene(h, w, seed=i) for i, (h, w) in enumerate(SHAPES)])
    path = folder / "images" / "scene002.png"
    path.write_bytes(path.read_bytes()[:200])
    ckpt = save_tiny_checkpoint(folder / "tiny.pt", "tiny-speed", config={"image_size": 64})
    return folder, boxes, ckpt


def segment(folder, boxes, out, capsys, *extra):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = cli_main(
            ["segment", "--images", str(folder / "images"), "--boxes", str(boxes)]
            + ["--out", str(out), "--no-progress", "--device", "cpu", *extra]
        )
    finally:
        torch.set_num_threads(threads)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("model", ["default", "checkpoint"])
def test_batch_images_output_is_byte_identical_on_cpu(dataset, capsys, model):
    folder, boxes, ckpt = dataset
    extra = [] if model == "default" else ["--checkpoint", str(ckpt)]
    one, four = folder / f"{model}_1.json", folder / f"{model}_4.json"
    code_1, err_1 = segment(folder, boxes, one, capsys, *extra)
    code_4, err_4 = segment(folder, boxes, four, capsys, *extra, "--batch-images", "4")
    assert code_1 == code_4 == 1  # the truncated image's boxes fail, the others are segmented
    assert "scene002.png" in err_4 and err_1.count("scene002.png") == err_4.count("scene002.png")
    assert one.read_bytes() == four.read_bytes()
    anns = json.loads(four.read_text())["annotations"]
    assert sum("segmentation" in a for a in anns) == 3 * (len(SHAPES) - 1)


def test_really_batched_encoding_gives_the_same_masks(dataset, tmp_path):
    """The batched forward pass (CUDA's default, forced here on CPU): same masks, scores equal
    to 1e-5 (oneDNN's batch-size-dependent kernels change the 6th digit of the features)."""
    folder, boxes, _ = dataset
    model = tiny_model(seed=2, num_queries=5)
    outputs = {}
    for batch_images, batch_encode in ((1, False), (4, True)):
        predictor = Box2MaskPredictor(model, image_size=64, batch_encode=batch_encode)
        calls, encode = [], predictor._encode
        predictor._encode = lambda x, calls=calls, encode=encode: calls.append(len(x)) or encode(x)
        out = tmp_path / f"out{batch_images}.json"
        failed = segment_coco(
            folder / "images", boxes, out, predictor, progress=False, batch_images=batch_images
        )
        assert failed == 3
        outputs[batch_images] = json.loads(out.read_text())["annotations"]
        # images 0, 1, (2 is bad), 3 | 4, 5, 6: batches of 4 loaded images, split by size
        assert calls == ([1] * 6 if batch_images == 1 else [2, 1, 3])
    for a, b in zip(outputs[1], outputs[4], strict=True):
        assert a.get("segmentation") == b.get("segmentation")
        assert a.get("score", 0) == pytest.approx(b.get("score", 0), abs=1e-5)


def test_a_failed_batch_is_encoded_one_image_at_a_time(dataset, tmp_path, capsys):
    folder, boxes, _ = dataset
    model = tiny_model(seed=2, num_queries=5)
    reference = tmp_path / "reference.json"
    segment_coco(
        folder / "images", boxes, reference, Box2MaskPredictor(model, image_size=64), progress=False
    )
    predictor = Box2MaskPredictor(model, image_size=64)
    encode_states = predictor.encode_states

    def out_of_memory(images):  # a batch fails; one image at a time (set_image) works
        if len(images) > 1:
            raise RuntimeError("CUDA out of memory (simulated)")
        return encode_states(images)

    predictor.encode_states = out_of_memory
    out = tmp_path / "out.json"
    segment_coco(folder / "images", boxes, out, predictor, progress=False, batch_images=4)
    err = capsys.readouterr().err
    assert "encoding 3 images in one batch failed (RuntimeError: CUDA out of memory" in err
    assert out.read_bytes() == reference.read_bytes()


def test_speed_options_are_validated(dataset, capsys, tmp_path):
    folder, boxes, ckpt = dataset
    out = tmp_path / "out.json"
    code, err = segment(folder, boxes, out, capsys, "--checkpoint", str(ckpt), "--amp", "bf16")
    assert code == 2
    assert "--amp bf16: amp='bf16' needs a CUDA device" in err and "use amp 'off'" in err
    code, err = segment(folder, boxes, out, capsys, "--amp", "fp16", "--compile")
    assert code == 2
    assert "--amp, --compile: options of a trained model (--checkpoint)" in err
    with pytest.raises(SystemExit) as exit_info:
        segment(folder, boxes, out, capsys, "--batch-images", "0")
    assert exit_info.value.code == 2
    assert "--batch-images: must be >= 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        segment(folder, boxes, out, capsys, "--amp", "fp32")
    assert "invalid choice: 'fp32'" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "out.json.partial").exists()


def test_help_names_every_speed_option(capsys):
    with pytest.raises(SystemExit):
        cli_main(["segment", "--help"])
    text = capsys.readouterr().out
    for flag in ("--batch-images N", "--amp {off,bf16,fp16}", "--channels-last", "--compile"):
        assert flag in text
    assert "byte-identical" in text
