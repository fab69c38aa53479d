"""The box-prompt crop learner: a small U-Net on each box's crop, a residual over a base mask.

For N boxes of one image at once:

1. Crop. Each box, grown by a margin, is sampled on an S x S grid (bilinear, `sample_crops`):
   big boxes are downsampled, small ones upsampled, so every box is one slice of an (N, ., S, S)
   batch whatever its size. `crop_geometry` gives the crop of each box in image pixels and
   the box inside its crop in grid pixels.
2. Inputs (`crop_inputs`), (N, 6, S, S): the crop's RGB normalised by its own mean and std, the
   box (1 inside, 0 outside), the inscribed ellipse (+1 inside, -1 outside) and the base mask
   (+1 / -1): the embedded level-set default's mask for `base="default"`, the ellipse for
   `base="ellipse"`.
3. Output: logits = base_logit * base + delta, -outside_logit outside the box. The last layer
   that produces delta starts at zero, so an untrained learner returns its base mask exactly.
   At full resolution (box2mask/crop/predictor.py) delta is upsampled and added to the base mask
   taken at image pixels, so with delta = 0 the served masks are the base's to the pixel.
"""

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import roi_align

from box2mask.ops.geometry import grow_boxes
from box2mask.ops.levelset import box_masks_from_boxes, inscribed_ellipses

__all__ = [
    "CropLearnerConfig",
    "CropUNet",
    "crop_geometry",
    "sample_crops",
    "crop_inputs",
    "base_logits",
    "flip_averaged",
]

KIND = "crop-learner"  # the checkpoint `kind` of this model


@dataclass
class CropLearnerConfig:
    crop_size: int = 48  # side S of the grid every box crop is resampled to
    margin_frac: float = 0.15  # crop margin around the box, as a fraction of the box side
    margin_px: float = 3.0  # plus this many image pixels
    width: int = 8  # channels of the first U-Net level (doubled per level)
    levels: int = 3  # U-Net levels (S must be divisible by 2 ** (levels - 1))
    base: str = "default"  # base mask the learner corrects: "default" (level set) | "ellipse"
    base_logit: float = 2.0  # logit of the base mask inside the box (+ object, - background)
    outside_logit: float = 8.0  # logit -outside_logit outside the box: never any mask there
    test_flips: bool = False  # serve the mean correction over 4 flips of each crop (4x the net)
    click_channels: bool = False  # 3 more inputs: +/- click discs and the previous mask (clicks)
    click_radius: float = 2.0  # radius (grid pixels) of each click's disc in the click maps
    # click-aware with the default as base: the learner's clicked mask is then the shown mask of
    # the default's walk with the same clicks (those it still disagrees with re-segment at image
    # resolution; box2mask/levelset/clicks.py). False: the learner's mask as is (as before)
    click_walk: bool = False


def crop_geometry(boxes: torch.Tensor, cfg: CropLearnerConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Each box's crop (N, 4) XYXY image pixels (the box grown by its margin) and the box in its
    crop's S x S grid pixels (N, 4) XYXY, for boxes (N, 4) XYXY image pixels
    (box2mask.ops.geometry.grow_boxes with the config's margins and crop size)."""
    return grow_boxes(boxes, cfg.margin_frac, cfg.margin_px, cfg.crop_size)


def sample_crops(images: torch.Tensor, windows: torch.Tensor, size: int, index=None):
    """Bilinear S x S samples of crop windows.

    Args:
        images: (B, C, H, W) float maps in image pixels.
        windows: (N, 4) XYXY image pixels (may extend past the image: zeros there).
        index: (N,) long, which of the B maps each window reads; None = map 0 for all.
    Returns:
        (N, C, S, S); grid pixel (i, j) is the window's point at fraction ((j+0.5)/S, (i+0.5)/S).
    """
    if index is None:
        index = torch.zeros(len(windows), device=windows.device)
    rois = torch.cat([index.to(windows.dtype)[:, None], windows], dim=1)
    return roi_align(images, rois, output_size=size, sampling_ratio=2, aligned=True)


def crop_inputs(rgb: torch.Tensor, grid_boxes: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """The network input (N, 6, S, S).

    Args:
        rgb: (N, 3, S, S) crop colours in [0, 1].
        grid_boxes: (N, 4) the boxes on the grid (`crop_geometry`).
        base: (N, S, S) base mask probabilities in [0, 1] (soft at sampled edges).
    """
    size = rgb.shape[-1]
    mean = rgb.mean(dim=(2, 3), keepdim=True)
    std = rgb.std(dim=(2, 3), keepdim=True).clamp_min(0.02)
    box = box_masks_from_boxes(grid_boxes, size, size)
    ellipse = inscribed_ellipses(grid_boxes, size, size, inside=1.0, outside=0.0) * 2 - 1
    return torch.cat([(rgb - mean) / std, box[:, None], ellipse[:, None], base[:, None] * 2 - 1], 1)


def base_logits(base: torch.Tensor, box: torch.Tensor, cfg: CropLearnerConfig) -> torch.Tensor:
    """+-base_logit by the base mask (N, S, S) in [0, 1] inside the box (N, S, S) in {0, 1},
    -outside_logit outside it."""
    inside = cfg.base_logit * (2 * base - 1)
    return torch.where(box > 0.5, inside, torch.full_like(inside, -cfg.outside_logit))


def flip_averaged(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """The correction delta (N, S, S) averaged over the identity, horizontal, vertical and both
    flips of the inputs (N, C, S, S), each flipped back: the same function of the crop, less
    variance (test-time augmentation; training flips crops the same way)."""
    total = 0.0
    for dims in ((), (-1,), (-2,), (-2, -1)):
        delta, _ = model(inputs.flip(dims) if dims else inputs)
        total = total + (delta.flip(dims) if dims else delta)
    return total / 4


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class CropUNet(nn.Module):
    """inputs (N, C, S, S) -> delta logits (N, S, S) and features (N, width, S, S); C = 6, or 9
    with `click_channels` (`crop_inputs` then the +/- click maps and the previous mask)."""

    def __init__(self, cfg: CropLearnerConfig):
        super().__init__()
        self.cfg = cfg
        self.in_channels = 9 if cfg.click_channels else 6
        widths = [cfg.width * 2**i for i in range(cfg.levels)]
        self.down = nn.ModuleList()
        c_in = self.in_channels
        for w in widths:
            self.down.append(_block(c_in, w))
            c_in = w
        self.up = nn.ModuleList(
            _block(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(cfg.levels - 1))
        )
        self.head = nn.Conv2d(widths[0], 1, 1)
        nn.init.zeros_(self.head.weight)  # delta = 0 at the start: the base mask exactly
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1]), strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return self.head(x)[:, 0], x
