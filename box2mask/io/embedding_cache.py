"""A bounded on-disk cache of image encodings, keyed by image content and model version.

The expensive part of answering a box is encoding its image (`set_image`); this cache keeps those
encodings on disk so an image encoded once (in the background, or in an earlier session) answers
its first box as fast as its hundredth. Entries are plain tensor dicts saved with `torch.save` and
read with `torch.load(weights_only=True)` (no code is ever unpickled), written to a temporary
file and renamed (a crash never leaves a half entry), and evicted least-recently-used when the
folder grows past `max_bytes`.
"""

import hashlib
import os
import threading
from pathlib import Path

import numpy as np
import torch

from box2mask.io.atomic_write import atomic_write

__all__ = ["EmbeddingCache", "image_key"]


def image_key(image: np.ndarray, model_version: str) -> str:
    """Hex key of (pixels, shape, model version): the same image under another model is a miss."""
    digest = hashlib.sha256()
    digest.update(model_version.encode())
    digest.update(str(image.shape).encode())
    digest.update(np.ascontiguousarray(image).tobytes())
    return digest.hexdigest()[:32]


class EmbeddingCache:
    """`get(key)` / `put(key, state)` over a folder of `<key>.pt` files, at most `max_bytes`."""

    def __init__(self, root: str | os.PathLike, max_bytes: int = 2 * 1024**3):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()

    def _path(self, key: str) -> Path:
        return self.root / f"{key}.pt"

    def __contains__(self, key: str) -> bool:
        return self._path(key).is_file()

    def get(self, key: str) -> dict | None:
        """The cached state, or None (also for an unreadable entry, which is removed)."""
        path = self._path(key)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            return None
        except Exception:  # corrupt entry (e.g. disk trouble): drop it, encode again
            path.unlink(missing_ok=True)
            return None
        os.utime(path)  # mark as recently used
        return state

    def put(self, key: str, state: dict) -> None:
        """Store `state` (a dict of tensors / numbers / tuples) and evict old entries if needed."""
        path = self._path(key)
        cpu_state = {k: v.detach().cpu() if torch.is_tensor(v) else v for k, v in state.items()}
        with atomic_write(path, "wb") as f:
            torch.save(cpu_state, f)
        self._evict()

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.root.glob("*.pt"))

    def _evict(self) -> None:
        with self._lock:
            entries = []
            for p in self.root.glob("*.pt"):
                try:
                    st = p.stat()
                except FileNotFoundError:
                    continue
                entries.append((st.st_mtime, st.st_size, p))
            total = sum(size for _, size, _ in entries)
            for _, size, p in sorted(entries, key=lambda e: e[0]):
                if total <= self.max_bytes:
                    break
                p.unlink(missing_ok=True)
                total -= size
