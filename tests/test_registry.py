import json
import os
import subprocess
import sys
import textwrap

import pytest

from train.registry import ModelRegistry, RegistryLocked, should_promote


def test_promotion_gate():
    assert should_promote({"miou": 0.70}, None)  # first model is always promoted
    assert should_promote({"miou": 0.80}, {"miou": 0.70}, margin=0.05)
    assert not should_promote({"miou": 0.74}, {"miou": 0.70}, margin=0.05)  # within the margin
    assert not should_promote({"miou": 0.60}, {"miou": 0.70})  # worse -> kept
    assert not should_promote({"miou": float("nan")}, {"miou": 0.70})
    assert not should_promote({}, {"miou": 0.70})
    assert should_promote({"boundary_f": 0.9}, {"boundary_f": 0.8}, metric="boundary_f")


def _fake_checkpoint(path, payload: bytes):
    path.write_bytes(payload)
    return path


def test_registry_lists_promotes_and_rolls_back(tmp_path):
    reg = ModelRegistry(tmp_path / "registry")
    assert reg.list_versions() == [] and reg.promoted() is None
    a = reg.add_version(
        checkpoint=_fake_checkpoint(tmp_path / "a.pt", b"A"),
        metrics={"miou": 0.7},
        data_snapshot="s1",
    )
    b = reg.add_version(
        checkpoint=_fake_checkpoint(tmp_path / "b.pt", b"B"),
        metrics={"miou": 0.8},
        data_snapshot="s2",
        parent=a.version,
    )
    assert [v.version for v in reg.list_versions()] == [a.version, b.version]
    assert reg.checkpoint_path(b.version).read_bytes() == b"B"
    reg.promote(a.version)
    reg.promote(b.version)
    assert reg.promoted().version == b.version
    reg.promote(a.version)  # rollback
    assert reg.promoted().version == a.version
    history = json.loads((tmp_path / "registry" / "promoted.json").read_text())["history"]
    assert [h["version"] for h in history] == [a.version, b.version, a.version]
    with pytest.raises(KeyError, match="no model version 'v9999'"):
        reg.promote("v9999")


def test_failed_add_leaves_registry_intact(tmp_path):
    reg = ModelRegistry(tmp_path / "registry")
    a = reg.add_version(
        checkpoint=_fake_checkpoint(tmp_path / "a.pt", b"A"), metrics={}, data_snapshot="s"
    )
    reg.promote(a.version)
    with pytest.raises(FileNotFoundError):
        reg.add_version(checkpoint=tmp_path / "missing.pt", metrics={}, data_snapshot="s")
    assert [v.version for v in reg.list_versions()] == [a.version]
    assert reg.promoted().version == a.version
    assert not [p for p in (tmp_path / "registry" / "versions").iterdir() if p.name.startswith(".")]


def test_killed_writer_leaves_registry_intact(tmp_path):
    """A process killed in the middle of registering a version leaves only a hidden temp folder."""
    reg = ModelRegistry(tmp_path / "registry")
    a = reg.add_version(
        checkpoint=_fake_checkpoint(tmp_path / "a.pt", b"A"), metrics={}, data_snapshot="s"
    )
    reg.promote(a.version)
    big = tmp_path / "big.pt"
    big.write_bytes(os.urandom(1 << 20))
    script = textwrap.dedent(
        f"""
        import os, shutil, signal
        import train.registry as r
        def copy_then_die(src, dst):
            with open(dst, "wb") as f:
                f.write(b"partial")
            os.kill(os.getpid(), signal.SIGKILL)
        r.shutil.copyfile = copy_then_die
        reg = r.ModelRegistry({str(tmp_path / "registry")!r})
        reg.add_version(checkpoint={str(big)!r}, metrics={{}}, data_snapshot="s")
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=os.getcwd())
    assert proc.returncode == -9
    assert [v.version for v in reg.list_versions()] == [a.version]
    assert reg.promoted().version == a.version


def test_lock_refuses_a_second_retrain(tmp_path):
    reg = ModelRegistry(tmp_path / "registry")
    other = ModelRegistry(tmp_path / "registry")
    with reg.lock():
        with pytest.raises(RegistryLocked, match="another retrain is running"):
            with other.lock():
                pass
    with other.lock():  # released after the first one ends
        pass


def test_models_command_lists_and_rolls_back(tmp_path, capsys):
    from box2mask.cli import main

    reg = ModelRegistry(tmp_path / "registry")
    a = reg.add_version(
        checkpoint=_fake_checkpoint(tmp_path / "a.pt", b"A"),
        metrics={"miou": 0.7},
        data_snapshot="s1",
    )
    b = reg.add_version(
        checkpoint=_fake_checkpoint(tmp_path / "b.pt", b"B"),
        metrics={"miou": 0.8},
        data_snapshot="s2",
    )
    reg.promote(b.version)
    assert main(["models", "--registry", str(tmp_path / "registry")]) == 0
    out = capsys.readouterr().out
    assert f"* {b.version}" in out and f"  {a.version}" in out and "miou=0.700" in out
    assert main(["models", "--registry", str(tmp_path / "registry"), "--promote", a.version]) == 0
    assert reg.promoted().version == a.version
    assert main(["models", "--registry", str(tmp_path / "registry"), "--promote", "nope"]) == 2
    assert "no model version 'nope'" in capsys.readouterr().out
