"""The `box2mask` command: one subcommand per job, each defined in its own module.

Each subcommand module exposes `add_arguments(parser)` and `run(args) -> int` (the exit status);
modules are imported only when their subcommand runs, so `box2mask segment` never imports gradio.
"""

import argparse
import importlib
import sys

# name -> (module, one-line help). Kept as a plain table: the CLI is the only user.
SUBCOMMANDS = {
    "segment": (
        "box2mask.segment_cmd",
        "boxes in a COCO file -> the same file with RLE masks and scores",
    ),
    "train": ("train.train_cmd", "train a Box2Mask model from boxes (COCO format)"),
    "eval": ("train.eval_cmd", "evaluate a model: mask AP and box-prompt mIoU"),
    "annotate": ("annotator.annotate_cmd", "open the browser annotator on a folder of images"),
    "fiftyone": ("annotator.fiftyone_cmd", "apply box2mask to a FiftyOne dataset"),
    "retrain": ("annotator.retrain_cmd", "retrain from verified labels, evaluate, promote"),
    "models": ("train.models_cmd", "list model versions in the registry, roll back"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="box2mask",
        description="Turn bounding boxes into instance masks (Box2Mask, level-set evolution).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name and module_name.startswith(err.name):
                continue  # subcommand not built yet
            raise
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
