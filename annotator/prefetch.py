"""No first-click wait: encode the next images in the background into the on-disk encodings cache.

Encoding an image (`set_image`: backbone + pixel decoder) is the slow part of the first box on an
image; every later box only runs the light decoder. A `Prefetcher` keeps one background thread
that walks the image list from the current position forward (the current image, then the next
`lookahead` ones), encodes each image that the `EmbeddingCache` does not hold yet and stores its
state there. When the person opens an image, `activate(image)` restores the state from the cache
(a hit) instead of encoding it: the first box then answers like the hundredth.

Predictors take part through a two-method protocol (`box2mask.model.predictor.Box2MaskPredictor` has it):

    encode_state(image) -> dict   the encoding of an (H, W, 3) uint8 RGB image, as a flat dict of
                                  tensors / ints / floats / tuples; does not change the image the
                                  predictor currently answers for (safe from another thread)
    set_state(state) -> None      make `state` the current image, exactly as set_image(image) would

The embedded level-set default needs no prefetching (its `set_image` is a colour conversion):
`stateful` refuses it with a TypeError and the annotator then runs without a Prefetcher.
"""

import logging
import threading

import numpy as np

from box2mask.io.embedding_cache import EmbeddingCache, image_key
from box2mask.io.image_io import load_image

__all__ = ["Prefetcher", "stateful"]

logger = logging.getLogger(__name__)


def stateful(predictor):
    """The predictor if it has encode_state and set_state; TypeError otherwise."""
    if hasattr(predictor, "encode_state") and hasattr(predictor, "set_state"):
        return predictor
    raise TypeError(
        f"{type(predictor).__name__} has no encode_state/set_state: it cannot be prefetched"
    )


class Prefetcher:
    """Background encoding of the images ahead of the current one into an `EmbeddingCache`.

    Args:
        predictor: a predictor (wrapped by `stateful`).
        cache: where encodings are kept (bounded, on disk, keyed by pixels + model version).
        images: the ordered image list (anything `load` accepts: paths by default).
        load: item -> (H, W, 3) uint8 RGB image.
        lookahead: how many images after the current one to encode ahead.
    Call `set_position(index)` when the person moves; `activate(image)` before predicting on it;
    `close()` at the end (also a context manager).
    """

    def __init__(self, predictor, cache: EmbeddingCache, images, load=load_image, lookahead=8):
        self._stateful = stateful(predictor)
        self.cache = cache
        self.images = list(images)
        self.load = load
        self.lookahead = lookahead
        self.encoded = 0  # images encoded by the background thread (for tests and benchmarks)
        self._position = 0
        self._done = set()  # indices already checked against the cache or encoded
        self._in_flight = None  # cache key being encoded in the background right now
        self._busy = False  # the background thread is handling an image
        self._closed = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="box2mask-prefetch", daemon=True)
        self._thread.start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def set_position(self, index: int) -> None:
        """The person is on image `index`: encode it and the next `lookahead` images first."""
        with self._cond:
            self._position = int(index)
            self._cond.notify_all()

    def reset(self, predictor) -> None:
        """A new model (hot swap): later encodings use it; old entries stay under their version."""
        with self._cond:
            self._stateful = stateful(predictor)
            self._done.clear()
            self._cond.notify_all()

    def idle(self) -> bool:
        """True when every image in the look-ahead window is in the cache."""
        with self._cond:
            return self._next_index() is None and not self._busy

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until `idle()` (or the timeout); returns idle()."""
        with self._cond:
            self._cond.wait_for(lambda: self._next_index() is None and not self._busy, timeout)
            return self._next_index() is None and not self._busy

    def activate(self, image: np.ndarray) -> bool:
        """Make `image` the predictor's current image, from the cache when possible.

        Waits for the background thread if it is encoding this very image. Returns True on a cache
        hit, False when the image had to be encoded now (the state is then cached as well).
        """
        with self._cond:
            target = self._stateful
            key = image_key(image, target.model_version)
            self._cond.wait_for(lambda: self._in_flight != key)
        state = self.cache.get(key)
        hit = state is not None
        if not hit:
            state = target.encode_state(image)
            self.cache.put(key, state)
        target.set_state(state)
        return hit

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()

    def _next_index(self):
        """The first index of the look-ahead window not handled yet, or None (lock held)."""
        stop = min(self._position + self.lookahead + 1, len(self.images))
        for index in range(max(self._position, 0), stop):
            if index not in self._done:
                return index
        return None

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closed or self._next_index() is not None)
                if self._closed:
                    return
                index = self._next_index()
                self._done.add(index)
                self._busy = True
                target = self._stateful
            try:
                self._encode(target, index)
            except Exception as err:  # noqa: BLE001 - a bad image must not stop the thread
                logger.warning("prefetch: %s: %s", self.images[index], err)
            finally:
                with self._cond:
                    self._in_flight, self._busy = None, False
                    self._cond.notify_all()

    def _encode(self, target, index: int) -> None:
        image = self.load(self.images[index])
        key = image_key(image, target.model_version)
        if key in self.cache:
            return
        with self._cond:
            self._in_flight = key
        state = target.encode_state(image)
        self.cache.put(key, state)
        self.encoded += 1
