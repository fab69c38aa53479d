"""Dataclass configs of the Box2Mask-T model and its losses (Box2Mask, Li et al., arXiv 2212.01579).

Defaults follow the reference Box2Mask-T (R50, 100 queries, 9 decoder layers). YAML files override
single fields with flat dotted keys (`model.num_queries: 20`, see train/config.py).
"""

from dataclasses import dataclass

__all__ = ["MASK_STRIDE", "ModelConfig", "LossConfig"]

# Input pixels per mask-grid pixel: masks are predicted on the pixel decoder's finest level, the
# backbone's stride-4 map (fixed by the architecture, so not a config field).
MASK_STRIDE = 4


@dataclass
class ModelConfig:
    backbone: str = (
        "resnet50"  # torchvision ResNet: "resnet18" | "resnet34" | "resnet50" | "resnet101"
    )
    backbone_weights: str | None = None  # None = random init, a local .pt/.pth path, or "imagenet"
    backbone_norm: str = (
        "batch"  # "batch" (trainable BatchNorm) or "frozen" (for pretrained weights)
    )
    num_classes: int = (
        80  # K foreground classes; the class head has K + 1 outputs (last = no object)
    )
    num_queries: int = 100  # N learned object queries
    hidden_dim: int = 256  # transformer width (and pixel-decoder width)
    mask_dim: int = 256  # channels of the stride-4 mask features and the mask embeddings
    nheads: int = 8  # attention heads
    dec_layers: int = 9  # transformer decoder layers (each one predicts: deep supervision)
    dim_feedforward: int = 2048  # hidden size of the decoder feed-forward blocks
    dropout: float = 0.0  # dropout in the decoder (Mask2Former uses 0)
    pixel_mean: tuple[float, float, float] = (
        123.675,
        116.28,
        103.53,
    )  # RGB mean on the 0..255 scale
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)  # RGB std on the 0..255 scale


@dataclass
class LossConfig:
    # --- weights (weight_dict; the level-set terms are multiplied by weight_levelset) ---
    weight_cls: float = 2.0  # class cross-entropy
    weight_proj: float = 5.0  # box projection dice
    weight_levelset: float = 1.0  # overall level-set weight (multiplies the three terms below)
    weight_levelset_img: float = 0.05  # Chan-Vese energy on the image (resized to the mask grid)
    weight_levelset_feat: float = 5.0  # Chan-Vese energy on the smoothed deep mask features
    weight_lcm: float = 0.2  # local consistency: L1 between affinity-refined and raw mask
    weight_mask_bce: float = 5.0  # binary cross-entropy to a mask target (human or teacher)
    weight_mask_dice: float = 5.0  # dice loss to a mask target (only instances that have one)
    weight_prompt: float = 1.0  # multiplies every loss of the box-prompt path
    no_object_weight: float = 0.1  # class weight of the "no object" class in the cross-entropy
    gamma: float = 0.0  # length (total variation) term of the level-set energy; 0 in training
    deep_supervision: bool = True  # also apply every loss to each earlier decoder layer (`_i`)
    # --- box-level Hungarian matcher ---
    cost_class: float = 2.0  # weight of -p(class) in the matching cost
    cost_proj: float = 5.0  # weight of the projection dice cost between query mask and GT box
    # --- local consistency module (LCM) ---
    lcm_dilation: int = 2  # dilation of the 8-neighbourhood
    lcm_steps: int = 10  # affinity propagation steps
    lcm_temperature: float = 0.3  # affinity = softmax(-(|I(x) - I(y)| / std / temperature)^2)
    # --- deep-feature level set: edge-aware smoothing of mask_features ---
    feat_smooth_kernel: int = 5  # window side of the image-guided bilateral filter (odd)
    feat_smooth_sigma_color: float = 0.5  # range sigma on the normalised image (about 1/4 std)
    feat_smooth_iters: int = 2  # times the filter is applied
    feat_detach: bool = True  # detach the deep features in the energy (see losses.py)
    # --- box-prompt path (trained on jittered GT boxes, no matching) ---
    prompt_jitter: float = 0.1  # each box side moves by U(-j, j) * box size
    prompt_max_per_image: int = 50  # at most this many prompts per image (random subset)
