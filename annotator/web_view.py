"""What the canvas front-end is sent: labels as crop-sized masks, and only what changed.

A label goes out as its box, class, colour, flags and its mask as a COCO RLE of the mask's own
bounding rectangle (`MaskPatch.pixels`) with that rectangle's top-left corner: a few hundred bytes
for a typical object, whatever the image size. `ViewTracker` remembers what one page was sent,
so an event's answer carries only the labels whose content changed, the ids of those gone, and
the display order only when it changed.
"""

from dataclasses import dataclass, field

from annotator.overlay import class_color
from box2mask.io.rle import encode_rle

__all__ = ["label_json", "ViewTracker"]


def label_json(session, key: int) -> dict:
    """One slot of `session` as the page draws it (mask: RLE of its bounding rectangle)."""
    slot = session.slots[key]
    label, patch = slot.label, slot.mask
    x0, y0, x1, y1, name = slot.shown
    mask = None
    if patch is not None and patch.pixels.size:
        rle = encode_rle(patch.pixels)
        mask = dict(top=patch.top, left=patch.left, h=rle["size"][0], w=rle["size"][1])
        mask["counts"] = rle["counts"]
    return dict(
        id=key,
        box=[float(x0), float(y0), float(x1), float(y1)],
        cls=name,
        color=list(class_color(session.classes, name)),
        revision=label.revision,
        verified=bool(label.verified),
        source=label.source,
        score=None if label.score is None else round(float(label.score), 3),
        mask=mask,
    )


def _signature(slot) -> tuple:
    label = slot.label
    return (label.id, label.revision, tuple(slot.shown), id(slot.mask))


@dataclass
class ViewTracker:
    """What one page holds: slot key -> signature of the label it was sent, and the order."""

    sent: dict = field(default_factory=dict)  # slot key -> _signature when last sent
    order: list = field(default_factory=list)  # the display order last sent

    def full(self, session) -> dict:
        """Everything on the open image (sent when an image is opened)."""
        self.sent, self.order = {}, []
        return self.delta(session)

    def delta(self, session) -> dict:
        """The changes since the last answer: {order?, changed, removed, selected, next_class}."""
        changed = []
        for key in session.order:
            signature = _signature(session.slots[key])
            if self.sent.get(key) != signature:
                changed.append(label_json(session, key))
                self.sent[key] = signature
        removed = [key for key in self.sent if key not in session.order]
        for key in removed:
            del self.sent[key]
        out = dict(changed=changed, removed=removed, selected=session.selected)
        out["next_class"] = session.next_class
        if list(session.order) != self.order:
            self.order = list(session.order)
            out["order"] = self.order
        return out
