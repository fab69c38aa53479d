"""SIGTERM stops a command the way Ctrl-C does.

A cluster scheduler, `docker stop`, `systemctl stop` or a plain `kill` send SIGTERM, then SIGKILL
a grace period later. `stop_on_sigterm()` makes the first SIGTERM raise `Terminated` (a
KeyboardInterrupt) in the main thread, so every command's Ctrl-C path runs: `finally` blocks
close stores and process groups, atomic writes remove their temporary file, and what a
resumable command finished (segment's part files, train's last.pt, apply's filled samples) is
kept for the rerun. Later SIGTERMs are ignored so that this cleanup is not cut short (SIGKILL
remains the scheduler's last word). Servers that catch KeyboardInterrupt themselves (Gradio, the
FiftyOne App) shut down as on Ctrl-C; `terminated()` then tells the caller why.
"""

import signal
import threading

__all__ = ["Terminated", "stop_on_sigterm", "terminated"]

_received: list[int] = []  # SIGTERMs received by this process


class Terminated(KeyboardInterrupt):
    """Raised in the main thread by the first SIGTERM."""


def stop_on_sigterm() -> None:
    """From now on SIGTERM raises Terminated in the main thread (a no-op in other threads,
    where Python cannot install signal handlers). Forgets earlier SIGTERMs: a new command."""
    _received.clear()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


def terminated() -> bool:
    """Whether this process has received SIGTERM since `stop_on_sigterm`."""
    return bool(_received)


def _on_sigterm(signum, frame) -> None:
    _received.append(signum)
    if len(_received) == 1:
        raise Terminated("SIGTERM")
