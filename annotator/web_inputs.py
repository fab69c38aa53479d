"""Validation of every JSON payload the canvas front-end (annotator/web_api.py) accepts.

One place for the rules, so every endpoint refuses the same way: a payload is a JSON object of at
most `MAX_BODY` bytes; each field is checked for type and range here and turned into plain Python
values; anything else raises `BadInput` naming the field (answered as HTTP 400).
"""

import json
import math

__all__ = [
    "BadInput",
    "MAX_BODY",
    "ACTIONS",
    "parse_body",
    "number",
    "integer",
    "flag",
    "text",
    "box",
    "box_in_image",
    "point_in_image",
]

MAX_BODY = 16 * 1024  # bytes: the largest event payload (a box or click is ~100 bytes)
MAX_COORD = 1e6  # |x|, |y| and box sides above this are refused (no image is that large)
# per-label and per-image actions the /action endpoint runs, by name
ACTIONS = (
    "accept",
    "reject",
    "delete",
    "deselect",
    "undo",
    "redo",
    "tighten",
    "refine_mask",
    "less",
    "more",
    "done",
)


class BadInput(ValueError):
    """A payload the front-end endpoints refuse (HTTP 400), with the field named."""


def parse_body(raw: bytes) -> dict:
    """The request body as a JSON object; BadInput when too large, not JSON or not an object."""
    if len(raw) > MAX_BODY:
        raise BadInput(f"body of {len(raw)} bytes is over the {MAX_BODY}-byte limit")
    try:
        value = json.loads(raw or b"{}")
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BadInput(f"body is not JSON: {err}") from None
    if not isinstance(value, dict):
        raise BadInput("body must be a JSON object")
    return value


def number(body: dict, name: str, *, low: float = -MAX_COORD, high: float = MAX_COORD) -> float:
    """A finite number field within [low, high]."""
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadInput(f"{name} must be a number, got {value!r}"[:200])
    value = float(value)
    if not math.isfinite(value) or not low <= value <= high:
        raise BadInput(f"{name} must be finite and within [{low}, {high}], got {value}")
    return value


def integer(body: dict, name: str, *, low: int, high: int, default=None) -> int:
    """An integer field within [low, high]; `default` when absent (None: required)."""
    value = body.get(name, default)
    if value is None:  # absent without a default, or sent as null
        raise BadInput(f"{name} is required")
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadInput(f"{name} must be an integer within [{low}, {high}], got {value!r}"[:200])
    return value


def flag(body: dict, name: str, default: bool = False) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise BadInput(f"{name} must be true or false, got {value!r}"[:200])
    return value


def text(body: dict, name: str, *, choices=None, max_len: int = 1024, default=None) -> str | None:
    """A string field (at most `max_len` chars, one of `choices` when given); `default` if absent."""
    value = body.get(name, default)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > max_len:
        raise BadInput(f"{name} must be a string of at most {max_len} chars")
    if choices is not None and value not in choices:
        raise BadInput(f"{name} must be one of {list(choices)}, got {value!r}"[:200])
    return value


def box(body: dict) -> list[float]:
    """`box`: [x0, y0, x1, y1] image pixels, finite (the session clips and drops tiny ones)."""
    value = body.get("box")
    if not isinstance(value, list) or len(value) != 4:
        raise BadInput("box must be a list [x0, y0, x1, y1]")
    coords = [number({"v": v}, "v") for v in value]
    x0, y0, x1, y1 = coords
    return [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]


def box_in_image(body: dict, *, width: int, height: int) -> list[float]:
    """`box` (see `box`) clipped to a `width` x `height` image; a drag may end a little past the
    edge, but a coordinate over one image side outside it, or a box under 1 px once clipped,
    is refused."""
    x0, y0, x1, y1 = box(body)
    if (
        min(x0, x1) < -width
        or max(x0, x1) > 2 * width
        or min(y0, y1) < -height
        or max(y0, y1) > 2 * height
    ):
        raise BadInput(f"box {[x0, y0, x1, y1]} is outside the {width} x {height} image")
    x0, x1 = max(0.0, x0), min(float(width), x1)
    y0, y1 = max(0.0, y0), min(float(height), y1)
    if x1 - x0 < 1 or y1 - y0 < 1:
        raise BadInput("box too small or outside the image")
    return [x0, y0, x1, y1]


def point_in_image(body: dict, *, shape) -> tuple[float, float]:
    """(`x`, `y`): a click or brush position, inside the image of `shape` (height, width, ...)."""
    height, width = shape[:2]
    return number(body, "x", low=0, high=width), number(body, "y", low=0, high=height)
