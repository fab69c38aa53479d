"""Reading a COCO instances file one record at a time (ijson), with Python's json as a fallback.

Both readers yield the same entries, in file order:
    ("top", key, value)                   a top-level entry other than the two arrays
    ("array", "images"|"annotations", None)   where that array stands among the top-level keys
    ("images"|"annotations", None, record)    each record of the array
`stream_entries` holds one record in memory at a time; `loaded_entries` reads the whole file, for
files that are not strict JSON (NaN / Infinity, as Python's json module writes them).
"""

import json
from collections.abc import Iterator

__all__ = ["ARRAYS", "CocoFormatError", "stream_entries", "loaded_entries"]

ARRAYS = ("images", "annotations")
MAX_DEPTH = 200  # records nested deeper are refused (Python's json stops near 1000 levels)


class CocoFormatError(ValueError):
    """A COCO file that cannot be used at all (malformed JSON, not an object, no images list)."""


def _build_value(events, event, value):
    """Consume ijson events of one JSON value starting at (event, value); return the value."""
    import ijson

    builder = ijson.ObjectBuilder()
    depth = 0
    while True:
        builder.event(event, value)
        if event in ("start_map", "start_array"):
            depth += 1
            if depth > MAX_DEPTH:
                raise CocoFormatError(f"a record nested over {MAX_DEPTH} levels deep")
        elif event in ("end_map", "end_array"):
            depth -= 1
        if depth == 0:
            return builder.value
        _, event, value = next(events)


def stream_entries(path) -> Iterator[tuple]:
    """Yield ("top", key, value), ("array", key, None) and ("images"|"annotations", None, item).

    Streams with ijson: memory holds one record at a time.
    """
    import ijson

    with open(path, "rb") as f:
        # 16 KiB reads: yajl takes time quadratic in a buffer's nesting depth (64 KiB of "[" ~ 7 s)
        events = ijson.parse(f, use_float=True, buf_size=16384)
        _, event, _ = next(events)
        if event != "start_map":
            raise CocoFormatError("the top level must be a JSON object")
        for prefix, event, value in events:
            if prefix == "" and event == "end_map":
                for _ in events:  # ijson raises on anything but whitespace after the object
                    pass
                return
            key = value  # a top-level map_key
            _, event, value = next(events)
            if key in ARRAYS and event == "start_array":
                yield ("array", key, None)
                for _, event, value in events:
                    if event == "end_array":
                        break
                    yield (key, None, _build_value(events, event, value))
            else:
                yield ("top", key, _build_value(events, event, value))


def loaded_entries(path) -> Iterator[tuple]:
    """The same entries from Python's json module (accepts NaN/Infinity; reads the whole file)."""
    with open(path, "rb") as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise CocoFormatError("the top level must be a JSON object")
    for key, value in data.items():
        if key in ARRAYS and isinstance(value, list):
            yield ("array", key, None)
            for item in value:
                yield (key, None, item)
        else:
            yield ("top", key, value)
