"""An annotator session's memory stays bounded: one image, box-sized masks, a capped history.

A server runs all day with one session per tab: what a session holds must not grow with the
images visited, the labels drawn or the actions taken. Counted directly on the session object
(every NumPy array reachable from it) rather than by RSS, which is noisy.
"""

import numpy as np
import pytest
from PIL import Image

import annotator.session as session_module
from annotator.mask_patch import MaskPatch
from annotator.predictor_service import PredictorService
from annotator.session import AnnotationSession
from annotator.store import SQLiteStore
from box2mask.io.rle import decode_rle
from tests.test_session import CountingPredictor

H, W = 120, 160
N_IMAGES = 50


def _arrays(obj, skip: tuple, seen=None):
    """Every NumPy array reachable from `obj` through attributes and containers (not `skip`)."""
    seen = set() if seen is None else seen
    if id(obj) in seen or isinstance(obj, skip):
        return []
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        return [obj]
    if isinstance(obj, dict):
        children = list(obj.values())
    elif isinstance(obj, (list, tuple, set)):
        children = list(obj)
    elif hasattr(obj, "__dict__"):
        children = list(vars(obj).values())
    else:
        return []
    return [a for child in children for a in _arrays(child, skip, seen)]


def _held(session) -> list[np.ndarray]:
    return _arrays(session, skip=(SQLiteStore, PredictorService))


@pytest.fixture
def folder(tmp_path):
    """N_IMAGES noisy images, each with a bright disc at its own place; a store; a session."""
    rng = np.random.default_rng(0)
    images = tmp_path / "images"
    images.mkdir()
    yy, xx = np.mgrid[:H, :W]
    for i in range(N_IMAGES):
        img = rng.integers(20, 60, (H, W, 3)).astype(np.uint8)
        cx, cy = 40 + i % 80, 40 + i % 40
        img[(xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= 14**2] = (230, 40, 40)
        Image.fromarray(img).save(images / f"{i:03d}.png")
    store = SQLiteStore(tmp_path / "labels.sqlite", images)
    session = AnnotationSession(store, images, PredictorService(CountingPredictor()), ["ball"])
    yield session, store
    store.close()


def _box(x0, y0, x1, y1):
    return dict(xmin=x0, ymin=y0, xmax=x1, ymax=y1, label="ball")


def test_a_session_visiting_50_images_holds_one_image_and_box_sized_masks(folder):
    session, store = folder
    held_after = []
    for i, key in enumerate(store.list_images()):
        session.open_image(key)
        cx, cy = 40 + i % 80, 40 + i % 40
        disc, other = _box(cx - 18, cy - 18, cx + 18, cy + 18), _box(2, 70, 42, 118)
        session.on_boxes_changed([disc])
        session.on_boxes_changed([disc, other])
        session.accept(0)
        session.brush(x=cx, y=cy, radius=4, erase=True, index=0)
        session.refine(+1, index=1)
        held_after.append(sum(a.nbytes for a in _held(session)))
    assert len(store.labels("000.png")) == 2 and store.image_status("049.png") == "in progress"
    arrays = _held(session)
    # the open image is the only full-size array: no (H, W) mask per label, none kept from the
    # 49 images visited before
    big = [a for a in arrays if a.shape[0] * a.shape[1] >= H * W]
    assert [a.shape for a in big] == [(H, W, 3)] and big[0] is session.image
    patches = [slot.mask for slot in session.slots.values() if slot.mask is not None]
    assert len(patches) == 2 and all(isinstance(p, MaskPatch) for p in patches)
    boxes_area = 36 * 36 + 40 * 48
    assert sum(p.nbytes for p in patches) <= boxes_area < H * W  # under one full-size mask
    assert sum(a.nbytes for a in arrays) <= session.image.nbytes + boxes_area
    # O(1) in the images visited: as much held after the 50th image as after the 1st
    assert max(held_after) <= held_after[0] + boxes_area
    for slot in session.slots.values():  # the patches are the stored masks, losslessly
        assert np.array_equal(slot.mask.full(), decode_rle(slot.label.mask_rle))


def test_many_labels_on_one_image_cost_their_boxes_not_the_image(folder):
    session, store = folder
    session.open_image("000.png")
    boxes = [
        _box(4 + 10 * c, 4 + 25 * r, 14 + 10 * c, 24 + 25 * r) for r in range(4) for c in range(14)
    ]
    session.on_boxes_changed(boxes)
    session.open_image("000.png")  # masks decoded from the store
    assert len(session.order) == len(boxes) == 56
    masks = sum(slot.mask.nbytes for slot in session.slots.values())
    assert masks <= len(boxes) * 10 * 20  # each at most its box; 56 full-size masks: 1 MB
    assert sum(a.nbytes for a in _held(session)) <= session.image.nbytes + masks


def test_undo_history_is_capped_and_unreachable_deleted_labels_are_forgotten(folder, monkeypatch):
    monkeypatch.setattr(session_module, "UNDO_LIMIT", 5)
    session, store = folder
    session.open_image("000.png")
    for i in range(8):  # 8 boxes drawn and deleted: 16 changes
        session.on_boxes_changed([_box(10 + i, 10, 50 + i, 50)])
        session.on_boxes_changed([])
    assert store.labels("000.png") == [] and len(session.undo_stack) == 5
    # deleted labels no undo can reach are gone from the session, with their masks
    assert len(session.slots) <= 3 and all(s.mask is None for s in session.slots.values())
    session.on_boxes_changed([_box(60, 20, 100, 60)])
    first = store.labels("000.png")[0]
    for _ in range(4):
        session.accept(0)
        session.reject(0)
    assert len(session.undo_stack) == 5
    undone = 0
    while session.undo():
        undone += 1
    assert undone == 5  # the oldest steps were dropped: back to after the 2nd accept, not empty
    (label,) = store.labels("000.png")
    assert (label.verified, label.mask_rle, label.box_xyxy) == (True, None, first.box_xyxy)
    assert session.redo() and store.labels("000.png")[0].verified is False  # the kept steps replay
