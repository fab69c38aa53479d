"""Learning curve of a training run: loss terms and val box-prompt mIoU from its metrics.jsonl.

    # the quality run of the README (at most 20 minutes on CPU, then the comparison table)
    nice -n 10 box2mask train --config configs/tiny_cpu.yaml --data ../shared/data/balloon \\
        --out runs/tiny_balloon --threads 1 --max-minutes 20
    python -m bench.train_quality runs/tiny_balloon
    python -m bench.quality --data ../shared/data/balloon --split val \\
        --checkpoint runs/tiny_balloon/last.pt

Prints one Markdown table: for each logged step, the total loss, the projection / level-set /
class terms of the last decoder layer (object queries and box prompts), images/s, and the val
mIoU / boundary F where an evaluation ran at that step.
"""

import argparse
import json
import math
import sys
from pathlib import Path

COLUMNS = [
    ("loss", "loss"),
    ("loss_proj", "proj"),
    ("loss_prompt_proj", "prompt proj"),
    ("loss_levelset_img", "level set img"),
    ("loss_levelset_feat", "level set feat"),
    ("loss_lcm", "LCM"),
    ("loss_cls", "class"),
]


def _fmt(value, digits=3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def learning_curve(run_dir: Path, every: int = 1) -> str:
    """The Markdown table of `run_dir`/metrics.jsonl (every `every`-th training line + evals)."""
    train_rows, evals = {}, {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        (evals if "val_miou" in record else train_rows)[record["step"]] = record
    logged = sorted(train_rows)
    shown = [s for i, s in enumerate(logged) if i % every == 0 or s == logged[-1] or s in evals]
    header = "| step | " + " | ".join(name for _, name in COLUMNS)
    lines = [
        header + " | images/s | val mIoU | val boundary F |",
        "|" + "---|" * (len(COLUMNS) + 4),
    ]
    for step in sorted(set(shown) | set(evals)):
        r, e = train_rows.get(step, {}), evals.get(step, {})
        cells = [_fmt(r.get(key)) for key, _ in COLUMNS]
        lines.append(
            f"| {step} | " + " | ".join(cells) + f" | {_fmt(r.get('images_per_s'), 2)} | "
            f"{_fmt(e.get('val_miou'))} | {_fmt(e.get('val_boundary_f'))} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a run directory written by box2mask train")
    parser.add_argument("--every", type=int, default=1, help="show every N-th logged step")
    args = parser.parse_args(argv)
    if not (args.run_dir / "metrics.jsonl").is_file():
        print(f"error: {args.run_dir / 'metrics.jsonl'}: no such file", file=sys.stderr)
        return 2
    print(learning_curve(args.run_dir, args.every))
    return 0


if __name__ == "__main__":
    sys.exit(main())
