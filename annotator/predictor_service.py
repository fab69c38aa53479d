"""The one model every annotator tab shares (`PredictorService`): serialised calls, image cache,
hot swap. Only new or moved boxes are decoded; the image is encoded once (`set_image`) and cached
until another image (or another tab's image) needs the model.
"""

import copy
import threading
import time

import numpy as np

from annotator.label_next_queue import LabelNextQueue
from box2mask.segment.image import takes_init_masks

__all__ = ["PredictorService"]


class PredictorService:
    """One predictor shared by every tab: serialised calls, image cache, hot swap.

    With a `prefetcher` (annotator/prefetch.py; models with encode_state/set_state), images are
    encoded ahead in the background and opening one restores its encoding from the on-disk cache.
    """

    def __init__(self, predictor, prefetcher=None):
        self._predictor = predictor
        self._prefetcher = prefetcher
        self._lock = threading.Lock()
        self._image_key = None  # which image the predictor currently holds (set_image)
        self.last_predict_ms = None  # ms of the last `predict` call (set_image excluded)
        self.last_predict_kind = None  # "click" (it had points) or "box"
        # the "label next" queue: this model's uncertainty per image, scored in the background
        self.label_next = LabelNextQueue(self)

    @property
    def model_version(self) -> str:
        return self._predictor.model_version

    @property
    def predictor(self):
        """The current model (read its interface only: calls go through `predict`)."""
        return self._predictor

    @property
    def can_refine(self) -> bool:
        """Whether the model can start from a given mask (`predict(..., init_masks=)`)."""
        return takes_init_masks(self._predictor)

    def prepare(self, image_key: str, image: np.ndarray) -> None:
        """Encode `image` now unless it is already the predictor's current image; the
        prefetcher (if any) then encodes the images after it."""
        with self._lock:
            self._ensure(image_key, image)
        if self._prefetcher is not None and image_key in self._prefetcher.images:
            self._prefetcher.set_position(self._prefetcher.images.index(image_key))

    def predict(self, image_key: str, image: np.ndarray, boxes_xyxy: np.ndarray, **options):
        """(N, 4) XYXY boxes -> masks (N, H, W) bool, scores (N,), encoding the image only if needed."""
        with self._lock:
            self._ensure(image_key, image)
            start = time.perf_counter()
            result = self._predictor.predict(np.asarray(boxes_xyxy, dtype=np.float64), **options)
            self.last_predict_ms = (time.perf_counter() - start) * 1000
            self.last_predict_kind = "click" if options.get("points") is not None else "box"
            return result

    def snapshot(self) -> tuple[str, object]:
        """(model version, a deep copy of the current model): what the "label next" queue
        scores with in its own thread, never holding this lock while it does."""
        with self._lock:
            return self._predictor.model_version, copy.deepcopy(self._predictor)

    def reload(self, predictor) -> None:
        """Swap in a new predictor (e.g. a promoted model); the next call re-encodes its image."""
        with self._lock:
            self._predictor = predictor
            self._image_key = None
            if self._prefetcher is not None:
                try:
                    self._prefetcher.reset(predictor)
                except TypeError:  # the new predictor cannot be prefetched: go without
                    self._prefetcher.close()
                    self._prefetcher = None

    def close(self) -> None:
        if self._prefetcher is not None:
            self._prefetcher.close()

    def _ensure(self, image_key: str, image: np.ndarray) -> None:
        if self._image_key != image_key:
            if self._prefetcher is not None:
                self._prefetcher.activate(image)
            else:
                self._predictor.set_image(image)
            self._image_key = image_key
