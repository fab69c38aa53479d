"""Old name of the `box2mask` command (`python -m annotator.cli ...`); it lives in box2mask.cli."""

import sys

from box2mask.cli import SUBCOMMANDS, build_parser, main

__all__ = ["SUBCOMMANDS", "build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
