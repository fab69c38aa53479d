"""How the segment run reports: SegmentError for a run that cannot start or finish, `say` for a
problem it goes on after (one line on stderr)."""

import sys

__all__ = ["SegmentError", "say"]


class SegmentError(RuntimeError):
    """The run cannot start or finish; the message says why (exit status 2)."""


def say(message: str) -> None:
    """One line on stderr, without breaking a tqdm bar."""
    from tqdm import tqdm

    tqdm.write(f"box2mask segment: {message}", file=sys.stderr)
