"""Background encoding into the encodings cache gives the same masks as set_image, without waiting."""

import numpy as np
import pytest
from PIL import Image

from annotator.prefetch import Prefetcher, stateful
from box2mask.io.embedding_cache import EmbeddingCache, image_key
from box2mask.io.image_io import load_image
from box2mask.model.predictor import Box2MaskPredictor
from tests.tiny_model import tiny_model

BOXES = np.array([[10.0, 8.0, 50.0, 40.0], [30.5, 20.2, 70.0, 58.0]])


@pytest.fixture(scope="module")
def model():
    return tiny_model(num_classes=1).eval()


def _predictor(model):
    return Box2MaskPredictor(model, model_version="tiny-test", image_size=64, refine_steps=2)


def _image(seed, height=60, width=80):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, size=(height, width, 3)).astype(np.uint8)
    image[15:45, 20:60] = (200, 40, 40)  # one object
    return image


def _same_answers(a, b):
    (ma, sa), (mb, sb) = a, b
    assert np.array_equal(ma, mb)
    np.testing.assert_array_equal(sa, sb)


def test_state_through_the_cache_answers_like_set_image(model, tmp_path):
    image, other = _image(0), _image(1, height=50)
    direct = _predictor(model)
    direct.set_image(image)
    expected = direct.predict(BOXES)

    predictor = _predictor(model)
    predictor.set_image(other)
    state = predictor.encode_state(image)
    assert predictor._size == (50, 80)  # encoding did not change the current image
    cache = EmbeddingCache(tmp_path)
    cache.put("k", state)
    predictor.set_state(cache.get("k"))
    _same_answers(predictor.predict(BOXES), expected)


def test_stateful_names_what_is_missing():
    with pytest.raises(TypeError, match="object has no encode_state/set_state"):
        stateful(object())


def test_prefetcher_encodes_ahead_and_activate_hits(model, tmp_path):
    paths = []
    for i in range(4):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(_image(i)).save(paths[-1])
    paths.insert(2, tmp_path / "missing.png")  # a bad file must not stop the thread
    cache = EmbeddingCache(tmp_path / "cache")
    predictor = _predictor(model)
    images = [load_image(p) for p in paths if p.exists()]
    keys = [image_key(im, predictor.model_version) for im in images]

    with Prefetcher(predictor, cache, paths, lookahead=2) as prefetcher:
        assert prefetcher.wait_idle(timeout=60)
        # window: positions 0, 1, 2 (missing), i.e. images 0 and 1 only
        assert [k in cache for k in keys] == [True, True, False, False]
        assert prefetcher.encoded == 2
        assert prefetcher.activate(images[1]) is True
        reference = _predictor(model)
        reference.set_image(images[1])
        _same_answers(predictor.predict(BOXES), reference.predict(BOXES))

        prefetcher.set_position(3)
        assert prefetcher.wait_idle(timeout=60)
        assert [k in cache for k in keys] == [True, True, True, True]

        unknown = _image(9)
        assert prefetcher.activate(unknown) is False  # encoded now, and cached
        assert prefetcher.activate(unknown) is True
        reference.set_image(unknown)
        _same_answers(predictor.predict(BOXES), reference.predict(BOXES))


def test_annotation_session_opens_prefetched_images_from_the_cache(model, tmp_path):
    from annotator.predictor_service import PredictorService
    from annotator.session import AnnotationSession
    from annotator.store import SQLiteStore

    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        Image.fromarray(_image(i)).save(images / f"{i}.png")
    store = SQLiteStore(tmp_path / "labels.sqlite", images)
    keys = store.list_images()
    predictor = _predictor(model)
    prefetcher = Prefetcher(
        predictor, EmbeddingCache(tmp_path / "cache"), keys, load=lambda k: load_image(images / k)
    )
    service = PredictorService(predictor, prefetcher=prefetcher)
    session = AnnotationSession(store=store, images_dir=images, service=service, classes=["obj"])
    session.open_image(keys[0])
    assert prefetcher.wait_idle(timeout=60)
    assert prefetcher.encoded == 3  # the opened image and the two after it, in the background
    session.open_image(keys[2])  # restored from the cache: nothing encoded in the foreground
    assert prefetcher.encoded == 3
    session.on_boxes_changed([{"xmin": 10, "ymin": 8, "xmax": 50, "ymax": 40, "label": "obj"}])
    reference = _predictor(model)
    reference.set_image(load_image(images / keys[2]))
    masks, _ = reference.predict(np.array([[10.0, 8.0, 50.0, 40.0]]))
    from box2mask.io.rle import decode_rle

    stored = store.labels(keys[2])[0]
    assert np.array_equal(decode_rle(stored.mask_rle), masks[0])
    service.close()
    store.close()
