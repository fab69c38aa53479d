"""CropLearnerPredictor: the box-prompt crop learner behind the predictor interface.

    predictor = CropLearnerPredictor.from_checkpoint("runs/nuclei/last.pt")
    predictor.set_image(image_hwc_uint8)           # the base's per-image features
    masks, scores = predictor.predict(boxes_xyxy)  # (N, H, W) bool, (N,)

Per call, for all N boxes at once: the base masks at image resolution (the embedded level-set
default's, or the inscribed ellipses), each box's crop on the S x S grid (box2mask/crop/learner.py),
the network's correction delta there, then at every image pixel inside a box

    logit = base_logit * (+1 base object / -1 base background) + delta (bilinear from the grid),

mask = logit > 0. With delta = 0 (an untrained learner) the masks are the base's, pixel for
pixel. Clicks (`points`, `point_labels`) with the default as base are the base's: it re-segments
around them starting from `init_masks` (the mask the person saw; without it, this learner's own
mask of the box), and its result is returned as is, so the residual never undoes a click. With
the ellipse base a click pins a disc of `click_radius` grid pixels in the final mask. A
click-aware checkpoint (`click_channels`) instead reads its clicks as +/- disc maps and the
previous mask (`init_masks`, or its own mask of the box) as three more input channels
(box2mask/crop/click_maps.py) and returns its own corrected mask; with `click_walk` that mask
goes on to the default's walk as the shown mask (the clicks it already agrees with change
nothing there, the others re-segment at image resolution).
"""

import math

import numpy as np
import torch
import torch.nn.functional as F

from box2mask.crop.click_maps import click_maps
from box2mask.crop.learner import (
    KIND,
    CropLearnerConfig,
    CropUNet,
    base_logits,
    crop_geometry,
    crop_inputs,
    flip_averaged,
    sample_crops,
)
from box2mask.ops.box_ops import validate_boxes
from box2mask.ops.geometry import box_windows, paste_windows, window_grid
from box2mask.ops.levelset import inscribed_ellipses

__all__ = ["CropLearnerPredictor", "sample_masks"]


def sample_masks(masks: torch.Tensor, windows: torch.Tensor, size: int) -> torch.Tensor:
    """Soft S x S crops of per-box masks: mask i (H, W) bool read over window i -> (N, S, S).

    Each grid pixel averages 2 x 2 nearest-pixel reads, so edges are fractional like a bilinear
    sample; reads outside the image count as background.
    """
    n, height, width = masks.shape
    fine = 2 * size
    steps = (torch.arange(fine, device=masks.device, dtype=torch.float32) + 0.5) / fine
    extent = windows[:, 2:] - windows[:, :2]
    cols = torch.floor(windows[:, 0:1] + steps[None] * extent[:, 0:1]).long()  # (N, 2S)
    rows = torch.floor(windows[:, 1:2] + steps[None] * extent[:, 1:2]).long()
    inside = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None]
    index = torch.arange(n, device=masks.device)[:, None, None]
    read = masks[index, rows.clamp(0, height - 1)[:, :, None], cols.clamp(0, width - 1)[:, None]]
    return F.avg_pool2d((read & inside).float()[:, None], 2)[:, 0]


class CropLearnerPredictor:
    """set_image once, then predict(boxes); NumPy in and out (see the module docstring)."""

    def __init__(
        self,
        model: CropUNet,
        *,
        device: str = "cpu",
        model_version: str = "crop-learner",
        class_names: list[str] | None = None,
        click_radius: float = 2.0,
    ):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.cfg: CropLearnerConfig = model.cfg
        self.model_version = model_version  # recorded with every proposed mask
        self.class_names = list(class_names or [])
        self.click_radius = click_radius  # radius (grid pixels) of the disc pinned by a click
        self._default = None
        if self.cfg.base == "default":
            from box2mask.levelset.segmenter import LevelSetSegmenter

            self._default = LevelSetSegmenter(device=str(self.device))
        self._image = None  # (1, 3, H, W) float in [0, 1]

    @classmethod
    def from_checkpoint(cls, ckpt, device: str = "cpu", **options) -> "CropLearnerPredictor":
        """A predictor for a `crop-learner` checkpoint: its path, or the dict `load_checkpoint`
        read from it."""
        from box2mask.io.checkpoint import CheckpointError, load_checkpoint

        if not isinstance(ckpt, dict):
            ckpt = load_checkpoint(ckpt, map_location="cpu")

        name = ckpt.get("path", "checkpoint")
        try:
            cfg = CropLearnerConfig(**ckpt["model_config"])
            _check_config(cfg)
            model = CropUNet(cfg)
            model.load_state_dict(ckpt["model_state"])
        except (TypeError, ValueError, RuntimeError) as err:
            raise CheckpointError(f"{name}: not a usable {KIND} checkpoint: {err}") from err
        return cls(
            model,
            device=device,
            model_version=ckpt["model_version"],
            class_names=ckpt["class_names"],
            **options,
        )

    def set_image(self, image: np.ndarray) -> None:
        """Keep an (H, W, 3) uint8 RGB image (and let the base precompute its features)."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}"
            )
        if self._default is not None:
            self._default.set_image(image)
        rgb = torch.from_numpy(np.array(image)).to(self.device)  # a writable copy
        self._image = rgb.permute(2, 0, 1)[None].float() / 255.0

    def base_masks(self, boxes: torch.Tensor, **options) -> tuple[torch.Tensor, np.ndarray]:
        """The base's masks (N, H, W) bool and scores (N,) for validated boxes (N, 4)."""
        height, width = self._image.shape[-2:]
        if self._default is not None:
            masks, scores = self._default.predict(boxes.cpu().numpy(), **options)
            return torch.from_numpy(masks).to(self.device), scores
        init = options.get("init_masks")
        if init is not None:
            return torch.as_tensor(np.asarray(init), device=self.device).bool(), None
        return inscribed_ellipses(boxes, height, width, 1.0, 0.0) > 0.5, None

    @torch.inference_mode()
    def predict(
        self,
        boxes_xyxy: np.ndarray,
        *,
        points: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        **options,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Masks (N, H, W) bool (never outside their box) and scores (N,) in [0, 1].

        options: the base's (the default's `steps`, `smoothing`, `init_masks`); ignored by the
        ellipse base except `init_masks`, which replaces the ellipse.
        """
        if self._image is None:
            raise RuntimeError("call set_image(image) before predict(boxes)")
        cfg = self.cfg
        height, width = self._image.shape[-2:]
        boxes_np = validate_boxes(boxes_xyxy, width, height)
        n = len(boxes_np)
        if n == 0:
            return np.zeros((0, height, width), dtype=bool), np.zeros(0, dtype=np.float32)
        boxes = torch.as_tensor(boxes_np, dtype=torch.float32, device=self.device)
        clicked = points is not None and len(points) > 0
        if clicked and point_labels is None:
            raise ValueError("points given without point_labels")
        previous = None
        if clicked and cfg.click_channels:  # its own click channels over the previous mask
            previous = options.pop("init_masks", None)
            if previous is None:  # the clicks correct this learner's own mask
                previous = self.predict(boxes_np, **options)[0]
            previous = torch.as_tensor(np.asarray(previous), device=self.device).bool()
        elif self._default is not None and clicked:
            if options.get("init_masks") is None:  # the clicks correct this learner's own mask
                options["init_masks"] = self.predict(boxes_np, **options)[0]
            return self._default.predict(
                boxes_np, points=points, point_labels=point_labels, **options
            )
        base, base_scores = self.base_masks(boxes, **options)
        windows, grid_boxes = crop_geometry(boxes, cfg)
        rgb = sample_crops(self._image, windows, cfg.crop_size)
        base_crop = sample_masks(base, windows, cfg.crop_size)
        inputs = crop_inputs(rgb, grid_boxes, base_crop)
        if cfg.click_channels:
            inputs = self._click_inputs(inputs, windows, base_crop, previous, points, point_labels)
        if cfg.test_flips:
            delta = flip_averaged(self.model, inputs)
        else:
            delta, _ = self.model(inputs)
        masks, confidence = self._paste(delta, base, boxes, windows)
        if clicked and cfg.click_channels and cfg.click_walk and self._default is not None:
            masks, _ = self._default.predict(
                boxes_np, points=points, point_labels=point_labels, init_masks=masks, **options
            )
        if clicked and not cfg.click_channels:
            self._pin_clicks(masks, boxes, windows, points, point_labels)
        scores = confidence if base_scores is None else base_scores
        return masks, np.asarray(scores, dtype=np.float32)

    def _click_inputs(self, inputs, windows, base_crop, previous, points, point_labels):
        """inputs (N, 6, S, S) -> (N, 9, S, S): the +/- click maps and the previous mask
        (+1 / -1; the base mask without clicks)."""
        size = self.cfg.crop_size
        if points is None or len(points) == 0:
            points_t = torch.zeros(0, 2, device=self.device)
            labels_t = torch.zeros(0, dtype=torch.bool, device=self.device)
        else:
            points_t = torch.as_tensor(np.asarray(points, dtype=np.float32).reshape(-1, 2))
            labels_t = torch.as_tensor(np.asarray(point_labels).astype(bool).reshape(-1))
            if len(points_t) != len(labels_t):
                raise ValueError(f"{len(points_t)} points but {len(labels_t)} point_labels")
        maps = click_maps(points_t, labels_t, windows, size, radius=self.cfg.click_radius)
        prev = base_crop if previous is None else sample_masks(previous, windows, size)
        return torch.cat([inputs, maps, prev[:, None] * 2 - 1], dim=1)

    def _paste(self, delta, base, boxes, windows):
        """Full-resolution masks (N, H, W) bool from delta (N, S, S) over the base masks, and
        each mask's mean confidence |2 sigmoid(logit) - 1| inside its box (N,)."""
        cfg = self.cfg
        height, width = base.shape[-2:]
        n, device = len(boxes), boxes.device
        lo, extent = box_windows(boxes, height, width)
        out_h, out_w = int(extent[:, 1].max()), int(extent[:, 0].max())
        box_w, box_h = extent[:, 0], extent[:, 1]
        grid, rows, cols = window_grid(windows, lo, out_h, out_w)
        up = F.grid_sample(delta[:, None].float(), grid, mode="bilinear", align_corners=False)
        index = torch.arange(n, device=device)[:, None, None]
        read = base[
            index, rows.clamp(max=height - 1)[:, :, None], cols.clamp(max=width - 1)[:, None]
        ]
        in_box = (torch.arange(out_h, device=device)[None, :, None] < box_h[:, None, None]) & (
            torch.arange(out_w, device=device)[None, None, :] < box_w[:, None, None]
        )
        logits = base_logits(read.float(), in_box.float(), cfg) + up[:, 0]
        inside = (logits > 0) & in_box
        conf = ((2 * torch.sigmoid(logits) - 1).abs() * in_box).sum((1, 2))
        conf = conf / in_box.sum((1, 2)).clamp_min(1)
        inside = inside.cpu().numpy()
        masks = paste_windows(inside, lo, extent, height, width)
        return masks, conf.cpu().numpy()

    def _pin_clicks(self, masks, boxes, windows, points, point_labels):
        """Set a disc of `click_radius` grid pixels (an ellipse in image pixels) around each
        click to its label, inside every box whose box contains the click; in place."""
        if point_labels is None:
            raise ValueError("points given without point_labels")
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        labels = np.asarray(point_labels).astype(bool).reshape(-1)
        if len(points) != len(labels):
            raise ValueError(f"{len(points)} points but {len(labels)} point_labels")
        height, width = masks.shape[1:]
        b = boxes.cpu().numpy()
        px_per_cell = ((windows[:, 2:] - windows[:, :2]) / self.cfg.crop_size).cpu().numpy()
        for (x, y), label in zip(points, labels, strict=True):
            hit = (x >= b[:, 0]) & (x < b[:, 2]) & (y >= b[:, 1]) & (y < b[:, 3])
            for i in np.nonzero(hit)[0]:
                rx, ry = np.maximum(self.click_radius * px_per_cell[i], 0.5)
                x0, y0, x1, y1 = b[i]
                # the box's pixels (centre inside the box) within the disc's bounding rectangle
                c0 = max(int(np.ceil(max(x0, x - rx) - 0.5)), 0)
                c1 = min(int(np.ceil(min(x1, x + rx + 1) - 0.5)), width)
                r0 = max(int(np.ceil(max(y0, y - ry) - 0.5)), 0)
                r1 = min(int(np.ceil(min(y1, y + ry + 1) - 0.5)), height)
                dx = (np.arange(c0, c1) + 0.5 - x) / rx
                dy = (np.arange(r0, r1) + 0.5 - y) / ry
                disc = dy[:, None] ** 2 + dx[None, :] ** 2 <= 1.0
                masks[i, r0:r1, c0:c1][disc] = label
                xi, yi = int(np.floor(x)), int(np.floor(y))
                if 0 <= xi < width and 0 <= yi < height:
                    masks[i, yi, xi] = label


def _check_config(cfg: CropLearnerConfig) -> None:
    """ValueError naming the field unless a stored config describes a network of sane size."""
    sizes = {"crop_size": (8, 512), "width": (1, 64), "levels": (1, 6)}  # <= 2048 channels
    for field, (low, high) in sizes.items():
        value = getattr(cfg, field)
        if not (isinstance(value, int) and not isinstance(value, bool) and low <= value <= high):
            raise ValueError(f"model_config {field} must be a whole number in [{low}, {high}]")
    if cfg.crop_size % 2 ** (cfg.levels - 1):
        raise ValueError("model_config crop_size is not divisible by 2 ** (levels - 1)")
    # margins bound the crop windows torchvision's roi_align reads (a margin of 1e77 px crashes it)
    limits = {"margin_frac": 10.0, "margin_px": 1000.0, "base_logit": 1e4, "outside_logit": 1e4}
    for field, limit in limits.items():
        value = getattr(cfg, field)
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not math.isfinite(value) or abs(value) > limit:
            raise ValueError(
                f"model_config {field} must be a number within +-{limit}, got {value!r}"
            )
    if cfg.margin_frac < 0 or cfg.margin_px < 0:
        raise ValueError("model_config margins must be >= 0")
    if not isinstance(cfg.test_flips, bool):
        raise ValueError(f"model_config test_flips must be true or false, got {cfg.test_flips!r}")
    if not isinstance(cfg.click_channels, bool):
        raise ValueError(
            f"model_config click_channels must be true or false, got {cfg.click_channels!r}"
        )
    if not isinstance(cfg.click_walk, bool):
        raise ValueError(f"model_config click_walk must be true or false, got {cfg.click_walk!r}")
    radius = cfg.click_radius
    if not (isinstance(radius, int | float) and not isinstance(radius, bool) and 0 < radius <= 64):
        raise ValueError(f"model_config click_radius must be a number in (0, 64], got {radius!r}")
    if cfg.base not in ("default", "ellipse"):
        raise ValueError(f"model_config base must be 'default' or 'ellipse', got {cfg.base!r}")
