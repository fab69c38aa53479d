"""ResNet backbone (torchvision) returning the stride 4, 8, 16 and 32 feature maps.

Weights: random by default; `weights` may be a local file (a torchvision ResNet state dict, or a
checkpoint holding one under "state_dict" / "model") or "imagenet", which uses torchvision's own
download and cache -- only when the user asks for it.
"""

import os

import torch
import torchvision
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

__all__ = ["ResNetBackbone", "BACKBONE_CHANNELS"]

# channels of layer1..layer4 (strides 4, 8, 16, 32)
BACKBONE_CHANNELS = {
    "resnet18": (64, 128, 256, 512),
    "resnet34": (64, 128, 256, 512),
    "resnet50": (256, 512, 1024, 2048),
    "resnet101": (256, 512, 1024, 2048),
}


def _load_weights(net: nn.Module, name: str, weights: str) -> None:
    """Load ImageNet or local-file weights into `net` (the fc layer is ignored)."""
    if weights == "imagenet":
        enum = torchvision.models.get_model_weights(name).IMAGENET1K_V1
        state = enum.get_state_dict(progress=True)
    else:
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"backbone weights {weights}: no such file")
        state = torch.load(weights, map_location="cpu", weights_only=True)
        for key in ("state_dict", "model"):
            if isinstance(state, dict) and key in state and isinstance(state[key], dict):
                state = state[key]
    state = {k.removeprefix("backbone."): v for k, v in state.items() if not k.startswith("fc.")}
    missing, _ = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.") and "num_batches_tracked" not in k]
    if missing:
        raise ValueError(
            f"backbone weights {weights}: not a {name} state dict, missing {missing[:3]}..."
        )


class ResNetBackbone(nn.Module):
    """images (B, 3, H, W) normalised -> [c2, c3, c4, c5] at strides 4, 8, 16, 32."""

    def __init__(self, name: str = "resnet50", weights: str | None = None, norm: str = "batch"):
        super().__init__()
        if name not in BACKBONE_CHANNELS:
            raise ValueError(f"unknown backbone {name!r}; choose from {sorted(BACKBONE_CHANNELS)}")
        if norm not in ("batch", "frozen"):
            raise ValueError(f"backbone_norm must be 'batch' or 'frozen', got {norm!r}")
        norm_layer = FrozenBatchNorm2d if norm == "frozen" else nn.BatchNorm2d
        net = getattr(torchvision.models, name)(weights=None, norm_layer=norm_layer)
        if weights:
            _load_weights(net, name, weights)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layers = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])
        self.channels = BACKBONE_CHANNELS[name]

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(images)
        features = []
        for layer in self.layers:
            x = layer(x)
            features.append(x)
        return features
