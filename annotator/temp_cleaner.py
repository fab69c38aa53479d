"""Keep the annotator's Gradio temp folder small while it runs.

Every render of the annotation widget is a JPEG in Gradio's temp folder (`RENDERS`), and Gradio's
own `delete_cache` only removes files its built-in components register, not these: a server with
8 busy users writes ~60 MB of renders a minute. `box2mask annotate` therefore gives Gradio a temp
folder of its own (`own_temp_folder`, before Gradio is imported) and `TempCleaner` deletes, every
`every_s` seconds, renders over `render_age_s` old (60 s: a browser fetches a render at once) and
other files (uploads, exports to download) over `max_age_s` old (5 minutes), but never a render
a session still shows (`ShownFiles`): the browser sends that file's path back with every box it
draws and the server reads it again, so deleting it (after however long a pause) would fail the
user's next box. Gradio's own deletion is off then (`build_app(shown_files=...)`): it ages files
by time alone and would delete that render too.
"""

import os
import shutil
import tempfile
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from pathlib import Path

__all__ = ["RENDERS", "ShownFiles", "TempCleaner", "own_temp_folder", "remove_old_files"]

RENDERS = "box2mask"  # the sub-folder of Gradio's temp folder that holds the widget's renders


def own_temp_folder() -> Path:
    """GRADIO_TEMP_DIR when the user set it, else a new folder of this process (set for Gradio)."""
    if os.environ.get("GRADIO_TEMP_DIR"):
        return Path(os.environ["GRADIO_TEMP_DIR"])
    folder = Path(tempfile.mkdtemp(prefix="box2mask-gradio-"))
    os.environ["GRADIO_TEMP_DIR"] = str(folder)
    return folder


class ShownFiles:
    """The last `per_owner` files each owner (a browser session's object) was shown; an owner's
    files are forgotten when the owner is garbage-collected. Thread-safe."""

    def __init__(self, per_owner: int = 3):
        self.per_owner = per_owner  # a late event may still carry one of the previous renders
        self._files: dict[int, deque] = {}  # id(owner) -> its last paths, newest last
        self._lock = threading.Lock()

    def show(self, owner, path: str | Path) -> None:
        """Record that `owner` now shows the file at `path`."""
        key = id(owner)
        with self._lock:
            if key not in self._files:
                self._files[key] = deque(maxlen=self.per_owner)
                weakref.finalize(owner, self._forget, key)
            self._files[key].append(os.path.abspath(path))

    def _forget(self, key: int) -> None:
        with self._lock:
            self._files.pop(key, None)

    def paths(self) -> set[str]:
        """Absolute paths of every file some live owner shows."""
        with self._lock:
            return {path for paths in self._files.values() for path in paths}


def remove_old_files(
    folder: Path,
    max_age_s: float,
    now: float | None = None,
    *,
    keep: set[str] = frozenset(),
    render_age_s: float | None = None,
) -> list[str]:
    """Delete files under `folder` last modified over `max_age_s` ago (over `render_age_s` ago
    inside its `RENDERS` sub-folder, when given), except those whose absolute path is in `keep`;
    then empty sub-folders not modified for as long (Gradio makes a folder, then writes into it).
    Returns the absolute paths of the files deleted."""
    now = time.time() if now is None else now
    folder = Path(os.path.abspath(folder))
    renders = folder / RENDERS
    removed = []
    for path in sorted(folder.rglob("*"), reverse=True):  # children before parents
        age = max_age_s
        if render_age_s is not None and (path == renders or renders in path.parents):
            age = render_age_s
        try:
            stat = path.stat()
            if now - stat.st_mtime <= age or str(path) in keep:
                continue
            if path.is_file():
                path.unlink()
                removed.append(str(path))
            elif path.is_dir() and path != renders and not any(path.iterdir()):
                path.rmdir()
        except OSError:  # written or removed meanwhile: next round
            pass
    return removed


class TempCleaner(threading.Thread):
    """A daemon thread running `remove_old_files` on `folder` every `every_s` seconds, keeping
    the files `keep()` names; `forget(paths)` is told what was deleted."""

    def __init__(
        self,
        folder: Path,
        max_age_s: float = 300.0,
        every_s: float = 10.0,
        *,
        render_age_s: float = 60.0,
        keep: Callable[[], set[str]] = frozenset,
        forget: Callable[[list[str]], None] | None = None,
    ):
        super().__init__(daemon=True, name="box2mask-temp-cleaner")
        self.folder, self.max_age_s, self.every_s = Path(folder), max_age_s, every_s
        self.render_age_s, self.keep, self.forget = render_age_s, keep, forget
        self.stopped = threading.Event()

    def clean(self) -> list[str]:
        """One round; the paths deleted."""
        removed = remove_old_files(
            self.folder, self.max_age_s, keep=self.keep(), render_age_s=self.render_age_s
        )
        if removed and self.forget is not None:
            self.forget(removed)
        return removed

    def run(self) -> None:
        while not self.stopped.wait(self.every_s):
            self.clean()

    def stop(self, remove: bool = False) -> None:
        """Stop; with `remove`, delete the folder too (a folder this process made)."""
        self.stopped.set()
        if remove:
            shutil.rmtree(self.folder, ignore_errors=True)
