"""The label store: one small interface, and its embedded default backend (SQLite in WAL mode).

Every label records its box, mask (COCO RLE), class, source, the model version that proposed it,
a verified flag and a revision. Writes carry the revision they were based on; a write based on an
older revision (another tab or process changed the label since) raises StaleWriteError instead of
overwriting. The FiftyOne backend (annotator.fiftyone.store) implements the same Protocol.
"""

import errno
import json
import os
import sqlite3
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

__all__ = [
    "IMAGE_EXTENSIONS",
    "SOURCES",
    "STATUSES",
    "Label",
    "StaleWriteError",
    "LabelStore",
    "SQLiteStore",
    "list_image_files",
    "check_label",
]

SOURCES = ("model", "human", "human-corrected")
STATUSES = ("unlabeled", "in progress", "done")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclass
class Label:
    image: (
        str  # image key: path relative to the images folder (SQLite) or sample filepath (FiftyOne)
    )
    box_xyxy: list[float]  # absolute XYXY pixels of the original image
    class_name: str  # the object's class
    mask_rle: dict | None  # COCO RLE at full image size, counts as str; None = no mask yet
    source: str  # "model" | "human" | "human-corrected"
    model_version: str | None  # the model that proposed the mask
    verified: bool  # a person accepted it
    score: float | None = None  # the proposer's quality score
    id: str | None = None  # assigned by the store on add (str, unique in the store)
    revision: int = 0  # assigned by the store: 1 on add, +1 on every update


class StaleWriteError(RuntimeError):
    """A write based on an old revision of a label (someone else changed or deleted it since)."""


class LabelStore(Protocol):
    def list_images(self) -> list[str]: ...

    def image_status(self, image: str) -> str: ...  # "unlabeled" | "in progress" | "done"

    def set_image_done(self, image: str, done: bool) -> None: ...

    def labels(self, image: str) -> list[Label]: ...

    def get(self, label_id: str) -> Label: ...

    def add(self, label: Label) -> Label: ...  # returns it with id, revision=1

    def update(self, label: Label) -> Label: ...  # revision must match, returns revision + 1

    def delete(self, label_id: str, revision: int) -> None: ...  # StaleWriteError if it differs

    def close(self) -> None: ...


def list_image_files(images_dir: str | os.PathLike) -> list[str]:
    """Image files under `images_dir` (recursive, hidden folders skipped) as sorted POSIX relative paths."""
    root = Path(images_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such images folder")
    keys = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
            keys.append(rel.as_posix())
    return sorted(keys)


def check_label(label: Label) -> None:
    """Raise ValueError naming the field when a label cannot be stored."""
    if label.source not in SOURCES:
        raise ValueError(f"label source must be one of {SOURCES}, got {label.source!r}")
    box = [float(v) for v in label.box_xyxy]
    if len(box) != 4 or not (box[2] > box[0] and box[3] > box[1]):
        raise ValueError(f"label box must be XYXY with x1 > x0 and y1 > y0, got {label.box_xyxy}")
    if not label.class_name:
        raise ValueError("label class_name must be a non-empty string")
    rle = label.mask_rle
    if rle is not None and not (isinstance(rle, dict) and "size" in rle and "counts" in rle):
        raise ValueError("label mask_rle must be None or a COCO RLE dict with 'size' and 'counts'")


_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    image TEXT PRIMARY KEY,
    done INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS labels (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    image TEXT NOT NULL,
    box_xyxy TEXT NOT NULL,
    class_name TEXT NOT NULL,
    mask_rle TEXT,
    source TEXT NOT NULL,
    model_version TEXT,
    verified INTEGER NOT NULL,
    score REAL,
    revision INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS labels_by_image ON labels (image);
"""

_COLUMNS = (
    "id, image, box_xyxy, class_name, mask_rle, source, model_version, verified, score, revision"
)


class SQLiteStore:
    """LabelStore in one SQLite file: WAL journal, one transaction per write, safe across processes.

    `synchronous=FULL` makes every committed write durable, so a process killed at any moment
    (SIGKILL, power loss) leaves a database that opens and holds every label it reported as added.
    One connection per store object, serialised by a lock, so Gradio's worker threads may share it.
    """

    def __init__(self, path: str | os.PathLike, images_dir: str | os.PathLike | None = None):
        self.path = Path(path)
        self.images_dir = Path(images_dir) if images_dir is not None else None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(
                self.path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as err:
            hint = "" if os.access(self.path.parent, os.W_OK) else "; its folder is read-only"
            raise RuntimeError(f"{self.path}: cannot open the label store ({err}{hint})") from None
        self._lock = threading.Lock()

    # -- reads ---------------------------------------------------------------------------------
    def list_images(self) -> list[str]:
        """Image files in the images folder plus any image that already has labels, sorted."""
        on_disk = list_image_files(self.images_dir) if self.images_dir is not None else []
        with self._lock:
            rows = self._db.execute(
                "SELECT DISTINCT image FROM labels UNION SELECT image FROM images"
            ).fetchall()
        return sorted(set(on_disk) | {r[0] for r in rows})

    def image_status(self, image: str) -> str:
        with self._lock:
            done = self._db.execute("SELECT done FROM images WHERE image = ?", (image,)).fetchone()
            count = self._db.execute(
                "SELECT COUNT(*) FROM labels WHERE image = ?", (image,)
            ).fetchone()[0]
        if done is not None and done[0]:
            return "done"
        return "in progress" if count else "unlabeled"

    def labels(self, image: str) -> list[Label]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM labels WHERE image = ? ORDER BY id", (image,)
            ).fetchall()
        return [_row_to_label(r) for r in rows]

    def get(self, label_id: str) -> Label:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM labels WHERE id = ?", (int(label_id),)
            ).fetchone()
        if row is None:
            raise KeyError(f"label {label_id} is not in the store {self.path}")
        return _row_to_label(row)

    # -- writes (each one transaction) ---------------------------------------------------------
    def set_image_done(self, image: str, done: bool) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO images (image, done) VALUES (?, ?) "
                "ON CONFLICT(image) DO UPDATE SET done = excluded.done",
                (image, int(bool(done))),
            )

    def add(self, label: Label) -> Label:
        check_label(label)
        with self._write() as db:
            cur = db.execute(
                "INSERT INTO labels (image, box_xyxy, class_name, mask_rle, source, model_version,"
                " verified, score, revision) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1)",
                _label_values(label),
            )
            new_id = str(cur.lastrowid)
        return replace(label, id=new_id, revision=1)

    def update(self, label: Label) -> Label:
        check_label(label)
        if label.id is None:
            raise ValueError("update needs a label with an id (add it first)")
        with self._write() as db:
            self._check_revision(db, label.id, label.revision, action="update")
            db.execute(
                "UPDATE labels SET image = ?, box_xyxy = ?, class_name = ?, mask_rle = ?, source = ?,"
                " model_version = ?, verified = ?, score = ?, revision = revision + 1 WHERE id = ?",
                (*_label_values(label), int(label.id)),
            )
        return replace(label, revision=label.revision + 1)

    def delete(self, label_id: str, revision: int) -> None:
        with self._write() as db:
            self._check_revision(db, label_id, revision, action="delete")
            db.execute("DELETE FROM labels WHERE id = ?", (int(label_id),))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- helpers -------------------------------------------------------------------------------
    def _write(self):
        return _Transaction(self._db, self._lock, self.path)

    @staticmethod
    def _check_revision(db, label_id: str, revision: int, action: str) -> None:
        row = db.execute("SELECT revision FROM labels WHERE id = ?", (int(label_id),)).fetchone()
        if row is None:
            raise StaleWriteError(
                f"cannot {action} label {label_id}: it was deleted elsewhere (another tab or "
                "process); reload the image to see the current labels"
            )
        if row[0] != revision:
            raise StaleWriteError(
                f"cannot {action} label {label_id}: it is at revision {row[0]} but this edit was "
                f"based on revision {revision} (changed in another tab or process); reload the "
                "image to see the current version"
            )


class _Transaction:
    """`with` block = one IMMEDIATE transaction (takes the write lock up front): commit or roll back.

    A write the disk or the folder refuses (full, read-only) is rolled back and raised as OSError
    (ENOSPC / EROFS: PermissionError) naming the store: nothing of it is stored."""

    def __init__(self, db: sqlite3.Connection, lock: threading.Lock, path: Path):
        self.db, self.lock, self.path = db, lock, path

    def __enter__(self) -> sqlite3.Connection:
        self.lock.acquire()
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as err:
            self.lock.release()
            raise _write_error(self.path, err) from None
        except BaseException:
            self.lock.release()
            raise
        return self.db

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                try:
                    self.db.execute("COMMIT")
                except sqlite3.OperationalError as err:  # the commit itself failed
                    if self.db.in_transaction:
                        self.db.execute("ROLLBACK")
                    raise _write_error(self.path, err) from None
            elif self.db.in_transaction:  # SQLite may have rolled back already (disk full)
                self.db.execute("ROLLBACK")
        finally:
            self.lock.release()
        if isinstance(exc, sqlite3.OperationalError):
            raise _write_error(self.path, exc) from None


def _write_error(path: Path, err: sqlite3.OperationalError) -> OSError:
    """The OSError a refused store write raises: disk full, read-only, or another I/O error."""
    text = str(err)
    if "full" in text:
        return OSError(errno.ENOSPC, f"{path}: disk full, the change was not saved ({text})")
    if "readonly" in text or "read-only" in text or "unable to open" in text:
        return PermissionError(
            errno.EROFS, f"{path}: the label store is read-only, the change was not saved ({text})"
        )
    return OSError(errno.EIO, f"{path}: the change was not saved ({text})")


def _label_values(label: Label) -> tuple:
    return (
        label.image,
        json.dumps([float(v) for v in label.box_xyxy]),
        label.class_name,
        json.dumps(label.mask_rle) if label.mask_rle is not None else None,
        label.source,
        label.model_version,
        int(bool(label.verified)),
        float(label.score) if label.score is not None else None,
    )


def _row_to_label(row) -> Label:
    label_id, image, box, class_name, rle, source, model_version, verified, score, revision = row
    return Label(
        image=image,
        box_xyxy=json.loads(box),
        class_name=class_name,
        mask_rle=json.loads(rle) if rle is not None else None,
        source=source,
        model_version=model_version,
        verified=bool(verified),
        score=score,
        id=str(label_id),
        revision=revision,
    )
