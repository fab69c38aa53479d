"""Box2MaskPredictor: a trained Box2Mask-T model behind the SAM-like predictor interface.

    predictor = Box2MaskPredictor.from_checkpoint("model.pt", device="cuda")
    predictor.set_image(image_hwc_uint8)           # encodes once (backbone + pixel decoder)
    masks, scores = predictor.predict(boxes_xyxy)  # (N, H, W) bool, (N,): light decoder per call

Each box's mask logits are sampled on an S x S crop covering exactly the box (boxes under S px are
upsampled), optionally refined there by K steps of level-set evolution on the full-resolution
image and the deep features (the energy of box2mask/ops/levelset.py), thresholded, and pasted back
at the original image size, never outside the box. Where the model finds almost nothing in a box (less than `min_fill`
of it), the filled box is returned with score 0: a box tool never does worse than the box.

Throughput (README "Scale"): `encode_states(images)` encodes several images,
those of the same network size in one forward pass (on CUDA; see `batch_encode`); all boxes of
an image are decoded in one batch and refined in one batch on the predictor's device. Options
`amp` ("bf16" / "fp16" autocast of the network on CUDA), `channels_last` and `compile`
(torch.compile of the image encoder) are off by default (box2mask/model/fast_inference.py).
"""

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from box2mask.io.checkpoint import load_checkpoint
from box2mask.model.checkpoint import build_model_from_checkpoint, serving_options
from box2mask.model.config import MASK_STRIDE
from box2mask.model.fast_inference import amp_dtype, autocast, image_encoder
from box2mask.ops.box_ops import validate_boxes
from box2mask.ops.geometry import (
    box_windows,
    click_discs,
    grid_coords,
    grid_to_image,
    paste_windows,
    tight_boxes,
    window_grid,
)
from box2mask.ops.levelset import chan_vese_energy, evolve, inscribed_ellipses
from box2mask.ops.mask_morphology import gaussian_blur

__all__ = ["Box2MaskPredictor"]


def _item(batch: torch.Tensor, j: int, n: int) -> torch.Tensor:
    """Image j of an encoded batch of n, (1, ...): a copy, so that a cached state does not hold
    (and `torch.save` does not write) the whole batch."""
    return batch if n == 1 else batch[j : j + 1].clone()


class Box2MaskPredictor:
    """set_image once, then predict(boxes) from the cached features; NumPy in and out."""

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        device: str = "cpu",
        model_version: str = "box2mask",
        class_names: list[str] | None = None,
        image_size: int = 512,
        refine_steps: int = 0,
        refine_step_size: float = 0.5,
        refine_feature_weight: float = 1.0,
        refine_gamma: float = 0.0,
        box_prior: float = 0.5,
        grid_size: int = 64,
        max_grid_size: int = 256,
        smoothing: float = 0.0,
        min_fill: float = 0.05,
        click_radius: float = 2.0,
        region_refine: bool = False,
        amp: str = "off",
        channels_last: bool = False,
        compile: bool = False,
        batch_encode: bool | None = None,
    ):
        self.device = torch.device(device)
        self._amp_dtype = amp_dtype(amp, self.device)  # ValueError for AMP off CUDA
        self.amp = amp  # "off" (float32) | "bf16" | "fp16": autocast of the network, CUDA only
        self.model = model.to(self.device).eval()
        self.channels_last = channels_last  # run the image encoder in channels_last layout
        self.compile = compile  # torch.compile the image encoder (compiles once per image size)
        self._encode = image_encoder(self.model, channels_last=channels_last, compile=compile)
        # encode_states: same-size images in one forward pass; None = on CUDA only. On a CPU,
        # oneDNN picks batch-size-dependent kernels (features differ in the 6th digit, so
        # outputs would not be byte-identical to one-at-a-time) and a batch is no faster there
        self.batch_encode = self.device.type == "cuda" if batch_encode is None else batch_encode
        self.model_version = model_version  # recorded with every proposed mask
        self.class_names = list(class_names or [])
        self.image_size = image_size  # long side of the image given to the network (px)
        self.refine_steps = refine_steps  # level-set refinement steps K (0 = off)
        self.refine_step_size = refine_step_size  # logit change of the fastest pixel per step
        self.refine_feature_weight = refine_feature_weight  # weight of E(m, deep features)
        self.refine_gamma = refine_gamma  # length term of the refinement energy
        # weight w of the box's inscribed ellipse in the refinement's start,
        # (1 - w) model + w ellipse: two-phase Chan-Vese is symmetric (object and background
        # can swap), so a weak model's start needs the prior that objects fill their box centre
        self.box_prior = box_prior
        self.grid_size = grid_size  # smallest crop side S (small boxes are upsampled to it)
        self.max_grid_size = max_grid_size  # largest crop side (big boxes are downsampled to it)
        self.smoothing = smoothing  # Gaussian sigma (crop pixels) on the probabilities; 0 = off
        self.min_fill = min_fill  # below this fraction of its box a mask falls back to the box
        self.click_radius = click_radius  # radius (crop pixels) of the disc pinned by a click
        # refine the model's masks with the embedded default's colour-histogram level set,
        # started from the model's mask instead of the box's ellipse; off by default
        self.region_refine = region_refine
        self._region = None
        if region_refine:
            from box2mask.levelset.segmenter import LevelSetSegmenter

            self._region = LevelSetSegmenter(device=str(self.device))
        self._features = None

    @classmethod
    def from_checkpoint(cls, path, device: str = "cpu", **options) -> "Box2MaskPredictor":
        """A predictor for a checkpoint written by `box2mask.io.checkpoint.save_checkpoint` (its
        path, or the dict `load_checkpoint` read from it)."""
        ckpt = path if isinstance(path, dict) else load_checkpoint(path, map_location="cpu")
        model = build_model_from_checkpoint(ckpt)
        options = {**serving_options(ckpt.get("config") or {}), **options}
        return cls(
            model,
            device=device,
            model_version=ckpt["model_version"],
            class_names=ckpt["class_names"],
            **options,
        )

    def set_image(self, image: np.ndarray) -> None:
        """Encode an (H, W, 3) uint8 RGB image: long side resized to `image_size`, padded to /32."""
        self.set_state(self.encode_state(image))

    def encode_state(self, image: np.ndarray) -> dict:
        """Everything `set_image` computes, as a flat dict of tensors / ints / tuples (what
        `torch.load(weights_only=True)` reads back, so it can live in an `EmbeddingCache`).

        Does not change the predictor: a background thread may encode the next image while
        `predict` answers boxes on the current one.
        """
        return self.encode_states([image])[0]

    @torch.inference_mode()
    def encode_states(self, images: list[np.ndarray]) -> list[dict]:
        """`encode_state` of each image, in order, sharing forward passes.

        Images whose network input has the same padded size (long side `image_size`, padded to
        a multiple of 32) go through the network in one batch when `batch_encode` is on; each
        state then holds its own slice, exactly what encoding the image alone computes (up to
        the batch-size dependence of convolution kernels, about 1e-6). Images of different
        sizes are never padded to a common size: the pixel decoder's GroupNorm statistics and
        the convolutions near the border would see the extra padding and change the features.
        """
        prepared = [self._network_input(image) for image in images]
        groups: dict = {}  # padded size (or the image's position) -> positions in `images`
        for i, (padded, *_) in enumerate(prepared):
            key = tuple(padded.shape[-2:]) if self.batch_encode else i
            groups.setdefault(key, []).append(i)
        states = [None] * len(images)
        for members in groups.values():
            batch = torch.cat([prepared[i][0] for i in members])
            with autocast(self.device, self._amp_dtype):
                features = self._encode(batch)
            for j, i in enumerate(members):
                _, pixels, scale, size = prepared[i]
                n = len(members)
                state = {
                    "mask_features": _item(features["mask_features"], j, n),
                    "image_size": tuple(int(v) for v in features["image_size"]),
                    "num_scales": len(features["multi_scale"]),
                    "image": pixels,  # uint8: the refinement's float image is recomputed
                    "scale": scale,  # network pixels per image pixel (x, y)
                    "size": size,
                }
                for k, level in enumerate(features["multi_scale"]):
                    state[f"multi_scale.{k}"] = _item(level, j, n)
                states[i] = state
        return states

    def _network_input(self, image: np.ndarray):
        """(1, 3, H', W') float network input on the device (long side `image_size`, padded
        to /32 with the mean colour), the (H, W, 3) uint8 CPU pixels, scale (x, y), size (H, W).
        """
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}"
            )
        height, width = image.shape[:2]
        scale = self.image_size / max(height, width)
        new_h, new_w = max(round(height * scale), 1), max(round(width * scale), 1)
        pixels = torch.from_numpy(np.array(image, dtype=np.uint8))  # a writable copy
        full = pixels.to(self.device).permute(2, 0, 1)[None].float()
        resized = F.interpolate(full, size=(new_h, new_w), mode="bilinear", antialias=True)
        pad_h, pad_w = -new_h % 32, -new_w % 32
        mean = self.model.pixel_mean
        padded = F.pad(resized - mean, (0, pad_w, 0, pad_h)) + mean  # pad with the mean colour
        return padded, pixels, (new_w / width, new_h / height), (height, width)

    @torch.inference_mode()
    def set_state(self, state: dict) -> None:
        """Make an `encode_state` result the current image (exactly as `set_image` would)."""
        # features as computed (half precision under AMP); float32 when AMP is off, so a state
        # cached by an AMP predictor still works here
        dtype = None if self._amp_dtype is not None else torch.float32
        self._features = {
            "multi_scale": [
                state[f"multi_scale.{i}"].to(self.device, dtype)
                for i in range(int(state["num_scales"]))
            ],
            "mask_features": state["mask_features"].to(self.device, dtype),
            "image_size": tuple(state["image_size"]),
        }
        full = state["image"].to(self.device).permute(2, 0, 1)[None].float()
        self._image = self.model.normalize(full)  # (1, 3, H, W) for the refinement
        self._scale = tuple(state["scale"])
        self._size = tuple(state["size"])
        if self._region is not None:
            self._region.set_image(state["image"].numpy())

    def _to_grid(self, xs: torch.Tensor, axis: int) -> torch.Tensor:
        """Image coordinates along x (axis 0) or y (axis 1) -> mask-grid coordinates."""
        return xs * self._scale[axis] / MASK_STRIDE

    def _crop_logits(self, logits: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
        """Sample each box's own (h, w) logit map on an S x S grid covering the box -> (N, S, S)."""
        h, w = logits.shape[-2:]
        xs, ys = grid_coords(boxes, size)  # (N, S) image coordinates
        gx = self._to_grid(xs, 0) / w * 2 - 1
        gy = self._to_grid(ys, 1) / h * 2 - 1
        n = len(boxes)
        grid = torch.stack(
            [gx[:, None, :].expand(n, size, size), gy[:, :, None].expand(n, size, size)], -1
        )
        sampled = F.grid_sample(logits[:, None], grid, mode="bilinear", align_corners=False)
        return sampled[:, 0]

    def _refine(self, probs, boxes, size, pins, steps):
        """K level-set steps on the crop: E(m, image) + w E(m, deep features); (N, S, S)."""
        rois = torch.cat([boxes.new_zeros(len(boxes), 1), boxes], dim=1)
        image = roi_align(self._image, rois, output_size=size, sampling_ratio=2, aligned=True)
        mask_features = self._features["mask_features"].float()
        feat_boxes = boxes * boxes.new_tensor([self._scale[0], self._scale[1]] * 2) / MASK_STRIDE
        feat_rois = torch.cat([rois[:, :1], feat_boxes], dim=1)
        feats = roi_align(
            mask_features, feat_rois, output_size=size, sampling_ratio=2, aligned=True
        )
        feats = F.normalize(feats, dim=1)
        image, feats = image.clone(), feats.clone()  # plain tensors: evolve needs autograd
        inside = torch.ones_like(probs)
        if self.box_prior > 0:
            crop_box = probs.new_tensor([[0.0, 0.0, size, size]]).expand(len(probs), 4)
            ellipse = inscribed_ellipses(crop_box, size, size)
            probs = (1 - self.box_prior) * probs + self.box_prior * ellipse

        def extra_energy(p):
            energy = self.refine_feature_weight * chan_vese_energy(p, feats, inside)
            if pins is not None:  # clicks: squared error to the pinned value, per unit area
                pinned = pins != 0
                energy = (
                    energy
                    + (((p - (pins > 0).float()) ** 2) * pinned).sum((-2, -1))
                    / (size * size)
                    * 100.0
                )
            return energy

        return evolve(
            probs,
            image,
            inside,
            steps=steps,
            step_size=self.refine_step_size,
            gamma=self.refine_gamma,
            extra_energy=extra_energy,
        )

    def _paste(self, probs: torch.Tensor, boxes: torch.Tensor) -> np.ndarray:
        """Sample crop probabilities (N, S, S) at each image pixel of its box -> (N, H, W) bool."""
        height, width = self._size
        lo, extent = box_windows(boxes, height, width)
        out_w, out_h = (max(int(v), 1) for v in extent.max(dim=0).values)
        grid, _, _ = window_grid(boxes, lo, out_h, out_w)
        sampled = F.grid_sample(probs[:, None], grid, mode="bilinear", align_corners=False)
        inside = (sampled[:, 0] > 0.5).cpu().numpy()
        return paste_windows(inside, lo, extent, height, width)

    def predict(
        self,
        boxes_xyxy: np.ndarray,
        *,
        steps: int | None = None,
        smoothing: float | None = None,
        points: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Masks for N boxes of the current image.

        Args:
            boxes_xyxy: (N, 4) absolute XYXY pixels of the original image (clipped to it).
            steps: level-set refinement steps (None: `refine_steps`); 0 = the model's mask.
            smoothing: Gaussian sigma in crop pixels applied to the probabilities (None: config).
            points, point_labels: optional (P, 2) XY clicks with labels (P,) 1 = object,
                0 = background; each pins a small disc in every box whose crop contains it.
        Returns:
            masks (N, H, W) bool at the original size, never outside their box; scores (N,) in
            [0, 1]: the mean probability inside the mask (0 for a box fallback).
        """
        if self._features is None:
            raise RuntimeError("call set_image(image) before predict(boxes)")
        height, width = self._size
        boxes_np = validate_boxes(boxes_xyxy, width, height)
        if len(boxes_np) == 0:
            return np.zeros((0, height, width), dtype=bool), np.zeros(0, dtype=np.float32)
        boxes = torch.as_tensor(boxes_np, dtype=torch.float32, device=self.device)
        sides = (boxes[:, 2:] - boxes[:, :2]).amax(dim=1)
        size = int(min(max(float(sides.max()), self.grid_size), self.max_grid_size))
        with torch.inference_mode():  # all N boxes in one decoder batch
            prompts = boxes * boxes.new_tensor([self._scale[0], self._scale[1]] * 2)
            with autocast(self.device, self._amp_dtype):
                logits = self.model.decode_prompts(self._features, [prompts])[0]
            probs = self._crop_logits(logits.float(), boxes, size).sigmoid()
        probs = probs.clone()  # leave inference mode for the autograd-based refinement
        pins = click_discs(points, point_labels, boxes, size, self.click_radius)
        steps = self.refine_steps if steps is None else int(steps)
        if steps > 0:
            probs = self._refine(probs, boxes, size, pins, steps)
        sigma = self.smoothing if smoothing is None else smoothing
        if sigma > 0:
            probs = gaussian_blur(probs, sigma)
        if pins is not None:
            probs = torch.where(pins != 0, (pins > 0).float(), probs)
        masks, scores = self._finish(probs, boxes)
        if self._region is not None:
            masks, region_scores = self._region.predict(
                boxes_np, points=points, point_labels=point_labels, init_masks=masks
            )
            scores = np.sqrt(scores * region_scores).astype(np.float32)
        return masks, scores

    def _finish(self, probs: torch.Tensor, boxes: torch.Tensor):
        """Scores, the box fallback for near-empty masks, and the paste to image size."""
        fg = probs > 0.5
        fill = fg.float().mean(dim=(-2, -1))
        scores = (probs * fg).sum(dim=(-2, -1)) / fg.sum(dim=(-2, -1)).clamp_min(1)
        fallback = fill < self.min_fill
        probs = torch.where(fallback[:, None, None], torch.ones_like(probs), probs)
        scores = torch.where(fallback, torch.zeros_like(scores), scores)
        return self._paste(probs, boxes), scores.cpu().numpy().astype(np.float32)

    @torch.inference_mode()
    def predict_all(self, score_threshold: float = 0.5):
        """Automatic instance proposals from the learned queries.

        Score = class probability x mean mask probability inside the mask (Mask2Former).
        Returns masks (M, H, W) bool, scores (M,) float32, labels (M,) int64 class indices
        (names in `class_names`), boxes_xyxy (M, 4) float64 tight boxes of the masks; sorted by
        score, only scores >= score_threshold and non-empty masks.
        """
        if self._features is None:
            raise RuntimeError("call set_image(image) before predict_all()")
        height, width = self._size
        with autocast(self.device, self._amp_dtype):
            outputs = self.model.decode(self._features)
        class_probs = outputs["pred_logits"][0].float().softmax(-1)[:, :-1]
        cls_scores, labels = class_probs.max(dim=-1)
        logits = outputs["pred_masks"][0].float()  # (Q, h, w)
        fg = logits > 0
        mask_scores = (logits.sigmoid() * fg).sum((-2, -1)) / fg.sum((-2, -1)).clamp_min(1)
        scores = cls_scores * mask_scores
        keep = (scores >= score_threshold) & fg.any(dim=(-2, -1))
        order = torch.argsort(scores[keep], descending=True)
        logits, scores, labels = logits[keep][order], scores[keep][order], labels[keep][order]
        if len(logits) == 0:
            return (
                np.zeros((0, height, width), dtype=bool),
                np.zeros(0, dtype=np.float32),
                np.zeros(0, dtype=np.int64),
                np.zeros((0, 4), dtype=np.float64),
            )
        resized = (round(height * self._scale[1]), round(width * self._scale[0]))
        masks = grid_to_image(logits, stride=MASK_STRIDE, resized=resized, size=self._size) > 0
        nonempty = masks.any(dim=(-2, -1))
        masks, scores, labels = masks[nonempty], scores[nonempty], labels[nonempty]
        boxes = tight_boxes(masks)
        return (
            masks.cpu().numpy(),
            scores.cpu().numpy().astype(np.float32),
            labels.cpu().numpy().astype(np.int64),
            boxes.cpu().numpy().astype(np.float64),
        )
