"""Work shared out between the processes of a torchrun launch (inference commands).

`box2mask segment` and `box2mask fiftyone apply` run the same way under
`torchrun --nproc-per-node N [--nnodes M ...]`: every process reads its place from the
environment torchrun sets (`Ranks.from_env`), the items still to do are sorted by work (most boxes
first, ties by a stable key) and dealt in snake order (`snake_rank`), so every process computes
the same deal on its own, and processes agree on errors and on the end of the run through
torch.distributed collectives (`broadcast`, `all_gather`; identities in a single process).
"""

import os
from dataclasses import dataclass
from datetime import timedelta

__all__ = [
    "DIST_TIMEOUT",
    "RankError",
    "Ranks",
    "snake_rank",
    "rank_device",
    "start_process_group",
    "stop_process_group",
    "broadcast",
    "all_gather",
    "agreed",
]

DIST_TIMEOUT = timedelta(hours=24)  # ranks wait for the slowest shard at the end: allow long runs


class RankError(RuntimeError):
    """A step failed on one or more ranks; the message names each of them and its problem."""


@dataclass(frozen=True)
class Ranks:
    """This process's place in a torchrun launch (rank 0 of 1 without torchrun)."""

    rank: int  # global index of this process, 0 .. world_size - 1
    world_size: int  # number of processes of the run, over all nodes
    local_rank: int  # index of this process on its node (picks its GPU)

    @classmethod
    def from_env(cls, environ=None) -> "Ranks":
        """RANK, WORLD_SIZE and LOCAL_RANK as torchrun sets them (defaults 0, 1, 0)."""
        env = os.environ if environ is None else environ
        return cls(
            rank=int(env.get("RANK", "0")),
            world_size=int(env.get("WORLD_SIZE", "1")),
            local_rank=int(env.get("LOCAL_RANK", "0")),
        )


def snake_rank(position: int, world_size: int) -> int:
    """The rank that gets item `position` (0-based) of a list sorted by decreasing work.

    Snake order 0, 1, ..., w-1, w-1, ..., 1, 0, 0, 1, ...: each lap gives every rank one item and
    the laps alternate direction, so the ranks' totals stay within one item's work of each other.
    """
    lap, offset = divmod(int(position), int(world_size))
    return offset if lap % 2 == 0 else world_size - 1 - offset


def rank_device(device: str | None, local_rank: int) -> str:
    """The device of this process: "cuda" becomes cuda:LOCAL_RANK (made current); None picks.

    None means cuda when available, else cpu. Raises ValueError when CUDA is asked for but absent.
    """
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                "--device cuda: CUDA is not available here "
                f"(torch {torch.__version__}, {torch.cuda.device_count()} GPUs visible); "
                "use --device cpu"
            )
        torch.cuda.set_device(local_rank)
        return f"cuda:{local_rank}"
    return device


def start_process_group(backend: str, timeout: timedelta = DIST_TIMEOUT) -> None:
    """Join the process group of a torchrun launch (no-op if already joined).

    `timeout` bounds every collective: a process that waits longer for the others fails with
    an error instead of hanging.
    """
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=timeout)


def stop_process_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def broadcast(value, world_size: int):
    """Rank 0's picklable `value` on every rank (a barrier too); identity in a single process.

    Raises RankError when a partner process died or the wait passed the process group's timeout.
    """
    if world_size == 1:
        return value
    import torch.distributed as dist

    box = [value]
    _collective(lambda: dist.broadcast_object_list(box, src=0))
    return box[0]


def all_gather(value, world_size: int) -> list:
    """Every rank's picklable `value`, in rank order, on every rank (a barrier too).

    Raises RankError when a partner process died or the wait passed the process group's timeout.
    """
    if world_size == 1:
        return [value]
    import torch.distributed as dist

    values = [None] * world_size
    _collective(lambda: dist.all_gather_object(values, value))
    return values


def _collective(call) -> None:
    """Run a torch.distributed collective; its failure becomes a RankError naming this rank."""
    import torch.distributed as dist

    try:
        call()
    except RuntimeError as err:  # gloo raises plain RuntimeErrors for timeouts and lost peers
        first_line = (str(err).splitlines() or [type(err).__name__])[0]
        raise RankError(
            f"rank {dist.get_rank()}: lost the other processes (one of them failed, or the wait "
            f"for them passed the process group's timeout): {first_line}"
        ) from err


def _message(err: BaseException) -> str:
    """The text of an exception (a KeyError's without the quotes repr adds)."""
    if isinstance(err, KeyError) and len(err.args) == 1:
        return str(err.args[0])
    return str(err) or type(err).__name__


def agreed(step, ranks: Ranks):
    """`step()` on this rank, then a barrier: its value when the step succeeded on every rank.

    Raises RankError on every rank when it raised on any, naming each failed rank and its error,
    so all processes stop together with the same message and none waits for a dead partner. In a
    single process the step's own exception propagates unchanged.
    """
    if ranks.world_size == 1:
        return step()
    value, error = None, None
    try:
        value = step()
    except Exception as err:  # reported by every rank below, with this rank's number
        error = (
            f"{type(err).__name__}: {_message(err)}"
            if not isinstance(err, KeyError | ValueError | RankError)
            else _message(err)
        )
    errors = all_gather(error, ranks.world_size)
    failed = [f"rank {rank}: {text}" for rank, text in enumerate(errors) if text is not None]
    if failed:
        raise RankError("; ".join(failed))
    return value
