import numpy as np
from PIL import Image

from annotator.model_watch import RegistryWatcher
from annotator.predictor_service import PredictorService
from annotator.session import AnnotationSession
from annotator.store import SQLiteStore
from box2mask import build_predictor
from tests.tiny_model import save_tiny_checkpoint
from train.registry import ModelRegistry


def test_running_annotator_switches_to_a_promoted_model(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)).save(images / "a.png")
    store = SQLiteStore(tmp_path / "labels.sqlite", images)
    session = AnnotationSession(
        store=store,
        images_dir=images,
        service=PredictorService(build_predictor(None)),
        classes=["obj"],
    )
    session.open_image("a.png")
    default_version = session.service.model_version
    registry = ModelRegistry(tmp_path / "models")
    watcher = RegistryWatcher(
        registry.root, on_promote=lambda path, version: session.reload_predictor(checkpoint=path)
    )
    assert not watcher.check()  # nothing promoted yet
    session.on_boxes_changed([{"xmin": 5, "ymin": 5, "xmax": 40, "ymax": 30, "label": "obj"}])
    assert [lb.model_version for lb in store.labels("a.png")] == [default_version]

    info = registry.add_version(
        checkpoint=save_tiny_checkpoint(tmp_path / "c.pt", "tiny-round1"),
        metrics={"miou": 0.5},
        data_snapshot="s",
    )
    registry.promote(info.version)
    assert watcher.check()  # picked up without a restart
    assert session.service.model_version == "tiny-round1"
    assert not watcher.check()  # once
    session.on_boxes_changed(
        [
            {"xmin": 5, "ymin": 5, "xmax": 40, "ymax": 30, "label": "obj"},
            {"xmin": 50, "ymin": 10, "xmax": 90, "ymax": 60, "label": "obj"},
        ]
    )
    versions = sorted(lb.model_version for lb in store.labels("a.png"))
    assert versions == sorted(
        [default_version, "tiny-round1"]
    )  # new proposals record the new model

    # a promoted file that cannot be loaded keeps the old model serving and reports why
    bad = registry.add_version(checkpoint=tmp_path / "labels.sqlite", metrics={}, data_snapshot="s")
    registry.promote(bad.version)
    assert not watcher.check()
    assert "could not load promoted model" in watcher.last_error
    assert session.service.model_version == "tiny-round1"
    store.close()


def test_an_annotator_started_on_a_registry_serves_its_promoted_model(tmp_path, capsys):
    """A restart (after a crash, or a kill in the middle of a hot reload) serves the promoted
    model again, not the embedded default."""
    from argparse import Namespace

    from annotator.annotate_cmd import _startup_predictor

    registry = ModelRegistry(tmp_path / "models")
    args = Namespace(checkpoint=None, registry=str(registry.root), device="cpu")
    default_version = build_predictor(None).model_version
    assert _startup_predictor(args, build_predictor).model_version == default_version
    info = registry.add_version(
        checkpoint=save_tiny_checkpoint(tmp_path / "c.pt", "tiny-round1"),
        metrics={"miou": 0.5},
        data_snapshot="s",
    )
    registry.promote(info.version)
    assert _startup_predictor(args, build_predictor).model_version == "tiny-round1"
    own = Namespace(checkpoint=None, registry=None, device="cpu")
    assert _startup_predictor(own, build_predictor).model_version == default_version
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    bad = registry.add_version(checkpoint=tmp_path / "broken.pt", metrics={}, data_snapshot="s")
    registry.promote(bad.version)
    assert _startup_predictor(args, build_predictor).model_version == default_version
    assert "could not load the promoted model" in capsys.readouterr().err
