"""glibc malloc tuning of `box2mask annotate`: big buffers stay out of the heap; a no-op elsewhere.

Run in subprocesses: mallopt changes the whole process, and the test process should stay as is.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from annotator.malloc_tuning import MallocTuning, tune_malloc

REPO = Path(__file__).resolve().parents[1]

# Frees an 8 MB block (glibc then raises its mmap threshold to 8 MB), then asks for 1 MB: is that
# block mmapped (its own mapping, returned to the OS on free) or cut from the heap?
PROBE = """
import ctypes, json, sys
from annotator.malloc_tuning import tune_malloc

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
applied = tune_malloc() if sys.argv[1] == "tune" else {}
libc.free(libc.malloc(8 << 20))
before = libc.mallinfo2().hblks
block = libc.malloc(1 << 20)
mmapped = libc.mallinfo2().hblks - before
libc.free(block)
print(json.dumps({"applied": applied, "mmapped": mmapped}))
"""


def _probe(mode: str, **env) -> dict:
    clean = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), **env}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], env=clean, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def _glibc_with_mallinfo2() -> bool:
    import ctypes

    return sys.platform.startswith("linux") and hasattr(ctypes.CDLL(None), "mallinfo2")


@pytest.mark.skipif(not _glibc_with_mallinfo2(), reason="needs Linux glibc >= 2.33 (mallinfo2)")
def test_big_short_lived_buffers_are_mmapped_once_tuned():
    assert _probe("plain") == {"applied": {}, "mmapped": 0}  # glibc's default: from the heap
    tuned = _probe("tune")
    assert tuned == {"applied": {"mmap_threshold": 262144, "arena_max": 2}, "mmapped": 1}
    # the user's own environment wins; BOX2MASK_MALLOC_TUNING=0 turns the tuning off
    assert _probe("tune", MALLOC_ARENA_MAX="4")["applied"] == {"mmap_threshold": 262144}
    assert _probe("tune", BOX2MASK_MALLOC_TUNING="0") == {"applied": {}, "mmapped": 0}


def test_a_no_op_off_glibc(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert tune_malloc(MallocTuning(), environ={}) == {}
