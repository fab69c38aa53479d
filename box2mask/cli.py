"""The `box2mask` command: one subcommand per job, each defined in its own module.

Each subcommand module exposes `add_arguments(parser)` and `run(args) -> int` (the exit status).
The table below names the modules as strings; only the one whose subcommand runs is imported, so
`box2mask --help` imports neither torch nor gradio and `box2mask segment` never imports gradio.
Run it as `box2mask ...`, `python -m box2mask ...` or `torchrun ... -m box2mask train ...`.
"""

import argparse
import importlib
import sys

from box2mask import __version__
from box2mask.interrupt import stop_on_sigterm, terminated

__all__ = ["SUBCOMMANDS", "OPTIONAL_DEPENDENCIES", "build_parser", "main"]

# name -> (module, one-line help). Kept as a plain table: the CLI is the only user.
SUBCOMMANDS = {
    "segment": (
        "box2mask.segment.command",
        "boxes in a COCO file -> the same file with RLE masks and scores",
    ),
    "train": ("train.train_cmd", "train a Box2Mask model from boxes (COCO format)"),
    "eval": ("train.eval_cmd", "evaluate a model: mask AP and box-prompt mIoU"),
    "annotate": ("annotator.annotate_cmd", "open the browser annotator on a folder of images"),
    "fiftyone": ("annotator.fiftyone.command", "apply box2mask to a FiftyOne dataset"),
    "retrain": ("annotator.retrain_cmd", "retrain from verified labels, evaluate, promote"),
    "models": ("train.models_cmd", "list model versions in the registry, roll back"),
}

# what a stopped (Ctrl-C / SIGTERM) command kept, told on stderr
RESUME_HINTS = {
    "segment": ": finished images are kept, rerun the same command to resume",
    "train": ": last.pt holds the last checkpoint, continue with --resume",
    "retrain": ": the registry is unchanged, rerun to start the round again",
    "fiftyone": ": samples already written are kept (apply skips them when rerun)",
}

# top-level module of an optional dependency -> the extra that installs it
OPTIONAL_DEPENDENCIES = {
    "gradio": "annotator",
    "gradio_image_annotation": "annotator",
    "fiftyone": "fiftyone",
    "bson": "fiftyone",
}


def _command(argv: list[str]) -> str | None:
    """The subcommand named in `argv`: its first word that is not an option (the top-level
    parser has no option that takes a value)."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only `command`'s module is imported and adds its arguments (the others list
    their one-line help, enough for `box2mask --help`)."""
    parser = argparse.ArgumentParser(
        prog="box2mask",
        description="Turn bounding boxes into instance masks (Box2Mask, level-set evolution).",
    )
    parser.add_argument("--version", action="version", version=f"box2mask {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    command = _command(argv)
    stop_on_sigterm()  # SIGTERM (a scheduler, `kill`) takes Ctrl-C's path in every command
    try:
        args = build_parser(command if command in SUBCOMMANDS else None).parse_args(argv)
        code = int(args._run(args) or 0)
        return 143 if terminated() else code  # a server that shut down on SIGTERM
    except KeyboardInterrupt:
        how = "SIGTERM" if terminated() else "Ctrl-C"
        hint = RESUME_HINTS.get(command, "")
        print(f"box2mask {command}: stopped by {how}{hint}", file=sys.stderr)
        return 143 if terminated() else 130
    except ModuleNotFoundError as err:
        top = (err.name or "").split(".")[0]
        if top not in OPTIONAL_DEPENDENCIES:
            raise
        print(
            f"error: `box2mask {command}` needs {top}, an optional dependency: "
            f"pip install 'box2mask[{OPTIONAL_DEPENDENCIES[top]}]'",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
