"""AnnotationSession: boxes -> masks -> store, per-label actions, undo/redo, stale writes, safety."""

import numpy as np
import pytest
from PIL import Image

from annotator.predictor_service import PredictorService
from annotator.session import AnnotationSession
from annotator.slots import match_boxes
from annotator.store import SQLiteStore, StaleWriteError
from box2mask.io.rle import decode_rle
from box2mask.levelset.segmenter import LevelSetConfig, LevelSetSegmenter

H, W = 80, 100
DISC_CX, DISC_CY, DISC_R = 40, 40, 16


def _disc():
    yy, xx = np.mgrid[:H, :W]
    return (xx + 0.5 - DISC_CX) ** 2 + (yy + 0.5 - DISC_CY) ** 2 <= DISC_R**2


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


class CountingPredictor:
    """The real level-set default (small grid for speed) that counts its calls."""

    def __init__(self, version="levelset-test"):
        self.inner = LevelSetSegmenter(LevelSetConfig(grid_size=64))
        self.model_version = version
        self.images_encoded = 0
        self.boxes_decoded = 0

    def set_image(self, image):
        self.images_encoded += 1
        self.inner.set_image(image)

    def predict(self, boxes_xyxy, **options):
        self.boxes_decoded += len(boxes_xyxy)
        self.last_options = options
        return self.inner.predict(boxes_xyxy, **options)


@pytest.fixture
def env(tmp_path):
    rng = np.random.default_rng(0)
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        img = rng.integers(20, 60, (H, W, 3)).astype(np.uint8)
        img[_disc()] = (230, 40, 40)
        Image.fromarray(img).save(images / name)
    store = SQLiteStore(tmp_path / "labels.sqlite", images)
    predictor = CountingPredictor()
    service = PredictorService(predictor)
    session = AnnotationSession(store, images, service, classes=["ball", "cup"])
    session.open_image("a.png")
    yield session, store, predictor
    store.close()


def _box(x0, y0, x1, y1, label="ball"):
    return dict(xmin=x0, ymin=y0, xmax=x1, ymax=y1, label=label, color=(0, 0, 0))


DISC_BOX = _box(22, 22, 58, 58)


def test_match_boxes_pairs_identical_then_in_order():
    a, b, c = (0, 0, 5, 5, "x"), (10, 10, 20, 20, "x"), (30, 30, 40, 40, "y")
    assert match_boxes([a, b], [a, b, c]) == ([(0, 0), (1, 1)], [2], [])  # one drawn
    assert match_boxes([a, b, c], [a, c]) == ([(0, 0), (2, 1)], [], [1])  # one deleted
    moved = (11, 10, 20, 20, "x")
    assert match_boxes([a, b], [a, moved]) == ([(0, 0), (1, 1)], [], [])  # one moved
    assert match_boxes([a, b], [b, a]) == ([(1, 0), (0, 1)], [], [])  # reordered


def test_drawing_a_box_saves_a_model_mask_and_shows_it(env):
    session, store, predictor = env
    assert predictor.images_encoded == 1  # on open
    assert session.on_boxes_changed([DISC_BOX]) is True
    assert session.on_boxes_changed([DISC_BOX]) is False  # the UI echoing our own value back
    (label,) = store.labels("a.png")
    assert (label.source, label.verified, label.revision) == ("model", False, 1)
    assert label.model_version == "levelset-test" and label.class_name == "ball"
    assert _iou(decode_rle(label.mask_rle), _disc()) > 0.75
    overlay = session.overlay()
    changed = (overlay != session.image).any(2)
    assert changed[_disc()].mean() > 0.9 and changed[~_disc()].mean() < 0.05
    session.on_boxes_changed([DISC_BOX, _box(70, 5, 95, 30, "cup")])
    assert predictor.images_encoded == 1 and predictor.boxes_decoded == 2  # only the new box
    assert store.image_status("a.png") == "in progress"
    assert session.annotator_boxes()[1]["label"] == "cup"


def test_move_relabel_delete(env):
    session, store, predictor = env
    session.on_boxes_changed([DISC_BOX])
    session.on_boxes_changed([_box(20, 22, 58, 58)])  # resized: decoded again
    (label,) = store.labels("a.png")
    assert label.box_xyxy == [20.0, 22.0, 58.0, 58.0] and label.revision == 2
    assert predictor.boxes_decoded == 2
    session.on_boxes_changed([_box(20, 22, 58, 58, "cup")])  # relabelled: no model call
    assert store.labels("a.png")[0].class_name == "cup" and predictor.boxes_decoded == 2
    session.on_boxes_changed([])
    assert store.labels("a.png") == [] and store.image_status("a.png") == "unlabeled"


def test_accept_reject_brush_and_refine(env):
    session, store, predictor = env
    session.on_boxes_changed([DISC_BOX])
    assert predictor.last_options == {"smoothing": None}  # the predictor's default
    session.accept(0)
    assert store.labels("a.png")[0].verified is True
    session.brush(x=25, y=25, radius=3, erase=False)  # a corner of the box, outside the disc
    label = store.labels("a.png")[0]
    mask = decode_rle(label.mask_rle)
    assert label.source == "human-corrected" and mask[24, 24] and mask.sum() > _disc().sum() * 0.7
    session.brush(x=40, y=40, radius=4, erase=True)
    assert not decode_rle(store.labels("a.png")[0].mask_rle)[39, 39]
    session.brush(x=59, y=40, radius=6, erase=False)  # reaches past the box edge: clipped
    assert not decode_rle(store.labels("a.png")[0].mask_rle)[:, 58:].any()
    session.reject()
    label = store.labels("a.png")[0]
    assert label.mask_rle is None and label.source == "human" and not label.verified
    session.brush(x=40, y=40, radius=5, erase=False)
    assert store.labels("a.png")[0].source == "human"  # drawn by hand from nothing
    session.refine(+1)  # re-run with more smoothing: a model mask again
    assert predictor.last_options == {"smoothing": 2.0} and predictor.boxes_decoded == 2
    label = store.labels("a.png")[0]
    assert label.source == "model" and _iou(decode_rle(label.mask_rle), _disc()) > 0.6
    session.refine(-3)  # clamped at the least smoothing
    assert predictor.last_options == {"smoothing": 0.0}
    view, scale, x0, y0 = session.selected_crop(min_side=200)
    assert scale > 1 and x0 <= 22 and y0 <= 22 and max(view.shape[:2]) >= 199


def test_undo_redo_replays_through_the_store(env):
    session, store, _ = env
    session.on_boxes_changed([DISC_BOX])
    session.accept(0)
    session.on_boxes_changed([_box(24, 22, 58, 58)])
    snapshot = store.labels("a.png")[0]
    assert session.undo() and session.undo()
    assert store.labels("a.png")[0].verified is False
    assert store.labels("a.png")[0].box_xyxy == [22.0, 22.0, 58.0, 58.0]
    assert session.undo() and store.labels("a.png") == [] and session.order == []
    assert session.undo() is False
    assert session.redo() and not store.labels("a.png")[0].verified
    assert session.redo() and store.labels("a.png")[0].verified
    assert session.redo() and not session.redo()
    (again,) = store.labels("a.png")
    assert again.box_xyxy == snapshot.box_xyxy and again.mask_rle == snapshot.mask_rle
    assert again.id != snapshot.id and again.revision == 3  # re-added, then two updates
    session.delete(0)
    assert store.labels("a.png") == []
    session.undo()  # a deleted label comes back (as a new row)
    assert store.labels("a.png")[0].box_xyxy == snapshot.box_xyxy and len(session.order) == 1


def test_stale_write_from_a_second_tab_is_refused(env):
    session, store, predictor = env
    other = AnnotationSession(store, session.images_dir, session.service, classes=["ball"])
    other.open_image("a.png")
    session.on_boxes_changed([DISC_BOX])
    other.open_image("a.png")  # both tabs now show revision 1
    session.accept(0)  # revision 2
    with pytest.raises(StaleWriteError, match="revision 2 but this edit was based on revision 1"):
        other.reject(0)
    assert store.labels("a.png")[0].verified is True  # not overwritten
    assert other.labels_shown()[0].verified is True  # the refused tab now shows the store's version
    other.reject(0)  # and can edit from there
    assert store.labels("a.png")[0].mask_rle is None


def test_navigation_filters_and_progress(env):
    session, store, _ = env
    assert session.image_list() == ["a.png", "b.png", "c.png"]
    session.on_boxes_changed([DISC_BOX])
    session.set_done(True)
    assert session.progress() == (1, 3)
    assert session.image_list("done") == ["a.png"] and session.image_list("unlabeled") == [
        "b.png",
        "c.png",
    ]
    assert session.step_image(+1) == "b.png" and session.step_image(+1, "unlabeled") == "c.png"
    assert (
        session.step_image(-1, "done") == "a.png" and session.labels_shown()[0].class_name == "ball"
    )
    with pytest.raises(ValueError, match="filter must be one of"):
        session.image_list("finished")


def test_no_file_outside_the_images_folder(env, tmp_path):
    session, _, _ = env
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "secret.png")
    with pytest.raises(PermissionError, match="outside the images folder"):
        session.open_image("../secret.png")
    (session.images_dir / "link.png").symlink_to(tmp_path / "secret.png")
    with pytest.raises(PermissionError, match="outside the images folder"):
        session.open_image("link.png")
    with pytest.raises(PermissionError):
        session.open_image(str(tmp_path / "secret.png"))


def test_reload_predictor_hot_swaps_the_model(env):
    session, store, first = env
    session.on_boxes_changed([DISC_BOX])
    second = CountingPredictor(version="promoted-2")
    assert session.reload_predictor(predictor=second) == "promoted-2"
    session.on_boxes_changed([DISC_BOX, _box(60, 5, 95, 30)])
    assert second.images_encoded == 1 and second.boxes_decoded == 1
    assert [x.model_version for x in store.labels("a.png")] == ["levelset-test", "promoted-2"]


def test_a_box_still_being_drawn_is_ignored(env):
    session, store, predictor = env
    assert session.on_boxes_changed([_box(30, 30, 30, 30)]) is False  # pointer down, no drag yet
    assert store.labels("a.png") == [] and predictor.boxes_decoded == 0


def test_annotate_refuses_to_listen_on_the_network_without_a_login(capsys):
    from box2mask.cli import main

    assert main(["annotate", "demo", "--host", "0.0.0.0"]) == 2
    assert "refusing to listen on 0.0.0.0 without a login" in capsys.readouterr().err
    assert main(["annotate", "demo", "--host", "0.0.0.0", "--auth", "user"]) == 2
    assert "USER:PASSWORD" in capsys.readouterr().err


def test_worst_first_review_queue_orders_images_by_mask_quality(env):
    session, store, _ = env
    # a tight box on the disc (a clean mask) on a.png; a box over flat background on b.png
    # (the mask cannot touch all four box sides: a likely error)
    session.on_boxes_changed([{"xmin": 24, "ymin": 24, "xmax": 56, "ymax": 56, "label": "ball"}])
    good = store.labels("a.png")[0].score
    session.open_image("b.png")
    session.on_boxes_changed([{"xmin": 20, "ymin": 2, "xmax": 99, "ymax": 79, "label": "ball"}])
    bad = store.labels("b.png")[0].score
    assert 0 <= bad < good <= 1
    assert session.image_list("worst first") == ["b.png", "a.png"]  # c.png has nothing to review
    session.accept(0)  # reviewed: b.png leaves the queue
    assert session.image_list("worst first") == ["a.png"]


def test_clicks_pin_pixels_and_mark_the_label_corrected(env):
    session, store, predictor = env
    session.on_boxes_changed([{"xmin": 20, "ymin": 20, "xmax": 60, "ymax": 60, "label": "ball"}])
    mask = decode_rle(store.labels("a.png")[0].mask_rle)
    assert mask[40, 40] and not mask[21, 21]  # the disc, not the corner
    session.click(40.5, 40.5, inside=False)  # "not this pixel"
    session.click(21.5, 21.5, inside=True)  # "this corner pixel belongs to it"
    label = store.labels("a.png")[0]
    mask = decode_rle(label.mask_rle)
    assert not mask[40, 40] and mask[21, 21]
    assert label.source == "human-corrected" and label.revision == 3
    assert predictor.last_options["point_labels"].tolist() == [0, 1]  # every click is resent
    assert session.undo() and decode_rle(store.labels("a.png")[0].mask_rle)[21, 21] == 0
    session.refine(+1)  # the undone click left the prompt; the first click is still sent
    assert predictor.last_options["point_labels"].tolist() == [0]


def test_undo_after_three_clicks_removes_the_third_only_to_the_pixel(env):
    session, store, predictor = env
    session.on_boxes_changed([_box(20, 20, 60, 60)])
    masks = []
    for x, y, inside in [(40.5, 40.5, False), (21.5, 21.5, True), (58.5, 58.5, True)]:
        session.click(x, y, inside=inside)
        masks.append(store.labels("a.png")[0].mask_rle)
    assert len({m["counts"] for m in masks}) == 3  # each click changed the mask
    assert session.undo()
    label = store.labels("a.png")[0]
    assert (decode_rle(label.mask_rle) == decode_rle(masks[1])).all()  # the second click's mask
    assert label.source == "human-corrected"
    session.click(58.5, 21.5, inside=True)  # a new third click: the first two are resent
    assert predictor.last_options["points"].tolist() == [[40.5, 40.5], [21.5, 21.5], [58.5, 21.5]]
    assert session.undo() and session.undo() and session.undo()  # back before any click
    assert decode_rle(store.labels("a.png")[0].mask_rle)[40, 40]
    assert session.redo()  # the first click again, and only it
    assert (decode_rle(store.labels("a.png")[0].mask_rle) == decode_rle(masks[0])).all()
    session.refine(+1)
    assert predictor.last_options["point_labels"].tolist() == [0]


def test_smoothing_change_brush_and_refine_are_one_undo_step_each(env):
    session, store, predictor = env
    session.on_boxes_changed([DISC_BOX])
    first = store.labels("a.png")[0].mask_rle
    session.refine(+1)  # more smoothing
    smoother = store.labels("a.png")[0].mask_rle
    session.brush(x=25, y=25, radius=3, erase=False)
    session.refine_mask()
    assert len(session.undo_stack) == 4  # the box, the smoothing, the stroke, the refine
    assert session.undo() and session.undo()  # refine, then stroke
    assert store.labels("a.png")[0].mask_rle == smoother
    assert session.undo() and store.labels("a.png")[0].mask_rle == first
    session.refine(0)  # the smoothing level came back with the undo: the default again
    assert predictor.last_options["smoothing"] is None


def test_refine_starts_from_the_labels_mask_and_is_one_undo_step(env):
    session, store, predictor = env
    session.on_boxes_changed([DISC_BOX])
    session.reject()  # no model mask: paint a rough one by hand, too small and off-centre
    session.brush(x=36, y=37, radius=9, erase=False)
    painted = decode_rle(store.labels("a.png")[0].mask_rle)
    session.refine_mask()
    start = predictor.last_options["init_masks"]
    assert start.shape == (1, H, W) and (start[0] == painted).all()  # started from the painting
    label = store.labels("a.png")[0]
    refined = decode_rle(label.mask_rle)
    assert _iou(refined, _disc()) > _iou(painted, _disc()) + 0.2
    assert label.source == "human-corrected"  # a person's mask, improved by the model
    assert session.undo() and (decode_rle(store.labels("a.png")[0].mask_rle) == painted).all()

    class BoxesOnly:  # a model whose predict cannot start from a mask
        model_version = "boxes-only"

        def set_image(self, image):
            pass

        def predict(self, boxes_xyxy, smoothing=None):
            raise AssertionError("not called")

    session.reload_predictor(predictor=BoxesOnly())
    with pytest.raises(ValueError, match="cannot refine"):
        session.refine_mask()


def test_tighten_replaces_the_box_by_the_masks_tight_box_and_undo_restores_it(env):
    session, store, _ = env
    session.on_boxes_changed([_box(14, 16, 66, 64)])  # loose around the disc
    before = store.labels("a.png")[0]
    mask = decode_rle(before.mask_rle)
    ys, xs = np.nonzero(mask)
    session.tighten()
    label = store.labels("a.png")[0]
    tight = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    assert label.box_xyxy == [float(v) for v in tight] and label.box_xyxy != before.box_xyxy
    assert label.mask_rle == before.mask_rle  # the mask is kept as it was
    (shown,) = session.annotator_boxes()
    assert [shown[k] for k in ("xmin", "ymin", "xmax", "ymax")] == tight
    assert session.on_boxes_changed(session.annotator_boxes()) is False  # the UI's echo
    steps = len(session.undo_stack)
    session.tighten()  # already tight: nothing written, no undo step
    assert len(session.undo_stack) == steps and store.labels("a.png")[0].revision == 2
    assert session.undo() and store.labels("a.png")[0].box_xyxy == before.box_xyxy
    session.reject()
    with pytest.raises(ValueError, match="no mask"):
        session.tighten()


def test_number_keys_set_the_class_and_the_next_box_gets_the_last_one_used(env):
    session, store, _ = env
    session.on_boxes_changed([DISC_BOX])  # the UI sends its default class, the first
    session.set_class(2)  # the new label is selected: it becomes a cup, and so will the next
    assert [x.class_name for x in store.labels("a.png")] == ["cup"]
    first = session.annotator_boxes()[0]
    session.on_boxes_changed([first, _box(70, 5, 95, 30)])  # drawn with the UI's default
    assert [x.class_name for x in store.labels("a.png")] == ["cup", "cup"]
    session.deselect()  # Escape: the class key now only chooses the next box's class
    session.set_class(1)
    assert [x.class_name for x in store.labels("a.png")] == ["cup", "cup"]
    boxes = session.annotator_boxes()
    session.on_boxes_changed([*boxes, _box(2, 60, 16, 76)])
    assert [x.class_name for x in store.labels("a.png")] == ["cup", "cup", "ball"]
    session.select(0)
    session.set_class(1)  # one undo step
    assert store.labels("a.png")[0].class_name == "ball"
    assert session.undo() and store.labels("a.png")[0].class_name == "cup"
    with pytest.raises(ValueError, match="no class on key 3"):
        session.set_class(3)  # two classes only
    session.step_image(+1)
    session.on_boxes_changed([DISC_BOX])  # the last class used carries over to the next image
    assert [x.class_name for x in store.labels("b.png")] == ["ball"]


def test_delete_removes_the_selected_label_only_and_escape_deselects(env):
    session, store, _ = env
    session.on_boxes_changed([DISC_BOX, _box(70, 5, 95, 30, "cup")])
    session.deselect()
    assert session.selected is None
    with pytest.raises(IndexError, match="select a label first"):
        session.delete()  # Delete with nothing selected deletes nothing
    assert len(store.labels("a.png")) == 2
    session.select(0)
    session.delete()
    assert [x.class_name for x in store.labels("a.png")] == ["cup"] and session.selected is None
    assert [b["label"] for b in session.annotator_boxes()] == ["cup"]
    assert session.undo() and len(store.labels("a.png")) == 2
