"""The `box2mask` command: lazy subcommands, --version, `python -m box2mask`."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

import box2mask
from box2mask.cli import SUBCOMMANDS, main

REPO = Path(__file__).resolve().parents[1]
PROBE = """
import sys
from box2mask.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
heavy = sorted(m for m in ("torch", "gradio", "fiftyone", "cv2", "numpy") if m in sys.modules)
print("HEAVY", ",".join(heavy))
"""


def _probe(*args):
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *args], cwd=REPO, capture_output=True, text=True, check=True
    )
    return out.stdout


def test_help_lists_every_subcommand_and_imports_no_heavy_module():
    out = _probe("--help")
    assert all(name in out for name in SUBCOMMANDS)
    assert "HEAVY \n" in out  # nothing heavy was imported


def test_a_subcommand_imports_only_its_own_module():
    out = _probe("models", "--help")
    assert "--registry" in out
    assert "gradio" not in out.split("HEAVY")[1] and "fiftyone" not in out.split("HEAVY")[1]


def test_version_and_python_dash_m():
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "box2mask", "--version"], cwd=REPO, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - started
    assert out.returncode == 0 and out.stdout.strip() == f"box2mask {box2mask.__version__}"
    assert elapsed < 5.0  # about 0.05 s unloaded; generous for a busy CI machine


def test_the_old_module_name_is_the_same_command():
    from annotator import cli

    assert cli.main is main


def test_a_missing_optional_dependency_is_a_clear_error(monkeypatch, capsys):
    import box2mask.cli as cli

    def missing(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'gradio'", name="gradio")

    monkeypatch.setattr(cli, "build_parser", missing)
    assert main(["annotate", "x"]) == 2
    assert "pip install 'box2mask[annotator]'" in capsys.readouterr().err
    monkeypatch.setattr(cli, "build_parser", lambda command: (_ for _ in ()).throw(KeyError("x")))
    with pytest.raises(KeyError):
        main(["segment"])


def test_fiftyone_plugin_lists_the_shipped_plugin(capsys):
    assert main(["fiftyone", "plugin"]) == 0
    out = capsys.readouterr().out
    assert "fiftyone.yml" in out and "FIFTYONE_PLUGINS_DIR=" in out
