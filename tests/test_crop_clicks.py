"""The click-aware crop learner: click maps, its click channels at predict time, old checkpoints."""

import numpy as np
import torch

from box2mask.crop.click_maps import click_maps
from box2mask.crop.learner import CropLearnerConfig, CropUNet
from box2mask.crop.predictor import CropLearnerPredictor
from box2mask.io.checkpoint import load_checkpoint
from tests.crop_checkpoints import save_crop_model


class ClickDelta(CropUNet):
    """delta = +20 on positive click discs, -20 on negative ones: reads only the click maps."""

    def forward(self, x):
        return 20.0 * (x[:, 6] - x[:, 7]), x


def test_click_maps_put_a_disc_of_the_radius_on_the_grid():
    windows = torch.tensor([[0.0, 0.0, 10.0, 10.0], [10.0, 0.0, 20.0, 10.0]])
    maps = click_maps(torch.tensor([[2.5, 2.5]]), torch.tensor([False]), windows, 10, radius=1.0)
    # grid centres within 1 of (2.5, 2.5): the pixel itself and its 4 neighbours, negative only
    expected = torch.zeros(10, 10)
    expected[2, 1:4] = 1
    expected[1:4, 2] = 1
    assert torch.equal(maps[0, 1], expected)
    assert maps[0, 0].sum() == 0 and maps[1].sum() == 0  # the other crop does not hold it


def test_click_channels_change_the_output_where_clicked():
    cfg = CropLearnerConfig(base="ellipse", crop_size=32, click_channels=True)
    predictor = CropLearnerPredictor(ClickDelta(cfg))
    image = np.full((64, 64, 3), 128, dtype=np.uint8)
    predictor.set_image(image)
    box = np.array([[8.0, 8.0, 56.0, 56.0]])
    plain, _ = predictor.predict(box)
    clicked, _ = predictor.predict(
        box, points=np.array([[32.0, 32.0], [9.0, 9.0]]), point_labels=np.array([0, 1])
    )
    assert plain[0, 32, 32] and not clicked[0, 32, 32]  # the negative click removes the centre
    assert not plain[0, 9, 9] and clicked[0, 9, 9]  # the positive one adds the corner
    changed = plain[0] != clicked[0]
    rows, cols = np.nonzero(changed)
    near = np.minimum(
        np.hypot(rows + 0.5 - 32, cols + 0.5 - 32), np.hypot(rows + 0.5 - 9, cols + 0.5 - 9)
    )
    assert near.max() < 6  # only near the clicks (radius 2 grid px = 3.9 image px here)


def test_the_previous_mask_is_an_input_with_clicks():
    cfg = CropLearnerConfig(base="ellipse", crop_size=32, click_channels=True)

    class PreviousDelta(CropUNet):
        def forward(self, x):
            return 20.0 * x[:, 8], x  # the previous mask channel, +1 / -1

    predictor = CropLearnerPredictor(PreviousDelta(cfg))
    predictor.set_image(np.full((64, 64, 3), 128, dtype=np.uint8))
    box = np.array([[8.0, 8.0, 56.0, 56.0]])
    previous = np.zeros((1, 64, 64), dtype=bool)
    previous[0, 8:56, 8:56] = True  # the filled box, not the ellipse
    masks, _ = predictor.predict(
        box, points=np.array([[32.0, 32.0]]), point_labels=np.array([1]), init_masks=previous
    )
    assert masks[0, 9, 9] and masks[0, 54, 54]  # corners the ellipse lacks: from the previous mask


def test_a_gradient_reaches_the_click_channel_weights():
    torch.manual_seed(0)
    model = CropUNet(CropLearnerConfig(base="ellipse", crop_size=16, click_channels=True))
    torch.nn.init.normal_(model.head.weight)  # the zero head would stop every gradient
    assert model.down[0][0].weight.shape[1] == 9
    delta, _ = model(torch.randn(2, 9, 16, 16))
    delta.square().mean().backward()
    grad = model.down[0][0].weight.grad
    assert grad[:, 6:9].abs().sum() > 0


def test_a_checkpoint_without_the_flag_loads_and_predicts_as_before(tmp_path):
    torch.manual_seed(0)
    model = CropUNet(CropLearnerConfig(base="ellipse", crop_size=32))
    with torch.no_grad():
        model.head.bias.fill_(0.5)
        torch.nn.init.normal_(model.head.weight, std=0.5)
    ckpt = load_checkpoint(save_crop_model(tmp_path / "old.pt", model), map_location="cpu")
    for key in ("click_channels", "click_radius"):  # as written before the flag existed
        ckpt["model_config"].pop(key, None)
    old = CropLearnerPredictor.from_checkpoint(ckpt)
    assert not old.cfg.click_channels and old.model.down[0][0].weight.shape[1] == 6
    image = np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8)
    box = np.array([[6.0, 6.0, 40.0, 40.0]])
    reference = CropLearnerPredictor(model)
    for p in (old, reference):
        p.set_image(image)
    assert np.array_equal(old.predict(box)[0], reference.predict(box)[0])
    # clicks on the ellipse base still pin their discs
    pinned, _ = old.predict(box, points=np.array([[23.0, 23.0]]), point_labels=np.array([0]))
    assert not pinned[0, 23, 23]


def test_a_click_aware_checkpoint_round_trips(tmp_path):
    model = CropUNet(CropLearnerConfig(base="ellipse", crop_size=32, click_channels=True))
    loaded = CropLearnerPredictor.from_checkpoint(save_crop_model(tmp_path / "clicks.pt", model))
    assert loaded.cfg.click_channels and loaded.model.down[0][0].weight.shape[1] == 9


def test_simulated_clicks_land_on_verified_crops_only():
    from train.crop_click_sim import simulated_click_channels

    torch.manual_seed(0)
    model = CropUNet(CropLearnerConfig(base="ellipse", crop_size=16, click_channels=True))
    base = torch.zeros(2, 16, 16)
    base[:, 4:12, 4:12] = 1.0
    masks = torch.zeros(2, 16, 16)
    masks[:, 2:14, 2:14] = 1.0  # bigger than the base: the first click is positive
    box = torch.ones(2, 16, 16)
    channels = simulated_click_channels(
        model,
        torch.zeros(2, 6, 16, 16),
        base,
        box,
        masks,
        torch.tensor([True, False]),
        torch.Generator().manual_seed(0),
        no_click_share=0.0,
    )
    assert channels.shape == (2, 3, 16, 16)
    assert channels[0, :2].sum() > 0  # the verified crop got clicks, on its errors
    clicked = channels[0, :2].amax(0) > 0
    assert (clicked & (masks[0] > 0)).any() or (clicked & (masks[0] == 0)).any()
    assert channels[1, :2].sum() == 0  # the box-only crop: no clicks, the base as previous mask
    assert torch.equal(channels[1, 2], base[1] * 2 - 1)


def test_a_share_of_verified_crops_trains_the_no_click_path():
    """no_click_share=1: verified crops get no clicks and the base as previous mask (the path
    served without clicks learns from the verified masks); 0: every verified crop is clicked."""
    from train.crop_click_sim import simulated_click_channels

    torch.manual_seed(0)
    model = CropUNet(CropLearnerConfig(base="ellipse", crop_size=16, click_channels=True))
    base = torch.zeros(8, 16, 16)
    base[:, 4:12, 4:12] = 1.0
    masks = torch.zeros(8, 16, 16)
    masks[:, 2:14, 2:14] = 1.0
    args = (model, torch.zeros(8, 6, 16, 16), base, torch.ones(8, 16, 16), masks)
    verified = torch.ones(8, dtype=torch.bool)
    none = simulated_click_channels(
        *args, verified, torch.Generator().manual_seed(0), no_click_share=1.0
    )
    assert none[:, :2].sum() == 0 and torch.equal(none[:, 2], base * 2 - 1)
    every = simulated_click_channels(
        *args, verified, torch.Generator().manual_seed(0), no_click_share=0.0, empty_share=0.0
    )
    assert (every[:, :2].flatten(1).sum(1) > 0).all()
    # the first previous mask is the learner's own no-click answer (untrained: the base), and
    # a click's disc lands on the error ring between base and verified mask
    assert ((every[:, 0] > 0) & (base == 0) & (masks == 1)).flatten(1).any(1).all()


def test_a_click_aware_learner_widened_from_a_box_only_one_starts_as_it():
    """widen_inputs: the 3 click channels get zero weights; the box-only learner's masks come
    back exactly, with or without clicks, until the click weights are trained."""
    from dataclasses import replace

    from train.crop_train import widen_inputs

    torch.manual_seed(0)
    cfg = CropLearnerConfig(base="ellipse", crop_size=32)
    box_only = CropUNet(cfg).eval()
    with torch.no_grad():
        torch.nn.init.normal_(box_only.head.weight, std=0.5)
    clicks = CropUNet(replace(cfg, click_channels=True))
    state = widen_inputs(box_only.state_dict(), clicks.in_channels)
    assert state["down.0.0.weight"].shape[1] == 9
    assert not state["down.0.0.weight"][:, 6:].any()
    clicks.load_state_dict(state)
    image = np.random.default_rng(1).integers(0, 255, (48, 48, 3), dtype=np.uint8)
    box = np.array([[6.0, 6.0, 40.0, 40.0]])
    a, b = CropLearnerPredictor(box_only), CropLearnerPredictor(clicks)
    for p in (a, b):
        p.set_image(image)
    plain = a.predict(box)[0]
    assert plain.any() and np.array_equal(plain, b.predict(box)[0])
    click = {"points": np.array([[23.0, 23.0]]), "point_labels": np.array([0])}
    assert np.array_equal(plain, b.predict(box, **click)[0])
    assert widen_inputs(state, 9) is state  # already wide: unchanged
