"""glibc malloc settings for the long-running annotator server (a no-op on other C libraries).

Why: every request of `box2mask annotate` makes large short-lived buffers (the decoded image, the
model's per-image features, full-size masks while encoding RLE, the rendered overlay and its
JPEG). glibc serves a block over its mmap threshold (128 KB at start) with its own mmap and gives
it back on free, but the first time such a block is freed it raises the threshold to that block's
size (up to 32 MB), so from then on these buffers are cut from the heap, whose holes are reused
unevenly and rarely returned: RSS creeps up request after request. Pinning the threshold keeps
big buffers out of the heap. Measured with bench/load.py --users 8 --seconds 120 (sessions
already keeping box-sized masks): server RSS 642 -> 978 MB (+39 MB over the 2nd half) with
glibc's defaults, 642 -> 753 MB (+14 MB) with this tuning; request latency unchanged within noise
(the embedded model's set_image, 9 -> 15-19 ms in bench/annotator_latency.py, pays the page
faults of fresh mappings). Few arenas keep Gradio's worker threads from each holding a grown
heap of their own (a small extra: within noise at 4 users).
Environment variables alone do not help users who start the command normally, hence mallopt
here. One the user set (`MALLOC_MMAP_THRESHOLD_`, `MALLOC_ARENA_MAX`) wins over these defaults;
`BOX2MASK_MALLOC_TUNING=0` turns them all off.
"""

import ctypes
import os
import sys
from dataclasses import dataclass

__all__ = ["MallocTuning", "tune_malloc"]

# mallopt parameter numbers from glibc's <malloc.h>
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8


@dataclass
class MallocTuning:
    mmap_threshold: int = 256 * 1024  # bytes: blocks this big or more get their own mmap, freed
    #                                   back to the OS at once (fixed: no dynamic raise)
    arena_max: int = 2  # malloc arenas shared by all threads (glibc default: 8 per CPU core)


def tune_malloc(tuning: MallocTuning | None = None, environ=None) -> dict[str, int]:
    """Apply `tuning` with glibc's mallopt; returns {setting: value} for what was set.

    Returns {} on anything but Linux with glibc (musl, macOS, Windows), or when `environ`
    (default os.environ) has BOX2MASK_MALLOC_TUNING=0. A setting whose glibc environment variable
    is set in `environ` is left to glibc.
    """
    tuning = tuning or MallocTuning()
    environ = os.environ if environ is None else environ
    libc = _glibc()
    if libc is None or environ.get("BOX2MASK_MALLOC_TUNING") == "0":
        return {}
    wanted = {
        "mmap_threshold": (M_MMAP_THRESHOLD, tuning.mmap_threshold, "MALLOC_MMAP_THRESHOLD_"),
        "arena_max": (M_ARENA_MAX, tuning.arena_max, "MALLOC_ARENA_MAX"),
    }
    applied = {}
    for name, (param, value, env_name) in wanted.items():
        if env_name in environ:
            continue
        if libc.mallopt(ctypes.c_int(param), ctypes.c_int(int(value))) == 1:  # 1 = success
            applied[name] = int(value)
    return applied


def _glibc():
    """The running process's glibc (ctypes handle), or None when it is not glibc."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc if hasattr(libc, "gnu_get_libc_version") else None  # musl has no such symbol
