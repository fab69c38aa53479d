"""What an annotator session holds per box on screen (`Slot`: the stored label, its decoded mask,
its prompt), one undo step (`Change`), and the pairing of the UI's new box list with the previous
one (`match_boxes`, boxes read by `ui_box`).
"""

from dataclasses import dataclass, field

from annotator.mask_patch import MaskPatch
from annotator.store import Label
from box2mask.io.rle import decode_rle
from box2mask.ops.box_ops import BoxError, validate_box

__all__ = [
    "SMOOTHING_LEVELS",
    "DEFAULT_SMOOTHING",
    "Slot",
    "Change",
    "match_boxes",
    "patch_from_rle",
    "shown_box",
    "ui_box",
]

# Smoothing choices for "re-run with more / less smoothing"; None = the predictor's own default.
SMOOTHING_LEVELS = (0.0, 0.5, None, 2.0, 4.0)
DEFAULT_SMOOTHING = 2  # index into SMOOTHING_LEVELS
MIN_BOX = 2.0  # boxes with a side under this many pixels are ignored (still being drawn)


@dataclass
class Slot:
    label: Label | None  # the stored label (None after a delete: kept for undo)
    mask: MaskPatch | None = None  # the decoded mask, kept as its bounding rectangle
    smoothing: int = DEFAULT_SMOOTHING  # index into SMOOTHING_LEVELS
    shown: tuple | None = None  # (xmin, ymin, xmax, ymax, class) as last sent to the UI
    clicks: list = field(default_factory=list)  # [(x, y, 1 inside | 0 outside)] image pixels

    @property
    def prompt(self) -> tuple:
        """(clicks, smoothing): what the model is asked with, saved by each undo step."""
        return tuple(self.clicks), self.smoothing

    def set_prompt(self, prompt: tuple) -> None:
        clicks, self.smoothing = prompt
        self.clicks = list(clicks)


@dataclass
class Change:
    slot: int  # slot key
    before: Label | None  # label content before the action (None: did not exist)
    after: Label | None  # label content after the action (None: deleted)
    prompt_before: tuple = ((), DEFAULT_SMOOTHING)  # the slot's (clicks, smoothing) before
    prompt_after: tuple = ((), DEFAULT_SMOOTHING)  # ... and after the action


def match_boxes(
    old: list[tuple], new: list[tuple]
) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Pair the UI's new box list with the previous one.

    Identical boxes pair first; the rest pair in order (a moved, resized or relabelled box);
    leftovers are added (new) or removed (old) boxes. Returns (pairs (old_i, new_i), added new_i,
    removed old_i).
    """
    free_old = list(range(len(old)))
    pairs, unmatched_new = [], []
    for j, box in enumerate(new):
        i = next((i for i in free_old if old[i] == box), None)
        if i is None:
            unmatched_new.append(j)
        else:
            free_old.remove(i)
            pairs.append((i, j))
    n = min(len(free_old), len(unmatched_new))
    pairs += list(zip(free_old[:n], unmatched_new[:n], strict=True))
    return pairs, unmatched_new[n:], free_old[n:]


def patch_from_rle(mask_rle: dict | None) -> MaskPatch | None:
    """A stored RLE decoded into the patch a slot keeps (the full-size mask is dropped at once)."""
    return MaskPatch.from_mask(decode_rle(mask_rle)) if mask_rle is not None else None


def shown_box(label: Label) -> tuple:
    """(xmin, ymin, xmax, ymax, class) of a stored label as the UI shows it (integer pixels)."""
    x0, y0, x1, y1 = label.box_xyxy
    return (int(round(x0)), int(round(y0)), int(round(x1)), int(round(y1)), label.class_name)


def ui_box(box: dict, *, image_shape: tuple, default_class: str) -> tuple | None:
    """A UI box as (xmin, ymin, xmax, ymax, class) clipped to the image; None if unusable (a box
    still being drawn, or one outside the image)."""
    h, w = image_shape[:2]
    corners = [box["xmin"], box["ymin"], box["xmax"], box["ymax"]]
    try:
        x0, y0, x1, y1 = validate_box(corners, w, h, min_size=MIN_BOX)
    except BoxError:
        return None
    name = box.get("label") or default_class
    return (int(round(x0)), int(round(y0)), int(round(x1)), int(round(y1)), name)
