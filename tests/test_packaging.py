"""What a wheel carries: every package, the configs (as `train.configs`) and the FiftyOne plugin."""

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_of_the_source_tree_is_listed():
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("box2mask", "train", "annotator")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert found | {"train.configs"} == listed


def test_package_data_patterns_match_the_files():
    dirs = PYPROJECT["tool"]["setuptools"]["package-dir"]
    for package, patterns in PYPROJECT["tool"]["setuptools"]["package-data"].items():
        folder = ROOT / dirs.get(package, package.replace(".", "/"))
        for pattern in patterns:
            assert list(folder.glob(pattern)), f"{package}: nothing matches {pattern}"


def test_the_default_config_is_found():
    from train.config import default_config_path, load_config

    assert default_config_path("tiny_cpu.yaml").is_file()
    assert load_config(default_config_path("tiny_cpu.yaml")).model.backbone


def test_dev_installs_every_extra():
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert "box2mask[annotator,fiftyone]" in extras["dev"]
    core = " ".join(PYPROJECT["project"]["dependencies"])
    assert "gradio" not in core and "fiftyone" not in core


@pytest.mark.slow
def test_the_wheel_holds_the_configs_and_the_plugin(tmp_path):
    pytest.importorskip("setuptools")
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "runs", "build"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        + [str(src), "-w", str(tmp_path / "dist")],
        check=True,
    )
    (wheel,) = (tmp_path / "dist").glob("box2mask-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {p.name for p in (ROOT / "configs").glob("*.yaml")}
    assert {f"train/configs/{n}" for n in configs} <= names
    assert "annotator/fiftyone/plugin/fiftyone.yml" in names
    assert "box2mask/cli.py" in names and "box2mask/labels/store.py" in names
