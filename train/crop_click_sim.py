"""Simulated clicks for training a click-aware crop learner (RITM-style iterative training).

For each crop with a verified mask: a share `no_click_share` gets no clicks and the base as
previous mask (the box-only path, as served without clicks: it too learns from the verified
masks). The others start from the learner's own no-click answer (without gradient; as served, a
first click corrects the mask the learner showed) or, for a share `empty_share`, from none
(empty); then for 1..max_clicks rounds the robot annotator (train/robot_clicks.py) clicks the
deepest error of the current mask against the verified one on the crop grid, and (without
gradient) the learner's own prediction with those clicks becomes the next previous mask, so it
learns to fix its own mistakes. Box-only crops get no clicks and the base as previous mask.
"""

import numpy as np
import torch

from box2mask.crop.click_maps import click_maps
from box2mask.crop.learner import CropUNet, base_logits
from train.robot_clicks import next_click

__all__ = ["no_click_channels", "simulated_click_channels", "clicked_crop_weights"]


def no_click_channels(base: torch.Tensor) -> torch.Tensor:
    """(N, 3, S, S): empty click maps and the base mask (N, S, S) in [0, 1] as previous mask."""
    zeros = torch.zeros_like(base)
    return torch.stack([zeros, zeros, base * 2 - 1], dim=1)


@torch.no_grad()
def simulated_click_channels(
    model: CropUNet,
    inputs: torch.Tensor,
    base: torch.Tensor,
    box: torch.Tensor,
    masks: torch.Tensor,
    has_mask: torch.Tensor,
    generator: torch.Generator,
    max_clicks: int = 4,
    no_click_share: float = 0.25,
    empty_share: float = 0.25,
) -> torch.Tensor:
    """The 3 click channels (N, 3, S, S) of a training batch.

    Args:
        inputs: (N, 6, S, S) `crop_inputs`; base: (N, S, S) base mask in [0, 1];
        box: (N, S, S) {0, 1} box masks; masks: (N, S, S) verified masks in [0, 1];
        has_mask: (N,) bool, which crops have a verified mask.
        max_clicks: clicks per clicked crop drawn uniformly in 1..max_clicks.
        no_click_share: share of the verified crops trained without clicks (the box-only path).
        empty_share: share of the clicked crops whose first previous mask is empty (else the
            learner's own no-click answer).
    """
    size = base.shape[-1]
    channels = no_click_channels(base)
    verified = torch.nonzero(has_mask).flatten()
    clicked_rows = torch.rand(len(verified), generator=generator) >= no_click_share
    rows = verified[clicked_rows.to(verified.device)]
    if len(rows) == 0:
        return channels
    none_init = torch.rand(len(rows), generator=generator) < empty_share
    clicks = torch.randint(1, max_clicks + 1, (len(rows),), generator=generator)
    was_training = model.training
    model.eval()
    own, _ = model(torch.cat([inputs[rows], channels[rows]], dim=1))  # the no-click answer
    own = base_logits(base[rows], box[rows], model.cfg) + own > 0
    none_init = none_init.to(own.device)
    prev = torch.where(none_init[:, None, None], torch.zeros_like(own), own)
    channels[rows, 2] = prev.float() * 2 - 1
    gt = (masks[rows] > 0.5).cpu().numpy()
    window = torch.tensor([[0.0, 0.0, float(size), float(size)]])
    points: list[list[tuple[float, float, int]]] = [[] for _ in rows]
    for step in range(int(clicks.max())):
        pred = (channels[rows, 2] > 0).cpu().numpy()
        for k in range(len(rows)):
            if step >= clicks[k]:
                continue
            clicked = np.zeros((size, size), dtype=bool)
            for x, y, _ in points[k]:
                clicked[int(y), int(x)] = True
            click = next_click(gt[k], pred[k], clicked)
            if click is not None:
                points[k].append(click)
        for k, i in enumerate(rows.tolist()):
            if points[k]:
                xy = torch.tensor([[x, y] for x, y, _ in points[k]])
                lab = torch.tensor([label for _, _, label in points[k]], dtype=torch.bool)
                radius = model.cfg.click_radius
                channels[i, :2] = click_maps(xy, lab, window, size, radius=radius)[0]
        if step + 1 < int(clicks.max()):  # the learner's own answer is the next previous mask
            x = torch.cat([inputs[rows], channels[rows]], dim=1)
            delta, _ = model(x)
            logits = base_logits(base[rows], box[rows], model.cfg) + delta
            active = (clicks > step + 1).to(logits.device)
            channels[rows, 2] = torch.where(
                active[:, None, None], (logits > 0).float() * 2 - 1, channels[rows, 2]
            )
    model.train(was_training)
    return channels


def clicked_crop_weights(
    *,
    has_mask: torch.Tensor,
    channels: torch.Tensor,
    masks: torch.Tensor,
    weak_on_verified: float,
    weak_on_clicked: float = -1.0,
    click_error_weight: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-crop weights of the weak terms (N,) and per-pixel weights of the mask BCE (N, S, S)
    (None when `click_error_weight` is 0) for a batch with click channels.

    Args:
        has_mask: (N,) bool, which crops have a verified mask.
        channels: (N, 3, S, S) the click channels (`simulated_click_channels`): +/- discs and the
            previous mask (+1 / -1); (N, 0, S, S) for a learner without them (no clicked crops).
        masks: (N, S, S) verified masks in [0, 1].
        weak_on_verified: weak weight of verified crops; box-only crops get 1.
        weak_on_clicked: weak weight of the crops with at least one click (< 0: as verified).
        click_error_weight: on clicked crops, 1 + this on the pixels where the previous mask
            disagrees with the verified mask.
    """
    weak = torch.where(has_mask, weak_on_verified, 1.0).float()
    if channels.shape[1] < 3:
        return weak, None
    clicked = channels[:, :2].flatten(1).amax(dim=1) > 0
    if weak_on_clicked >= 0:
        weak = torch.where(clicked, float(weak_on_clicked), weak)
    if not click_error_weight:
        return weak, None
    wrong = (channels[:, 2] > 0) != (masks > 0.5)
    extra = (wrong & clicked[:, None, None]).float() * click_error_weight
    return weak, 1.0 + extra
