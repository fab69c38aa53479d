"""Robustness: every bad input and fault of issue 8 items 1-2 fed to box2mask; one table.

    .venv/bin/python -m bench.robustness [--details] [--only fault]

Each case runs in a fresh temporary folder, on tiny images, through the public entry points:
`load_image`, `box2mask segment` (in process, as `box2mask.cli` would run it) and
`box2mask.build_predictor(checkpoint)`; faults: SIGKILL of `segment`, of `train` (then --resume,
compared with an uninterrupted run) and of a process writing the label store, a disk that fills
up while a checkpoint is saved (the training scenarios are those of tests/test_faults.py). A case is

    handled      the expected outcome: an error naming the file / annotation and the problem (and,
                 for segment, exit status 1 with every other box segmented, or 2 with nothing
                 written), or a correct result for an odd but valid input (CMYK, 16-bit, ...)
    wrong        it ran, without a clear error, but the result is wrong (e.g. an empty mask)
    crash        an unexpected exception, a traceback, a wrong exit status or no message
    labels lost  input annotations missing from OUT.json (segment cases that write it); for the
                 label store, labels reported committed that are missing or not as written

The cases are in bench/robustness_images.py, robustness_segment.py, robustness_checkpoints.py
and robustness_faults.py; this file runs them and prints the table.
"""

import argparse
import sys
import tempfile
from pathlib import Path

from bench.robustness_checkpoints import CHECKPOINTS, checkpoint_case
from bench.robustness_faults import (
    checkpoint_disk_full_case,
    store_sigkill_case,
    train_disk_full_case,
    train_sigkill_case,
)
from bench.robustness_images import BAD_FILES, ODD_FILES, load_case
from bench.robustness_segment import (
    BAD_BOXES,
    coco_cases,
    segment_box_case,
    segment_coco_case,
    segment_file_case,
    sigkill_case,
)


def all_cases():
    cases = [("image file (load_image)", n, load_case) for n in [*BAD_FILES, *ODD_FILES]]
    cases += [("image file (segment)", n, segment_file_case) for n in [*BAD_FILES, *ODD_FILES]]
    cases += [("box (segment)", n, segment_box_case) for n in BAD_BOXES]
    cases += [("COCO file (segment)", n, segment_coco_case) for n in coco_cases()]
    cases += [("checkpoint (build_predictor)", n, checkpoint_case) for n in CHECKPOINTS]
    cases += [("fault (segment)", "SIGKILL mid-run, rerun", sigkill_case)]
    cases += [("fault (train)", "SIGKILL after the first checkpoint, --resume", train_sigkill_case)]
    cases += [("fault (train)", "disk full at a checkpoint, --resume", train_disk_full_case)]
    cases += [("fault (checkpoint)", "disk full half way through save", checkpoint_disk_full_case)]
    cases += [("fault (label store)", "5 SIGKILLs during a burst of writes", store_sigkill_case)]
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--details", action="store_true", help="also print one row per case")
    parser.add_argument("--only", default="", help="run the groups whose name contains this")
    args = parser.parse_args()
    rows = []
    for group, name, fn in all_cases():
        if args.only not in group:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            try:
                status, message, lost = fn(Path(tmp), name)
            except Exception as err:  # the harness records crashes instead of stopping
                status, message, lost = "crash", f"{type(err).__name__}: {err}"[:150], 0
        rows.append((group, name, status, lost, message))
        print(f"  {status:8s} {group}: {name}", file=sys.stderr)

    if args.details:
        print("| group | case | outcome | labels lost | message |\n|---|---|---|---|---|")
        for group, name, status, lost, message in rows:
            message = message.replace("|", "/").replace("\n", " ")
            print(f"| {group} | {name} | {status} | {lost} | {message} |")
        print()
    print(
        "| inputs | cases tried | handled (clear error or correct result) | wrong result | crashes | pending | labels lost |"
    )
    print("|---|---|---|---|---|---|---|")
    groups = dict.fromkeys(r[0] for r in rows)
    for group in [*groups, "all"]:
        sel = [r for r in rows if group in ("all", r[0])]
        count = {s: sum(r[2] == s for r in sel) for s in ("handled", "wrong", "crash", "pending")}
        lost = sum(r[3] for r in sel)
        print(
            f"| {group} | {len(sel)} | {count['handled']} | {count['wrong']} | {count['crash']} "
            f"| {count['pending']} | {lost} |"
        )


if __name__ == "__main__":
    main()
