"""torchrun / DDP helpers for training: one process per device, gloo on CPU, nccl on CUDA.

Launch several processes with `torchrun --nproc_per_node=N -m box2mask train ...` (or several
nodes with `--nnodes`, `--node_rank`, `--master_addr`); a plain `box2mask train` is world size 1.
Only rank 0 writes files (`is_main`). The launch itself (ranks from the environment, the device,
the process group) is box2mask.segment.shards', shared with the inference commands.
"""

from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from box2mask.segment.shards import Ranks, rank_device, start_process_group

__all__ = ["DistInfo", "init_distributed", "all_reduce_mean", "all_true"]

TRAIN_TIMEOUT = timedelta(minutes=30)  # a collective waiting longer fails (torch's default)


@dataclass(frozen=True)
class DistInfo:
    rank: int  # global process index, 0 .. world_size-1
    world_size: int  # number of processes
    local_rank: int  # process index on this node (picks the CUDA device)
    device: torch.device  # the device this process trains on

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | None = None) -> DistInfo:
    """Join the process group set up by torchrun (RANK / WORLD_SIZE / LOCAL_RANK), if any.

    `device`: "cpu", "cuda" or None (CUDA when available). On CUDA each process uses
    cuda:LOCAL_RANK and nccl; on CPU, gloo. ValueError when CUDA is asked for but absent.
    """
    ranks = Ranks.from_env()
    torch_device = torch.device(rank_device(device, ranks.local_rank))
    if ranks.world_size > 1:
        start_process_group("nccl" if torch_device.type == "cuda" else "gloo", TRAIN_TIMEOUT)
    return DistInfo(
        rank=ranks.rank,
        world_size=ranks.world_size,
        local_rank=ranks.local_rank,
        device=torch_device,
    )


def all_reduce_mean(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average a dict of floats over all processes (identity without a process group)."""
    if not dist.is_initialized() or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return dict(zip(keys, t.tolist(), strict=True))


def all_true(flag: bool, device: torch.device) -> bool:
    """True when `flag` is True in every process (so all stop together, none waits forever)."""
    if not dist.is_initialized():
        return flag
    t = torch.tensor([0 if flag else 1], dtype=torch.int32, device=device)
    dist.all_reduce(t)
    return int(t.item()) == 0
