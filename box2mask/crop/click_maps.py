"""Click maps on the crop grid: the extra inputs of a click-aware crop learner.

A click-aware learner (`CropLearnerConfig.click_channels`) reads three more channels per crop:
a disc of radius `radius` grid pixels around each positive click, the same for negative clicks,
and the previous mask (+1 object / -1 background, the mask the person corrected). Without
clicks the two click maps are zero and the previous mask is the base mask.
"""

import torch

__all__ = ["click_maps"]


def click_maps(
    points: torch.Tensor,
    labels: torch.Tensor,
    windows: torch.Tensor,
    size: int,
    radius: float = 2.0,
) -> torch.Tensor:
    """Positive and negative click discs of every crop (N, 2, S, S) in {0, 1}.

    Args:
        points: (P, 2) XY image pixels (continuous: pixel (c, r) spans [c, c + 1) x [r, r + 1)).
        labels: (P,) bool or {0, 1}, True = positive (object) click.
        windows: (N, 4) XYXY image pixels, each crop's window (`crop_geometry`).
        size: S, the grid side.
        radius: disc radius in grid pixels.
    Returns:
        (N, 2, S, S): channel 0 the positive discs, 1 the negative; a click lands in every crop
        whose window contains its disc's grid pixels (so clicks of one box reach its neighbours').
    """
    n = len(windows)
    out = torch.zeros(n, 2, size, size, device=windows.device)
    if len(points) == 0:
        return out
    points = points.to(windows.device, torch.float32)
    labels = labels.to(windows.device).bool()
    extent = (windows[:, 2:] - windows[:, :2]).clamp_min(1e-6)  # (N, 2)
    grid = (points[None] - windows[:, None, :2]) / extent[:, None] * size  # (N, P, 2)
    centres = torch.arange(size, device=windows.device, dtype=torch.float32) + 0.5
    dx = centres[None, None, None, :] - grid[:, :, 0, None, None]  # (N, P, 1, S)
    dy = centres[None, None, :, None] - grid[:, :, 1, None, None]  # (N, P, S, 1)
    discs = (dx**2 + dy**2) <= radius**2  # (N, P, S, S)
    out[:, 0] = (discs & labels[None, :, None, None]).any(1).float()
    out[:, 1] = (discs & ~labels[None, :, None, None]).any(1).float()
    return out
