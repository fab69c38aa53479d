"""The packages form layers: box2mask (the method) <- train (learning) <- annotator (the apps).

No module may import from a layer above its own; the CLI in box2mask names the subcommand modules
of every layer as strings and imports one only when it runs. Neither box2mask nor train imports an
optional dependency (gradio, fiftyone), so `segment`, `train`, `eval` and `models` run without them.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OPTIONAL = (
    "gradio",
    "gradio_image_annotation",
    "fiftyone",
    "bson",
)  # extras [annotator], [fiftyone]
FORBIDDEN = {
    "box2mask": ("train", "annotator", "bench", *OPTIONAL),
    "train": ("annotator", "bench", *OPTIONAL),
}


def _imports(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_runs_back_up_the_layers(package):
    bad = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for line, name in _imports(path)
        if name.split(".")[0] in FORBIDDEN[package]
    ]
    assert not bad, "\n".join(bad)


def test_segment_runs_with_gradio_and_fiftyone_missing(tmp_path):
    import json
    import subprocess
    import sys

    import numpy as np
    from PIL import Image

    (tmp_path / "images").mkdir()
    Image.fromarray(np.full((24, 32, 3), 90, np.uint8)).save(tmp_path / "images" / "a.png")
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "width": 32, "height": 24}],
        "annotations": [{"id": 1, "image_id": 1, "bbox": [4, 4, 16, 12], "category_id": 1}],
        "categories": [{"id": 1, "name": "thing"}],
    }
    (tmp_path / "boxes.json").write_text(json.dumps(coco))
    blocked = "; ".join(f"sys.modules[{m!r}] = None" for m in OPTIONAL)
    code = f"import sys; {blocked}; from box2mask.cli import main; sys.exit(main(sys.argv[1:]))"
    args = ["segment", "--images", "images", "--boxes", "boxes.json", "--out", "out.json"]
    done = subprocess.run(
        [sys.executable, "-c", code, *args, "--no-progress", "--device", "cpu"],
        cwd=tmp_path,
        env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "segmentation" in json.loads((tmp_path / "out.json").read_text())["annotations"][0]
