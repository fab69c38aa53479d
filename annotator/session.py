"""The annotator's logic, free of any UI: one `AnnotationSession` per browser tab.

The Gradio file (app.py) only wires widgets to these methods. A session shows one image at a time;
its labels live in "slots" (one per box on screen, in display order) holding the stored Label and
its decoded mask. Every action writes to the label store at once and is recorded as (slot, label
before, label after, prompt before, prompt after) so it can be undone and redone one step at a
time: every box, click, brush disc, smoothing change, refine and tighten is its own step, and
undoing a click also takes that click out of the prompt. Undo and redo are ordinary store writes,
so a stale revision (another tab changed the label) is refused there too.

Model calls go through one shared `PredictorService` (annotator/predictor_service.py;
`model_masks` groups the boxes into predict calls); `reload_predictor` swaps the model without a
restart. A slot and an undo step are annotator/slots.py; which image comes next is
annotator/image_queue.py (its "label next" order: annotator/label_next_queue.py); the brush is
annotator/brush.py.
"""

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from annotator import image_queue
from annotator.brush import paint_disc
from annotator.mask_patch import MaskPatch
from annotator.model_masks import decode_slots
from annotator.overlay import class_color, crop_view, render_overlay
from annotator.predictor_service import PredictorService
from annotator.slots import (
    SMOOTHING_LEVELS,
    Change,
    Slot,
    match_boxes,
    patch_from_rle,
    shown_box,
    ui_box,
)
from annotator.store import Label, LabelStore, StaleWriteError
from box2mask.io.image_io import load_image
from box2mask.io.rle import encode_rle, rle_area, rle_to_bbox_xywh

__all__ = ["AnnotationSession"]

# Undo steps kept per image (oldest dropped first): a tab left open on one image all day must not
# keep every change it ever made. Each step holds two labels (RLE masks, a few KB), no pixels.
UNDO_LIMIT = 200


@dataclass
class AnnotationSession:
    store: LabelStore  # where every action is saved at once
    images_dir: Path  # the only folder images are read from
    service: PredictorService  # the shared model
    classes: list[str]  # class names offered for boxes (first = default)
    image_key: str | None = None  # the open image (path relative to images_dir)
    image: np.ndarray | None = None  # its pixels, (H, W, 3) uint8 RGB
    slots: dict[int, Slot] = field(default_factory=dict)
    order: list[int] = field(default_factory=list)  # live slot keys in display order
    selected: int | None = None  # index into `order`
    undo_stack: list[Change] = field(default_factory=list)
    redo_stack: list[Change] = field(default_factory=list)
    last_class: str | None = None  # the class used last (number key, relabel): the next box's

    # -- images --------------------------------------------------------------------------------
    def image_list(self, status_filter: str = "all") -> list[str]:
        return image_queue.image_list(self.store, status_filter, rank=self._label_next)

    def progress(self) -> tuple[int, int]:
        """(images done, images in all)."""
        return image_queue.progress(self.store)

    def open_image(self, image_key: str) -> None:
        """Show one image of the folder (path traversal and symlinks out of the folder refused)."""
        root = Path(self.images_dir).resolve()
        path = (root / image_key).resolve()
        if not path.is_relative_to(root):
            raise PermissionError(f"{image_key}: outside the images folder {root}")
        self.image = load_image(path)
        self.image_key = image_key
        self.service.prepare(image_key, self.image)
        self._load_labels()

    def step_image(self, step: int, status_filter: str = "all") -> str | None:
        """Open the next (+1) or previous (-1) image among those passing the filter."""
        target = image_queue.step_target(
            self.store, self.image_key, step, status_filter, rank=self._label_next
        )
        if target is not None:
            self.open_image(target)
        return target

    def set_done(self, done: bool = True) -> None:
        self.store.set_image_done(self.image_key, done)

    # -- boxes from the UI ---------------------------------------------------------------------
    def on_boxes_changed(self, boxes: list[dict]) -> bool:
        """Apply the UI's box list: add, move/resize, relabel or delete. True if anything changed.

        New and moved boxes are decoded by the model (in one call per smoothing level). Boxes
        that are degenerate (a box still being drawn) or outside the image are ignored. A new box
        drawn with the UI's default class (the first) gets `next_class`, the last one used.
        """
        shape, default = self.image.shape, self.classes[0]
        new = [ui_box(b, image_shape=shape, default_class=default) for b in boxes]
        new = [box for box in new if box is not None]
        old = [self.slots[k].shown for k in self.order]
        pairs, added, removed = match_boxes(old, new)
        if not added and not removed and all(i == j and old[i] == new[j] for i, j in pairs):
            return False
        slot_of_new = {j: self.order[i] for i, j in pairs}
        for i in removed:
            self._write(self.order[i], None)
        to_predict = []
        for j in added:
            if new[j][4] == self.classes[0]:  # the UI's default: the last class used instead
                new[j] = (*new[j][:4], self.next_class)
            self.last_class = new[j][4]
            key = max(self.slots, default=-1) + 1
            self.slots[key] = Slot(label=None, shown=new[j])
            slot_of_new[j] = key
            to_predict.append(key)
        for i, j in pairs:
            key, before = self.order[i], old[i]
            self.slots[key].shown = new[j]
            if before[:4] != new[j][:4]:
                to_predict.append(key)
            elif before[4] != new[j][4]:
                self._write(key, replace(self.slots[key].label, class_name=new[j][4]))
            if before[4] != new[j][4]:
                self.last_class = new[j][4]
        self.order = [slot_of_new[j] for j in range(len(new))]
        try:
            self._predict(to_predict)
        finally:  # a box whose decode or save failed is not shown as a label
            self.order = [k for k in self.order if self.slots[k].label is not None]
        if to_predict:
            self.selected = self.order.index(to_predict[-1])
        elif self.selected is not None and self.selected >= len(self.order):
            self.selected = len(self.order) - 1 if self.order else None
        return True

    # -- per-label actions (index = position in the label list) ----------------------------------
    def select(self, index: int | None) -> None:
        self.selected = index if index is not None and 0 <= index < len(self.order) else None

    def deselect(self) -> None:
        """Escape: no label selected (class keys then only choose the next box's class)."""
        self.selected = None

    @property
    def next_class(self) -> str:
        """The class a newly drawn box gets: the last one used, else the first."""
        return self.last_class if self.last_class in self.classes else self.classes[0]

    def set_class(self, number: int) -> None:
        """Number key 1-9: class `number` becomes the next box's class, and the selected label's
        (one undo step) when one is selected."""
        if not 1 <= number <= min(9, len(self.classes)):
            raise ValueError(f"no class on key {number}: the classes are {self.classes[:9]}")
        name = self.classes[number - 1]
        self.last_class = name
        if self.selected is not None:
            key = self.order[self.selected]
            if self.slots[key].label.class_name != name:
                self._write(key, replace(self.slots[key].label, class_name=name))

    def accept(self, index: int | None = None) -> None:
        key = self._key(index)
        self._write(key, replace(self.slots[key].label, verified=True))

    def reject(self, index: int | None = None) -> None:
        """The proposed mask is wrong: drop it (the box stays; brush or re-run to make a new one)."""
        key = self._key(index)
        label = self.slots[key].label
        self._write(key, replace(label, mask_rle=None, verified=False, source="human", score=None))

    def refine(self, delta: int, index: int | None = None) -> None:
        """Re-run the model on one box with more (+1) or less (-1) smoothing."""
        key = self._key(index)
        slot = self.slots[key]
        before = slot.prompt
        slot.smoothing = int(np.clip(slot.smoothing + delta, 0, len(SMOOTHING_LEVELS) - 1))
        self._predict_prompted(key, before)

    def refine_mask(self, index: int | None = None) -> None:
        """Re-run the model on one label started from its current mask (imported, brushed or
        proposed) instead of from its box: the mask is refined, not replaced."""
        key = self._key(index)
        if self.slots[key].mask is None:
            raise ValueError("this label has no mask to refine: paint one or re-run its box")
        if not self.service.can_refine:
            raise ValueError("this model cannot refine a mask (its predict takes no init_masks)")
        self._predict([key], from_mask=True)

    def tighten(self, index: int | None = None) -> None:
        """Replace one label's box by its mask's tight box (the mask is kept); undoable."""
        key = self._key(index)
        label = self.slots[key].label
        if label.mask_rle is None or rle_area(label.mask_rle) == 0:
            raise ValueError("this label has no mask to tighten its box to")
        x, y, w, h = rle_to_bbox_xywh(label.mask_rle)
        if [x, y, x + w, y + h] != list(label.box_xyxy):  # already tight: no write, no undo step
            self._write(key, replace(label, box_xyxy=[x, y, x + w, y + h]))

    def click(self, x: float, y: float, inside: bool, index: int | None = None) -> None:
        """A positive (inside) or negative click at image pixel (x, y): the model corrects the
        label's current mask with every click of this label (`model_masks.decode_slots`); the
        click's ms is `service.last_predict_ms`."""
        key = self._key(index)
        before = self.slots[key].prompt
        self.slots[key].clicks.append((float(x), float(y), int(bool(inside))))
        self._predict_prompted(key, before)

    def brush(
        self, x: float, y: float, radius: float, erase: bool, index: int | None = None
    ) -> None:
        """Add (or erase) a disc of `radius` px at image pixel (x, y) to one label's mask."""
        key = self._key(index)
        slot = self.slots[key]
        mask = paint_disc(
            slot.mask,
            box_xyxy=slot.label.box_xyxy,
            image_shape=self.image.shape,
            x=x,
            y=y,
            radius=radius,
            erase=erase,
        )
        # no model mask under it
        drawn = slot.label.mask_rle is None or slot.label.source == "human"
        source = "human" if drawn else "human-corrected"
        self._write(key, replace(slot.label, mask_rle=encode_rle(mask), source=source), mask=mask)

    def delete(self, index: int | None = None) -> None:
        key = self._key(index)
        self._write(key, None)
        self.order.remove(key)
        self.selected = None

    # -- undo / redo ----------------------------------------------------------------------------
    def undo(self) -> bool:
        return self._replay(self.undo_stack, self.redo_stack, use_before=True)

    def redo(self) -> bool:
        return self._replay(self.redo_stack, self.undo_stack, use_before=False)

    # -- model ----------------------------------------------------------------------------------
    def reload_predictor(self, checkpoint=None, device: str = "cpu", predictor=None) -> str:
        """Hot-swap the shared model (for every tab); returns the new model version."""
        if predictor is None:
            from box2mask import build_predictor

            predictor = build_predictor(checkpoint, device)
        self.service.reload(predictor)
        return self.service.model_version

    # -- what the UI shows ----------------------------------------------------------------------
    def labels_shown(self) -> list[Label]:
        return [self.slots[k].label for k in self.order]

    def annotator_boxes(self) -> list[dict]:
        """Boxes in gradio-image-annotation's format (absolute integer pixels)."""
        out = []
        for k in self.order:
            x0, y0, x1, y1, name = self.slots[k].shown
            color = class_color(self.classes, name)
            out.append(dict(xmin=x0, ymin=y0, xmax=x1, ymax=y1, label=name, color=color))
        return out

    def overlay(self) -> np.ndarray:
        """The image with every mask tinted in its class colour, the selected one outlined."""
        masks = [self.slots[k].mask for k in self.order]
        colors = [class_color(self.classes, self.slots[k].shown[4]) for k in self.order]
        return render_overlay(self.image, masks, colors, selected=self.selected)

    def selected_crop(self, min_side: int = 320) -> tuple[np.ndarray, float, float, float] | None:
        """(zoomed view of the selected box, scale, x0, y0): a click at (u, v) is image pixel
        (x0 + u / scale, y0 + v / scale). None when nothing is selected."""
        if self.selected is None:
            return None
        slot = self.slots[self.order[self.selected]]
        return crop_view(self.image, slot.mask, slot.label.box_xyxy, min_side=min_side)

    # -- internals ------------------------------------------------------------------------------
    def _label_next(self, keys: list[str]) -> list[str]:  # cached scores, never a model call
        return self.service.label_next.order(self.store, keys, images_dir=self.images_dir)

    def _key(self, index: int | None) -> int:
        index = self.selected if index is None else index
        if index is None or not 0 <= index < len(self.order):
            raise IndexError("select a label first (click it in the list)")
        self.selected = index
        return self.order[index]

    def _load_labels(self) -> None:
        """(Re)read the image's labels from the store (masks decoded once); drops the undo history."""
        self.slots, self.order, self.selected = {}, [], None
        self.undo_stack.clear()
        self.redo_stack.clear()
        for key, label in enumerate(self.store.labels(self.image_key)):
            mask = patch_from_rle(label.mask_rle)
            self.slots[key] = Slot(label=label, mask=mask, shown=shown_box(label))
            self.order.append(key)

    def _predict_prompted(self, key: int, prompt_before: tuple) -> None:
        """Decode one slot whose prompt just changed from `prompt_before`: one undo step that
        restores both the mask and the prompt. A failed decode puts the prompt back."""
        try:
            self._predict([key], prompt_before=prompt_before)
        except BaseException:
            self.slots[key].set_prompt(prompt_before)
            raise

    def _predict(
        self, keys: list[int], from_mask: bool = False, prompt_before: tuple | None = None
    ) -> None:
        """Decode the boxes of these slots and save the masks (`model_masks.decode_slots`).
        `prompt_before`: the slot's prompt before the action (one key only), for its undo step."""
        masks = decode_slots(
            self.service,
            image_key=self.image_key,
            image=self.image,
            slots=self.slots,
            keys=keys,
            from_mask=from_mask,
        )
        for key, label, mask in masks:
            self._write(key, label, mask=mask, prompt_before=prompt_before)

    def _write(
        self,
        key: int,
        target: Label | None,
        mask=None,
        record: bool = True,
        prompt_before: tuple | None = None,
    ) -> None:
        """Make the store hold `target` for this slot (add / update / delete) and remember it
        as one undo step, with the slot's prompt before (default: unchanged) and after."""
        slot = self.slots[key]
        current = slot.label
        try:
            if current is None and target is None:
                return
            if current is None:
                saved = self.store.add(replace(target, image=self.image_key, id=None, revision=0))
            elif target is None:
                self.store.delete(current.id, current.revision)
                saved = None
            else:
                saved = self.store.update(replace(target, id=current.id, revision=current.revision))
        except (StaleWriteError, KeyError):
            self._load_labels()  # show what the store holds now
            raise
        if record:
            prompt_before = slot.prompt if prompt_before is None else prompt_before
            change = Change(key, current, saved, prompt_before, prompt_after=slot.prompt)
            self.undo_stack.append(change)
            self.redo_stack.clear()
            if len(self.undo_stack) > UNDO_LIMIT:
                del self.undo_stack[:-UNDO_LIMIT]
                self._drop_dead_slots()
        slot.label = saved
        if saved is None:
            slot.mask = None  # an undo decodes it again from the label it restores
        else:
            slot.mask = (
                MaskPatch.from_mask(mask) if mask is not None else patch_from_rle(saved.mask_rle)
            )
            slot.shown = shown_box(saved)

    def _drop_dead_slots(self) -> None:
        """Forget deleted labels that no undo or redo step can bring back."""
        history = {c.slot for c in self.undo_stack} | {c.slot for c in self.redo_stack}
        for key in [k for k, slot in self.slots.items() if slot.label is None]:
            if key not in history and key not in self.order:
                del self.slots[key]

    def _replay(self, source: list[Change], target: list[Change], use_before: bool) -> bool:
        """Undo (use_before) or redo one change as a new store write; False when nothing to do."""
        if not source:
            return False
        change = source.pop()
        try:
            self._write(change.slot, change.before if use_before else change.after, record=False)
        except (StaleWriteError, KeyError):
            source.clear()  # the history no longer matches the store
            target.clear()
            raise
        target.append(change)
        # the prompt comes back with the mask: a click after an undo resends the earlier clicks
        prompt = change.prompt_before if use_before else change.prompt_after
        self.slots[change.slot].set_prompt(prompt)
        alive = self.slots[change.slot].label is not None
        if alive and change.slot not in self.order:
            self.order.append(change.slot)
        elif not alive and change.slot in self.order:
            self.order.remove(change.slot)
        self.selected = self.order.index(change.slot) if alive else None
        return True
