"""Atomic file writes: readers see the old file or the complete new one, never half of it.

    with atomic_write(path, "wb") as f:      # any writer that takes a file object
        torch.save(payload, f)
    with atomic_path(path) as tmp:           # any writer that takes a path
        build_database(tmp)
    write_text_atomic(path, text)

The data goes to a temporary file in the destination's folder (same file system), is flushed and
fsynced, and is then renamed over the destination (`os.replace`); the folder is fsynced so the
rename survives a power cut. On any error, Ctrl-C included, the temporary file is removed and the
destination is left as it was.
"""

import contextlib
import os
import tempfile
import time
from pathlib import Path

__all__ = ["atomic_path", "atomic_write", "remove_leftovers", "write_text_atomic"]


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary Path beside `path` for the caller to write by name (SQLite, a writer
    that wants a path); on success it is fsynced and renamed over `path`, on error removed.

    The destination's folder is created if missing; the temporary file is `.<name>.*.tmp`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


@contextlib.contextmanager
def atomic_write(path, mode: str = "w", encoding: str | None = "utf-8"):
    """Yield a file object (opened with `mode`, "w" or "wb") that replaces `path` on success
    (see `atomic_path`)."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write: mode must be 'w' or 'wb', got {mode!r}")
    with atomic_path(path) as tmp, open(tmp, mode, encoding=None if "b" in mode else encoding) as f:
        yield f


def write_text_atomic(path, text: str, encoding: str = "utf-8") -> None:
    """Replace the file at `path` with `text`, atomically (see `atomic_write`)."""
    with atomic_write(path, "w", encoding=encoding) as f:
        f.write(text)


def remove_leftovers(folder, *, min_age_s: float = 0.0, recursive: bool = False) -> list[Path]:
    """Delete the temporary files (`.<name>.*.tmp`) that writers killed mid-write (SIGKILL, a
    power cut: no `except` ran) left in `folder` (and below, with `recursive`), when last
    modified over `min_age_s` ago; call it where no other writer can be at work, or with an age
    no live write reaches. Returns what was deleted."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    now, removed = time.time(), []
    for path in folder.rglob(".*.tmp") if recursive else folder.glob(".*.tmp"):
        try:
            if path.is_file() and now - path.stat().st_mtime > min_age_s:
                path.unlink()
                removed.append(path)
        except OSError:  # gone meanwhile
            pass
    return removed


def _fsync_folder(folder: Path) -> None:
    """Persist a rename in `folder` (no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
