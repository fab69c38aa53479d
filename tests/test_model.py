import math

import pytest
import torch
import torchvision

from box2mask.model.backbone import ResNetBackbone
from box2mask.model.box2mask_model import build_model
from box2mask.model.config import ModelConfig
from box2mask.model.pixel_decoder import FPNPixelDecoder
from box2mask.model.position import box_position_embedding, sine_embed
from tests.tiny_model import tiny_config as shared_tiny_config


def tiny_config(**overrides) -> ModelConfig:
    return shared_tiny_config(**{"num_classes": 3, "num_queries": 6, "dec_layers": 3, **overrides})


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(tiny_config()).eval()


def test_sine_embed_hand_computed():
    emb = sine_embed(torch.tensor([0.25]), 4, temperature=100.0)
    # frequencies 100^(0/4) = 1 and 100^(2/4) = 10: angles pi/2 and pi/20
    expected = [1.0, 0.0, math.sin(math.pi / 20), math.cos(math.pi / 20)]
    assert emb[0].tolist() == pytest.approx(expected, abs=1e-6)
    box = box_position_embedding(torch.tensor([[0.0, 0.0, 50.0, 100.0]]), 100, 200, 8)
    # cx = 25 / 200, cy = 0.5, w = 0.25, h = 1.0; first channel of each = sin(2 pi v)
    assert box[0, ::2].tolist() == pytest.approx(
        [math.sin(2 * math.pi * v) for v in (0.125, 0.5, 0.25, 1.0)], abs=1e-5
    )


def test_backbone_and_pixel_decoder_shapes():
    backbone = ResNetBackbone("resnet18")
    feats = backbone(torch.zeros(2, 3, 64, 96))
    assert [tuple(f.shape) for f in feats] == [
        (2, 64, 16, 24),
        (2, 128, 8, 12),
        (2, 256, 4, 6),
        (2, 512, 2, 3),
    ]
    decoder = FPNPixelDecoder(backbone.channels, hidden_dim=32, mask_dim=16)
    multi_scale, mask_features = decoder(feats)
    assert [tuple(f.shape) for f in multi_scale] == [(2, 32, 2, 3), (2, 32, 4, 6), (2, 32, 8, 12)]
    assert mask_features.shape == (2, 16, 16, 24)


def test_unknown_backbone_and_bad_size_raise(model):
    with pytest.raises(ValueError, match="unknown backbone"):
        ResNetBackbone("vgg16")
    with pytest.raises(ValueError, match="multiple of 32"):
        model(torch.zeros(1, 3, 64, 70))


def test_forward_shapes_with_and_without_prompts(model):
    images = torch.rand(2, 3, 64, 96) * 255
    with torch.no_grad():
        out = model(images)
        assert out["pred_logits"].shape == (2, 6, 4)
        assert out["pred_masks"].shape == (2, 6, 16, 24)
        assert out["mask_features"].shape == (2, 32, 16, 24)
        assert len(out["aux_outputs"]) == 3  # the initial queries + every layer but the last
        assert all(a["pred_masks"].shape == (2, 6, 16, 24) for a in out["aux_outputs"])
        assert "prompt_masks" not in out
        prompts = [torch.tensor([[4.0, 4.0, 40.0, 60.0]]), torch.zeros(0, 4)]
        out_p = model(images, prompt_boxes=prompts)
    assert [tuple(m.shape) for m in out_p["prompt_masks"]] == [(1, 16, 24), (0, 16, 24)]
    assert len(out_p["aux_prompt_masks"]) == 3
    # object queries never attend to prompts: their predictions do not change
    torch.testing.assert_close(out_p["pred_masks"], out["pred_masks"])
    torch.testing.assert_close(out_p["pred_logits"], out["pred_logits"])


def test_prompt_answers_do_not_depend_on_other_prompts(model):
    images = torch.rand(1, 3, 64, 64) * 255
    a = torch.tensor([[4.0, 4.0, 30.0, 40.0]])
    b = torch.tensor([[20.0, 10.0, 60.0, 62.0], [0.0, 0.0, 64.0, 64.0]])
    with torch.no_grad():
        features = model.encode(images)
        alone = model.decode_prompts(features, [a])[0]
        together = model.decode_prompts(features, [torch.cat([a, b])])[0]
        via_forward = model(images, prompt_boxes=[torch.cat([a, b])])["prompt_masks"][0]
    torch.testing.assert_close(together[:1], alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(via_forward, together, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(together[0], together[1])  # different boxes, different masks


def test_first_prompt_attention_is_the_box(model):
    # box (8, 8, 40, 24) on a 64 x 64 image -> on the 2 x 2 level it covers pixel centre (16, 16)
    # only: x in [4, 20) contains 16 ... in level units: [0.25, 1.25) x [0.25, 0.75) -> col 0 row 0
    blocked = model.decoder._box_blocked(torch.tensor([[[8.0, 8.0, 40.0, 24.0]]]), (64, 64), (2, 2))
    assert blocked.tolist() == [[[False, True, True, True]]]
    # a box smaller than a level pixel still gets the pixel holding its centre
    tiny = model.decoder._box_blocked(torch.tensor([[[40.0, 40.0, 42.0, 42.0]]]), (64, 64), (2, 2))
    assert tiny.tolist() == [[[True, True, True, False]]]


def test_gradients_reach_every_part(model):
    model.train()
    images = torch.rand(2, 3, 64, 64) * 255
    out = model(images, prompt_boxes=[torch.tensor([[4.0, 4.0, 30.0, 40.0]])] * 2)
    loss = out["pred_logits"].sum() + out["pred_masks"].mean() + out["prompt_masks"][0].mean()
    loss.backward()
    model.eval()
    for name in ("backbone", "pixel_decoder", "decoder", "prompt_pos"):
        grads = [p.grad for p in getattr(model, name).parameters() if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads), name
    model.zero_grad()


def test_backbone_weights_from_local_file(tmp_path):
    torch.manual_seed(1)
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(reference.state_dict(), path)
    model = build_model(tiny_config(backbone_weights=str(path)))
    torch.testing.assert_close(model.backbone.stem[0].weight, reference.conv1.weight)
    torch.testing.assert_close(
        model.backbone.layers[3][1].conv2.weight, reference.layer4[1].conv2.weight
    )
    wrong = tmp_path / "wrong.pth"
    torch.save({"something": torch.zeros(1)}, wrong)
    with pytest.raises(ValueError, match="wrong.pth"):
        build_model(tiny_config(backbone_weights=str(wrong)))
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        build_model(tiny_config(backbone_weights=str(tmp_path / "missing.pth")))


def test_frozen_norm_backbone():
    model = build_model(tiny_config(backbone_norm="frozen"))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.backbone.modules())


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(model):
    images = torch.rand(1, 3, 64, 64) * 255
    prompts = [torch.tensor([[4.0, 4.0, 30.0, 40.0]])]
    with torch.no_grad():
        cpu = model(images, prompt_boxes=prompts)
        gpu_model = build_model(tiny_config()).eval().cuda()
        gpu_model.load_state_dict(model.state_dict())
        gpu = gpu_model(images.cuda(), prompt_boxes=[p.cuda() for p in prompts])
    torch.testing.assert_close(gpu["pred_masks"].cpu(), cpu["pred_masks"], atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(
        gpu["prompt_masks"][0].cpu(), cpu["prompt_masks"][0], atol=1e-3, rtol=1e-3
    )
