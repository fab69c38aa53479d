"""The LabelStore contract, one suite run on every backend: SQLite and FiftyOne.

Round trips, revisions, stale writes refused (from another handle, and atomically from two
processes racing), image status, invalid labels. The FiftyOne runs are skipped when FiftyOne
is not installed or its database cannot start; backend specifics stay in tests/test_store.py and
tests/test_fiftyone_dataset.py.
"""

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from box2mask.io.rle import decode_rle, encode_rle
from box2mask.labels.store import Label, SQLiteStore, StaleWriteError

REPO = Path(__file__).resolve().parents[1]
HEIGHT, WIDTH = 48, 64


@dataclass
class Backend:
    """A store, a second handle on the same labels (another tab), and how to open it elsewhere."""

    store: object  # the LabelStore under test
    other: object  # a second store object on the same storage
    images: list  # the store's keys of the two images, sorted
    open_code: str  # Python that binds `store` to a new handle (for a child process)


def _images(root: Path) -> None:
    (root / "sub").mkdir(parents=True, exist_ok=True)
    for name in ("a.png", "sub/b.png"):
        Image.fromarray(np.zeros((HEIGHT, WIDTH, 3), np.uint8)).save(root / name)


@pytest.fixture(scope="module")
def fiftyone_module():
    fo = pytest.importorskip("fiftyone")
    try:
        probe = fo.Dataset()
        probe.delete()
    except Exception as err:  # noqa: BLE001 - any failure to start the database
        pytest.skip(f"FiftyOne's database (mongod) cannot start here: {err}")
    return fo


@pytest.fixture(params=["sqlite", "fiftyone"])
def backend(request, tmp_path):
    root = tmp_path / "imgs"
    _images(root)
    if request.param == "sqlite":
        path = tmp_path / "labels.sqlite"
        backend = Backend(
            store=SQLiteStore(path, root),
            other=SQLiteStore(path, root),
            images=["a.png", "sub/b.png"],
            open_code=f"from box2mask.labels.store import SQLiteStore\n"
            f"store = SQLiteStore({str(path)!r})",
        )
        yield backend
        backend.store.close()
        backend.other.close()
        return
    fo = request.getfixturevalue("fiftyone_module")
    from annotator.fiftyone.store import FiftyOneStore

    dataset = fo.Dataset()
    dataset.add_samples([fo.Sample(filepath=str(root / n)) for n in ("a.png", "sub/b.png")])
    dataset.compute_metadata()
    try:
        yield Backend(
            store=FiftyOneStore(dataset, label_field="labels"),
            other=FiftyOneStore(dataset.name, label_field="labels"),
            images=sorted(dataset.values("filepath")),
            open_code="from annotator.fiftyone.store import FiftyOneStore\n"
            f"store = FiftyOneStore({dataset.name!r}, label_field='labels')",
        )
    finally:
        dataset.delete()


def _label(image, **kw):
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[5:10, 4:12] = True  # inside the box: every backend stores it exactly
    base = dict(
        image=image,
        box_xyxy=[4.0, 5.0, 12.0, 10.0],
        class_name="cup",
        mask_rle=encode_rle(mask),
        source="model",
        model_version="levelset-v1",
        verified=False,
        score=0.75,
    )
    base.update(kw)
    return Label(**base)


def test_add_get_update_delete_round_trip(backend):
    store, image = backend.store, backend.images[0]
    added = store.add(_label(image))
    assert added.id is not None and added.revision == 1
    assert store.get(added.id) == added  # lossless: box, RLE, class, score, flags
    assert store.labels(image) == [added]
    assert np.array_equal(decode_rle(added.mask_rle)[5:10, 4:12], np.ones((5, 8), bool))
    changed = store.update(replace(added, verified=True, source="human-corrected"))
    assert changed.revision == 2 and store.get(added.id) == changed
    empty = store.add(_label(image, mask_rle=None, score=None, model_version=None))
    assert store.get(empty.id) == empty
    store.delete(added.id, revision=2)
    with pytest.raises(KeyError, match=f"label {added.id}"):
        store.get(added.id)
    assert store.labels(image) == [empty]


def test_stale_update_and_delete_are_refused(backend):
    store, other = backend.store, backend.other  # two tabs / two store objects
    label = store.add(_label(backend.images[0]))
    seen_by_other = other.get(label.id)
    store.update(replace(label, class_name="mug"))  # now revision 2
    with pytest.raises(StaleWriteError, match="revision 2 but this edit was based on revision 1"):
        other.update(seen_by_other)
    with pytest.raises(StaleWriteError, match="revision 2"):
        other.delete(label.id, revision=1)
    assert other.get(label.id).class_name == "mug"  # nothing overwritten
    store.delete(label.id, revision=2)
    with pytest.raises(StaleWriteError, match="deleted elsewhere"):
        other.update(seen_by_other)
    with pytest.raises(StaleWriteError, match="deleted elsewhere"):
        other.delete(label.id, revision=2)


def test_image_listing_and_status(backend):
    store, (a, b) = backend.store, backend.images
    assert store.list_images() == [a, b]
    assert store.image_status(b) == "unlabeled"
    label = store.add(_label(b))
    assert store.image_status(b) == "in progress"
    store.set_image_done(b, True)
    assert backend.other.image_status(b) == "done"
    store.set_image_done(b, False)
    assert store.image_status(b) == "in progress"
    store.delete(label.id, revision=1)
    assert store.image_status(b) == "unlabeled"
    assert store.labels(a) == []


def test_invalid_labels_are_rejected_with_the_field_named(backend):
    store, image = backend.store, backend.images[0]
    with pytest.raises(ValueError, match="source"):
        store.add(_label(image, source="robot"))
    with pytest.raises(ValueError, match="x1 > x0"):
        store.add(_label(image, box_xyxy=[5, 5, 5, 9]))
    with pytest.raises(ValueError, match="update needs a label with an id"):
        store.update(_label(image))
    assert store.labels(image) == []


_RACER = textwrap.dedent(
    """
    import os, sys, time
    from dataclasses import replace
    {open_code}
    from box2mask.labels.store import StaleWriteError

    label_id, go, name, action = sys.argv[1:5]

    def slowed(method):  # a slow process: time passes between what it read and its write
        def slow(*args, **kwargs):
            out = method(*args, **kwargs)
            time.sleep(1.5)
            return out
        return slow

    kind = type(store)
    if action == "update":  # between the revision check and the write
        kind._check_revision = staticmethod(slowed(kind._check_revision))
    elif hasattr(kind, "_size"):  # add: between reading the sample and writing it back
        kind._size = slowed(kind._size)
    label = store.get(label_id)
    print("ready", label.revision, flush=True)
    while not os.path.exists(go):
        time.sleep(0.01)
    try:
        if action == "update":
            store.update(replace(label, class_name=name))
        else:
            store.add(replace(label, id=None, class_name=name))
        print("written", flush=True)
    except StaleWriteError:
        print("stale", flush=True)
    """
)


def _race(backend, label_id, go: Path, action: str) -> list[str]:
    """Two processes read label `label_id`, then both `action` ("update" or "add") at once;
    returns their outcomes ("written" / "stale"), first then second."""
    code = _RACER.format(open_code=backend.open_code)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(label_id), str(go), name, action],
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=env,
        )
        for name in ("first", "second")
    ]
    try:
        for racer in racers:  # (FiftyOne may print a notice first)
            lines = iter(racer.stdout.readline, "")
            assert next((x for x in lines if x.startswith("ready")), "").split() == ["ready", "1"]
        go.touch()
        outcomes = [racer.communicate(timeout=120)[0].split()[-1:] for racer in racers]
    finally:
        for racer in racers:
            if racer.poll() is None:
                racer.kill()
                racer.wait()
    return [x[0] if x else "no answer" for x in outcomes]


def test_two_processes_racing_on_one_label_cannot_both_write(backend, tmp_path):
    """Both processes read revision 1, then update at the same moment, each pausing between its
    revision check and its write: exactly one write lands, the other is refused as stale."""
    label = backend.store.add(_label(backend.images[0]))
    outcomes = _race(backend, label.id, tmp_path / "go", "update")
    assert sorted(outcomes) == ["stale", "written"], outcomes
    winner = ("first", "second")[outcomes.index("written")]
    final = backend.store.get(label.id)
    assert final.revision == 2 and final.class_name == winner


def test_two_processes_adding_at_once_both_land(backend, tmp_path):
    """Two processes add a label to the same image at the same moment (each pausing between
    reading the image's labels and writing): neither label is lost."""
    image = backend.images[0]
    label = backend.store.add(_label(image))
    assert _race(backend, label.id, tmp_path / "go", "add") == ["written", "written"]
    names = sorted(x.class_name for x in backend.store.labels(image))
    assert names == ["cup", "first", "second"]
