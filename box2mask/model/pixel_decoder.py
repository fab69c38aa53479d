"""FPN-style pixel decoder: backbone maps -> multi-scale features and stride-4 mask features."""

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FPNPixelDecoder"]


def _conv_gn(in_ch: int, out_ch: int, kernel: int, relu: bool) -> nn.Sequential:
    """Conv (no bias) + GroupNorm (+ ReLU)."""
    groups = 32 if out_ch % 32 == 0 else 1
    layers = [
        nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=False),
        nn.GroupNorm(groups, out_ch),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class FPNPixelDecoder(nn.Module):
    """Top-down feature pyramid.

    forward([c2, c3, c4, c5]) -> (multi_scale, mask_features):
        multi_scale: [p5, p4, p3], (B, hidden_dim, H/32, W/32), (.., H/16, W/16), (.., H/8, W/8):
            the levels the transformer decoder attends to, coarse to fine.
        mask_features: (B, mask_dim, H/4, W/4).
    """

    def __init__(self, in_channels: tuple[int, ...], hidden_dim: int, mask_dim: int):
        super().__init__()
        self.lateral = nn.ModuleList(_conv_gn(c, hidden_dim, 1, relu=False) for c in in_channels)
        self.output = nn.ModuleList(
            _conv_gn(hidden_dim, hidden_dim, 3, relu=True) for _ in in_channels
        )
        self.mask_proj = nn.Conv2d(hidden_dim, mask_dim, kernel_size=1)

    def forward(self, features: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        outputs = []
        top = None
        for i in reversed(range(len(features))):  # from stride 32 down to stride 4
            x = self.lateral[i](features[i])
            if top is not None:
                x = x + F.interpolate(top, size=x.shape[-2:], mode="nearest")
            top = self.output[i](x)
            outputs.append(top)
        return outputs[:3], self.mask_proj(outputs[-1])
