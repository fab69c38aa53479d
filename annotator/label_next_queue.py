"""The annotator's "label next" queue: images not done, the served model's most uncertain first.

The uncertainty of an image is train/label_next.py's: the mean disagreement (1 - IoU) of the
served learner and the embedded default on the image's boxes (imported from COCO or FiftyOne, or
drawn so far). Scores are cached per (image, model version, boxes) and computed in a background
thread on private copies of the two models, so asking for the order never waits for a model and
never holds the shared model's lock while scoring (a box answer goes on at once):

- images with boxes and a score: most uncertain first (ties in file order);
- images with boxes whose score is not computed yet (or failed): next, in file order; they move
  up as the background thread scores them;
- images without any box: last, in file order (nothing to disagree on);
- the served model is the default itself (no learner promoted or loaded yet): file order, and
  `note` says so. A served model that cannot be copied (deepcopy fails) also gives file order.

One `LabelNextQueue` belongs to the `PredictorService` (`service.label_next`), so every tab of
both pages shares its scores; a hot reload (a new model version) makes every cached score stale.
"""

import logging
import threading
from pathlib import Path

from train.label_next import image_uncertainty, uncertainty_order

__all__ = ["LabelNextQueue", "default_base"]

logger = logging.getLogger(__name__)


def default_base():
    """The embedded level-set default: the base the served learner is compared with."""
    from box2mask import build_predictor

    return build_predictor(None)


def _boxes_of(store, key: str) -> tuple:
    """The image's boxes as a hashable, order-free tuple of XYXY tuples (the cache key's part)."""
    return tuple(sorted(tuple(round(float(v), 2) for v in lb.box_xyxy) for lb in store.labels(key)))


class LabelNextQueue:
    """Cached uncertainty scores of the served model and the "label next" order built from them.

    Args:
        service: the annotator's PredictorService (its `model_version` and `snapshot()`).
        base_factory: builds the base model (default: the embedded level-set default); called
            once, by the first `order` (a constructor: no model call).
    """

    def __init__(self, service, base_factory=default_base):
        self.service = service
        self.base_factory = base_factory
        self.note = ""  # what the last `order` call ranked and what it could not, for the UI
        self._scores = {}  # image key -> (model version, boxes, score or None when it failed)
        self._wanted = {}  # image key -> (boxes, images_dir): scores the thread should compute
        self._work = threading.Condition()  # guards the four fields below and the two above
        self._busy = False  # the thread is scoring an image right now
        self._thread = None
        self._base = None  # the base model, built on first use (a constructor, no model call)
        self._copy_error = None  # (model version, why the served model could not be copied)

    def order(self, store, keys: list[str], images_dir) -> list[str]:
        """`keys` (the images not done, in file order) in "label next" order; never waits for a
        model: scores not cached yet are asked of the background thread, and `note` says how
        many are still pending."""
        version = self.service.model_version
        with self._work:
            if self._base is None:
                self._base = self.base_factory()
        if version == self._base.model_version:
            self.note = (
                f"label next: the served model is the default ({version}), no learner to "
                "disagree with: file order"
            )
            return list(keys)
        if self._copy_error is not None and self._copy_error[0] == version:
            self.note = f"label next: file order ({self._copy_error[1]})"
            return list(keys)
        boxes = {key: _boxes_of(store, key) for key in keys}
        scores, pending, failed = [], 0, 0
        with self._work:
            for key in keys:
                cached = self._scores.get(key)
                if not boxes[key]:
                    scores.append(None)
                    continue
                if cached is None or cached[:2] != (version, boxes[key]):
                    self._wanted[key] = (boxes[key], Path(images_dir))
                    pending += 1
                elif cached[2] is not None:
                    scores.append(cached[2])
                    continue
                else:
                    failed += 1
                scores.append(-1.0)  # after every real score (>= 0), in file order
            if pending:
                self._start()
                self._work.notify_all()
        without = sum(not b for b in boxes.values())
        boxed = len(keys) - without
        ranked = boxed - pending - failed
        self.note = f"label next: {ranked} of {boxed} images with boxes ranked by {version}"
        if pending:
            self.note += f" ({pending} being scored follow in file order)"
        if failed:
            self.note += f" ({failed} could not be scored, in file order: see the log)"
        if without:
            self.note += f"; {without} without boxes last"
        return uncertainty_order(list(keys), scores)

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until every asked score is computed (tests, benchmarks); False on timeout."""
        with self._work:
            return self._work.wait_for(lambda: not self._wanted and not self._busy, timeout)

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="box2mask-label-next", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        learner = None  # (model version, a private copy of the served predictor)
        while True:
            with self._work:
                self._work.wait_for(lambda: self._wanted)
                key, (boxes, images_dir) = next(iter(self._wanted.items()))
                del self._wanted[key]
                self._busy = True
            version, score = self.service.model_version, None
            try:
                stale = learner is None or learner[0] != version
                if stale and (self._copy_error is None or self._copy_error[0] != version):
                    learner = self.service.snapshot()  # a deep copy: the shared one stays free
            except Exception as err:  # a model that cannot be copied: file order, said so
                with self._work:
                    self._copy_error = (version, f"the served model cannot be copied: {err}")
            try:
                if learner is not None and learner[0] == version:
                    image = _load(images_dir, key)
                    score = image_uncertainty(image, boxes, base=self._base, learner=learner[1])
            except Exception as err:  # an unreadable image, a model error: after the scored
                logger.warning("label next: could not score %s: %s", key, err)
                score = None
            with self._work:
                self._scores[key] = (version, boxes, score)
                self._busy = False
                self._work.notify_all()


def _load(images_dir: Path, key: str):
    """The image `key` of `images_dir` (paths out of the folder refused, as the session does)."""
    from box2mask.io.image_io import load_image

    root = images_dir.resolve()
    path = (root / key).resolve()
    if not path.is_relative_to(root):
        raise PermissionError(f"{key}: outside the images folder {root}")
    return load_image(path)
