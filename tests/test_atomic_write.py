import os

import pytest

from box2mask.io.atomic_write import atomic_path, atomic_write, write_text_atomic


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "out.json"
    write_text_atomic(path, "old")
    with pytest.raises(OSError, match="No space"):
        with atomic_write(path) as f:
            f.write("half of the new")
            raise OSError(28, "No space left on device")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["out.json"]
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["out.json"]


def test_a_finished_write_replaces_the_file_and_fsyncs_it(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    path = tmp_path / "new" / "model.bin"
    with atomic_write(path, "wb") as f:
        f.write(b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01" and os.listdir(path.parent) == ["model.bin"]
    assert len(synced) == 2  # the file's data, then its folder (the rename)
    with pytest.raises(ValueError, match="mode must be"):
        with atomic_write(path, "a"):
            pass
