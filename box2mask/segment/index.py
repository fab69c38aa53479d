"""An on-disk index of a COCO instances file, so any number of images is processed in flat memory.

A COCO file lists annotations in any order and may be larger than memory, while segmenting needs
each image's annotations together. `build_index` streams the file once (`box2mask.io.coco_stream`)
into SQLite (records checked and linked by `records`);
afterwards images are visited one at a time (`iter_pending_images`), finished images are appended
to per-process part files (`PartWriter`, one JSON line per image, safe against SIGKILL), and
`write_coco` writes the output in the input's order: every top-level entry and every record kept,
annotations merged with their results. Nothing here holds more than one image's records at a time.

Tables of the index (SQLite, one file):
    meta(key, value)          fingerprint of the run (input hash, images folder, model) as JSON
    top(pos, key, value)      top-level entries in file order; value NULL for the two arrays
    images(idx, id_key, file_name, width, height, record, error)   id_key = json.dumps(id)
    anns(ord, id_key, image_key, category_key, image_idx, record, error)   ord = position in file
    results(ord, segmentation, score, error)                        imported from part files
    done(image_idx)                                                 images whose results are in
"""

import hashlib
import json
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from box2mask.io.atomic_write import atomic_path
from box2mask.io.coco_stream import CocoFormatError, loaded_entries, stream_entries
from box2mask.io.rle import rle_to_bbox_xywh
from box2mask.segment.records import check_ids_and_categories, fill_index, link_annotations
from box2mask.segment.shards import snake_rank

__all__ = [
    "CocoFormatError",
    "ImageTask",
    "PartWriter",
    "build_index",
    "file_sha256",
    "open_index",
    "read_fingerprint",
    "import_parts",
    "count_pending",
    "iter_pending_images",
    "count_failures",
    "write_coco",
]

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE top (pos INTEGER PRIMARY KEY, key TEXT, value TEXT);
CREATE TABLE images (idx INTEGER PRIMARY KEY, id_key TEXT, file_name TEXT, width INTEGER,
                     height INTEGER, record TEXT, error TEXT);
CREATE TABLE anns (ord INTEGER PRIMARY KEY, id_key TEXT, image_key TEXT, category_key TEXT,
                   image_idx INTEGER, record TEXT, error TEXT);
CREATE TABLE results (ord INTEGER PRIMARY KEY, segmentation TEXT, score REAL, error TEXT);
CREATE TABLE done (image_idx INTEGER PRIMARY KEY);
"""


@dataclass
class ImageTask:
    """One image still to segment, with the annotations that belong to it."""

    idx: int  # position of the image record in the input's `images` list
    file_name: str  # as written in the COCO record (relative to the images folder)
    width: int  # width the COCO record declares
    height: int  # height the COCO record declares
    anns: list  # [(ord, annotation record dict)], ord = position in the input's annotations


def file_sha256(path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def build_index(coco_path, index_path, fingerprint: dict) -> list[str]:
    """Stream the COCO file at `coco_path` into a new SQLite index at `index_path` (atomically).

    Raises CocoFormatError naming the file for malformed JSON or a file that is not a COCO
    instances object. Returns the problems found in records (each also recorded against the
    annotations it affects) and warnings, as human-readable lines.
    """
    import ijson

    with atomic_path(index_path) as tmp:
        first_error = None
        for reader in (stream_entries, loaded_entries):
            tmp.unlink(missing_ok=True)
            conn = sqlite3.connect(tmp)
            conn.executescript(_SCHEMA)
            try:
                with conn:
                    fill_index(conn, reader(coco_path))
                break
            except CocoFormatError as err:
                raise CocoFormatError(f"{coco_path}: {err}") from None
            except UnicodeEncodeError as err:  # a lone surrogate (\udcff) in a top-level key
                raise CocoFormatError(
                    f"{coco_path}: text that is not valid Unicode ({err})"
                ) from None
            except (ijson.JSONError, ValueError, RecursionError) as err:
                # the stream reader fails on NaN/Infinity (not strict JSON): retry with `json`
                if first_error is None:
                    first_error = str(err).splitlines()[0] if str(err) else type(err).__name__
                    continue
                raise CocoFormatError(
                    f"{coco_path}: malformed JSON ({first_error}; {err})"
                ) from None
            finally:
                conn.close()
        conn = sqlite3.connect(tmp)
        with conn:
            problems = link_annotations(conn)
            problems += check_ids_and_categories(conn)
            conn.execute("INSERT INTO meta VALUES ('fingerprint', ?)", (json.dumps(fingerprint),))
        conn.close()
    return problems


def open_index(index_path) -> sqlite3.Connection:
    """A connection to the index, with the shard deal's `snake_rank(position, world)` function."""
    conn = sqlite3.connect(index_path, timeout=60)
    conn.create_function("snake_rank", 2, snake_rank, deterministic=True)
    return conn


def read_fingerprint(conn: sqlite3.Connection) -> dict | None:
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'fingerprint'").fetchone()
    except sqlite3.DatabaseError:
        return None
    return json.loads(row[0]) if row else None


# ---------------------------------------------------------------- results: part files


class PartWriter:
    """Append-only JSON-lines file of finished images, one line per image, fsynced per line.

    A SIGKILL can leave a torn last line: it is cut off when the file is reopened, and ignored by
    `import_parts`, so that image is simply redone.
    """

    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a+b")  # noqa: SIM115 (closed in close())
        self._file.seek(0)
        data = self._file.read()
        if data and not data.endswith(b"\n"):
            self._file.truncate(data.rfind(b"\n") + 1)
        self._file.seek(0, os.SEEK_END)

    def write(self, image_idx: int, results: list) -> None:
        """results: [(ord, segmentation dict or None, score or None, error str or None)]."""
        line = json.dumps({"image": image_idx, "results": results}, separators=(",", ":"))
        self._file.write(line.encode() + b"\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def import_parts(conn: sqlite3.Connection, part_paths) -> None:
    """Load every complete line of the part files into the `results` and `done` tables."""
    with conn:
        for path in part_paths:
            with open(path, "rb") as f:
                for line in f:
                    if not line.endswith(b"\n"):
                        break  # torn by a kill: that image is redone
                    part = json.loads(line)
                    for ord_, segmentation, score, error in part["results"]:
                        conn.execute(
                            "INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?)",
                            (ord_, json.dumps(segmentation), score, error),
                        )
                    conn.execute("INSERT OR IGNORE INTO done VALUES (?)", (part["image"],))


# ---------------------------------------------------------------- the work list

# The images that still need work, dealt out to `world` shards: sorted by box count (most first),
# then dealt in snake order (`shards.snake_rank`, registered by `open_index`) so shards get similar
# work. Every rank computes the same deal from the same tables. Parameters: :world, :rank.
_SHARD = """
WITH pending AS (
    SELECT idx, (SELECT COUNT(*) FROM anns
                 WHERE anns.image_idx = images.idx AND anns.error IS NULL) AS n_boxes
    FROM images WHERE error IS NULL AND idx NOT IN (SELECT image_idx FROM done)
), ranked AS (
    SELECT idx, n_boxes, ROW_NUMBER() OVER (ORDER BY n_boxes DESC, idx) - 1 AS r
    FROM pending WHERE n_boxes > 0
), shard AS (
    SELECT idx, n_boxes FROM ranked WHERE snake_rank(r, :world) = :rank
)
"""


def count_pending(conn: sqlite3.Connection, rank: int = 0, world_size: int = 1) -> tuple[int, int]:
    """(images, boxes) still to segment in shard `rank` of `world_size`."""
    n_images, n_boxes = conn.execute(
        _SHARD + "SELECT COUNT(*), COALESCE(SUM(n_boxes), 0) FROM shard",
        {"world": world_size, "rank": rank},
    ).fetchone()
    return n_images, n_boxes


def iter_pending_images(
    conn: sqlite3.Connection, rank: int = 0, world_size: int = 1
) -> Iterator[ImageTask]:
    """Images of shard `rank` not done yet that have annotations to segment, in file order."""
    rows = conn.execute(
        _SHARD + "SELECT idx, file_name, width, height FROM shard JOIN images USING (idx) "
        "ORDER BY idx",
        {"world": world_size, "rank": rank},
    )
    for idx, file_name, width, height in rows:
        anns = [
            (ord_, json.loads(record))
            for ord_, record in conn.execute(
                "SELECT ord, record FROM anns WHERE image_idx = ? AND error IS NULL ORDER BY ord",
                (idx,),
            )
        ]
        yield ImageTask(idx=idx, file_name=file_name, width=width, height=height, anns=anns)


def count_failures(conn: sqlite3.Connection) -> int:
    """Annotations that end without a mask (an error at indexing or at segmentation)."""
    return conn.execute(
        "SELECT COUNT(*) FROM anns LEFT JOIN results USING (ord) "
        "WHERE anns.error IS NOT NULL OR results.error IS NOT NULL"
    ).fetchone()[0]


# ---------------------------------------------------------------- writing the output


def _merged_annotation(record: str, segmentation, score, error) -> str:
    ann = json.loads(record)
    if not isinstance(ann, dict):
        return record
    if error is None:
        ann.pop("box2mask_error", None)
        ann["segmentation"] = json.loads(segmentation)
        ann["score"] = score
        # the mask's tight box beside the original `bbox`, so a tightening can be reviewed
        ann["box2mask_tight_bbox"] = rle_to_bbox_xywh(ann["segmentation"])
    else:
        ann["box2mask_error"] = error
    return json.dumps(ann, separators=(",", ":"))


def write_coco(conn: sqlite3.Connection, out_path) -> None:
    """Write the output COCO file atomically (temp file + rename), streaming from the index.

    Every top-level entry and record of the input is kept in order; an annotation gains
    `segmentation` (RLE), `score` and `box2mask_tight_bbox` (the mask's tight XYWH box), or, when it failed, keeps its fields and gains
    `box2mask_error`. Raises RuntimeError if an annotation has neither a result nor an error.
    """
    missing = conn.execute(
        "SELECT COUNT(*) FROM anns LEFT JOIN results USING (ord) "
        "WHERE anns.error IS NULL AND results.ord IS NULL"
    ).fetchone()[0]
    if missing:
        raise RuntimeError(f"{missing} annotations have no result yet; cannot write the output")
    with atomic_path(out_path) as tmp:
        _write_stream(conn, tmp)


def _write_stream(conn: sqlite3.Connection, path: Path) -> None:
    """Write the merged COCO JSON to `path`, one record per line."""
    with open(path, "w", encoding="utf-8") as f:
        _write_records(conn, f)


def _write_records(conn: sqlite3.Connection, f) -> None:
    """The merged COCO JSON into the text file `f` (see `write_output`)."""
    f.write("{")
    tops = conn.execute("SELECT key, value FROM top ORDER BY pos").fetchall()
    for i, (key, value) in enumerate(tops):
        f.write(("," if i else "") + "\n" + json.dumps(key) + ": ")
        if value is not None:
            f.write(value)
            continue
        if key == "images":
            lines = (r for (r,) in conn.execute("SELECT record FROM images ORDER BY idx"))
        else:
            lines = (
                _merged_annotation(record, seg, score, ann_error or res_error)
                for record, seg, score, ann_error, res_error in conn.execute(
                    "SELECT anns.record, results.segmentation, results.score, anns.error, "
                    "results.error FROM anns LEFT JOIN results USING (ord) ORDER BY ord"
                )
            )
        f.write("[")
        for j, line in enumerate(lines):
            f.write(("," if j else "") + "\n" + line)
        f.write("\n]")
    f.write("\n}\n")
