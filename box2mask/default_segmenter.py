"""The embedded default segmenter: level-set evolution from each box, no checkpoint needed.

Method (DESIGN section 2, "Level-set refinement at inference"), for all N boxes of an image at once:

1. Crop. Each box, grown by a margin, is sampled on a common S x S grid (nearest image pixel):
   big boxes are downsampled, boxes under S px upsampled, so every box is one slice of an
   (N, S, S) batch. The margin around the box (the "ring") samples the background.
2. Features. Every pixel has a colour bin (CIE Lab, `bins` levels per channel), computed once
   per image in `set_image`.
3. Evolution. The level-set function phi (N, S, S) starts from the ellipse inscribed in the box
   (`box_prior`). Each step maximises the region-competition energy
        E(phi) = - sum_{x in box} H(phi(x)) * log( p_fg(bin(x)) / p_bg(bin(x), x) )
   where p_fg is the colour distribution of the current object (weights sigmoid(phi)) and p_bg a
   local background distribution: one histogram per box corner, fed by the ring and the box's
   current background, mixed by each pixel's position (`side_weights`). A gradient step adds the
   Gaussian-smoothed log-likelihood ratio to phi; phi is then regularised by Gaussian smoothing
   restricted to the box (the "selective binary and Gaussian filtering" level-set scheme).
   Pixels outside the box are always background.
4. Clean-up. Threshold, open/close, fill holes, keep the largest component. A result that covers
   under `min_fill` of its box (no evidence for an object) falls back to the starting ellipse:
   weak evidence never yields an empty or fragment mask.
5. Paste. phi is sampled at every image pixel inside the box; for boxes larger than the grid a
   colour guided filter at full resolution snaps the outline to image edges (`guided_filter`).

The score is a quality estimate in [0, 1]: the colour separation of the final object against the
ring (1 - Bhattacharyya coefficient of the two histograms) times how well the mask touches all
four sides of the (tight) box.
"""

from dataclasses import dataclass, replace

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from box2mask.box_ops import validate_boxes
from box2mask.guided_filter import guided_filter
from box2mask.levelset import box_masks_from_boxes
from box2mask.mask_morphology import fill_holes, gaussian_blur, largest_component, open_close

__all__ = ["LevelSetConfig", "LevelSetSegmenter"]


@dataclass
class LevelSetConfig:
    grid_size: int = 96  # side S of the common grid every box crop is resampled to
    margin_frac: float = 0.25  # ring width outside the box, as a fraction of the box side
    margin_px: float = 6.0  # plus this many image pixels
    bins: int = 8  # colour histogram levels per Lab channel (bins^3 bins in all)
    chroma_range: float = 64.0  # a and b are binned over 128 +- this (OpenCV 8-bit Lab units)
    hist_floor: float = 0.05  # weight of a uniform distribution mixed into every histogram
    steps: int = 20  # evolution steps K; 0 returns the filled box
    step_size: float = 1.0  # weight of the region force added to phi per step
    init_logit: float = 2.0  # phi at the box centre at the start: the box prior's strength
    init_power: float = 2.0  # starting shape |u|^p + |v|^p < 1: 2 = inscribed ellipse, large = box
    local_background: bool = True  # one background histogram per box corner, mixed by position
    inner_background: float = 1.0  # weight of the box's current background in the bg histogram
    force_clip: float = 3.0  # |log-likelihood ratio| is clipped to this
    force_sigma: float = 1.0  # Gaussian smoothing of the region force, grid pixels
    smoothing: float = 1.0  # Gaussian regularisation of phi per step, grid pixels (0 = none)
    phi_clip: float = 8.0  # phi is kept in [-phi_clip, phi_clip]
    min_fill: float = 0.2  # a result covering less of its box falls back to the starting shape
    morph_radius: int = 1  # open/close radius of the clean-up, grid pixels (0 = none)
    refine_radius: int = 12  # guided-filter window radius in image pixels (0 = no edge snapping)
    refine_eps: float = 0.01  # guided-filter ridge weight (colour variance treated as noise)
    refine_sharpness: float = 1.0  # the filter's input is sigmoid(sharpness * phi)
    refine_min_scale: float = 1.0  # snap only boxes whose grid pixel spans more image pixels
    click_radius: float = 2.0  # radius of the disc a click pins, grid pixels


class LevelSetSegmenter:
    """Box -> mask by level-set evolution on colour histograms (see the module docstring).

    Usage: `seg.set_image(image)` once, then `masks, scores = seg.predict(boxes_xyxy)`.
    `device` ("cpu", "cuda", "cuda:1"): where the evolution runs, all boxes of an image in one
    batch; only set_image's colour conversion (OpenCV) and the final paste into NumPy masks run
    on the CPU.
    """

    model_version = "levelset-default-1"

    def __init__(self, config: LevelSetConfig | None = None, device: str = "cpu"):
        self.config = config or LevelSetConfig()
        self.device = torch.device(device)
        self._bin_map = None  # (H, W) long: the colour bin of every pixel
        self._size = None  # (H, W)

    def set_image(self, image: np.ndarray) -> None:
        """Precompute per-image features of an (H, W, 3) uint8 RGB image."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}"
            )
        lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32)  # all channels 0..255
        bins, chroma = self.config.bins, self.config.chroma_range
        levels = np.empty_like(lab)
        levels[..., 0] = lab[..., 0] * (bins / 256.0)
        # a, b: `bins` levels over 128 +- chroma_range, neutral grey in the middle of a level
        levels[..., 1:] = (lab[..., 1:] - 128.0) * (bins / (2.0 * chroma)) + (bins - 1) / 2.0
        levels = np.clip(np.floor(levels), 0, bins - 1).astype(np.int64)
        bin_map = (levels[..., 0] * bins + levels[..., 1]) * bins + levels[..., 2]  # (H, W)
        self._bin_map = torch.from_numpy(bin_map).to(self.device)
        self._rgb = torch.from_numpy(image.copy()).to(self.device).float() / 255.0  # (H, W, 3)
        self._size = image.shape[:2]

    @torch.inference_mode()
    def predict(
        self,
        boxes_xyxy: np.ndarray,
        *,
        steps: int | None = None,
        smoothing: float | None = None,
        points: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        init_masks: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Masks for N boxes of the current image.

        Args:
            boxes_xyxy: (N, 4) absolute XYXY pixels (validated and clipped to the image).
            steps: evolution steps (None: config); 0 returns each filled box with score 0.5.
            smoothing: Gaussian regularisation of phi in grid pixels (None: config); larger gives
                rounder, simpler masks, 0 follows colours pixel by pixel.
            points: optional (P, 2) XY pixel clicks; `point_labels` (P,) 1 pins a disc of object
                around the click, 0 a disc of background. Each click acts on every box whose
                crop contains it (meant for one box at a time, as an annotator sends them).
            init_masks: optional (N, H, W) bool starting masks (e.g. a trained model's), used
                instead of the inscribed ellipse: the evolution then refines them.
        Returns:
            masks (N, H, W) bool, never outside their box; scores (N,) float in [0, 1].
        """
        if self._bin_map is None:
            raise RuntimeError("call set_image(image) before predict(boxes)")
        cfg = self.config
        cfg = replace(
            cfg,
            steps=cfg.steps if steps is None else int(steps),
            smoothing=cfg.smoothing if smoothing is None else float(smoothing),
        )
        height, width = self._size
        boxes = validate_boxes(boxes_xyxy, width, height)
        n = len(boxes)
        if n == 0:
            return np.zeros((0, height, width), dtype=bool), np.zeros(0, dtype=np.float32)
        boxes_t = torch.as_tensor(boxes, dtype=torch.float32, device=self.device)
        if cfg.steps == 0:  # evolution off: the filled boxes themselves
            masks = box_masks_from_boxes(boxes_t, height, width) > 0.5
            return masks.cpu().numpy(), np.full(n, 0.5, dtype=np.float32)
        bin_index, valid, grid_boxes = self._crop(boxes_t, cfg)
        box_masks = box_masks_from_boxes(grid_boxes, cfg.grid_size, cfg.grid_size) > 0.5
        ring = valid & ~box_masks
        pins = self._pins(boxes_t, grid_boxes, points, point_labels, cfg)
        prior = box_prior(grid_boxes, cfg.grid_size, cfg)
        if init_masks is not None:  # start from the given masks, sampled like the colours
            start = self._sample(torch.as_tensor(np.asarray(init_masks), device=self.device))
            prior = torch.where(box_masks, torch.where(start, 1.0, -1.0) * cfg.init_logit, prior)
        if cfg.local_background:
            sides = side_weights(grid_boxes, cfg.grid_size)
        else:
            sides = torch.ones_like(prior)[:, None]
        phi = evolve_region_competition(prior, bin_index, box_masks, ring, sides, pins, cfg)
        final = self._clean(phi, box_masks, pins, cfg)
        # no evidence for an object filling its box: fall back to the box's starting shape
        fill = final.sum(dim=(1, 2)) / box_masks.sum(dim=(1, 2)).clamp_min(1)
        weak = (fill < cfg.min_fill)[:, None, None]
        final = torch.where(weak, (prior > 0) & box_masks, final)
        phi = torch.where(weak, prior, phi)
        scores = _quality_score(final, bin_index, box_masks, ring, cfg)
        phi = torch.where(final, phi.clamp_min(0.05), phi.clamp_max(-0.05))
        masks = self._paste(phi, boxes_t, cfg)
        if pins is not None:  # a clicked pixel always gets its label (inside its box)
            xy = np.floor(np.asarray(points, dtype=np.float64)).astype(int)
            in_image = (xy[:, 0] >= 0) & (xy[:, 0] < width) & (xy[:, 1] >= 0) & (xy[:, 1] < height)
            xy, labels = xy[in_image], np.asarray(point_labels)[in_image].astype(bool)
            centres = torch.as_tensor(xy + 0.5, dtype=torch.float32, device=self.device)
            cx, cy = centres[None, :, 0], centres[None, :, 1]  # (1, P)
            in_x = (cx >= boxes_t[:, 0:1]) & (cx < boxes_t[:, 2:3])  # (N, P)
            in_y = (cy >= boxes_t[:, 1:2]) & (cy < boxes_t[:, 3:4])
            hits = (in_x & in_y).cpu().numpy()  # the clicked pixel's centre is in the box
            for p, ((x, y), label) in enumerate(zip(xy, labels, strict=True)):  # all boxes at once
                masks[hits[:, p], y, x] = label
        return masks, scores.cpu().numpy().astype(np.float32)

    def _crop(self, boxes: torch.Tensor, cfg: LevelSetConfig):
        """Sample every box plus margin on the S x S grid (nearest image pixel, so upsampled
        small boxes contain only real image colours).

        Returns the colour bins (N, S, S) long, whether each grid pixel lies on the image
        (N, S, S) bool, and the boxes in grid coordinates (N, 4) XYXY.
        """
        height, width = self._size
        sides = torch.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], dim=1)
        margin = sides * cfg.margin_frac + cfg.margin_px  # (N, 2): x and y margins
        crop_boxes = torch.cat([boxes[:, :2] - margin, boxes[:, 2:] + margin], dim=1)
        self._crop_boxes = crop_boxes
        size = cfg.grid_size
        steps = (torch.arange(size, device=boxes.device, dtype=torch.float32) + 0.5) / size
        extent = crop_boxes[:, 2:] - crop_boxes[:, :2]
        cols = torch.floor(crop_boxes[:, 0:1] + steps[None] * extent[:, 0:1]).long()  # (N, S)
        rows = torch.floor(crop_boxes[:, 1:2] + steps[None] * extent[:, 1:2]).long()
        on_image = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[
            :, None, :
        ]
        self._grid_pixels = (rows.clamp(0, height - 1), cols.clamp(0, width - 1))
        bin_index = self._bin_map[
            self._grid_pixels[0][:, :, None], self._grid_pixels[1][:, None, :]
        ]
        scale = size / extent  # grid pixels per image pixel, (N, 2)
        grid_boxes = torch.cat([margin * scale, (margin + sides) * scale], dim=1)
        return bin_index, on_image, grid_boxes

    def _sample(self, full: torch.Tensor) -> torch.Tensor:
        """(N, H, W) per-box image maps -> (N, S, S) on each box's grid of the last `_crop`."""
        rows, cols = self._grid_pixels
        index = torch.arange(len(full), device=full.device)[:, None, None]
        return full[index, rows[:, :, None], cols[:, None, :]]

    def _pins(self, boxes, grid_boxes, points, point_labels, cfg):
        """(N, S, S) float: +1 where a positive click pins the object, -1 for negative, else 0."""
        if points is None or len(points) == 0:
            return None
        points = torch.as_tensor(np.asarray(points, dtype=np.float32), device=self.device)
        if point_labels is None:
            raise ValueError("points given without point_labels")
        labels = torch.as_tensor(np.asarray(point_labels), device=self.device).float()
        if points.shape != (len(labels), 2):
            raise ValueError(
                f"points must be (P, 2) with P = len(point_labels), got {points.shape}"
            )
        crop_boxes = self._crop_boxes
        scale = cfg.grid_size / (crop_boxes[:, 2:] - crop_boxes[:, :2])  # (N, 2)
        grid_points = (points[None] - crop_boxes[:, None, :2]) * scale[:, None]  # (N, P, 2)
        centres = torch.arange(cfg.grid_size, device=self.device, dtype=torch.float32) + 0.5
        dx = centres[None, None, None, :] - grid_points[..., 0, None, None]  # (N, P, 1, S)
        dy = centres[None, None, :, None] - grid_points[..., 1, None, None]  # (N, P, S, 1)
        hit = (dx * dx + dy * dy) <= cfg.click_radius**2  # (N, P, S, S)
        sign = (2 * labels - 1)[None, :, None, None]
        return (hit * sign).sum(dim=1).clamp(-1, 1)

    def _clean(self, phi, box_masks, pins, cfg):
        """Threshold phi and clean up: open/close, fill holes, largest component. (N, S, S) bool."""
        masks = (phi > 0) & box_masks
        masks = open_close(masks, cfg.morph_radius) & box_masks
        masks = fill_holes(masks) & box_masks
        keep = None if pins is None else (pins > 0) & masks
        masks = largest_component(masks, keep=keep)
        if pins is not None:
            masks = (masks | (pins > 0)) & (pins >= 0) & box_masks
        return masks

    def _paste(self, phi, boxes, cfg):
        """Sample phi (N, S, S) at every image pixel inside each box -> (N, H, W) bool.

        Boxes whose grid is coarser than the image (a grid pixel over `refine_min_scale` image
        pixels) are snapped to image edges by a colour guided filter of sigmoid(phi).
        """
        height, width = self._size
        n, device = phi.shape[0], phi.device
        pad = cfg.refine_radius
        x_lo = torch.ceil(boxes[:, 0] - 0.5).long()
        y_lo = torch.ceil(boxes[:, 1] - 0.5).long()
        box_w = (torch.ceil(boxes[:, 2] - 0.5).long().clamp(max=width) - x_lo).clamp_min(0)
        box_h = (torch.ceil(boxes[:, 3] - 0.5).long().clamp(max=height) - y_lo).clamp_min(0)
        out_w, out_h = int(box_w.max()) + 2 * pad, int(box_h.max()) + 2 * pad
        # each box's window (the box grown by `pad`): image pixel indices, then grid coordinates
        cols = x_lo[:, None] - pad + torch.arange(out_w, device=device)  # (N, out_w)
        rows = y_lo[:, None] - pad + torch.arange(out_h, device=device)  # (N, out_h)
        crop = self._crop_boxes
        gx = (cols + 0.5 - crop[:, 0:1]) / (crop[:, 2:3] - crop[:, 0:1]) * 2 - 1  # in [-1, 1]
        gy = (rows + 0.5 - crop[:, 1:2]) / (crop[:, 3:4] - crop[:, 1:2]) * 2 - 1
        grid = torch.stack(
            [gx[:, None, :].expand(n, out_h, out_w), gy[:, :, None].expand(n, out_h, out_w)], -1
        )
        sampled = F.grid_sample(phi[:, None], grid, mode="bilinear", align_corners=False)[:, 0]
        inside = sampled > 0  # (N, out_h, out_w)
        scale = (crop[:, 2] - crop[:, 0]) / cfg.grid_size  # image pixels per grid pixel
        refine = scale > cfg.refine_min_scale
        if pad > 0 and bool(refine.any()):
            rows_in = rows.clamp(0, height - 1)[:, :, None]
            cols_in = cols.clamp(0, width - 1)[:, None, :]
            guide = self._rgb[rows_in, cols_in].permute(0, 3, 1, 2)  # (N, 3, out_h, out_w)
            soft = torch.sigmoid(sampled * cfg.refine_sharpness)
            snapped = guided_filter(guide, soft, radius=pad, eps=cfg.refine_eps) > 0.5
            inside = torch.where(refine[:, None, None], snapped, inside)
        inside = inside.cpu().numpy()
        masks = np.zeros((n, height, width), dtype=bool)
        bounds = torch.stack([x_lo, y_lo, box_w, box_h], dim=1).cpu().tolist()
        for i, (x0, y0, w, h) in enumerate(bounds):  # copying windows into place, no math
            masks[i, y0 : y0 + h, x0 : x0 + w] = inside[i, pad : pad + h, pad : pad + w]
        return masks


def _histograms(bin_index, weights, num_bins, floor):
    """Colour distributions of bin_index (N, S, S) for weights (N, S, S) or (N, Q, S, S).

    Each is (1 - floor) * normalised counts + floor * uniform, so a colour never seen has the same
    small probability in every histogram (its log-likelihood ratio is 0, not a bias).
    Returns (N, num_bins) or (N, Q, num_bins).
    """
    n = bin_index.shape[0]
    flat = weights.reshape(n, -1, bin_index[0].numel()).float()  # (N, Q, S*S)
    index = bin_index.reshape(n, 1, -1).expand_as(flat)
    hist = torch.zeros(flat.shape[:2] + (num_bins,), device=weights.device)
    hist.scatter_add_(2, index, flat)
    hist = hist / hist.sum(dim=-1, keepdim=True).clamp_min(1e-6)
    hist = (1.0 - floor) * hist + floor / num_bins
    return hist if weights.dim() == 4 else hist[:, 0]


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


def _smooth_in_box(x, box_masks, sigma):
    """Gaussian smoothing of (N, S, S) maps using only values inside each box (normalised)."""
    box = box_masks.float()
    return gaussian_blur(x * box, sigma) / gaussian_blur(box, sigma).clamp_min(1e-6)


def box_prior(grid_boxes: torch.Tensor, size: int, cfg: LevelSetConfig) -> torch.Tensor:
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


def evolve_region_competition(phi, bin_index, box_masks, ring, sides, pins, cfg: LevelSetConfig):
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
    for _ in range(cfg.steps):
        inside = torch.sigmoid(phi) * box
        log_fg = torch.log(_histograms(bin_index, inside, num_bins, cfg.hist_floor))
        outside = ring_weights + cfg.inner_background * (box - inside)
        # local background: one histogram per side of the box, mixed by each pixel's side weights
        bg = _histograms(bin_index, outside[:, None] * sides, num_bins, cfg.hist_floor)
        p_bg = (torch.gather(bg, 2, side_index) * flat_sides).sum(dim=1)  # (N, S*S)
        ratio = (torch.gather(log_fg, 1, flat_index) - torch.log(p_bg)).view_as(phi)
        force = _smooth_in_box(
            ratio.clamp(-cfg.force_clip, cfg.force_clip), box_masks, cfg.force_sigma
        )
        phi = phi + cfg.step_size * force
        if cfg.smoothing > 0:
            phi = _smooth_in_box(phi, box_masks, cfg.smoothing)
        phi = phi.clamp(-cfg.phi_clip, cfg.phi_clip)
        if pins is not None:
            phi = torch.where(pins != 0, pins * cfg.phi_clip, phi)
        phi = torch.where(box_masks, phi, -cfg.phi_clip)
    return phi


def _quality_score(masks, bin_index, box_masks, ring, cfg: LevelSetConfig):
    """(N,) in [0, 1]: colour separation of mask vs ring times coverage of the box's four sides."""
    num_bins = cfg.bins**3
    fg = _histograms(bin_index, masks.float(), num_bins, cfg.hist_floor)
    bg = _histograms(bin_index, ring.float(), num_bins, cfg.hist_floor)
    separation = 1.0 - torch.sqrt(fg * bg).sum(dim=1).clamp(0, 1)
    rows_in_box = box_masks.any(dim=2).float()
    cols_in_box = box_masks.any(dim=1).float()
    row_cover = (masks.any(dim=2).float() * rows_in_box).sum(1) / rows_in_box.sum(1).clamp_min(1)
    col_cover = (masks.any(dim=1).float() * cols_in_box).sum(1) / cols_in_box.sum(1).clamp_min(1)
    return (separation * row_cover * col_cover).clamp(0, 1)
