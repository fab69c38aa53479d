"""The soak series of bench/load.py: what a long-running `box2mask annotate` holds, every 10 s.

`SoakSampler` samples the server process (RSS, open file descriptors, threads), Gradio's temp
folder (the rendered JPEGs) and the SQLite store's WAL file; `print_series` prints one row per
minute and says whether each is flat after the warm-up.

    .venv/bin/python -m bench.load_soak RESULT.json [--warmup 120]

prints the series again from the `--json` file of `python -m bench.load --soak`.
"""

import argparse
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

COLUMNS = ("rss_mb", "fds", "threads", "temp_mb", "wal_mb", "p50_ms", "p95_ms")


@dataclass
class Sample:
    t: float  # seconds since the sampler started
    rss_mb: float  # resident memory of the server
    fds: int  # its open file descriptors
    threads: int  # its threads
    temp_mb: float  # size of Gradio's temp folder
    wal_mb: float  # size of the store's -wal file (0 when checkpointed away)
    p50_ms: float = 0.0  # median ms per user event finished since the previous sample
    p95_ms: float = 0.0  # their 95th percentile (0 when none finished)


def folder_mb(folder: Path) -> float:
    """MB of the files under `folder`; files and folders deleted while it looks (the temp
    folder is cleaned meanwhile) are skipped (os.walk ignores a folder gone before its listing,
    where Path.rglob raised)."""
    total = 0
    for parent, _, names in os.walk(folder):
        for name in names:
            try:
                total += os.stat(os.path.join(parent, name)).st_size
            except OSError:  # deleted meanwhile
                pass
    return total / 2**20


class SoakSampler(threading.Thread):
    """Samples one server process every `every_s` seconds until `stop` is set."""

    def __init__(
        self, pid: int, temp_dir: Path, store_path: Path, every_s: float = 10.0, times=None
    ):
        super().__init__(daemon=True)
        import psutil

        self.times = times  # the users' Ledger.times (action -> [s]), or None
        self.seen: dict = {}  # action -> how many of its times earlier samples used

        self.process, self.temp_dir, self.every_s = psutil.Process(pid), temp_dir, every_s
        self.wal = Path(f"{store_path}-wal")
        self.samples: list[Sample] = []
        self.stop = threading.Event()

    def run(self) -> None:
        start = time.perf_counter()
        while not self.stop.is_set():
            try:
                with self.process.oneshot():
                    rss = self.process.memory_info().rss / 2**20
                    fds, threads = self.process.num_fds(), self.process.num_threads()
            except Exception:  # the process ended
                return
            wal = self.wal.stat().st_size / 2**20 if self.wal.exists() else 0.0
            sample = Sample(time.perf_counter() - start, rss, fds, threads, 0.0, wal)
            sample.temp_mb = folder_mb(self.temp_dir)
            sample.p50_ms, sample.p95_ms = self.new_percentiles()
            self.samples.append(sample)
            self.stop.wait(self.every_s)

    def new_percentiles(self) -> tuple[float, float]:
        """(p50, p95) in ms of the events timed since the previous sample."""
        if self.times is None:
            return 0.0, 0.0
        new = []
        for action, times in list(self.times.items()):
            n = len(times)
            new += times[self.seen.get(action, 0) : n]
            self.seen[action] = n
        if not new:
            return 0.0, 0.0
        new.sort()
        pick = lambda q: new[min(len(new) - 1, int(q * len(new)))] * 1000  # noqa: E731
        return pick(0.5), pick(0.95)


def flat_after_warmup(samples: list[Sample], column: str, warmup_s: float) -> tuple[float, float]:
    """(first value after the warm-up, growth from there to the mean of the last fifth)."""
    after = [s for s in samples if s.t >= warmup_s] or samples
    tail = after[-max(1, len(after) // 5) :]
    first = getattr(after[0], column)
    return first, sum(getattr(s, column) for s in tail) / len(tail) - first


def print_series(samples: list[Sample], warmup_s: float = 120.0, every_s: float = 60.0) -> None:
    """One Markdown row per `every_s` of samples, then the growth after `warmup_s` per column."""
    print("\n| minute | RSS MB | open fds | threads | Gradio temp MB | WAL MB | p50 ms | p95 ms |")
    print("|---|---|---|---|---|---|---|---|")
    next_t = 0.0
    for s in samples:
        if s.t + 1e-6 >= next_t or s is samples[-1]:
            print(f"| {s.t / 60:.1f} | {s.rss_mb:.0f} | {s.fds} | {s.threads} | "
                  f"{s.temp_mb:.1f} | {s.wal_mb:.2f} | {s.p50_ms:.0f} | {s.p95_ms:.0f} |")  # fmt: skip
            next_t += every_s
    growth = []
    for column in COLUMNS:
        first, delta = flat_after_warmup(samples, column, warmup_s)
        growth.append(f"{column} {first:.1f} -> {delta:+.1f}")
    print(f"\nafter {warmup_s:.0f} s of warm-up (first value -> growth to the last fifth): "
          + ", ".join(growth))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("result", type=Path, help="the --json file of bench/load.py")
    parser.add_argument("--warmup", type=float, default=120.0, help="seconds of warm-up")
    args = parser.parse_args()
    samples = [Sample(**sample) for sample in json.loads(args.result.read_text())["soak"]]
    print_series(samples, warmup_s=args.warmup)


if __name__ == "__main__":
    main()
