"""A mask kept as its bounding rectangle: what an annotator session holds per label.

A full-size (H, W) bool mask per label costs H * W bytes (0.75 MB at 1024 x 768) however small the
object; a session showing an image with many labels, times many open tabs, held hundreds of MB.
A `MaskPatch` keeps only the rectangle around the True pixels (lossless: nothing outside it is
set), so memory grows with the objects' size, not the image's. Full-size masks are made only
when needed (RLE encoding) and dropped at once.
"""

from dataclasses import dataclass

import numpy as np

__all__ = ["MaskPatch"]


@dataclass(frozen=True)
class MaskPatch:
    top: int  # image row of pixels[0, 0]
    left: int  # image column of pixels[0, 0]
    pixels: np.ndarray  # (h, w) bool: the mask inside its bounding rectangle
    shape: tuple[int, int]  # (H, W) of the full image

    @classmethod
    def from_mask(cls, mask: np.ndarray) -> "MaskPatch":
        """(H, W) bool mask -> its patch (an empty mask keeps a 0 x 0 patch). The pixels are a
        copy: the full-size mask can be freed."""
        mask = np.asarray(mask, dtype=bool)
        if mask.ndim != 2:
            raise ValueError(f"mask must be 2-D (H, W), got shape {mask.shape}")
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        shape = (int(mask.shape[0]), int(mask.shape[1]))
        if rows.size == 0:
            return cls(0, 0, np.zeros((0, 0), dtype=bool), shape)
        y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        return cls(y0, x0, mask[y0:y1, x0:x1].copy(), shape)

    @property
    def bottom(self) -> int:
        return self.top + self.pixels.shape[0]

    @property
    def right(self) -> int:
        return self.left + self.pixels.shape[1]

    @property
    def nbytes(self) -> int:
        return int(self.pixels.nbytes)

    def window(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """The mask over image rows y0:y1, columns x0:x1 (clipped to the image): (h, w) bool."""
        height, width = self.shape
        y0, y1 = max(int(y0), 0), min(int(y1), height)
        x0, x1 = max(int(x0), 0), min(int(x1), width)
        out = np.zeros((max(y1 - y0, 0), max(x1 - x0, 0)), dtype=bool)
        iy0, iy1 = max(y0, self.top), min(y1, self.bottom)
        ix0, ix1 = max(x0, self.left), min(x1, self.right)
        if iy1 > iy0 and ix1 > ix0:
            out[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0] = self.pixels[
                iy0 - self.top : iy1 - self.top, ix0 - self.left : ix1 - self.left
            ]
        return out

    def full(self) -> np.ndarray:
        """The full-size (H, W) bool mask (a new array)."""
        return self.window(0, self.shape[0], 0, self.shape[1])
