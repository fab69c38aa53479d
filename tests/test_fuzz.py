"""Fuzzed inputs at every parser boundary end in a clean error naming the input or a correct
result: never an uncaught exception, a hang, a partial output or a changed input (bench/fuzz.py
runs the same checks on 10,000 cases; here the hand-picked cases and a few hundred draws)."""

import pytest

pytest.importorskip("hypothesis", reason="hypothesis is not installed (pip install hypothesis)")

from bench import fuzz  # noqa: E402
from bench.fuzz_checks import check_segment_exit  # noqa: E402
from bench.fuzz_examples import EXAMPLES  # noqa: E402
from bench.fuzz_files import leftovers, snapshot  # noqa: E402

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore::UserWarning"),  # PIL on corrupt EXIF
]

DRAWS = {
    "coco segment": 5,
    "coco import": 40,
    "image bytes": 100,
    "yaml config": 40,
    "checkpoint": 8,
}


def _no_crash(kind, case, status, detail):
    assert status in ("clean error", "correct"), f"{kind}: {status}: {detail}\ncase: {case!r}"


@pytest.mark.parametrize("kind", list(DRAWS))
def test_fuzzed_inputs_end_in_a_clean_error_or_a_correct_result(kind):
    examples = EXAMPLES[kind]
    if kind == "coco segment":  # a segment run is slow: the cases of the index's own fixes
        examples = examples[:7] + examples[20:22]
    fuzz.fuzz(kind, DRAWS[kind], 0, _no_crash, shrink=True, examples=examples)


def test_the_checks_see_a_crash_a_hang_and_a_partial_output(tmp_path, monkeypatch):
    """The judge itself: an uncaught exception, a hang and a file left behind are not passes."""

    def boom(case, folder):
        raise KeyError("x")

    def sleepy(case, folder):
        import time

        time.sleep(5)

    monkeypatch.setitem(fuzz.KINDS, "boom", (None, boom, 0))
    monkeypatch.setitem(fuzz.KINDS, "sleepy", (None, sleepy, 0))
    assert fuzz.run_case("boom", None)[0] == "crash"
    assert fuzz.run_case("sleepy", None, limit=0.2)[0] == "hang"
    before = snapshot(tmp_path)
    (tmp_path / "out.json.tmp").write_text("{")
    assert "left behind" in leftovers(before, tmp_path, set())


@pytest.mark.parametrize(
    "case, code",
    [pytest.param(EXAMPLES["segment exit"][0], 0, marks=pytest.mark.slow), (b"{", 2)],
)
def test_the_real_segment_command_exits_0_or_2_without_a_traceback(tmp_path, case, code):
    status, detail = check_segment_exit(case, tmp_path)
    assert status in ("clean error", "correct") and detail == f"exit {code}", detail
