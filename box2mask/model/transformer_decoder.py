"""Transformer decoder with masked attention (Mask2Former-style), shared by object and box-prompt
queries.

Tokens: Q learned object queries followed by P box-prompt queries per image. Every layer does
masked cross-attention to one feature level (coarse to fine, round robin), then self-attention,
then a feed-forward block; after the initial queries and after every layer, the heads predict
class logits (object queries only) and mask logits (all queries: dot product of mask embeddings
with the stride-4 mask features). A query's cross-attention is restricted to where the previous
prediction says "object" (sigmoid > 0.5); a prompt's FIRST cross-attention is restricted to its
box instead. Self-attention is masked so that object queries never see prompts and each prompt
sees the object queries and itself only: a box's answer never depends on the other boxes asked.
"""

import torch
import torch.nn.functional as F
from torch import nn

from box2mask.model.position import feature_position_embedding
from box2mask.ops.levelset import box_masks_from_boxes

__all__ = ["MaskedAttentionDecoder", "MLP"]


class MLP(nn.Module):
    """Linear layers with ReLU between them."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class DecoderLayer(nn.Module):
    """Masked cross-attention -> self-attention -> FFN, each post-norm with a residual."""

    def __init__(self, dim: int, nheads: int, dim_feedforward: int, dropout: float):
        super().__init__()
        self.cross_attn = nn.MultiheadAttention(dim, nheads, dropout=dropout, batch_first=True)
        self.self_attn = nn.MultiheadAttention(dim, nheads, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(
            nn.Linear(dim, dim_feedforward),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(dim_feedforward, dim),
        )
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(3))

    def forward(self, tgt, query_pos, memory, memory_pos, cross_mask, self_mask):
        """tgt/query_pos (B, L, D); memory/memory_pos (B, S, D); cross_mask (B * heads, L, S)
        and self_mask (L, L) bool, True = may not attend."""
        attended = self.cross_attn(
            tgt + query_pos, memory + memory_pos, memory, attn_mask=cross_mask, need_weights=False
        )[0]
        tgt = self.norms[0](tgt + attended)
        q = tgt + query_pos
        tgt = self.norms[1](
            tgt + self.self_attn(q, q, tgt, attn_mask=self_mask, need_weights=False)[0]
        )
        return self.norms[2](tgt + self.ffn(tgt))


class MaskedAttentionDecoder(nn.Module):
    """forward(multi_scale, mask_features, prompt_pos, prompt_boxes_grid) -> per-layer predictions.

    Args of forward:
        multi_scale: list of 3 (B, D, h_l, w_l) feature maps, coarse to fine.
        mask_features: (B, mask_dim, H/4, W/4).
        prompt_pos: (B, P, D) box positional embeddings of the prompts (P may be 0).
        prompt_boxes: (B, P, 4) prompt boxes, XYXY in units of the input image pixels.
        image_size: (H, W) of the input images.
    Returns:
        list over predictions (initial queries + each layer) of dicts with
        `pred_logits` (B, Q, K + 1) and `masks` (B, Q + P, H/4, W/4) logits.
    """

    def __init__(
        self,
        *,
        hidden_dim: int,
        mask_dim: int,
        num_classes: int,
        num_queries: int,
        nheads: int,
        dec_layers: int,
        dim_feedforward: int,
        dropout: float,
        num_levels: int = 3,
    ):
        super().__init__()
        self.nheads = nheads
        self.num_queries = num_queries
        self.num_levels = num_levels
        self.query_feat = nn.Embedding(num_queries, hidden_dim)  # content of object queries
        self.query_embed = nn.Embedding(num_queries, hidden_dim)  # position of object queries
        self.prompt_feat = nn.Embedding(1, hidden_dim)  # learned content shared by all prompts
        self.level_embed = nn.Embedding(num_levels, hidden_dim)
        self.layers = nn.ModuleList(
            DecoderLayer(hidden_dim, nheads, dim_feedforward, dropout) for _ in range(dec_layers)
        )
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)

    def _heads(self, tgt, mask_features, attn_size):
        """-> class logits (B, Q, K+1), mask logits (B, L, H/4, W/4), attention mask (B*h, L, S)."""
        out = self.decoder_norm(tgt)
        logits = self.class_embed(out[:, : self.num_queries])
        masks = torch.einsum("blc,bchw->blhw", self.mask_embed(out), mask_features)
        small = F.interpolate(masks.detach(), size=attn_size, mode="bilinear", align_corners=False)
        blocked = small.flatten(2).sigmoid() < 0.5  # (B, L, S)
        return logits, masks, blocked

    def _box_blocked(self, prompt_boxes, image_size, attn_size):
        """(B, P, S) True outside each prompt box on a feature level (at least the centre pixel)."""
        h, w = attn_size
        scale = prompt_boxes.new_tensor([w / image_size[1], h / image_size[0]] * 2)
        boxes = prompt_boxes * scale
        centre = (boxes[..., :2] + boxes[..., 2:]) / 2
        boxes = torch.cat(
            [
                torch.minimum(boxes[..., :2], centre - 0.5),
                torch.maximum(boxes[..., 2:], centre + 0.5),
            ],
            -1,
        )
        inside = box_masks_from_boxes(boxes.reshape(-1, 4), h, w).reshape(*boxes.shape[:2], h * w)
        return inside < 0.5

    def forward(self, multi_scale, mask_features, prompt_pos, prompt_boxes, image_size):
        batch = mask_features.shape[0]
        num_prompts = prompt_pos.shape[1]
        q, total = self.num_queries, self.num_queries + num_prompts
        memories, memory_pos, sizes = [], [], []
        for level, feat in enumerate(multi_scale):
            h, w = feat.shape[-2:]
            sizes.append((h, w))
            memories.append(feat.flatten(2).transpose(1, 2) + self.level_embed.weight[level])
            pos = feature_position_embedding(h, w, feat.shape[1], feat.device, torch.float32)
            memory_pos.append(pos[None].expand(batch, -1, -1))

        tgt = torch.cat(
            [
                self.query_feat.weight[None].expand(batch, -1, -1),
                self.prompt_feat.weight[None].expand(batch, num_prompts, -1),
            ],
            dim=1,
        )
        query_pos = torch.cat([self.query_embed.weight[None].expand(batch, -1, -1), prompt_pos], 1)
        self_mask = torch.zeros(total, total, dtype=torch.bool, device=tgt.device)
        self_mask[:q, q:] = True  # object queries never look at prompts
        self_mask[q:, q:] = ~torch.eye(num_prompts, dtype=torch.bool, device=tgt.device)

        logits, masks, blocked = self._heads(tgt, mask_features, sizes[0])
        if num_prompts:
            blocked[:, q:] = self._box_blocked(prompt_boxes, image_size, sizes[0])
        predictions = [{"pred_logits": logits, "masks": masks}]
        for i, layer in enumerate(self.layers):
            level = i % self.num_levels
            blocked[blocked.all(dim=-1)] = False  # an empty mask may attend everywhere
            cross_mask = blocked.repeat_interleave(self.nheads, dim=0)
            tgt = layer(tgt, query_pos, memories[level], memory_pos[level], cross_mask, self_mask)
            logits, masks, blocked = self._heads(
                tgt, mask_features, sizes[(i + 1) % self.num_levels]
            )
            predictions.append({"pred_logits": logits, "masks": masks})
        return predictions
