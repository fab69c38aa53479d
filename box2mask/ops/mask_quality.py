"""Mask quality signals: which proposed masks a person should review first.

Every function works on N masks at once (no Python loop over masks) and accepts torch tensors or
NumPy arrays; results are (N,) float tensors. Masks are (N, H, W) bool at image size and boxes
(N, 4) absolute XYXY pixels (the boxes the masks were proposed for).

Shape signals are measured on each box's own S x S grid (`box_grid`: nearest-pixel sampling of
the box, small boxes upsampled, large ones downsampled), so a 20 px nucleus and an 800 px balloon
cost the same and count the same:

- `stray_fraction`: share of the mask's area outside its largest 8-connected component (a tight
  box holds one object; extra parts are often background leaking in).
- `hole_fraction`: area of the mask's holes / area of the mask with its holes filled.
- `fill_ratio`: mask area / box area (pi / 4 for an ellipse inscribed in its box, 1 for the box).
- `edge_coverage`: share of the four box sides the mask touches (within one grid cell): the
  object of a tight box touches all four.
- `disagreement`: 1 - IoU of two masks of the same boxes (e.g. the proposal and a second run
  with another number of level-set steps): an unstable mask is a doubtful one.

`quality_score` combines them with the predictor's own score into one number in [0, 1] (higher
= more likely correct); see its docstring for the formula. A review queue sorts by it, lowest
first.
"""

import math

import numpy as np
import torch

from box2mask.ops.geometry import gather_grid, nearest_pixels
from box2mask.ops.mask_morphology import fill_holes, largest_component

__all__ = [
    "GRID_SIZE",
    "QUALITY_WEIGHTS",
    "box_grid",
    "stray_fraction",
    "hole_fraction",
    "fill_ratio",
    "edge_coverage",
    "disagreement",
    "quality_features",
    "quality_score",
]

GRID_SIZE = 64  # side S of the grid each box is sampled on for the shape signals

# Penalty weights of `quality_score` (see its docstring): fitted with bench/review.py --fit on
# the TRAIN images of balloon and nuclei (first 10 and 3 images, 192 masks), checked on val.
QUALITY_WEIGHTS = {
    "stray": 2.0,  # per unit of stray_fraction
    "holes": 8.0,  # per unit of hole_fraction
    "missed_sides": 0.0,  # per unit of (1 - edge_coverage) (the default's score already has it)
    "fill": 1.0,  # per unit of |fill_ratio - pi/4|
    "disagreement": 1.0,  # per unit of disagreement
}


def _tensor(x, dtype=None) -> torch.Tensor:
    t = x if torch.is_tensor(x) else torch.from_numpy(np.ascontiguousarray(x))
    return t if dtype is None else t.to(dtype)


def box_grid(masks, boxes_xyxy, size: int = GRID_SIZE) -> torch.Tensor:
    """Sample each mask inside its box on an S x S grid (nearest pixel) -> (N, S, S) bool.

    Grid cell (i, j) of box (x0, y0, x1, y1) reads the image pixel containing the point
    (x0 + (j + 0.5) (x1 - x0) / S, y0 + (i + 0.5) (y1 - y0) / S), clamped to the image.
    """
    masks = _tensor(masks, torch.bool)
    n, height, width = masks.shape
    boxes = _tensor(boxes_xyxy, torch.float64).to(masks.device).reshape(n, 4)
    rows, cols, _ = nearest_pixels(boxes, size, height, width)
    return gather_grid(masks, rows, cols)


def _area(grid: torch.Tensor) -> torch.Tensor:
    return grid.flatten(1).sum(1).double()


def stray_fraction(grid: torch.Tensor) -> torch.Tensor:
    """(N, S, S) bool box grids -> (N,): 1 - largest component area / mask area (0 if empty)."""
    area = _area(grid)
    kept = _area(largest_component(grid))
    return torch.where(area > 0, 1 - kept / area.clamp_min(1), torch.zeros_like(area))


def hole_fraction(grid: torch.Tensor) -> torch.Tensor:
    """(N, S, S) bool box grids -> (N,): hole area / filled area (0 if empty).

    A hole is background enclosed by the mask; background touching the box side is not a hole.
    """
    filled = _area(fill_holes(grid))
    holes = filled - _area(grid)
    return torch.where(filled > 0, holes / filled.clamp_min(1), torch.zeros_like(filled))


def fill_ratio(grid: torch.Tensor) -> torch.Tensor:
    """(N, S, S) bool box grids -> (N,): mask area / box area."""
    return grid.flatten(1).double().mean(1)


def edge_coverage(grid: torch.Tensor) -> torch.Tensor:
    """(N, S, S) bool box grids -> (N,): share of the 4 box sides whose outer grid row or column
    the mask touches (0, 0.25, 0.5, 0.75 or 1)."""
    sides = torch.stack(
        [grid[:, 0, :].any(1), grid[:, -1, :].any(1), grid[:, :, 0].any(1), grid[:, :, -1].any(1)],
        dim=1,
    )
    return sides.double().mean(1)


def disagreement(masks_a, masks_b) -> torch.Tensor:
    """(N, H, W) bool mask pairs -> (N,): 1 - IoU (0 when both are empty), at full resolution."""
    a, b = _tensor(masks_a, torch.bool).flatten(1), _tensor(masks_b, torch.bool).flatten(1)
    if a.shape != b.shape:
        raise ValueError(f"mask sets differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    inter = (a & b).sum(1).double()
    union = (a | b).sum(1).double()
    return torch.where(union > 0, 1 - inter / union.clamp_min(1), torch.zeros_like(union))


def quality_features(masks, boxes_xyxy, other_masks=None, size: int = GRID_SIZE) -> dict:
    """All shape signals for N masks: {"stray", "holes", "fill", "edges", "disagreement"},
    each an (N,) float64 tensor; "disagreement" is zeros when `other_masks` is None."""
    grid = box_grid(masks, boxes_xyxy, size)
    n = grid.shape[0]
    return {
        "stray": stray_fraction(grid),
        "holes": hole_fraction(grid),
        "fill": fill_ratio(grid),
        "edges": edge_coverage(grid),
        "disagreement": (
            disagreement(masks, other_masks)
            if other_masks is not None
            else torch.zeros(n, dtype=torch.float64, device=grid.device)
        ),
    }


def quality_score(features: dict, scores=None, weights: dict | None = None) -> torch.Tensor:
    """Combine `quality_features` and the predictor's scores (N,) in [0, 1] -> (N,) in [0, 1].

        penalty = w_stray stray + w_holes holes + w_missed_sides (1 - edges)
                  + w_fill |fill - pi/4| + w_disagreement disagreement
        quality = score * exp(-penalty)          (score = 1 when `scores` is None)

    Each penalty is 0 for a clean mask: one part, no holes, touching all four sides of its box,
    filling it like an ellipse, stable across runs. The weights default to `QUALITY_WEIGHTS`.
    """
    w = {**QUALITY_WEIGHTS, **(weights or {})}
    penalty = (
        w["stray"] * features["stray"]
        + w["holes"] * features["holes"]
        + w["missed_sides"] * (1 - features["edges"])
        + w["fill"] * (features["fill"] - math.pi / 4).abs()
        + w["disagreement"] * features["disagreement"]
    )
    quality = torch.exp(-penalty)
    if scores is not None:
        scores = _tensor(scores, torch.float64).to(quality.device).reshape(-1)
        quality = quality * scores.clamp(0, 1)
    return quality
