"""Box geometry shared by the predictors and the quality signals: one helper per job.

Frames: image pixels (x right, y down, pixel (i, j) covers [j, j+1) x [i, i+1), its centre at
(j + 0.5, i + 0.5)); a crop is a box (N, 4) XYXY in image pixels sampled on an S x S grid, grid
pixel (i, j) standing for the crop's point at fractions ((j + 0.5) / S, (i + 0.5) / S).

- `grow_boxes`: a box plus a margin, and the box in its crop's grid pixels.
- `grid_coords`, `nearest_pixels`, `gather_grid`: box -> S x S grid sampling (nearest pixel).
- `box_windows`, `window_grid`, `paste_windows`: an S x S crop back to the image pixels whose
  centres lie in the box (never outside it).
- `click_discs`: clicks -> discs of +1 / -1 on each box's grid.
- `grid_to_image`, `tight_boxes`: a network's whole-image mask grid back to image pixels, and
  each mask's tight box.
"""

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "grow_boxes",
    "grid_coords",
    "nearest_pixels",
    "gather_grid",
    "box_windows",
    "window_grid",
    "paste_windows",
    "click_discs",
    "grid_to_image",
    "tight_boxes",
]


def grow_boxes(boxes: torch.Tensor, margin_frac: float, margin_px: float, size: int):
    """Each box grown by `margin_frac` of its side plus `margin_px` image pixels.

    Args:
        boxes: (N, 4) float XYXY image pixels.
        size: grid side S the crops are sampled on.
    Returns:
        crop_boxes (N, 4) XYXY image pixels; grid_boxes (N, 4) the boxes in their crop's grid
        pixels (XYXY, in [0, S]).
    """
    sides = torch.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], dim=1)
    margin = sides * margin_frac + margin_px  # (N, 2): x and y margins
    crop_boxes = torch.cat([boxes[:, :2] - margin, boxes[:, 2:] + margin], dim=1)
    scale = size / (crop_boxes[:, 2:] - crop_boxes[:, :2])  # grid pixels per image pixel (N, 2)
    grid_boxes = torch.cat([margin * scale, (margin + sides) * scale], dim=1)
    return crop_boxes, grid_boxes


def grid_coords(boxes: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Image coordinates of the S x S grid pixel centres of each box (N, 4) XYXY.

    Returns xs (N, S) (column j: x0 + (j + 0.5) (x1 - x0) / S) and ys (N, S), in boxes.dtype.
    """
    steps = (torch.arange(size, device=boxes.device, dtype=boxes.dtype) + 0.5) / size
    xs = boxes[:, 0:1] + steps[None] * (boxes[:, 2:3] - boxes[:, 0:1])
    ys = boxes[:, 1:2] + steps[None] * (boxes[:, 3:4] - boxes[:, 1:2])
    return xs, ys


def nearest_pixels(boxes: torch.Tensor, size: int, height: int, width: int):
    """The image pixel under each grid pixel of each box's S x S grid.

    Returns rows (N, S) and cols (N, S) long, clamped to the (H, W) image, and on_image (N, S, S)
    bool: the grid pixel lies on the image (before clamping).
    """
    xs, ys = grid_coords(boxes, size)
    cols, rows = xs.floor().long(), ys.floor().long()
    on_rows = (rows >= 0) & (rows < height)
    on_image = on_rows[:, :, None] & ((cols >= 0) & (cols < width))[:, None, :]
    return rows.clamp(0, height - 1), cols.clamp(0, width - 1), on_image


def gather_grid(maps: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Per-box image maps (N, H, W) read at rows (N, S) x cols (N, S) -> (N, S, S); a single
    map (H, W) is read for every box."""
    if maps.dim() == 2:
        return maps[rows[:, :, None], cols[:, None, :]]
    index = torch.arange(len(maps), device=maps.device)[:, None, None]
    return maps[index, rows[:, :, None], cols[:, None, :]]


def box_windows(boxes: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The image pixels whose centres lie in each box (N, 4) XYXY, clipped to the (H, W) image.

    Returns lo (N, 2) long, the window's first column and row, and extent (N, 2) long, its
    width and height (0 for a box between two pixel centres).
    """
    lo = torch.ceil(boxes[:, :2] - 0.5).long()
    hi = torch.ceil(boxes[:, 2:] - 0.5).long()
    hi = torch.stack([hi[:, 0].clamp(max=width), hi[:, 1].clamp(max=height)], dim=1)
    return lo, (hi - lo).clamp_min(0)


def window_grid(crop_boxes: torch.Tensor, lo: torch.Tensor, out_h: int, out_w: int, pad: int = 0):
    """`F.grid_sample` coordinates (N, out_h, out_w, 2) in [-1, 1] (align_corners=False) of the
    window pixels in their crop's S x S grid: window pixel (i, j) is image pixel
    (lo_x - pad + j, lo_y - pad + i) and crop_boxes (N, 4) XYXY are the crops' image extents.

    Also returns the window's image rows (N, out_h) and cols (N, out_w) long (unclamped).
    """
    n, device = len(crop_boxes), crop_boxes.device
    cols = lo[:, 0:1] - pad + torch.arange(out_w, device=device)  # (N, out_w)
    rows = lo[:, 1:2] - pad + torch.arange(out_h, device=device)  # (N, out_h)
    gx = (cols + 0.5 - crop_boxes[:, 0:1]) / (crop_boxes[:, 2:3] - crop_boxes[:, 0:1]) * 2 - 1
    gy = (rows + 0.5 - crop_boxes[:, 1:2]) / (crop_boxes[:, 3:4] - crop_boxes[:, 1:2]) * 2 - 1
    grid = torch.stack(
        [gx[:, None, :].expand(n, out_h, out_w), gy[:, :, None].expand(n, out_h, out_w)], -1
    )
    return grid, rows, cols


def paste_windows(
    windows: np.ndarray,
    lo: torch.Tensor,
    extent: torch.Tensor,
    height: int,
    width: int,
    pad: int = 0,
    *,
    out: np.ndarray | None = None,
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """Copy each box's window (N, h, w) bool (its pixels start at `pad`) into (N, H, W) bool
    image masks at lo (N, 2) with extent (N, 2) (from `box_windows`); zero elsewhere.

    With `out` (M, H, W) bool and `rows` (N,) int, window k goes into out[rows[k]] in place
    (no (N, H, W) temporary) and `out` is returned.
    """
    masks = np.zeros((len(windows), height, width), dtype=bool) if out is None else out
    targets = range(len(windows)) if rows is None else rows
    bounds = torch.cat([lo, extent], dim=1).cpu().tolist()
    for k, (i, (x0, y0, w, h)) in enumerate(zip(targets, bounds, strict=True)):
        masks[i, y0 : y0 + h, x0 : x0 + w] = windows[k, pad : pad + h, pad : pad + w]
    return masks


def click_discs(points, point_labels, crop_boxes: torch.Tensor, size: int, radius: float):
    """Clicks as discs on each crop's S x S grid.

    Args:
        points: (P, 2) XY image pixels (array-like); point_labels (P,): 1 object, 0 background.
        crop_boxes: (N, 4) XYXY image extents of the crops.
        radius: disc radius in grid pixels.
    Returns:
        (N, S, S) float on crop_boxes.device: +1 inside a positive click's disc, -1 inside a
        negative one's (a positive and a negative disc cancel), else 0; None without points.
    """
    if points is None or len(points) == 0:
        return None
    if point_labels is None:
        raise ValueError("points given without point_labels")
    device = crop_boxes.device
    points = torch.as_tensor(np.asarray(points, dtype=np.float32), device=device)
    labels = torch.as_tensor(np.asarray(point_labels, dtype=np.float32), device=device)
    if points.shape != (len(labels), 2):
        raise ValueError(f"points must be (P, 2) with P = len(point_labels), got {points.shape}")
    scale = size / (crop_boxes[:, 2:] - crop_boxes[:, :2])  # grid pixels per image pixel (N, 2)
    grid_points = (points[None] - crop_boxes[:, None, :2]) * scale[:, None]  # (N, P, 2)
    centres = torch.arange(size, device=device, dtype=torch.float32) + 0.5
    dx = centres[None, None, None, :] - grid_points[..., 0, None, None]  # (N, P, 1, S)
    dy = centres[None, None, :, None] - grid_points[..., 1, None, None]  # (N, P, S, 1)
    hit = (dx * dx + dy * dy) <= radius**2  # (N, P, S, S)
    return (hit * (2 * labels - 1)[None, :, None, None]).sum(dim=1).clamp(-1, 1)


def grid_to_image(maps: torch.Tensor, *, stride: int, resized: tuple[int, int], size):
    """Maps (M, h, w) on the stride-`stride` grid of a padded network input -> (M, H, W) float
    at image size, bilinear: up to the network input, the padding dropped (the image resized to
    `resized` (H', W') sits at its top-left), then to the image's `size` (H, W)."""
    up = F.interpolate(maps[None], scale_factor=stride, mode="bilinear", align_corners=False)
    up = up[:, :, : resized[0], : resized[1]]
    return F.interpolate(up, size=tuple(size), mode="bilinear", align_corners=False)[0]


def tight_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(M, H, W) bool non-empty masks -> (M, 4) long XYXY tight boxes (x1, y1 exclusive)."""
    height, width = masks.shape[-2:]
    rows, cols = masks.any(dim=2), masks.any(dim=1)  # (M, H), (M, W)
    idx_y = torch.arange(height, device=masks.device)
    idx_x = torch.arange(width, device=masks.device)
    big = height + width
    return torch.stack(
        [
            torch.where(cols, idx_x, big).amin(1),
            torch.where(rows, idx_y, big).amin(1),
            torch.where(cols, idx_x, -1).amax(1) + 1,
            torch.where(rows, idx_y, -1).amax(1) + 1,
        ],
        dim=1,
    )
