"""The packages form layers: box2mask (the method) <- train (learning) <- annotator (the apps), and
inside box2mask, sub-packages that import only the ones below them (BOX2MASK_LAYERS).

No module may import from a layer above its own; the CLI in box2mask names the subcommand modules
of every layer as strings and imports one only when it runs. Neither box2mask nor train imports an
optional dependency (gradio, fiftyone), so `segment`, `train`, `eval` and `models` run without them.
The FiftyOne integration (annotator/fiftyone/) is imported by the rest of annotator only when a
FiftyOne dataset is opened. Benchmarks (bench/) may import anything; no package or test imports
them (a test runs one as `python -m bench.NAME`), and no file edits sys.path.
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
    "annotator": ("bench",),
    "annotator/fiftyone": ("bench", "gradio", "gradio_image_annotation"),  # not the Gradio app
}
# imported by the rest of annotator only inside functions, so `annotate` runs without fiftyone
FIFTYONE_ONLY = ("fiftyone", "bson", "annotator.fiftyone")

# sub-package of box2mask -> the parts of box2mask it may import besides itself ("box2mask": the
# top-level facade, build_predictor in box2mask/__init__.py)
BOX2MASK_LAYERS = {
    "ops": set(),
    "io": {"ops"},
    "levelset": {"ops"},
    "model": {"ops", "io", "levelset"},  # levelset: the predictor's optional region refinement
    "crop": {"ops", "io", "levelset"},  # levelset: the base masks
    "labels": {"ops", "io"},
    "segment": {"ops", "io", "labels", "model", "box2mask"},  # model: the --amp choices
}
TOP_LEVEL = {"__init__.py", "__main__.py", "cli.py", "interrupt.py"}  # may import any part


def _module_exists(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imports(path: Path):
    """(line, module) for every absolute import; `from package import module` names the module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                yield node.lineno, full if _module_exists(full) else node.module


def _module_level_imports(path: Path):
    """(line, module) for the imports that run when the module is imported (not in a function)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
        else:
            todo.extend(ast.iter_child_nodes(node))


def _box2mask_part(module: str) -> str:
    """The part of box2mask a module of it belongs to: a sub-package, "box2mask" (the facade) or
    "top" (another top-level module: cli, interrupt)."""
    parts = module.split(".")
    if len(parts) == 1:
        return "box2mask"
    return parts[1] if parts[1] in BOX2MASK_LAYERS else "top"


def _py_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_runs_back_up_the_layers(package):
    bad = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in _py_files(package)
        for line, name in _imports(path)
        if name.split(".")[0] in FORBIDDEN[package]
    ]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("sub", sorted(BOX2MASK_LAYERS))
def test_box2mask_sub_packages_import_only_the_layers_below(sub):
    bad = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in _py_files(f"box2mask/{sub}")
        for line, name in _imports(path)
        if name.split(".")[0] == "box2mask"
        and _box2mask_part(name) not in BOX2MASK_LAYERS[sub] | {sub}
    ]
    assert not bad, f"box2mask.{sub} may import {sorted(BOX2MASK_LAYERS[sub])}:\n" + "\n".join(bad)


def test_annotator_opens_fiftyone_only_when_asked():
    bad = [
        f"{path.relative_to(ROOT)}:{line} imports {name} when imported"
        for path in _py_files("annotator")
        if ROOT / "annotator" / "fiftyone" not in path.parents
        for line, name in _module_level_imports(path)
        if any(name == top or name.startswith(top + ".") for top in FIFTYONE_ONLY)
    ]
    assert not bad, "\n".join(bad)


def _in_a_layer(path: Path) -> bool:
    inside = path.relative_to(ROOT / "box2mask").parts
    return inside[0] in TOP_LEVEL if len(inside) == 1 else inside[0] in BOX2MASK_LAYERS


def test_every_box2mask_file_is_in_a_layer():
    stray = [str(path.relative_to(ROOT)) for path in _py_files("box2mask") if not _in_a_layer(path)]
    assert not stray, "not in a sub-package of tests/test_layers.py's table:\n" + "\n".join(stray)


def test_imports_are_absolute():
    relative = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for package in ("box2mask", "train", "annotator", "bench")
        for path in _py_files(package)
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and node.level > 0
    ]
    assert not relative, "\n".join(relative)


def test_tests_import_the_packages_not_the_benchmarks():
    """Tests drive a benchmark as `python -m bench.NAME` in a subprocess, never import it."""
    bad = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in _py_files("tests")
        for line, name in _imports(path)
        if name.split(".")[0] == "bench"
    ]
    assert not bad, "\n".join(bad)


def _edits_sys_path(node: ast.AST) -> bool:
    """`sys.path.insert(...)` or `sys.path.append(...)`."""
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("insert", "append")
        and isinstance(node.func.value, ast.Attribute)
        and node.func.value.attr == "path"
        and isinstance(node.func.value.value, ast.Name)
        and node.func.value.value.id == "sys"
    )


def test_no_file_edits_sys_path():
    """Everything is imported as a package from the repository root (`python -m bench.NAME`)."""
    bad = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for package in ("box2mask", "train", "annotator", "bench", "tests")
        for path in _py_files(package)
        for node in ast.walk(ast.parse(path.read_text()))
        if _edits_sys_path(node)
    ]
    assert not bad, "\n".join(bad)


MAX_LINES = 400  # a longer file is split by responsibility


def test_no_python_file_is_over_400_lines():
    lengths = {
        path: len(path.read_text().splitlines())
        for package in ("box2mask", "train", "annotator", "bench", "tests")
        for path in _py_files(package)
    }
    long = [f"{p.relative_to(ROOT)}: {n} lines" for p, n in lengths.items() if n > MAX_LINES]
    assert not long, "\n".join(long)


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
