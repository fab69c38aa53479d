import os
import time

import numpy as np
import torch

from box2mask.io.embedding_cache import EmbeddingCache, image_key


def test_key_depends_on_pixels_shape_and_model_version():
    a = np.zeros((4, 6, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 1
    assert image_key(a, "m1") == image_key(a.copy(), "m1")
    assert (
        len(
            {
                image_key(a, "m1"),
                image_key(b, "m1"),
                image_key(a, "m2"),
                image_key(a.reshape(6, 4, 3), "m1"),
            }
        )
        == 4
    )


def test_round_trip_and_lru_eviction(tmp_path):
    entry = {"features": torch.arange(256 * 256, dtype=torch.float32), "size": (3, 4)}  # ~256 KiB
    cache = EmbeddingCache(tmp_path, max_bytes=3 * 256 * 1024 + 50_000)
    assert cache.get("k0") is None
    for i in range(3):
        cache.put(f"k{i}", entry)
        time.sleep(0.02)
    got = cache.get("k0")  # k0 becomes the most recently used
    assert torch.equal(got["features"], entry["features"]) and tuple(got["size"]) == (3, 4)
    time.sleep(0.02)
    cache.put("k3", entry)  # over the limit: the least recently used (k1) goes
    assert "k1" not in cache and all(k in cache for k in ("k0", "k2", "k3"))
    assert cache.size_bytes() <= cache.max_bytes


def test_corrupt_entry_is_a_miss_and_is_removed(tmp_path):
    cache = EmbeddingCache(tmp_path)
    cache.put("k", {"x": torch.ones(3)})
    path = tmp_path / "k.pt"
    path.write_bytes(path.read_bytes()[:20])  # truncated by a crash or a full disk
    assert cache.get("k") is None and not path.exists()
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
