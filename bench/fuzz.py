"""Property-based fuzzing (hypothesis) of every parser at the input boundary; one table.

    .venv/bin/python -m bench.fuzz [--cases 10000] [--seed 0] [--only KIND] [--details]
    .venv/bin/python -m bench.fuzz --only "image bytes" --draws 100 --shrink   # stop at a crash
    .venv/bin/python -m bench.fuzz --self-check   # the judge sees a crash, a hang, a leftover

Kinds (the strategies are bench/fuzz_inputs.py, the hand-picked cases bench/fuzz_examples.py, the
checks bench/fuzz_checks.py; every case runs in a fresh temporary folder):
    coco segment   COCO files -> `box2mask segment` in process (`box2mask.cli.main`, embedded default)
    coco import    COCO files -> annotator.export.import_coco into a SQLite label store
    image bytes    PNG/JPEG/GIF/BMP/TIFF/WebP files cut, bit-flipped, spliced, with odd sizes ->
                   box2mask.io.image_io.load_image and image_size
    yaml config    YAML files -> train.config.load_config and train.crop_config.load_crop_config
    checkpoint     crop-learner and Box2Mask-T checkpoints with broken bytes or fields ->
                   box2mask.build_predictor (box2mask.io.checkpoint.load_checkpoint)
    segment exit   a few COCO files through the real `box2mask segment` (a subprocess)

A case ends as
    clean error  the parser's own error (exit 2 / 1 for segment) with the input's path in its message
    correct      a result that passes the kind's checks (shapes, sizes, counts, a round trip)
    crash        anything else: another exception, a traceback, a wrong result, a changed input
                 file, a partial output file or a temporary file left behind
    hang         still running after --limit seconds
"""

import argparse
import collections
import contextlib
import json
import os
import select
import signal
import sys
import tempfile
import time
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, seed, settings

from bench import fuzz_inputs as inputs
from bench.fuzz_checkpoints import check_checkpoint
from bench.fuzz_checks import (
    check_coco_import,
    check_coco_segment,
    check_image,
    check_segment_exit,
    check_yaml,
    warm_up,
)
from bench.fuzz_examples import EXAMPLES
from bench.fuzz_files import leftovers, snapshot

KINDS = {  # name -> (strategy, check(case, folder) -> (status, detail), share of --cases)
    "coco segment": (inputs.coco_files(), check_coco_segment, 0.15),
    "coco import": (inputs.coco_files(), check_coco_import, 0.2),
    "image bytes": (inputs.image_mutations(), check_image, 0.4),
    "yaml config": (inputs.yaml_files(), check_yaml, 0.2),
    "checkpoint": (inputs.checkpoint_mutations(), check_checkpoint, 0.05),
    "segment exit": (inputs.coco_files(), check_segment_exit, 0.0),  # --exit-cases of them
}
STATUSES = ("clean error", "correct", "crash", "hang")
SCRATCH = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None  # memory: no disk syncs
FORKED = {"checkpoint"}  # torch / torchvision C code: a bad tensor could segfault (one did)


class Hang(BaseException):
    """Raised by the case timer (a BaseException: `except Exception` in the code under test
    must not swallow it)."""


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise Hang in this (main) thread after `seconds`."""

    def ring(signum, frame):
        raise Hang()

    previous = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_case(kind: str, case, limit: float = 20.0) -> tuple[str, str]:
    """(status, detail) of one case of `kind`, in a fresh temporary folder: in this process, or
    for the kinds in FORKED in a forked child (a segfault in C code kills the child, not us)."""
    with tempfile.TemporaryDirectory(prefix="b2m-fuzz-", dir=SCRATCH) as tmp:
        if kind not in FORKED:
            return _judge(kind, case, Path(tmp), limit)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: run the check, send (status, detail) as JSON, exit at once
            os.close(read_end)
            os.write(write_end, json.dumps(_judge(kind, case, Path(tmp), limit)).encode())
            os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            ready, _, _ = select.select([pipe], [], [], limit + 30)
            if not ready:  # stuck in C code, where the alarm cannot interrupt it
                os.kill(pid, signal.SIGKILL)
            data = pipe.read() if ready else b""
        _, status = os.waitpid(pid, 0)
    if not ready:
        return "hang", f"over {limit + 30} s (killed)"
    if os.WIFSIGNALED(status):
        return (
            "crash",
            f"killed by signal {os.WTERMSIG(status)} (a crash in C code or out of memory)",
        )
    return tuple(json.loads(data))


def _judge(kind: str, case, folder: Path, limit: float) -> tuple[str, str]:
    try:
        with time_limit(limit):
            return KINDS[kind][1](case, folder)
    except Hang:
        return "hang", f"over {limit} s"
    except Exception as err:  # an uncaught exception of the code under test
        return "crash", f"uncaught {type(err).__name__}: {str(err)[:160]}"


def fuzz(
    kind: str, cases: int, seed_value: int, on_case, shrink: bool = False, examples=None
) -> None:
    """Run the hand-picked EXAMPLES of `kind`, then `cases` hypothesis examples (fixed seed);
    on_case(kind, case, status, detail) sees each. `examples`: other hand-picked cases. With
    `shrink`, an on_case that raises gets its example shrunk."""
    warm_up()
    for case in EXAMPLES.get(kind, []) if examples is None else examples:
        on_case(kind, case, *run_case(kind, case))
    if cases < 1:  # hand-picked cases only
        return
    strategy = KINDS[kind][0]
    phases = [Phase.generate, Phase.shrink] if shrink else [Phase.generate]

    @seed(seed_value)
    @settings(
        max_examples=cases,
        database=None,
        deadline=None,
        phases=phases,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def one(case):
        on_case(kind, case, *run_case(kind, case))

    one()


def _raises(case, folder):
    raise KeyError("x")


def _sleeps(case, folder):
    time.sleep(5)


def self_check() -> int:
    """The judge itself: an uncaught exception, a hang and a file left behind are not passes.
    Prints one line per probe (`probe: status: detail`); 1 when the judge missed one."""
    KINDS["raises"] = (None, _raises, 0)
    KINDS["sleeps"] = (None, _sleeps, 0)
    with tempfile.TemporaryDirectory() as tmp:
        before = snapshot(Path(tmp))
        (Path(tmp) / "out.json.tmp").write_text("{")
        leftover = leftovers(before, Path(tmp), set())
    probes = {  # probe -> (what the judge said, what it must say)
        "an uncaught exception": (run_case("raises", None), "crash"),
        "a hang": (run_case("sleeps", None, limit=0.2), "hang"),
        "a file left behind": (("crash", leftover) if leftover else ("correct", "none"), "crash"),
    }
    for probe, ((status, detail), _) in probes.items():
        print(f"{probe}: {status}: {detail}")
    return int(any(said[0] != want for said, want in probes.values()))


def _slices(spec: str | None):
    """ "0:7,20:22" -> [slice(0, 7), slice(20, 22)]; None -> everything."""
    if spec is None:
        return [slice(None)]
    return [slice(*(int(x) if x else None for x in part.split(":"))) for part in spec.split(",")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000, help="in-process cases in all")
    parser.add_argument(
        "--exit-cases", type=int, default=30, help="`box2mask segment` subprocesses"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--only", default=None, help="comma-separated kinds to run (default: all)", metavar="KINDS"
    )
    parser.add_argument("--details", action="store_true", help="print every crash and hang")
    parser.add_argument(
        "--draws",
        type=int,
        default=None,
        help="hypothesis cases per kind (default: --cases shared)",
    )
    parser.add_argument(
        "--examples", default=None, metavar="A:B,...", help="hand-picked cases to run (slices)"
    )
    parser.add_argument(
        "--shrink",
        action="store_true",
        help="stop at the first crash or hang, shrunk to a minimal case (exit status 1)",
    )
    parser.add_argument("--list", action="store_true", help="print every case's outcome")
    parser.add_argument("--self-check", action="store_true", help="probe the judge, then exit")
    args = parser.parse_args()
    if args.self_check:
        return self_check()
    counts = collections.defaultdict(collections.Counter)
    problems = []

    def on_case(kind, case, status, detail):
        counts[kind][status] += 1
        if args.list:
            print(f"{kind}: {status}: {detail}", flush=True)
        if status in ("crash", "hang"):
            problems.append((kind, status, detail, repr(case)[:300]))
            if args.shrink:
                raise AssertionError(f"{kind}: {status}: {detail}\ncase: {case!r}")

    start = time.time()
    for kind, (_, _, share) in KINDS.items():
        if args.only is not None and kind not in args.only.split(","):
            continue
        n = args.exit_cases if kind == "segment exit" else max(1, round(args.cases * share))
        n = n if args.draws is None else args.draws
        examples = [
            case for part in _slices(args.examples) for case in EXAMPLES.get(kind, [])[part]
        ]
        t0 = time.time()
        fuzz(kind, n, args.seed, on_case, shrink=args.shrink, examples=examples)
        row = " ".join(f"{counts[kind][s]} {s}," for s in STATUSES)
        print(f"{kind}: {sum(counts[kind].values())} cases in {time.time() - t0:.0f} s: {row}",
              file=sys.stderr, flush=True)  # fmt: skip
    print(f"\nseed {args.seed}, {time.time() - start:.0f} s\n")
    print("| input kind | cases | clean errors | correct results | crashes | hangs |")
    print("|---|---|---|---|---|---|")
    total = collections.Counter()
    for kind, c in counts.items():
        total.update(c)
        print(f"| {kind} | {sum(c.values())} | " + " | ".join(str(c[s]) for s in STATUSES) + " |")
    print(f"| **all** | **{sum(total.values())}** | " + " | ".join(f"**{total[s]}**" for s in STATUSES) + " |")  # fmt: skip
    if problems and args.details:
        print()
        for kind, status, detail, case in problems:
            print(f"- {kind}: {status}: {detail}\n    case: {case}")
    elif problems:
        print(f"\n{len(problems)} crashes / hangs; rerun with --details to list them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
