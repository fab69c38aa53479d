"""An opt-in memory probe for a long-running `box2mask annotate` (a debug switch, off by default).

    BOX2MASK_MEMORY_PROBE=/tmp/probe.txt BOX2MASK_MEMORY_PROBE_EVERY=120 box2mask annotate DIR
    BOX2MASK_MEMORY_PROBE_TYPES=Radio,Dropdown ...   # also: what holds these objects

Every `every_s` seconds a thread appends to the file: the server's RSS, then again after glibc's
malloc_trim(0) (what trimming gives back is heap fragmentation, what stays is live), the Python
objects per type that grew most since the first report (gc), and tracemalloc's top allocation
sites by traceback against the first report's snapshot (tracing starts at the first report, so
what it shows was allocated after it and is still alive). Used to find the soak's RSS growth
(docs/reliability.md); tracemalloc slows the server, so the figures of such a run are not
latencies to report.
"""

import collections
import ctypes
import gc
import os
import threading
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MemoryProbe", "ProbeConfig", "probe_from_env", "type_counts"]


@dataclass
class ProbeConfig:
    path: Path  # the report file (appended to)
    every_s: float = 120.0  # seconds between reports
    frames: int = 6  # traceback depth tracemalloc keeps per allocation
    top: int = 15  # lines per section of a report
    trim: bool = True  # call malloc_trim(0) at each report (glibc only)
    types: tuple[str, ...] = ()  # type names whose instances' holders are reported (two levels)


def type_counts() -> collections.Counter:
    """Live objects the garbage collector tracks, counted by type name."""
    return collections.Counter(type(o).__name__ for o in gc.get_objects())


def holders(type_name: str, limit: int = 200) -> collections.Counter:
    """What holds the live instances of `type_name` (up to `limit` of them), counted as
    'holder type <- its holder type' (a dict is usually an object's __dict__ or a container)."""
    objs = [o for o in gc.get_objects() if type(o).__name__ == type_name][:limit]
    skip = {id(objs)}
    chains: collections.Counter = collections.Counter()
    for obj in objs:
        refs = gc.get_referrers(obj)
        for ref in refs:
            if id(ref) in skip or type(ref).__name__ == "frame":
                continue
            above = [
                type(r).__name__ for r in gc.get_referrers(ref) if r is not objs and r is not refs
            ]
            above = above[:3]
            chains[f"{type(ref).__name__} <- {','.join(sorted(set(above)))}"] += 1
    return chains


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _malloc_trim() -> bool:
    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):  # not glibc
        return False


class MemoryProbe(threading.Thread):
    """Appends a report to `cfg.path` every `cfg.every_s` seconds until `stop` is set."""

    def __init__(self, cfg: ProbeConfig):
        super().__init__(daemon=True, name="box2mask-memory-probe")
        self.cfg, self.stop = cfg, threading.Event()
        self.first_snapshot = None
        self.first_counts: collections.Counter | None = None
        self.start_time = time.time()

    def report(self) -> str:
        """One report (text); the first one is the baseline the later ones compare to."""
        lines = [f"== t={time.time() - self.start_time:.0f} s rss {_rss_mb():.1f} MB"]
        if self.cfg.trim:
            trimmed = _malloc_trim()
            lines.append(f"after malloc_trim(0): rss {_rss_mb():.1f} MB (trimmed {trimmed})")
        gc.collect()
        counts = type_counts()
        if not tracemalloc.is_tracing():  # started late: tracing slows imports and start-up
            tracemalloc.start(self.cfg.frames)
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)]
        )
        traced = sum(s.size for s in snapshot.statistics("filename")) / 2**20
        lines.append(f"tracemalloc: {traced:.1f} MB traced, {len(gc.get_objects())} gc objects")
        if self.first_snapshot is None:
            self.first_snapshot, self.first_counts = snapshot, counts
            return "\n".join(lines + ["(baseline)"]) + "\n"
        grown = counts.copy()
        grown.subtract(self.first_counts)
        lines.append("-- gc objects grown since the baseline, by type")
        for name, n in grown.most_common(self.cfg.top):
            lines.append(f"{n:+8d} {name} (now {counts[name]})")
        for name in self.cfg.types:
            lines.append(f"-- what holds the live {name} objects")
            for chain, n in holders(name).most_common(self.cfg.top):
                lines.append(f"{n:8d} {chain}")
        lines.append("-- tracemalloc grown since the baseline, by traceback")
        for stat in snapshot.compare_to(self.first_snapshot, "traceback")[: self.cfg.top]:
            lines.append(f"{stat.size_diff / 1024:+10.1f} KB {stat.count_diff:+7d} blocks")
            lines.extend(f"      {line}" for line in stat.traceback.format()[-2 * 4 :])
        return "\n".join(lines) + "\n"

    def run(self) -> None:
        while not self.stop.wait(self.cfg.every_s):
            text = self.report()
            with open(self.cfg.path, "a") as f:
                f.write(text)


def probe_from_env(environ=None) -> MemoryProbe | None:
    """Start a MemoryProbe when BOX2MASK_MEMORY_PROBE names a file (else None: the default)."""
    environ = os.environ if environ is None else environ
    path = environ.get("BOX2MASK_MEMORY_PROBE")
    if not path:
        return None
    every_s = float(environ.get("BOX2MASK_MEMORY_PROBE_EVERY", "120"))
    types = tuple(t for t in environ.get("BOX2MASK_MEMORY_PROBE_TYPES", "").split(",") if t)
    probe = MemoryProbe(ProbeConfig(path=Path(path), every_s=every_s, types=types))
    probe.start()
    return probe
