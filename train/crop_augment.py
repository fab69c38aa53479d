"""Augmentation of the crop learner's training crops (train/crop_bank.py, train/crop_train.py).

Few training images (balloon: 61 photos, 255 boxes) need more than flips:

- `jitter_windows`: extra crop windows around each box with random margins per side, so the
  box sits at another place and scale in its S x S crop (scale and position jitter). The box
  always stays inside its window, so its grid box (and the masks sampled with it) stay exact.
- `jitter_colours`: a random gamma, saturation change and channel order per crop, applied to the
  crop's RGB at every step (the network normalises each channel per crop, so plain brightness and
  contrast changes would teach it nothing).

The flips and transposes of a batch are `train.crop_train.augment_batch`.
"""

import torch

__all__ = ["jitter_windows", "jitter_colours"]


def jitter_windows(
    boxes: torch.Tensor,
    max_frac: float,
    margin_px: float,
    size: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random crop windows around boxes, in the contract of box2mask.ops.geometry.grow_boxes.

    Each side's margin is U(0, max_frac) x the box's side along that axis + margin_px, drawn per
    side, so a window is a random scale and offset around its box.

    Args:
        boxes: (N, 4) float XYXY image pixels.
        size: grid side S the crops are sampled on.
    Returns:
        windows (N, 4) XYXY image pixels; grid_boxes (N, 4) the boxes in their window's S x S grid.
    """
    sides = torch.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], dim=1)  # (N, 2)
    draw = torch.rand(len(boxes), 4, generator=generator).to(boxes)  # left, top, right, bottom
    margin = draw * max_frac * sides.repeat(1, 2) + margin_px  # (N, 4)
    windows = torch.cat([boxes[:, :2] - margin[:, :2], boxes[:, 2:] + margin[:, 2:]], dim=1)
    scale = size / (windows[:, 2:] - windows[:, :2])  # grid pixels per image pixel (N, 2)
    grid_boxes = torch.cat([margin[:, :2] * scale, (margin[:, :2] + sides) * scale], dim=1)
    return windows, grid_boxes


def jitter_colours(rgb: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """Colours of N crops (N, 3, S, S) in [0, 1] with a random gamma exp(U(-s, s)), saturation
    1 + U(-s, s) (blend with the crop's grey) and, with probability s, a random channel order;
    s = strength (0: unchanged). Geometry is untouched: boxes and masks need no update."""
    n = len(rgb)
    if strength <= 0 or n == 0:
        return rgb
    u = (torch.rand(n, 2, generator=generator) * 2 - 1).to(rgb) * strength
    gamma = torch.exp(u[:, 0]).view(n, 1, 1, 1)
    saturation = (1 + u[:, 1]).view(n, 1, 1, 1)
    out = rgb.clamp(0, 1) ** gamma
    grey = out.mean(dim=1, keepdim=True)
    out = (grey + saturation * (out - grey)).clamp(0, 1)
    shuffle = (torch.rand(n, generator=generator) < strength).to(rgb.device)
    order = torch.argsort(torch.rand(n, 3, generator=generator), dim=1).to(rgb.device)
    permuted = torch.gather(out, 1, order.view(n, 3, 1, 1).expand_as(out))
    return torch.where(shuffle.view(n, 1, 1, 1), permuted, out)
