"""torchrun / DDP helpers: one process per device, gloo on CPU, nccl on CUDA.

Launch several processes with `torchrun --nproc_per_node=N -m box2mask train ...` (or several
nodes with `--nnodes`, `--node_rank`, `--master_addr`); a plain `box2mask train` is world size 1.
Only rank 0 writes files (`is_main`).
"""

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "init_distributed", "cleanup", "all_reduce_mean", "all_true"]


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
    cuda:LOCAL_RANK and nccl; on CPU, gloo.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda was asked for but CUDA is not available")
        torch.cuda.set_device(local_rank)
        torch_device = torch.device("cuda", local_rank)
    else:
        torch_device = torch.device(device)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if torch_device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=torch_device)


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


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
