"""sRGB -> CIE Lab in PyTorch (D65 white), in OpenCV's 8-bit units.

OpenCV's 8-bit Lab scales L from [0, 100] to [0, 255] and offsets a and b by 128, so a unit is
about one step of an 8-bit channel. The level-set default bins these units
(box2mask/levelset/region_competition.py, through OpenCV); losses that compare colours of pixel
pairs read the same units from this function, differentiably and on any device.
"""

import torch

__all__ = ["rgb_to_lab"]

# sRGB (linear) -> XYZ, D65, then divided by the white point (Xn, Yn, Zn)
_RGB_TO_XYZ = torch.tensor(
    [
        [0.412453 / 0.950456, 0.357580 / 0.950456, 0.180423 / 0.950456],
        [0.212671, 0.715160, 0.072169],
        [0.019334 / 1.088754, 0.119193 / 1.088754, 0.950227 / 1.088754],
    ]
)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) sRGB in [0, 1] -> (N, 3, H, W) Lab: L in [0, 255], a and b around 128."""
    linear = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = torch.einsum("ij,njhw->nihw", _RGB_TO_XYZ.to(rgb), linear)
    eps = (6 / 29) ** 3
    f = torch.where(xyz > eps, xyz.clamp_min(eps) ** (1 / 3), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    lightness = 116 * f[:, 1] - 16
    a = 500 * (f[:, 0] - f[:, 1])
    b = 200 * (f[:, 1] - f[:, 2])
    return torch.stack([lightness * 255 / 100, a + 128, b + 128], dim=1)
