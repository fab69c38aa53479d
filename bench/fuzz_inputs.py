"""Hypothesis strategies of hostile inputs for bench/fuzz.py: COCO files, image bytes, YAML
configs, checkpoints.

Each strategy draws a description of one input (plain data); bench/fuzz.py writes it to a file
in a fresh folder and feeds it to the parser. Good files the mutations start from are made by
bench/fuzz.py (`GOOD_IMAGES`: two small images every COCO case may point at).
"""

import json
import math

from hypothesis import strategies as st

GOOD_IMAGES = {"a.png": (24, 32), "b.jpg": (20, 28)}  # file name -> (height, width)

# ------------------------------------------------------------------ scalars

ODD_NUMBERS = st.sampled_from(
    [
        0,
        -1,
        1,
        2**31,
        2**63,
        2**64 + 1,
        10**30,
        -(10**30),
        1e308,
        -1e-300,
        0.5,
        3.0,
        math.nan,
        math.inf,
        -math.inf,
        True,
        False,
    ]  # fmt: skip
)
ODD_TEXT = st.sampled_from(
    [
        "",
        " ",
        "a.png",
        "./a.png",
        "A.PNG",
        "../a.png",
        "../../etc/passwd",
        "/etc/passwd",
        "sub/../a.png",
        "a.png\x00.jpg",
        "\ud800",
        "a\udcff.png",
        "ünïcödé.png",
        "图像.jpg",
        "a" * 300 + ".png",
        "con",
        "~/a.png",
        "a.png/",
        "\n",
        "%s%n",
        "${HOME}",
    ]  # fmt: skip
)
NUMBERS = st.one_of(
    ODD_NUMBERS,
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, ODD_TEXT, st.text(max_size=12))
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


MISSING = "__missing__"  # a field drawn as MISSING is left out of its record


def maybe(values, odd: bool = True) -> st.SearchStrategy:
    """Mostly a value of `values`; now and then the field left out, or (odd) any JSON value."""
    others = [JSON_VALUES, st.just(MISSING)] if odd else [st.just(MISSING)]
    return st.one_of(values, values, values, *others)


def _record(fields: dict) -> st.SearchStrategy:
    return st.fixed_dictionaries(fields).map(lambda d: {k: v for k, v in d.items() if v != MISSING})


# ------------------------------------------------------------------ COCO files

IDS = st.one_of(st.sampled_from([1, 2, 3]), ODD_NUMBERS, st.text(max_size=3), st.none())
GOOD_BBOX = st.tuples(
    st.integers(-4, 30), st.integers(-4, 24), st.integers(-2, 34), st.integers(-2, 26)
).map(list)
BBOX = st.one_of(
    GOOD_BBOX,
    GOOD_BBOX,
    st.lists(NUMBERS, min_size=0, max_size=6),
    st.lists(st.integers(-5, 40), min_size=0, max_size=6),
    JSON_VALUES,
)
POLYGONS = st.lists(  # 0-2 points, odd lengths, NaN/inf and fine ones
    st.one_of(
        st.lists(st.floats(-5, 40), min_size=0, max_size=5),
        st.lists(st.floats(-5, 40), min_size=6, max_size=12),
        st.lists(NUMBERS, min_size=0, max_size=8),
        JSON_VALUES,
    ),
    max_size=3,
)
RLE_SIZES = st.one_of(
    st.sampled_from([[24, 32], [20, 28], [32, 24], [0, 0], [-24, 32], [10**6, 10**6], [24]]),
    st.lists(NUMBERS, max_size=3),
    JSON_VALUES,
)
RLE_COUNTS = st.one_of(
    st.lists(st.integers(-3, 800), max_size=6),  # sums below, at or above H * W
    st.sampled_from(["", "0", "P`0", "zzzzzzzz", "!!!", "\u00ff", "0" * 50, "1O10000"]),
    st.text(alphabet=st.characters(min_codepoint=48, max_codepoint=111), max_size=20),
    JSON_VALUES,
)
RLE = _record({"size": maybe(RLE_SIZES), "counts": maybe(RLE_COUNTS)})
SEGMENTATION = st.one_of(st.just(MISSING), POLYGONS, RLE, JSON_VALUES)


def _image_record(name_and_size):
    name, (height, width) = name_and_size
    return _record(
        {
            "id": maybe(IDS),
            "file_name": maybe(st.one_of(st.just(name), ODD_TEXT, st.text(max_size=8))),
            "width": maybe(st.one_of(st.just(width), NUMBERS)),
            "height": maybe(st.one_of(st.just(height), NUMBERS)),
        }
    )


IMAGE_RECORDS = st.sampled_from(sorted(GOOD_IMAGES.items())).flatmap(_image_record)
ANNOTATIONS = _record(
    {
        "id": maybe(st.one_of(st.integers(1, 6), ODD_NUMBERS, st.text(max_size=3))),
        "image_id": maybe(IDS),
        "category_id": maybe(IDS),
        "bbox": maybe(BBOX, odd=False),
        "segmentation": SEGMENTATION,
        "iscrowd": maybe(st.sampled_from([0, 1])),
        "box2mask": st.one_of(
            st.just(MISSING),
            JSON_VALUES,
            _record(
                {
                    "source": maybe(st.sampled_from(["human", "model", "x"])),
                    "verified": maybe(st.booleans()),
                    "model_version": maybe(st.text(max_size=4)),
                }
            ),
        ),
    }  # fmt: skip
)
CATEGORIES = st.lists(
    _record({"id": maybe(IDS), "name": maybe(st.one_of(st.text(max_size=6), ODD_TEXT))}),
    max_size=3,
)


@st.composite
def coco_documents(draw):
    """A COCO instances document (a dict, or now and then any JSON value)."""
    if draw(st.integers(0, 9)) == 0:
        return draw(JSON_VALUES)
    doc = {
        "images": draw(st.one_of(st.lists(IMAGE_RECORDS, max_size=4), JSON_VALUES)),
        "annotations": draw(st.one_of(st.lists(ANNOTATIONS, max_size=5), JSON_VALUES)),
        "categories": draw(st.one_of(CATEGORIES, JSON_VALUES)),
    }
    for key in draw(st.lists(st.sampled_from(["images", "annotations", "categories"]))):
        doc.pop(key, None)
    doc.update(draw(st.dictionaries(st.text(max_size=5), JSON_VALUES, max_size=2)))
    return doc


@st.composite
def coco_files(draw) -> bytes:
    """The bytes of a COCO file: a drawn document as JSON (NaN/Infinity as Python writes them),
    sometimes cut short, with a flipped byte, spliced or deeply nested."""
    doc = draw(coco_documents())
    text = json.dumps(doc, allow_nan=True).encode("utf-8", "surrogatepass")
    how = draw(st.sampled_from(["as is"] * 6 + ["cut", "flip", "splice", "nest", "bom"]))
    if how == "cut":
        text = text[: draw(st.integers(0, max(0, len(text) - 1)))]
    elif how == "flip" and text:
        i = draw(st.integers(0, len(text) - 1))
        text = text[:i] + bytes([text[i] ^ (1 << draw(st.integers(0, 7)))]) + text[i + 1 :]
    elif how == "splice":
        i = draw(st.integers(0, len(text)))
        text = text[:i] + draw(st.binary(max_size=8)) + text[i:]
    elif how == "nest":
        depth = draw(st.sampled_from([50, 5000, 100_000]))
        text = b'{"images": [], "annotations": [' + b"[" * depth + b"]" * depth + b"]}"
    elif how == "bom":
        text = b"\xef\xbb\xbf" + text
    return text


# ------------------------------------------------------------------ image bytes


@st.composite
def image_mutations(draw) -> dict:
    """Which good image file to start from and how to break it (applied by bench/fuzz.py)."""
    fmt = draw(st.sampled_from(["PNG", "JPEG", "JPEG-EXIF", "GIF", "BMP", "TIFF", "WEBP"]))
    edits = draw(
        st.lists(
            st.one_of(
                st.tuples(st.just("flip"), st.integers(0, 63), st.integers(0, 7)),  # header
                st.tuples(st.just("flip"), st.integers(0, 4000), st.integers(0, 7)),
                st.tuples(st.just("cut"), st.integers(0, 4000)),
                st.tuples(
                    st.just("insert"), st.integers(0, 200), st.binary(min_size=1, max_size=6)
                ),
                st.tuples(
                    st.just("size"),
                    st.sampled_from([0, 1, 7, 255, 65535, 2**31 - 1, 2**32 - 1]),
                    st.sampled_from([0, 1, 9, 255, 65535, 2**31 - 1]),
                ),
            ),  # fmt: skip
            min_size=1,
            max_size=3,
        )
    )
    return {"format": fmt, "edits": edits}


# ------------------------------------------------------------------ YAML configs

CONFIG_KEYS = st.sampled_from(
    [
        "iterations",
        "lr",
        "amp",
        "model.backbone",
        "model.num_queries",
        "loss.weight_proj",
        "lr_milestones",
        "learner",
        "model.base",
        "model.crop_size",
        "model.levels",
        "teacher",
        "image_size",
        "seed",
        "model",
        "loss",
        "nope",
        "model.nope",
        "a.b.c",
        "",
        ".",
    ]  # fmt: skip
)
ALIAS_BOMB = "l0: &l0 {a: 1}\n" + "".join(  # 2 ** 40 leaves when expanded
    f"l{i}: &l{i} {{a: *l{i - 1}, b: *l{i - 1}}}\n" for i in range(1, 41)
)
YAML_SNIPPETS = st.sampled_from(
    [
        "",
        "---",
        "- 1\n- 2",
        "null",
        "42",
        "'text'",
        "a: [1, 2\n",
        "a: {b: 1",
        "\t- x",
        "a: &a [*a]",
        "!!python/object:os.system {}",
        "a: !!binary AAAA",
        "? [1, 2]\n: 3",
        "x: &x {a: 1, b: 1}\ny: &y {a: *x, b: *x}\nz: &z {a: *y, b: *y}\nw: {a: *z, b: *z}",
        "iterations: 1e400",
        "lr: .nan",
        "lr: -.inf",
        "iterations: 0x10",
        "amp: yes",
        "model:\n  model:\n    model: 1",
        "learner: crop\nmodel.crop_size: 7",
        "learner: crop\nteacher: /no/such.pt",
        "learner: crop\nmodel.levels: 0",
        "\x00\x01\x02",
        "\xff\xfe",
        ALIAS_BOMB,
        "[" * 5000,
        "a:\n" + "  " * 3000 + "b: 1",
    ]  # fmt: skip
)


@st.composite
def yaml_files(draw) -> bytes:
    """A YAML config file: a mapping of (mostly real) keys to odd values, a snippet of odd YAML,
    or a mutated copy of either."""
    how = draw(st.sampled_from(["mapping", "mapping", "snippet", "text"]))
    if how == "mapping":
        import yaml

        mapping = draw(st.dictionaries(CONFIG_KEYS, JSON_VALUES, max_size=5))
        if draw(st.booleans()):
            mapping["learner"] = "crop"
        text = yaml.safe_dump(mapping, allow_unicode=True).encode("utf-8", "surrogatepass")
    elif how == "snippet":
        text = draw(YAML_SNIPPETS).encode("utf-8", "surrogatepass")
    else:
        text = draw(st.text(max_size=40)).encode("utf-8", "surrogatepass")
    if text and draw(st.integers(0, 3)) == 0:
        i = draw(st.integers(0, len(text) - 1))
        text = text[:i] + bytes([text[i] ^ (1 << draw(st.integers(0, 7)))]) + text[i + 1 :]
    return text


# ------------------------------------------------------------------ checkpoints

CKPT_FIELDS = st.sampled_from(
    [
        "format",
        "format_version",
        "model_version",
        "kind",
        "model_config",
        "model_state",
        "class_names",
        "config",
        "extra",
    ]  # fmt: skip
)
TENSOR_EDITS = st.sampled_from(["drop", "shape", "dtype", "nan", "scalar", "not a tensor"])


@st.composite
def checkpoint_mutations(draw) -> dict:
    """Which good checkpoint to start from (a crop learner, or a tiny Box2Mask-T) and how to
    break it: bytes (truncated, flipped, spliced) or fields (removed, replaced, odd weights)."""
    base = draw(st.sampled_from(["crop-learner", "crop-learner", "crop-learner", "box2mask-t"]))
    if draw(st.booleans()):
        edits = draw(
            st.lists(
                st.one_of(
                    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(0, 7)),
                    st.tuples(st.just("cut"), st.integers(0, 10**6)),
                    st.tuples(
                        st.just("insert"), st.integers(0, 10**6), st.binary(min_size=1, max_size=4)
                    ),
                ),  # fmt: skip
                min_size=1,
                max_size=2,
            )
        )
        return {"base": base, "bytes": edits}
    fields = draw(
        st.lists(
            st.one_of(
                st.tuples(st.just("drop"), CKPT_FIELDS),
                st.tuples(st.just("set"), CKPT_FIELDS, JSON_VALUES),
                st.tuples(st.just("config"), st.text(max_size=10), JSON_VALUES),
                st.tuples(st.just("tensor"), st.integers(0, 50), TENSOR_EDITS),
            ),
            min_size=1,
            max_size=3,
        )
    )
    return {"base": base, "fields": fields}
