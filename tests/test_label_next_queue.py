"""The annotator's "label next" queue: the images not done, most disagreement of the served model
and the base first, scored in the background (cached per image, model version and boxes), images
without boxes last, file order when the served model is the default."""

import threading
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from annotator.image_queue import step_target
from annotator.label_next_queue import LabelNextQueue
from annotator.predictor_service import PredictorService
from annotator.session import AnnotationSession
from annotator.store import Label, SQLiteStore

BOX = [10.0, 10.0, 30.0, 30.0]  # every boxed image has this one box (20 x 20 px)


class _Shrunk:
    """Box-filled masks, the bottom `shrink[tag]` share of rows left out (tag: the image's first
    pixel): against a filled-box base its disagreement on that image is exactly that share."""

    slow_copies = False  # copies (the queue's) wait on `gate` in predict
    gate = threading.Event()
    entered = threading.Event()

    def __init__(self, version, shrink=None, slow=False):
        self.model_version, self.shrink, self.slow = version, dict(shrink or {}), slow

    def __deepcopy__(self, memo):
        return _Shrunk(self.model_version, self.shrink, slow=_Shrunk.slow_copies)

    def set_image(self, image):
        self._image = image

    def predict(self, boxes, **options):
        if self.slow:
            _Shrunk.entered.set()
            _Shrunk.gate.wait(10)
        height, width = self._image.shape[:2]
        masks = np.zeros((len(boxes), height, width), bool)
        cut = self.shrink.get(int(self._image[0, 0, 0]), 0.0)
        for i, (x0, y0, x1, y1) in enumerate(np.round(boxes).astype(int)):
            masks[i, y0 : y1 - int(round((y1 - y0) * cut)), x0:x1] = True
        return masks, np.ones(len(boxes), np.float32)


class _Uncopyable(_Shrunk):
    def __deepcopy__(self, memo):
        raise TypeError("holds a compiled graph")


@pytest.fixture
def folder(tmp_path):
    """i0..i5: i0, i1, i3, i4 with a box, i2 without any, i5 done (with a box)."""
    images = tmp_path / "images"
    images.mkdir()
    for tag in range(6):
        pixels = np.full((40, 40, 3), 90, np.uint8)
        pixels[0, 0, 0] = tag
        Image.fromarray(pixels).save(images / f"i{tag}.png")
    store = SQLiteStore(tmp_path / "labels.sqlite", images)
    for tag in (0, 1, 3, 4, 5):
        _add_box(store, f"i{tag}.png")
    store.set_image_done("i5.png", True)
    yield store, images
    store.close()


def _add_box(store, image):
    store.add(Label(image, BOX, "obj", None, "human", None, False))


def _session(store, images, learner):
    service = PredictorService(learner)
    service.label_next = LabelNextQueue(service, base_factory=lambda: _Shrunk("base"))
    return AnnotationSession(store, images, service, ["obj"])


def _ranked(session):
    session.image_list("label next")  # asks for the scores
    assert session.service.label_next.wait_idle(10)
    return session.image_list("label next")


def test_most_disagreement_first_no_boxes_last_done_left_out(folder):
    store, images = folder
    session = _session(store, images, _Shrunk("learner-a", {0: 0.1, 1: 0.5, 3: 0.9, 2: 0.95}))
    first = session.image_list("label next")  # nothing scored yet: file order, at once
    assert first == ["i0.png", "i1.png", "i3.png", "i4.png", "i2.png"]  # no boxes: last
    assert "0 of 4 images with boxes ranked" in session.service.label_next.note
    order = _ranked(session)
    assert order == ["i3.png", "i1.png", "i0.png", "i4.png", "i2.png"]
    assert sorted(order) == sorted(k for k in store.list_images() if k != "i5.png")  # permutation
    assert "4 of 4 images with boxes ranked by learner-a; 1 without boxes last" in (
        session.service.label_next.note
    )
    assert session.image_list("label next") == order  # stable for a model
    # N / P walk the queue in its order; from an image out of it (done) N opens its first
    assert step_target(store, "i5.png", +1, "label next", rank=session._label_next) == "i3.png"
    session.open_image("i3.png")
    assert session.step_image(+1, "label next") == "i1.png"
    assert session.step_image(-1, "label next") == "i3.png"


def test_a_new_model_version_or_new_boxes_rescore(folder):
    store, images = folder
    learner_a = {0: 0.1, 1: 0.5, 3: 0.9, 2: 0.95}
    session = _session(store, images, _Shrunk("learner-a", learner_a))
    assert _ranked(session) == ["i3.png", "i1.png", "i0.png", "i4.png", "i2.png"]
    session.service.reload(_Shrunk("learner-b", {4: 0.8, 0: 0.3}))  # a hot reload
    assert session.image_list("label next")[:4] == ["i0.png", "i1.png", "i3.png", "i4.png"]  # stale
    assert _ranked(session) == ["i4.png", "i0.png", "i1.png", "i3.png", "i2.png"]
    session.service.reload(_Shrunk("learner-a", learner_a))
    _add_box(store, "i2.png")  # a box drawn on the image that had none: it is scored now
    assert _ranked(session) == ["i2.png", "i3.png", "i1.png", "i0.png", "i4.png"]
    moved = store.labels("i0.png")[0]
    store.update(replace(moved, box_xyxy=[12.0, 10.0, 30.0, 30.0]))  # a moved box: scored again
    assert session.image_list("label next")[-1] == "i0.png"  # pending, after every score
    assert "4 of 5 images with boxes ranked by learner-a (1 being scored" in (
        session.service.label_next.note
    )


def test_an_unreadable_image_follows_the_scored_ones(folder):
    store, images = folder
    (images / "i0.png").write_bytes(b"not a png")
    session = _session(store, images, _Shrunk("learner-a", {0: 0.1, 1: 0.5, 3: 0.9}))
    assert _ranked(session) == ["i3.png", "i1.png", "i4.png", "i0.png", "i2.png"]
    assert "3 of 4 images with boxes ranked by learner-a (1 could not be scored" in (
        session.service.label_next.note
    )


def test_the_default_served_gives_file_order_and_says_so(folder):
    store, images = folder
    session = _session(store, images, _Shrunk("base", {3: 0.9}))
    assert session.image_list("label next") == [f"i{t}.png" for t in range(5)]  # all not done
    assert "the served model is the default (base)" in session.service.label_next.note
    assert session.service.label_next._thread is None  # nothing is scored
    session = _session(store, images, _Uncopyable("compiled", {3: 0.9}))
    session.image_list("label next")
    assert session.service.label_next.wait_idle(10)
    assert session.image_list("label next") == [f"i{t}.png" for t in range(5)]
    assert "cannot be copied: holds a compiled graph" in session.service.label_next.note


def test_scoring_never_holds_the_shared_model(folder):
    """While the background copy is stuck in a predict, a box answer of the shared model comes."""
    store, images = folder
    _Shrunk.gate.clear()
    _Shrunk.entered.clear()
    _Shrunk.slow_copies = True
    try:
        session = _session(store, images, _Shrunk("learner-a", {3: 0.9}))
        session.image_list("label next")
        assert _Shrunk.entered.wait(10)
        done = []
        image = np.zeros((40, 40, 3), np.uint8)
        worker = threading.Thread(
            target=lambda: done.append(session.service.predict("i0.png", image, np.array([BOX])))
        )
        worker.start()
        worker.join(5)
    finally:
        _Shrunk.gate.set()
        _Shrunk.slow_copies = False
    assert done, "a box answer waited for the label-next scoring"
    assert session.service.label_next.wait_idle(10)


def test_the_canvas_filter_walks_the_queue(folder, tmp_path):
    """/b2m/: choosing "label next" asks for the scores and says how far they are; N then walks
    the queue from its most uncertain image."""
    from starlette.applications import Starlette
    from starlette.testclient import TestClient

    from annotator.web_api import web_routes

    store, images = folder
    session = _session(store, images, _Shrunk("learner-a", {0: 0.1, 1: 0.5, 3: 0.9}))
    service = session.service
    routes = web_routes(
        store=store, images_dir=images, service=service, classes=["obj"], export_dir=tmp_path
    )
    with TestClient(Starlette(routes=routes)) as http:
        sid = http.post("/b2m/api/open", json={}).json()["sid"]
        chosen = http.post("/b2m/api/open", json={"sid": sid, "filter": "label next"}).json()
        assert "0 of 4 images with boxes ranked" in chosen["note"]
        assert service.label_next.wait_idle(10)
        http.post("/b2m/api/action", json={"sid": sid, "name": "done"})  # i0 leaves the queue
        stepped = http.post("/b2m/api/open", json={"sid": sid, "step": 1, "filter": "label next"})
        assert stepped.json()["image"] == "i3.png"  # the queue's first, not i1 (file order)
        assert "3 of 3 images with boxes ranked by learner-a" in stepped.json()["note"]
        stepped = http.post("/b2m/api/open", json={"sid": sid, "step": 1, "filter": "label next"})
        assert stepped.json()["image"] == "i1.png"  # then the queue's second


def test_the_gradio_filter_says_how_far_the_ranking_is(folder):
    from annotator.app import _on_filter, _step

    store, images = folder
    session = _session(store, images, _Shrunk("learner-a", {0: 0.1, 1: 0.5, 3: 0.9}))
    session.open_image("i5.png")  # done: out of the queue
    assert "0 of 4 images with boxes ranked" in _on_filter(session, "label next")
    assert session.service.label_next.wait_idle(10)
    assert "4 of 4 images with boxes ranked" in _step(session, +1, "label next")
    assert session.image_key == "i3.png"  # the most uncertain
    assert _on_filter(session, "all") is not None and session.image_key == "i3.png"
