"""The Box2Mask-T network (backbone, pixel decoder, masked-attention decoder, box prompts)."""

from box2mask.model.box2mask_model import Box2MaskModel, build_model

__all__ = ["Box2MaskModel", "build_model"]
