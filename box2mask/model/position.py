"""Sine positional embeddings: for 2-D feature maps (DETR-style) and for boxes (prompt queries)."""

import math

import torch

__all__ = ["sine_embed", "feature_position_embedding", "box_position_embedding"]


def sine_embed(values: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """Sine/cosine embedding of scalars in [0, 1].

    Args:
        values: (...,) scalars, usually normalised coordinates in [0, 1].
        dim: output size (even).
    Returns:
        (..., dim): [sin(2 pi v / t_0), cos(2 pi v / t_0), sin(2 pi v / t_1), ...].
    """
    half = torch.arange(dim // 2, device=values.device, dtype=values.dtype)
    freqs = temperature ** (2 * half / dim)
    angles = values[..., None] * (2 * math.pi) / freqs  # (..., dim / 2)
    return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(-2)


def feature_position_embedding(height: int, width: int, dim: int, device, dtype) -> torch.Tensor:
    """(height * width, dim) embedding of pixel centres: dim/2 channels for y then dim/2 for x."""
    ys = (torch.arange(height, device=device, dtype=dtype) + 0.5) / height
    xs = (torch.arange(width, device=device, dtype=dtype) + 0.5) / width
    emb_y = sine_embed(ys, dim // 2)[:, None, :].expand(height, width, dim // 2)
    emb_x = sine_embed(xs, dim // 2)[None, :, :].expand(height, width, dim // 2)
    return torch.cat([emb_y, emb_x], dim=-1).reshape(height * width, dim)


def box_position_embedding(boxes: torch.Tensor, height: int, width: int, dim: int) -> torch.Tensor:
    """Embedding of XYXY boxes by their normalised centre and size.

    Args:
        boxes: (..., 4) absolute XYXY pixels in an image of `height` x `width`.
    Returns:
        (..., dim): dim/4 channels each for cx, cy, w, h (all divided by the image size).
    """
    scale = boxes.new_tensor([width, height, width, height])
    x0, y0, x1, y1 = (boxes / scale).unbind(-1)
    cxcywh = torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1)
    return sine_embed(cxcywh, dim // 4).flatten(-2)
