"""The embedded default segmenter: level-set evolution from each box, no checkpoint needed.

Method, for all N boxes of an image at once:

1. Crop. Each box, grown by a margin, is sampled on an S x S grid (nearest image pixel). S
   follows the crop (`grid_sides`): about one grid pixel per image pixel, rounded up to a multiple
   of `grid_multiple`, at least `min_grid` (tiny boxes are upsampled) and at most `grid_size`
   (big boxes are downsampled). Boxes of the same S form one (N_S, S, S) batch. The margin
   around the box (the "ring") samples the background.
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
   under `min_fill` of its box (no evidence for an object) falls back to the starting ellipse.
5. Floor (`box2mask.levelset.floor`). From the evidence inside each crop (likelihood gain of the
   evolved object over the ellipse, colour separation from the ring, look-alike crowding of the
   ring) a trust weight w in [0, 1]; the level set becomes w * evolved + (1 - w) * ellipse, so a
   box whose colours do not support the evolution keeps its prior.
6. Clicks (`click_mode` "walk", `box2mask.levelset.clicks`): starting from the previous mask,
   a random walk from the clicks' seeds re-segments the region around each click; the rest of
   the mask stays as it was.
7. Paste. phi is sampled at every image pixel inside the box; for boxes larger than the grid a
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

from box2mask.levelset.clicks import click_grid_points, respond_to_clicks
from box2mask.levelset.config import LevelSetConfig
from box2mask.levelset.floor import (
    blend_phi,
    crowding,
    likelihood_gain,
    quality_score,
    separation,
    trust_weight,
)
from box2mask.levelset.guided_filter import guided_filter
from box2mask.levelset.region_competition import box_prior, evolve_region_competition, side_weights
from box2mask.ops.box_ops import validate_boxes
from box2mask.ops.geometry import (
    box_windows,
    click_discs,
    gather_grid,
    grow_boxes,
    nearest_pixels,
    paste_windows,
    window_grid,
)
from box2mask.ops.levelset import box_masks_from_boxes, inscribed_ellipses
from box2mask.ops.mask_morphology import dilate, fill_holes, largest_component, open_close

__all__ = [
    "LevelSetConfig",
    "LevelSetSegmenter",
    "box_prior",
    "side_weights",
    "evolve_region_competition",
    "grid_sides",
    "grid_steps",
]


@dataclass
class _Crops:
    """Boxes of one grid size S sampled on their grids (from `LevelSetSegmenter._crop`)."""

    size: int  # the grid side S
    boxes: torch.Tensor  # (N, 4) the boxes in image coordinates, XYXY
    lab: torch.Tensor  # (N, S, S, 3) float CIE Lab of the sampled pixels (OpenCV 8-bit scale)
    bin_index: torch.Tensor  # (N, S, S) long colour bins of `lab`
    valid: torch.Tensor  # (N, S, S) bool: the grid pixel lies on the image
    grid_boxes: torch.Tensor  # (N, 4) the boxes in grid coordinates, XYXY
    crop_boxes: torch.Tensor  # (N, 4) the crops (box + margin) in image coordinates, XYXY
    rows: torch.Tensor  # (N, S) long image row of every grid row
    cols: torch.Tensor  # (N, S) long image column of every grid column


def grid_sides(boxes: torch.Tensor, cfg: LevelSetConfig) -> torch.Tensor:
    """(N,) long grid side S of every box (N, 4) XYXY: its crop's long side in image pixels,
    rounded up to a multiple of `grid_multiple`, clamped to [min_grid, grid_size]."""
    sides = torch.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    if not cfg.adaptive_grid:
        return torch.full_like(sides, cfg.grid_size, dtype=torch.long)
    crop = sides * (1 + 2 * cfg.margin_frac) + 2 * cfg.margin_px
    step = cfg.grid_multiple
    rounded = torch.ceil(crop / step).long() * step
    return rounded.clamp(min(cfg.min_grid, cfg.grid_size), cfg.grid_size)


def grid_steps(steps: int, size: int, cfg: LevelSetConfig) -> int:
    """Evolution steps on an S = `size` grid: `steps` in proportion to S / grid_size (a boundary
    moves about as many grid pixels per step on any grid), at least min(steps, min_steps)."""
    scaled = int(np.ceil(steps * size / cfg.grid_size))
    return max(scaled, min(steps, cfg.min_steps))


class LevelSetSegmenter:
    """Box -> mask by level-set evolution on colour histograms (see the module docstring).

    Usage: `seg.set_image(image)` once, then `masks, scores = seg.predict(boxes_xyxy)`.
    `device` ("cpu", "cuda", "cuda:1"): where the evolution runs, the boxes of an image in one
    batch per grid size; only set_image's colour conversion (OpenCV) and the final paste into
    NumPy masks run on the CPU.
    """

    model_version = "levelset-default-3"

    def __init__(self, config: LevelSetConfig | None = None, device: str = "cpu"):
        self.config = config or LevelSetConfig()
        self.device = torch.device(device)
        self._image = None  # (H, W, 3) uint8 RGB tensor of the current image
        self._size = None  # (H, W)
        self.last_trust = None  # (N,) float trust weights of the last predict (1 = evolved)
        # OpenCV builds its 8-bit Lab tables on the first conversion (~0.15 s): here, when the
        # model is made, rather than on a person's first box
        cv2.cvtColor(np.zeros((1, 1, 3), np.uint8), cv2.COLOR_RGB2LAB)

    def set_image(self, image: np.ndarray) -> None:
        """Take an (H, W, 3) uint8 RGB image (its colour features are computed per crop)."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}"
            )
        # colours are converted where a box's crop samples them (`_lab_at`), not for the whole
        # image: opening a 6000 x 4000 photo costs a copy, and no float copies are kept
        self._image = torch.from_numpy(image.copy()).to(self.device)  # (H, W, 3) uint8 RGB
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
            points: optional (P, 2) XY pixel clicks; `point_labels` (P,) 1 object, 0 background.
                With click_mode "walk" they re-segment the region around them starting from
                `init_masks` (the mask the person saw; without it, the box's own mask):
                `levelset.clicks`. Each click acts on every box whose crop contains it (meant
                for one box at a time, as an annotator sends them).
            init_masks: optional (N, H, W) bool starting masks (e.g. a trained model's), used
                instead of the inscribed ellipse: the evolution then refines them (no floor).
        Returns:
            masks (N, H, W) bool, never outside their box; scores (N,) float in [0, 1].
        """
        if self._image is None:
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
        if points is not None and len(points) and point_labels is None:
            raise ValueError("points given without point_labels")
        walk = cfg.click_mode == "walk" and points is not None and len(points) > 0
        if walk and init_masks is None:  # clicks correct the box's own mask
            init_masks = self.predict(boxes, steps=cfg.steps, smoothing=cfg.smoothing)[0]
        segment = self._segment_clicks if walk else self._segment
        masks = np.zeros((n, height, width), dtype=bool)
        scores = np.zeros(n, dtype=np.float32)
        trust = np.ones(n, dtype=np.float32)
        sizes = grid_sides(boxes_t, cfg).cpu().numpy()
        for size in np.unique(sizes):  # one batch per grid size
            index = np.flatnonzero(sizes == size)
            init = None if init_masks is None else np.asarray(init_masks)[index]
            clicks = (points, point_labels)
            group = segment(boxes_t[torch.as_tensor(index)], int(size), cfg, clicks, init)
            windows, scores[index], trust[index] = group
            inside, lo, extent = windows
            pad = cfg.refine_radius
            paste_windows(inside, lo, extent, height, width, pad, out=masks, rows=index)
        self.last_trust = trust
        if points is not None and len(points):  # a clicked pixel always gets its label
            self._apply_clicks(masks, boxes_t, points, point_labels)
        return masks, scores

    def _segment(self, boxes, size, cfg, clicks, init_masks):
        """Boxes (N, 4) sharing grid side `size` -> windows (`_paste`), scores (N,), trust (N,)."""
        cfg = replace(cfg, steps=grid_steps(cfg.steps, size, cfg))
        crops = self._crop(boxes, size, cfg)
        bin_index = crops.bin_index
        box_masks = box_masks_from_boxes(crops.grid_boxes, size, size) > 0.5
        ring = crops.valid & ~box_masks
        pins = click_discs(*clicks, crops.crop_boxes, size, cfg.click_radius)
        ellipse = box_prior(crops.grid_boxes, size, cfg)
        prior = ellipse
        init = None
        if init_masks is not None:  # start from the given masks, sampled like the colours
            init = torch.as_tensor(init_masks, device=self.device)
            start = gather_grid(init, crops.rows, crops.cols)
            prior = torch.where(box_masks, torch.where(start, 1.0, -1.0) * cfg.init_logit, prior)
        prior_inside = (prior > 0) & box_masks  # the starting shape on the grid
        if cfg.local_background:
            sides = side_weights(crops.grid_boxes, size)
        else:
            sides = torch.ones_like(prior)[:, None]
        phi = evolve_region_competition(prior, bin_index, box_masks, ring, sides, pins, cfg)
        final = self._clean(phi, box_masks, pins, cfg)
        # no evidence for an object filling its box: fall back to the box's starting shape
        fill = final.sum(dim=(1, 2)) / box_masks.sum(dim=(1, 2)).clamp_min(1)
        weak = (fill < cfg.min_fill)[:, None, None]
        final = torch.where(weak, (prior > 0) & box_masks, final)
        phi = torch.where(weak, prior, phi)
        phi = torch.where(final, phi.clamp_min(0.05), phi.clamp_max(-0.05))
        trust = torch.ones(len(boxes), device=self.device)
        if cfg.floor and pins is None and init_masks is None:
            trust = self._trust(final, ellipse > 0, bin_index, box_masks, ring, cfg)
            phi = blend_phi(phi, ellipse, trust)
            final = (phi > 0) & box_masks
        num_bins = cfg.bins**3
        scores = quality_score(final, bin_index, box_masks, ring, num_bins, cfg.hist_floor)
        # grid pixels the evolution changed (and their neighbours) come from phi; the rest keeps
        # the starting shape at image resolution (no resampling round trip)
        changed = None
        if cfg.keep_prior_radius >= 0:
            changed = dilate(final != prior_inside, cfg.keep_prior_radius)
        snap = trust >= cfg.snap_min_trust
        masks = self._paste(phi, crops, snap, cfg, pins=pins, changed=changed, init=init)
        return masks, scores.cpu().numpy(), trust.cpu().numpy()

    def _segment_clicks(self, boxes, size, cfg, clicks, init_masks):
        """`_segment` for clicks on the previous masks init_masks (N, H, W) bool
        (`levelset.clicks.respond_to_clicks`): changed grid pixels come from the new grid mask,
        the rest keeps the previous mask at image resolution (no edge snapping)."""
        points, labels = clicks
        crops = self._crop(boxes, size, cfg)
        box_masks = box_masks_from_boxes(crops.grid_boxes, size, size) > 0.5
        init = torch.as_tensor(np.asarray(init_masks), device=self.device)
        previous = gather_grid(init, crops.rows, crops.cols) & box_masks
        colours = crops.lab.permute(0, 3, 1, 2)  # (N, 3, S, S)
        grid_xy = click_grid_points(points, crops.crop_boxes, size)
        label_t = torch.as_tensor(np.asarray(labels), device=self.device).bool().reshape(-1)
        final = respond_to_clicks(previous, colours, box_masks, grid_xy, label_t, cfg)
        ring = crops.valid & ~box_masks
        num_bins = cfg.bins**3
        scores = quality_score(final, crops.bin_index, box_masks, ring, num_bins, cfg.hist_floor)
        phi = torch.where(final, 1.0, -1.0)
        no_snap = torch.zeros(len(boxes), dtype=torch.bool, device=self.device)
        masks = self._paste(phi, crops, no_snap, cfg, changed=final != previous, init=init)
        return masks, scores.cpu().numpy(), np.ones(len(boxes), dtype=np.float32)

    @staticmethod
    def _trust(evolved, prior, bin_index, box_masks, ring, cfg):
        """(N,) trust weight of the evolved masks (N, S, S) over the prior (`floor`)."""
        num_bins, floor = cfg.bins**3, cfg.hist_floor
        prior = prior & box_masks
        gain = likelihood_gain(evolved, prior, bin_index, box_masks, ring, num_bins, floor)
        sep_evolved = separation(evolved, bin_index, ring, num_bins, floor)
        sep_prior = separation(prior, bin_index, ring, num_bins, floor)
        crowd = crowding(prior, bin_index, box_masks, ring, num_bins, floor)
        return trust_weight(gain, sep_evolved, sep_prior, crowd, cfg)

    def _apply_clicks(self, masks, boxes, points, point_labels):
        """Set every clicked pixel inside a box to its label in masks (N, H, W), in place."""
        height, width = self._size
        xy = np.floor(np.asarray(points, dtype=np.float64)).astype(int)
        in_image = (xy[:, 0] >= 0) & (xy[:, 0] < width) & (xy[:, 1] >= 0) & (xy[:, 1] < height)
        xy, labels = xy[in_image], np.asarray(point_labels)[in_image].astype(bool)
        centres = torch.as_tensor(xy + 0.5, dtype=torch.float32, device=self.device)
        cx, cy = centres[None, :, 0], centres[None, :, 1]  # (1, P)
        in_x = (cx >= boxes[:, 0:1]) & (cx < boxes[:, 2:3])  # (N, P)
        in_y = (cy >= boxes[:, 1:2]) & (cy < boxes[:, 3:4])
        hits = (in_x & in_y).cpu().numpy()  # the clicked pixel's centre is in the box
        for p, ((x, y), label) in enumerate(zip(xy, labels, strict=True)):  # all boxes at once
            masks[hits[:, p], y, x] = label

    def _lab_at(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """CIE Lab (OpenCV's 8-bit scale, all channels 0..255) of the image at rows (N, S) x
        cols (N, S) -> (N, S, S, 3) float. The conversion is per pixel, so converting the
        sampled pixels equals sampling the converted image."""
        rgb = self._image[rows[:, :, None], cols[:, None, :]]  # (N, S, S, 3) uint8
        n, h, w, _ = rgb.shape
        flat = np.ascontiguousarray(rgb.cpu().numpy().reshape(n * h, w, 3))
        lab = cv2.cvtColor(flat, cv2.COLOR_RGB2LAB).reshape(n, h, w, 3)
        return torch.from_numpy(lab).to(self.device).float()

    def _bins(self, lab: torch.Tensor) -> torch.Tensor:
        """Colour bin (`bins` levels per Lab channel) of Lab colours (..., 3) -> (...) long."""
        bins, chroma = self.config.bins, self.config.chroma_range
        levels = torch.empty_like(lab)
        levels[..., 0] = lab[..., 0] * (bins / 256.0)
        # a, b: `bins` levels over 128 +- chroma_range, neutral grey in the middle of a level
        levels[..., 1:] = (lab[..., 1:] - 128.0) * (bins / (2.0 * chroma)) + (bins - 1) / 2.0
        levels = torch.floor(levels).clamp(0, bins - 1).long()
        return (levels[..., 0] * bins + levels[..., 1]) * bins + levels[..., 2]

    def _crop(self, boxes: torch.Tensor, size: int, cfg: LevelSetConfig) -> _Crops:
        """Sample every box plus margin on the size x size grid (nearest image pixel, so
        upsampled small boxes contain only real image colours). Reads the current image's
        features only: everything about the crops is in the returned `_Crops`."""
        height, width = self._size
        crop_boxes, grid_boxes = grow_boxes(boxes, cfg.margin_frac, cfg.margin_px, size)
        rows, cols, on_image = nearest_pixels(crop_boxes, size, height, width)
        lab = self._lab_at(rows, cols)
        return _Crops(
            size, boxes, lab, self._bins(lab), on_image, grid_boxes, crop_boxes, rows, cols
        )

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

    def _paste(self, phi, crops: _Crops, snap, cfg, pins=None, changed=None, init=None):
        """Sample phi (N, S, S) at every image pixel inside each box -> windows: (N, h, w) bool,
        the box's pixels starting at `refine_radius`, their first column and row lo (N, 2) and
        extent (N, 2) (`geometry.box_windows`), for `geometry.paste_windows`.

        Boxes where `snap` (N,) bool is set and whose grid is coarser than the image (a grid
        pixel over `refine_min_scale` image pixels) are snapped to image edges by a colour guided
        filter of sigmoid(phi). Click discs `pins` (N, S, S) keep their label whatever the
        snapping does (a small pinned disc would otherwise be averaged away). Image pixels whose
        grid pixel is not `changed` (N, S, S) bool take the starting shape at image resolution:
        `init` (N, H, W) bool masks, or without them the inscribed ellipse of each box.
        """
        height, width = self._size
        pad = cfg.refine_radius
        crop = crops.crop_boxes
        lo, extent = box_windows(crops.boxes, height, width)
        out_w, out_h = (int(v) + 2 * pad for v in extent.max(dim=0).values)
        # each box's window (the box grown by `pad`) in its crop's grid coordinates
        grid, rows, cols = window_grid(crop, lo, out_h, out_w, pad=pad)
        sampled = F.grid_sample(phi[:, None], grid, mode="bilinear", align_corners=False)[:, 0]
        inside = sampled > 0  # (N, out_h, out_w)
        scale = (crop[:, 2] - crop[:, 0]) / crops.size  # image pixels per grid pixel
        refine = (scale > cfg.refine_min_scale) & snap
        if pad > 0 and bool(refine.any()):
            rows_in = rows.clamp(0, height - 1)[:, :, None]
            cols_in = cols.clamp(0, width - 1)[:, None, :]
            guide = (
                self._image[rows_in, cols_in].permute(0, 3, 1, 2).float() / 255.0
            )  # (N, 3, h, w)
            soft = torch.sigmoid(sampled * cfg.refine_sharpness)
            snapped = guided_filter(guide, soft, radius=pad, eps=cfg.refine_eps) > 0.5
            inside = torch.where(refine[:, None, None], snapped, inside)
        if changed is not None:
            moved = F.grid_sample(
                changed[:, None].float(), grid, mode="nearest", align_corners=False
            )
            if init is not None:
                start = gather_grid(init, rows.clamp(0, height - 1), cols.clamp(0, width - 1))
            else:  # the ellipse in window pixels: the image's own, shifted by the window origin
                origin = (lo - pad).float().repeat(1, 2)
                start = inscribed_ellipses(crops.boxes - origin, out_h, out_w, 1.0, 0.0) > 0.5
            # snapped boxes keep their image edges, unless refining a given mask
            keep = (
                (moved[:, 0] < 0.5) & ~refine[:, None, None] if init is None else moved[:, 0] < 0.5
            )
            inside = torch.where(keep, start, inside)
        if pins is not None:
            pinned = F.grid_sample(pins[:, None], grid, mode="nearest", align_corners=False)[:, 0]
            inside = torch.where(pinned != 0, pinned > 0, inside)
        return inside.cpu().numpy(), lo, extent
