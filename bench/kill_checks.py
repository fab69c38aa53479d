"""The checks of bench/kill_loop.py after each kill: the registry, the served model, the store.

registry_state(root)  every version folder, whether its checkpoint loads, what promoted.json
                      names and whether that model answers a box; leftover temporary files
store_digest(path)    (rows, sha256) of the label store's labels table, read-only
leftovers(folder)     temporary files and folders a killed write left behind
"""

import hashlib
import json
import sqlite3
from pathlib import Path

import numpy as np

__all__ = ["leftovers", "registry_state", "store_digest"]


def store_digest(path: Path) -> tuple[int, str]:
    """(number of label rows, sha256 of every row in id order) of a SQLite label store."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = connection.execute("SELECT * FROM labels ORDER BY id").fetchall()
    finally:
        connection.close()
    return len(rows), hashlib.sha256(repr(rows).encode()).hexdigest()[:16]


def leftovers(folder: Path) -> list[str]:
    """Paths under `folder` of temporary files (`.NAME.*.tmp`, an atomic write's) and version
    folders (`.vNNNN-*.tmp-PID`, the registry's) that a killed process left behind."""
    if not Path(folder).exists():
        return []
    return sorted(
        str(p.relative_to(folder))
        for p in Path(folder).rglob(".*")
        if p.name.endswith(".tmp") or ".tmp-" in p.name
    )


def _answers(checkpoint: Path) -> str:
    """'' when the checkpoint builds a predictor that segments one box, else the error."""
    from box2mask import build_predictor

    try:
        predictor = build_predictor(checkpoint, device="cpu")
        image = np.zeros((64, 64, 3), np.uint8)
        image[16:48, 16:48] = 200
        predictor.set_image(image)
        masks, _ = predictor.predict(np.array([[12.0, 12.0, 52.0, 52.0]], np.float32))
        if masks.shape != (1, 64, 64) or not masks.any():
            return f"a {masks.shape} mask with {int(masks.sum())} pixels for a 40 px box"
        return ""
    except Exception as err:  # what the annotator would hit loading it
        return f"{type(err).__name__}: {err}"[:200]


def registry_state(root: Path) -> dict:
    """What the registry at `root` holds: `versions` (names with a complete folder), `broken`
    (version folders whose info.json or checkpoint does not load, with why), `promoted` (the
    name in promoted.json or None), `promoted_error` ('' when that model loads and answers a
    box), `leftovers` (temporary files and folders)."""
    from box2mask.io.checkpoint import load_checkpoint

    root = Path(root)
    versions, broken = [], {}
    for folder in sorted((root / "versions").glob("*")):
        if folder.name.startswith("."):
            continue  # a temporary folder: not a version (counted in leftovers)
        try:
            json.loads((folder / "info.json").read_text())
            load_checkpoint(folder / "checkpoint.pt")
            versions.append(folder.name)
        except Exception as err:  # a version the registry names that does not load
            broken[folder.name] = f"{type(err).__name__}: {err}"[:200]
    promoted, error = None, ""
    path = root / "promoted.json"
    if path.exists():
        try:
            promoted = json.loads(path.read_text())["version"]
        except Exception as err:
            error = f"promoted.json: {type(err).__name__}: {err}"[:200]
        if promoted is not None:
            if promoted not in versions:
                error = f"promoted {promoted} is not a complete version"
            else:
                error = _answers(root / "versions" / promoted / "checkpoint.pt")
    return {
        "versions": versions,
        "broken": broken,
        "promoted": promoted,
        "promoted_error": error,
        "leftovers": leftovers(root),
    }
