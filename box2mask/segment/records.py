"""The records of a COCO instances file, checked and linked inside the index (segment/index.py).

`fill_index` stores every streamed entry with the problem found in it (a record that is not an
object, lacks a field, has a size that is not a positive integer); `link_annotations` attaches
annotations to their images by id and marks the ones that cannot be attached;
`check_ids_and_categories` lists what only deserves a warning. A bad record never stops the
others: it is reported and skipped.
"""

import json
import math
import sqlite3
from collections.abc import Iterator

from box2mask.io.coco_stream import ARRAYS, CocoFormatError

__all__ = ["fill_index", "link_annotations", "check_ids_and_categories"]


def _check_image(record, idx: int) -> str | None:
    """The problem with the image record at position `idx` of `images`, or None."""
    if not isinstance(record, dict):
        return f"image record #{idx} is not a JSON object"
    name = f"image record #{idx}" + (f" (id {record['id']!r})" if "id" in record else "")
    for field in ("id", "file_name", "width", "height"):
        if field not in record:
            return f"{name} lacks '{field}'"
    if not isinstance(record["file_name"], str) or not record["file_name"]:
        return f"{name}: 'file_name' must be a non-empty string"
    try:
        record["file_name"].encode("utf-8")
    except UnicodeEncodeError:
        return f"{name}: 'file_name' {record['file_name']!r} is not valid Unicode"
    for field in ("width", "height"):
        v = record[field]
        number = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        if not number or v != int(v) or not 0 < v < 2**31:
            return f"{name}: '{field}' must be a positive integer, got {v!r}"
    return None


def fill_index(conn: sqlite3.Connection, entries: Iterator[tuple]) -> None:
    """Insert the streamed entries (`box2mask.io.coco_stream`: ("top" | "array" | "images" |
    "annotations", key, value)) into the index tables, each record with its problem (or NULL). Raises
    CocoFormatError when `images`, `annotations` or `categories` is missing."""
    pos = n_images = n_anns = 0
    seen_arrays = set()
    for kind, key, value in entries:
        if kind == "top":
            conn.execute("INSERT INTO top VALUES (?, ?, ?)", (pos, key, json.dumps(value)))
            pos += 1
        elif kind == "array":
            conn.execute("INSERT INTO top VALUES (?, ?, NULL)", (pos, key))
            seen_arrays.add(key)
            pos += 1
        elif kind == "images":
            error = _check_image(value, n_images)
            ok = error is None
            conn.execute(
                "INSERT INTO images VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    n_images,
                    json.dumps(value["id"]) if isinstance(value, dict) and "id" in value else None,
                    value["file_name"] if ok else None,
                    int(value["width"]) if ok else None,
                    int(value["height"]) if ok else None,
                    json.dumps(value),
                    error,
                ),
            )
            n_images += 1
        else:  # an annotation
            error, keys = None, {}
            if not isinstance(value, dict):
                error = "annotation is not a JSON object"
            else:
                keys = {
                    k: json.dumps(value[k]) for k in ("id", "image_id", "category_id") if k in value
                }
                if "image_id" not in value:
                    error = "annotation lacks 'image_id'"
            conn.execute(
                "INSERT INTO anns VALUES (?, ?, ?, ?, NULL, ?, ?)",
                (
                    n_anns,
                    keys.get("id"),
                    keys.get("image_id"),
                    keys.get("category_id"),
                    json.dumps(value),
                    error,
                ),
            )
            n_anns += 1
    for key in ARRAYS:
        if key not in seen_arrays:
            raise CocoFormatError(f"'{key}' is missing or is not a list")


def link_annotations(conn: sqlite3.Connection) -> list[str]:
    """Attach annotations to images by id; mark the ones that cannot be attached. Returns problems."""
    problems = []
    conn.execute("CREATE INDEX images_by_key ON images (id_key)")
    for key, n in conn.execute(
        "SELECT id_key, COUNT(*) FROM images WHERE id_key IS NOT NULL GROUP BY id_key HAVING COUNT(*) > 1"
    ).fetchall():
        error = f"image id {key} is used by {n} image records"
        problems.append(error + "; their annotations are skipped")
        conn.execute("UPDATE images SET error = ? WHERE id_key = ?", (error, key))
    conn.execute(
        "UPDATE anns SET image_idx = (SELECT idx FROM images WHERE images.id_key = anns.image_key) "
        "WHERE error IS NULL"
    )
    for (error,) in conn.execute("SELECT error FROM images WHERE error IS NOT NULL"):
        if not error.startswith("image id "):
            problems.append(error)
    conn.execute(
        "UPDATE anns SET error = (SELECT error FROM images WHERE images.idx = anns.image_idx) "
        "WHERE error IS NULL AND image_idx IS NOT NULL"
    )
    conn.execute(
        "UPDATE anns SET error = 'image_id ' || image_key || ' is not in images' "
        "WHERE error IS NULL AND image_idx IS NULL"
    )
    conn.execute("CREATE INDEX anns_by_image ON anns (image_idx)")
    for ord_, id_key, error in conn.execute(
        "SELECT ord, id_key, error FROM anns WHERE error IS NOT NULL AND image_idx IS NULL"
    ):
        name = f"annotation {id_key}" if id_key is not None else f"annotation #{ord_}"
        problems.append(f"{name}: {error}")
    return problems


def check_ids_and_categories(conn: sqlite3.Connection) -> list[str]:
    """Warnings that do not stop anything: duplicate annotation ids, unknown category ids."""
    warnings = [
        f"warning: annotation id {key} appears {n} times (all kept)"
        for key, n in conn.execute(
            "SELECT id_key, COUNT(*) FROM anns WHERE id_key IS NOT NULL GROUP BY id_key "
            "HAVING COUNT(*) > 1"
        )
    ]
    row = conn.execute("SELECT value FROM top WHERE key = 'categories'").fetchone()
    categories = json.loads(row[0]) if row else None
    if not isinstance(categories, list):
        return warnings
    conn.execute("CREATE TEMP TABLE known (key TEXT PRIMARY KEY)")
    conn.executemany(
        "INSERT OR IGNORE INTO known VALUES (?)",
        ((json.dumps(c.get("id")),) for c in categories if isinstance(c, dict)),
    )
    for ord_, id_key, category_key in conn.execute(
        "SELECT ord, id_key, category_key FROM anns WHERE category_key IS NOT NULL "
        "AND category_key NOT IN (SELECT key FROM known) ORDER BY ord"
    ):
        name = f"annotation {id_key}" if id_key is not None else f"annotation #{ord_} (no id)"
        warnings.append(
            f"warning: {name}: category_id {category_key} is not in categories (segmented anyway)"
        )
    return warnings
