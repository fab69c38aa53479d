"""Box2Mask-T: ResNet backbone -> FPN pixel decoder -> masked-attention transformer decoder.

model(images, prompt_boxes=None) -> outputs dict (see `Box2MaskModel.forward`)
features = model.encode(images)                        # expensive: once per image
prompt_masks = model.decode_prompts(features, boxes)   # light: per set of boxes
"""

import torch
from torch import nn

from box2mask.model.backbone import ResNetBackbone
from box2mask.model.config import ModelConfig
from box2mask.model.pixel_decoder import FPNPixelDecoder
from box2mask.model.position import box_position_embedding
from box2mask.model.transformer_decoder import MLP, MaskedAttentionDecoder

__all__ = ["Box2MaskModel", "build_model"]


class Box2MaskModel(nn.Module):
    """Box-supervised instance segmentation with box prompts (Box2Mask, Li et al., arXiv 2212.01579)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = ResNetBackbone(
            cfg.backbone, weights=cfg.backbone_weights, norm=cfg.backbone_norm
        )
        self.pixel_decoder = FPNPixelDecoder(self.backbone.channels, cfg.hidden_dim, cfg.mask_dim)
        self.decoder = MaskedAttentionDecoder(
            hidden_dim=cfg.hidden_dim,
            mask_dim=cfg.mask_dim,
            num_classes=cfg.num_classes,
            num_queries=cfg.num_queries,
            nheads=cfg.nheads,
            dec_layers=cfg.dec_layers,
            dim_feedforward=cfg.dim_feedforward,
            dropout=cfg.dropout,
        )
        self.prompt_pos = MLP(cfg.hidden_dim, cfg.hidden_dim, cfg.hidden_dim, 2)
        self.register_buffer("pixel_mean", torch.tensor(cfg.pixel_mean).view(1, 3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(cfg.pixel_std).view(1, 3, 1, 1), False)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB 0..255 -> (B, 3, H, W) normalised by the pixel mean and std."""
        return (images - self.pixel_mean) / self.pixel_std

    def encode(self, images: torch.Tensor) -> dict:
        """The expensive part, once per image.

        Args:
            images: (B, 3, H, W) float RGB 0..255, H and W multiples of 32.
        Returns:
            {"multi_scale": [3 x (B, D, h, w)], "mask_features": (B, mask_dim, H/4, W/4),
             "image_size": (H, W)}
        """
        height, width = images.shape[-2:]
        if height % 32 or width % 32:
            raise ValueError(f"image size {height}x{width} must be a multiple of 32 (pad it)")
        multi_scale, mask_features = self.pixel_decoder(self.backbone(self.normalize(images)))
        return {
            "multi_scale": multi_scale,
            "mask_features": mask_features,
            "image_size": (height, width),
        }

    def decode(self, features: dict, prompt_boxes: list[torch.Tensor] | None = None) -> dict:
        """Run the transformer decoder on encoded features; see `forward` for the outputs."""
        mask_features = features["mask_features"]
        height, width = features["image_size"]
        batch = mask_features.shape[0]
        counts = [0] * batch if prompt_boxes is None else [len(b) for b in prompt_boxes]
        if len(counts) != batch:
            raise ValueError(f"prompt_boxes has {len(counts)} entries for {batch} images")
        num_prompts = max(counts, default=0)
        # pad every image to the same number of prompts with whole-image boxes (outputs dropped)
        # float32 even under autocast: box coordinates in bf16 would be off by pixels
        whole = torch.tensor([0.0, 0.0, width, height], device=mask_features.device)
        padded = whole.repeat(batch, num_prompts, 1)
        for b, n in enumerate(counts):
            if n:
                padded[b, :n] = prompt_boxes[b].to(padded)
        prompt_pos = (
            self.prompt_pos(box_position_embedding(padded, height, width, self.cfg.hidden_dim))
            if num_prompts
            else padded.new_zeros(batch, 0, self.cfg.hidden_dim)
        )
        predictions = self.decoder(
            features["multi_scale"], mask_features, prompt_pos, padded, (height, width)
        )
        q = self.cfg.num_queries

        def split(pred):
            out = {"pred_logits": pred["pred_logits"], "pred_masks": pred["masks"][:, :q]}
            if prompt_boxes is not None:
                out["prompt_masks"] = [pred["masks"][b, q : q + n] for b, n in enumerate(counts)]
            return out

        outputs = split(predictions[-1])
        aux = [split(p) for p in predictions[:-1]]
        outputs["aux_outputs"] = [
            {"pred_logits": a["pred_logits"], "pred_masks": a["pred_masks"]} for a in aux
        ]
        if prompt_boxes is not None:
            outputs["aux_prompt_masks"] = [a["prompt_masks"] for a in aux]
        outputs["mask_features"] = mask_features
        return outputs

    def decode_prompts(
        self, features: dict, prompt_boxes: list[torch.Tensor]
    ) -> list[torch.Tensor]:
        """Mask logits for box prompts from cached features.

        Args:
            features: `encode` output.
            prompt_boxes: list of B tensors (n_i, 4), XYXY pixels in the encoded image frame.
        Returns:
            list of B tensors (n_i, H/4, W/4) mask logits.
        """
        return self.decode(features, prompt_boxes)["prompt_masks"]

    def forward(self, images: torch.Tensor, prompt_boxes: list[torch.Tensor] | None = None) -> dict:
        """Args:
            images: (B, 3, H, W) float RGB 0..255 (padded batch, H and W multiples of 32).
            prompt_boxes: None or list of B tensors (n_i, 4), XYXY pixels in the input frame.
        Returns dict:
            pred_logits (B, Q, K + 1); pred_masks (B, Q, H/4, W/4) logits;
            aux_outputs: list over earlier decoder predictions of {pred_logits, pred_masks};
            mask_features (B, mask_dim, H/4, W/4);
            with prompts: prompt_masks (list of B (n_i, H/4, W/4) logits) and aux_prompt_masks
            (list over earlier predictions of such lists).
        """
        return self.decode(self.encode(images), prompt_boxes)


def build_model(cfg: ModelConfig) -> Box2MaskModel:
    """The Box2Mask-T model described by `cfg`."""
    return Box2MaskModel(cfg)
