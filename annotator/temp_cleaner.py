"""Keep the annotator's Gradio temp folder small while it runs.

Every render of the annotation widget is a JPEG in Gradio's temp folder, and Gradio's own
`delete_cache` only removes files its built-in components register, not these: a server with 8
busy users gathered 414 MB in 30 minutes. `box2mask annotate` therefore gives Gradio a temp folder
of its own (`own_temp_folder`, before Gradio is imported) and `TempCleaner` deletes files there
older than `max_age_s` every `every_s` seconds (a browser fetches a render within seconds).
"""

import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

__all__ = ["TempCleaner", "own_temp_folder", "remove_old_files"]


def own_temp_folder() -> Path:
    """GRADIO_TEMP_DIR when the user set it, else a new folder of this process (set for Gradio)."""
    if os.environ.get("GRADIO_TEMP_DIR"):
        return Path(os.environ["GRADIO_TEMP_DIR"])
    folder = Path(tempfile.mkdtemp(prefix="box2mask-gradio-"))
    os.environ["GRADIO_TEMP_DIR"] = str(folder)
    return folder


def remove_old_files(folder: Path, max_age_s: float, now: float | None = None) -> int:
    """Delete files under `folder` last modified over `max_age_s` ago, then empty sub-folders;
    the number of files deleted."""
    now = time.time() if now is None else now
    removed = 0
    for path in sorted(Path(folder).rglob("*"), reverse=True):  # children before parents
        try:
            if path.is_file() and now - path.stat().st_mtime > max_age_s:
                path.unlink()
                removed += 1
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
        except OSError:  # written or removed meanwhile: next round
            pass
    return removed


class TempCleaner(threading.Thread):
    """A daemon thread running `remove_old_files(folder, max_age_s)` every `every_s` seconds."""

    def __init__(self, folder: Path, max_age_s: float = 600.0, every_s: float = 60.0):
        super().__init__(daemon=True, name="box2mask-temp-cleaner")
        self.folder, self.max_age_s, self.every_s = Path(folder), max_age_s, every_s
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.every_s):
            remove_old_files(self.folder, self.max_age_s)

    def stop(self, remove: bool = False) -> None:
        """Stop; with `remove`, delete the folder too (a folder this process made)."""
        self.stopped.set()
        if remove:
            shutil.rmtree(self.folder, ignore_errors=True)
