"""Launching box2mask commands under torchrun in tests, and finding one rank's process to kill."""

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def launch_env() -> dict:
    """The environment of a launched command: one thread per process, the repo importable."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def torchrun_cmd(nproc: int, port_base: int, *cli_args) -> list[str]:
    """`torchrun --nproc-per-node nproc -m box2mask ARGS` on a port unique to this pytest."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc)]
    cmd += ["--master-port", str(port_base + os.getpid() % 200)]
    return cmd + ["-m", "box2mask", *map(str, cli_args)]


def rank_pid(launcher_pid: int, rank: int) -> int | None:
    """The pid of the torchrun worker with RANK=rank (a child of the launcher), if started."""
    for children in Path(f"/proc/{launcher_pid}/task").glob("*/children"):
        for pid in children.read_text().split():
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"RANK={rank}".encode() in environ:
                return int(pid)
    return None
