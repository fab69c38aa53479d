"""Region competition on box crops: the starting shape, corner weights and the evolution.

The pieces of the embedded default's level set (`box2mask.levelset.segmenter`, whose
`LevelSetConfig` supplies `cfg`), for N boxes sampled on a common S x S grid:
    grid_boxes (N, 4)       the boxes in grid coordinates, XYXY
    phi        (N, S, S)    the level set; the object is {phi > 0}
    bin_index  (N, S, S)    colour bin of every grid pixel
"""

import torch

from box2mask.levelset.floor import bin_counts, box_norm, normalise_counts, smooth_in_box
from box2mask.ops.levelset import box_masks_from_boxes

__all__ = ["side_weights", "box_prior", "evolve_region_competition"]


def side_weights(grid_boxes: torch.Tensor, size: int) -> torch.Tensor:
    """(N, 4, S, S) bilinear weights of every grid pixel for the box's 4 corners (sum to 1).

    tx, ty = position across the box (0 at the left/top side, 1 at the right/bottom, clamped
    outside); weights (1-tx)(1-ty), tx(1-ty), (1-tx)ty, tx ty. A ring pixel beside the top-left
    corner thus feeds mostly the top-left background histogram.
    """
    centres = torch.arange(size, device=grid_boxes.device, dtype=torch.float32) + 0.5
    extent = (grid_boxes[:, 2:] - grid_boxes[:, :2]).clamp_min(1e-3)
    tx = ((centres[None] - grid_boxes[:, 0:1]) / extent[:, 0:1]).clamp(0, 1)  # (N, S)
    ty = ((centres[None] - grid_boxes[:, 1:2]) / extent[:, 1:2]).clamp(0, 1)
    wx = torch.stack([1 - tx, tx], dim=1)  # (N, 2, S)
    wy = torch.stack([1 - ty, ty], dim=1)
    return (wy[:, :, None, :, None] * wx[:, None, :, None, :]).flatten(1, 2)  # (N, 4, S, S)


def box_prior(grid_boxes: torch.Tensor, size: int, cfg) -> torch.Tensor:
    """The starting level set: init_logit * (1 - r^p) inside each box, -phi_clip outside.

    r is the normalised "superellipse radius" |u|^p + |v|^p with u, v in [-1, 1] across the box:
    p = 2 gives the inscribed ellipse (positive inside it, negative in the corners), a large p
    approaches the filled box. (N, S, S) float.
    """
    centres = torch.arange(size, device=grid_boxes.device, dtype=torch.float32) + 0.5
    half = ((grid_boxes[:, 2:] - grid_boxes[:, :2]) / 2).clamp_min(0.5)  # (N, 2)
    mid = (grid_boxes[:, :2] + grid_boxes[:, 2:]) / 2
    u = ((centres[None] - mid[:, 0:1]) / half[:, 0:1]).abs() ** cfg.init_power  # (N, S)
    v = ((centres[None] - mid[:, 1:2]) / half[:, 1:2]).abs() ** cfg.init_power
    radius = v[:, :, None] + u[:, None, :]
    phi = cfg.init_logit * (1.0 - radius).clamp(-1.0, 1.0)
    box_masks = box_masks_from_boxes(grid_boxes, size, size) > 0.5
    return torch.where(box_masks, phi, -cfg.phi_clip)


def evolve_region_competition(phi, bin_index, box_masks, ring, sides, pins, cfg):
    """Evolve phi (N, S, S) by the histogram region competition of the module docstring.

    Args:
        phi: (N, S, S) starting level set (`box_prior`).
        bin_index: (N, S, S) long colour bin of every grid pixel.
        box_masks: (N, S, S) bool, the box on the grid; ring: (N, S, S) bool background sample.
        sides: (N, Q, S, S) soft assignment of grid pixels to Q parts of the crop (`side_weights`),
            each with its own background histogram; Q = 1 (all ones) for one global background.
        pins: None or (N, S, S) float in {-1, 0, 1}: clicked object/background pixels.
    Returns:
        (N, S, S) float phi; the object is {phi > 0}, phi = -phi_clip outside the box.
    """
    num_bins = cfg.bins**3
    n = bin_index.shape[0]
    box = box_masks.float()
    ring_weights = ring.float()
    if pins is not None:  # negative clicks sample the background too
        phi = torch.where(pins != 0, pins * cfg.phi_clip, phi)
        ring_weights = ring_weights + (pins < 0).float()
    flat_index = bin_index.view(n, -1)
    side_index = flat_index[:, None].expand(n, sides.shape[1], -1)  # (N, Q, S*S)
    flat_sides = sides.flatten(2)  # (N, Q, S*S)
    force_norm = box_norm(box_masks, cfg.force_sigma)  # the same every step
    phi_norm = box_norm(box_masks, cfg.smoothing) if cfg.smoothing > 0 else None
    # background weights (ring + inner_background (box - inside)) * sides: the constant part's
    # counts once, then one count of inside * sides per step (summed over Q: the object's counts)
    fixed = (ring_weights + cfg.inner_background * box)[:, None] * sides
    fixed_counts = bin_counts(bin_index, fixed, num_bins)  # (N, Q, B)
    for _ in range(cfg.steps):
        inside = torch.sigmoid(phi) * box
        inside_counts = bin_counts(bin_index, inside[:, None] * sides, num_bins)  # (N, Q, B)
        log_fg = torch.log(normalise_counts(inside_counts.sum(dim=1), cfg.hist_floor))
        # local background: one histogram per side of the box, mixed by each pixel's side weights
        bg_counts = (fixed_counts - cfg.inner_background * inside_counts).clamp_min(0)
        bg = normalise_counts(bg_counts, cfg.hist_floor)
        p_bg = (torch.gather(bg, 2, side_index) * flat_sides).sum(dim=1)  # (N, S*S)
        ratio = (torch.gather(log_fg, 1, flat_index) - torch.log(p_bg)).view_as(phi)
        ratio = ratio.clamp(-cfg.force_clip, cfg.force_clip)
        force = smooth_in_box(ratio, box_masks, cfg.force_sigma, force_norm)
        phi = phi + cfg.step_size * force
        if cfg.smoothing > 0:
            phi = smooth_in_box(phi, box_masks, cfg.smoothing, phi_norm)
        phi = phi.clamp(-cfg.phi_clip, cfg.phi_clip)
        if pins is not None:
            phi = torch.where(pins != 0, pins * cfg.phi_clip, phi)
        phi = torch.where(box_masks, phi, -cfg.phi_clip)
    return phi
