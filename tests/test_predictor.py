import numpy as np
import pytest
import torch

from box2mask.model.box2mask_model import build_model
from box2mask.model.config import MASK_STRIDE, ModelConfig
from box2mask.model.predictor import Box2MaskPredictor
from tests.tiny_model import tiny_model

HEIGHT, WIDTH = 70, 100


def disc_image():
    """A dark disc (centre (40, 35), radius 18) on a bright, slightly textured background."""
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[:HEIGHT, :WIDTH]
    disc = (xs + 0.5 - 40) ** 2 + (ys + 0.5 - 35) ** 2 <= 18**2
    image = np.where(disc[..., None], [40, 60, 150], [220, 200, 120]).astype(np.float64)
    image += rng.normal(0, 8, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), disc


class StubNetwork(torch.nn.Module):
    """A stand-in for Box2Mask-T whose every prompt's mask is a known shape: logits +8 where
    `inside(x, y)` (network-input pixels, (N, w) x (h, 1) tensors) holds, -8 elsewhere, on the
    stride-4 mask grid; no features for the refinement (zeros)."""

    def __init__(self, inside):
        super().__init__()
        self.inside = inside
        self.register_buffer("pixel_mean", torch.tensor(ModelConfig.pixel_mean).view(1, 3, 1, 1))
        self.register_buffer("pixel_std", torch.tensor(ModelConfig.pixel_std).view(1, 3, 1, 1))

    def normalize(self, images):
        return (images - self.pixel_mean) / self.pixel_std

    def encode(self, images):
        b, _, h, w = images.shape
        features = torch.zeros(b, 8, h // MASK_STRIDE, w // MASK_STRIDE)
        return {"mask_features": features, "image_size": (h, w), "multi_scale": []}

    def decode_prompts(self, features, prompts):
        h, w = features["mask_features"].shape[-2:]
        xs = (torch.arange(w) + 0.5) * MASK_STRIDE  # network-input pixels of the grid centres
        ys = (torch.arange(h) + 0.5) * MASK_STRIDE
        logits = torch.where(self.inside(xs[None, :], ys[:, None]), 8.0, -8.0)
        return [logits.expand(len(p), h, w).clone() for p in prompts]


NET_SCALE = 4.0  # network pixels per image pixel with image_size=400 on the 100 px wide image


def _left_of_40(x, y):
    return (x / NET_SCALE < 40) & (y >= 0)


def _disc_and_block(x, y):
    x, y = x / NET_SCALE, y / NET_SCALE
    return ((x - 40) ** 2 + (y - 35) ** 2 <= 18**2) | ((x > 70) & (y < 30))


@pytest.fixture(scope="module")
def predictor():
    pred = Box2MaskPredictor(tiny_model(num_queries=5), model_version="test", image_size=64)
    pred.set_image(disc_image()[0])
    return pred


def iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def test_masks_at_original_size_inside_their_boxes(predictor):
    boxes = np.array([[20.3, 15.6, 61.2, 55.1], [70.0, 5.0, 130.0, 40.0], [1.0, 1.0, 4.0, 3.0]])
    masks, scores = predictor.predict(boxes)
    assert masks.shape == (3, HEIGHT, WIDTH) and masks.dtype == bool
    assert scores.shape == (3,) and ((scores >= 0) & (scores <= 1)).all()
    ys, xs = np.mgrid[:HEIGHT, :WIDTH] + 0.5
    for mask, (x0, y0, x1, y1) in zip(masks, boxes, strict=True):
        inside = (xs >= x0) & (xs < min(x1, WIDTH)) & (ys >= y0) & (ys < y1)
        assert mask.any() and not (mask & ~inside).any()
    assert masks[2].sum() > 0  # a 3 x 2 px box still gets a mask (upsampled crop or the box)
    empty, empty_scores = predictor.predict(np.zeros((0, 4)))
    assert empty.shape == (0, HEIGHT, WIDTH) and empty_scores.shape == (0,)


def test_answers_do_not_depend_on_other_boxes(predictor):
    a = np.array([[20.0, 15.0, 61.0, 55.0]])
    both = np.concatenate([a, [[60.0, 10.0, 95.0, 60.0]]])
    torch.testing.assert_close(predictor.predict(a)[0][0], predictor.predict(both)[0][0])


def test_fallback_to_the_box_when_nothing_is_found(predictor):
    fallback = Box2MaskPredictor(predictor.model, image_size=64, min_fill=1.01)
    fallback.set_image(disc_image()[0])
    masks, scores = fallback.predict(np.array([[10.0, 20.0, 30.0, 40.0]]))
    assert masks[0].sum() == 20 * 20 and masks[0, 20:40, 10:30].all()
    assert scores.tolist() == [0.0]


def test_levelset_refinement_moves_the_mask_to_the_object(predictor):
    _, disc = disc_image()
    box = np.array([[15.0, 10.0, 65.0, 60.0]])  # the disc's box with a 7 px margin
    refiner = Box2MaskPredictor(predictor.model, image_size=64, box_prior=0.5)
    refiner.set_image(disc_image()[0])
    raw = refiner.predict(box, steps=0)[0][0]
    refined = refiner.predict(box, steps=30)[0][0]
    assert iou(refined, disc) > 0.9
    assert iou(refined, disc) > iou(raw, disc) + 0.3  # the random-init model's mask is poor


def test_clicks_pin_object_and_background(predictor):
    box = np.array([[15.0, 10.0, 65.0, 60.0]])
    pts = np.array([[40.0, 35.0], [17.0, 12.0]])
    masks, _ = predictor.predict(box, points=pts, point_labels=np.array([1, 0]), steps=5)
    assert masks[0, 35, 40] and not masks[0, 12, 17]
    with pytest.raises(ValueError, match="point_labels"):
        predictor.predict(box, points=pts)


@pytest.mark.parametrize("noise", [0.0, 1e-6])
@pytest.mark.parametrize("steps", [0, 5])
def test_a_click_acts_near_itself_only(steps, noise):
    """Locality of a click. The stub network says "object" left of x = 40 on a uniform image: a
    positive click right of it and a negative one left of it each flip a disc (click_radius crop
    pixels, 0.78 image px each here) around the click, not just the clicked pixel, and every
    pixel away from both discs keeps its label. The image may carry rounding-level noise, as
    another thread count or SIMD path gives: the flat energy must not turn it into moves."""
    torch.manual_seed(0)
    predictor = Box2MaskPredictor(StubNetwork(_left_of_40), image_size=400)
    predictor.set_image(np.full((HEIGHT, WIDTH, 3), 128, dtype=np.uint8))
    predictor._image = predictor._image + noise * torch.randn_like(predictor._image)
    box = np.array([[20.0, 15.0, 61.0, 55.0]])
    plain = predictor.predict(box, steps=steps)[0][0]
    positive, negative = (50, 35), (30, 35)  # (x, y): background, object for the model
    cross = [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)]  # the clicked pixel and its neighbours

    def at(mask, point):
        return [bool(mask[point[1] + dy, point[0] + dx]) for dx, dy in cross]

    assert plain[15:55, 20:40].all() and not plain[:, 40:].any()  # the stub's mask, unmoved
    assert at(plain, positive) == [False] * 5 and at(plain, negative) == [True] * 5
    clicks = np.array([positive, negative], dtype=np.float64) + 0.5  # pixel centres
    masks, _ = predictor.predict(box, points=clicks, point_labels=np.array([1, 0]), steps=steps)
    assert at(masks[0], positive) == [True] * 5 and at(masks[0], negative) == [False] * 5
    far = np.ones_like(plain)
    far[30:41, 25:56] = False  # away from both discs the clicks change nothing
    assert np.array_equal(masks[0] & far, plain & far)


def test_errors():
    torch.manual_seed(0)
    cfg = ModelConfig(backbone="resnet18", num_queries=2, hidden_dim=32, mask_dim=32, nheads=4)
    cfg.dec_layers, cfg.dim_feedforward = 1, 32
    fresh = Box2MaskPredictor(build_model(cfg))
    with pytest.raises(RuntimeError, match="set_image"):
        fresh.predict(np.array([[0.0, 0.0, 5.0, 5.0]]))
    with pytest.raises(ValueError, match="uint8"):
        fresh.set_image(np.zeros((10, 10, 3), dtype=np.float32))


def test_predict_all_boxes_are_tight(predictor):
    masks, scores, labels, boxes = predictor.predict_all(score_threshold=0.0)
    assert masks.shape[1:] == (HEIGHT, WIDTH) and len(masks) == len(scores) == len(labels)
    assert (np.diff(scores) <= 0).all()
    assert labels.dtype == np.int64 and ((labels >= 0) & (labels < 2)).all()
    for mask, (x0, y0, x1, y1) in zip(masks, boxes, strict=True):
        ys, xs = np.nonzero(mask)
        assert (x0, y0, x1, y1) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    none = predictor.predict_all(score_threshold=1.01)  # nothing passes: empty, well-shaped
    assert none[0].shape == (0, HEIGHT, WIDTH) and none[3].shape == (0, 4)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_predictor_matches_cpu(predictor):
    gpu = Box2MaskPredictor(predictor.model, device="cuda", image_size=64)
    gpu.set_image(disc_image()[0])
    box = np.array([[15.0, 10.0, 65.0, 60.0]])
    cpu_mask = predictor.predict(box)[0]
    gpu_mask = gpu.predict(box)[0]
    predictor.model.to("cpu")
    assert iou(cpu_mask[0], gpu_mask[0]) > 0.98


def test_region_refinement_starts_from_the_model_mask_and_recovers_the_object(predictor):
    image, disc = disc_image()
    box = np.array([[20.0, 15.0, 61.0, 55.0]])
    raw, _ = predictor.predict(box)  # an untrained model: a poor mask
    refined_predictor = Box2MaskPredictor(
        predictor.model, model_version="test", image_size=64, region_refine=True
    )
    refined_predictor.set_image(image)
    refined, scores = refined_predictor.predict(box)
    assert iou(refined[0], disc) > 0.9 > iou(raw[0], disc)
    assert 0 <= scores[0] <= 1


def test_region_refinement_starts_from_the_model_mask():
    """On an image without colour evidence the level set has nothing to move towards: the
    refined mask is the model's (the left part of the box), not the box's ellipse."""
    image = np.full((HEIGHT, WIDTH, 3), 128, dtype=np.uint8)
    box = np.array([[20.0, 15.0, 61.0, 55.0]])
    ys, xs = np.mgrid[:HEIGHT, :WIDTH] + 0.5
    model_mask = (xs >= 20) & (xs < 40) & (ys >= 15) & (ys < 55)
    refined_predictor = Box2MaskPredictor(
        StubNetwork(_left_of_40), image_size=400, region_refine=True
    )
    refined_predictor.set_image(image)
    refined = refined_predictor.predict(box)[0][0]
    assert iou(refined, model_mask) > 0.9  # measured 0.935; from the ellipse: 0.42


def test_the_network_mask_lands_where_the_network_put_it():
    """Crop geometry: image pixels -> network input (x4 here) -> stride-4 mask grid -> each
    box's crop -> image pixels. The stub network's mask is a disc plus a corner block given in
    image pixels; every box gets exactly that shape cut to the box."""
    ys, xs = np.mgrid[:HEIGHT, :WIDTH] + 0.5
    truth = ((xs - 40) ** 2 + (ys - 35) ** 2 <= 18**2) | ((xs > 70) & (ys < 30))
    predictor = Box2MaskPredictor(StubNetwork(_disc_and_block), image_size=400, min_fill=0.0)
    predictor.set_image(disc_image()[0])
    boxes = np.array([[30.0, 20.0, 90.0, 60.0], [5.5, 3.2, 47.0, 41.7], [60.0, 0.0, 100.0, 40.0]])
    masks, _ = predictor.predict(boxes)
    for mask, (x0, y0, x1, y1) in zip(masks, boxes, strict=True):
        in_box = (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)
        wrong = np.count_nonzero(mask ^ (truth & in_box))
        assert wrong <= 0.01 * np.count_nonzero(truth & in_box), wrong  # measured: 0


def test_a_checkpoint_carries_its_serving_choice(tmp_path):
    from tests.tiny_model import save_tiny_checkpoint

    plain = save_tiny_checkpoint(tmp_path / "plain.pt", "v1", config={"image_size": 64})
    refined = save_tiny_checkpoint(
        tmp_path / "refined.pt", "v2", config={"image_size": 64, "serve_region_refine": True}
    )
    assert not Box2MaskPredictor.from_checkpoint(plain).region_refine  # old checkpoints: as is
    assert Box2MaskPredictor.from_checkpoint(refined).region_refine
    assert not Box2MaskPredictor.from_checkpoint(refined, region_refine=False).region_refine
    image, disc = disc_image()
    predictor = Box2MaskPredictor.from_checkpoint(refined)
    predictor.set_image(image)
    masks, _ = predictor.predict(np.array([[20.0, 15.0, 61.0, 55.0]]))
    assert iou(masks[0], disc) > 0.9  # the served answer is the refined one
