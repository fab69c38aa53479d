"""How the predictor's network runs: mixed precision (AMP), channels_last layout, torch.compile.

All three are options of `Box2MaskPredictor` and off by default, so the float32 CPU path is
unchanged. AMP is CUDA only: on a CPU, bf16/fp16 autocast is slower than float32 on most
processors and changes the masks, so asking for it there is an error rather than a silent
fallback. Only the network runs under autocast; its outputs are cast to float32 before any
thresholding, scoring or level-set refinement.
"""

import contextlib

import torch

__all__ = ["AMP_CHOICES", "amp_dtype", "resolve_amp", "autocast", "image_encoder"]

AMP_CHOICES = ("off", "bf16", "fp16")  # "off" = float32


def resolve_amp(amp: str, device: torch.device) -> str:
    """A training config's `amp` ("auto" | "fp32" | "bf16" | "fp16") as one of AMP_CHOICES.

    "auto" is bf16 on a CUDA device that supports it, fp16 on other CUDA devices, "off" off
    CUDA; "fp32" is "off". Other values pass through to `amp_dtype`, which checks them.
    """
    if amp == "fp32" or (amp == "auto" and device.type != "cuda"):
        return "off"
    if amp == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return amp


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for an `amp` choice on `device` (None for "off").

    Raises ValueError naming the problem: an unknown choice, AMP on a non-CUDA device, or bf16
    on a GPU without bf16 support.
    """
    if amp not in AMP_CHOICES:
        raise ValueError(f"amp must be one of {', '.join(AMP_CHOICES)}; got {amp!r}")
    if amp == "off":
        return None
    if device.type != "cuda":
        raise ValueError(
            f"amp={amp!r} needs a CUDA device (autocast runs on CUDA only); on {device} the "
            "model runs in float32: use amp 'off'"
        )
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        raise ValueError(
            f"amp='bf16': {torch.cuda.get_device_name(device)} has no bfloat16 support; use 'fp16'"
        )
    return torch.bfloat16 if amp == "bf16" else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None):
    """An autocast context for `dtype` on `device`, or a no-op context when dtype is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def image_encoder(model: torch.nn.Module, *, channels_last: bool, compile: bool):
    """The callable that encodes a (B, 3, H, W) batch: `model.encode`, optionally in
    channels_last layout (the model's weights are converted in place) and/or torch.compile'd.

    A compiled encoder compiles on its first call for each new image size (seconds to minutes);
    the model itself is unchanged by compiling.
    """
    if channels_last:
        model.to(memory_format=torch.channels_last)
    encode = model.encode
    if compile:
        encode = torch.compile(encode)
    if not channels_last:
        return encode

    def encode_channels_last(images: torch.Tensor) -> dict:
        return encode(images.contiguous(memory_format=torch.channels_last))

    return encode_channels_last
