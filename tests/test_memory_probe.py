"""annotator/memory_probe.py: the opt-in memory reports (off unless the variable names a file)."""

import tracemalloc

from annotator.memory_probe import MemoryProbe, ProbeConfig, holders, probe_from_env


class _Kept:
    pass


def test_off_by_default():
    assert probe_from_env({}) is None


def test_reports_what_grew_and_who_holds_it(tmp_path):
    was_tracing = tracemalloc.is_tracing()
    probe = MemoryProbe(ProbeConfig(path=tmp_path / "p.txt", types=("_Kept",)))
    try:
        first = probe.report()
        assert "(baseline)" in first and "rss" in first
        kept = {"k": [_Kept() for _ in range(7)]}  # 7 new objects held by a list in a dict
        second = probe.report()
    finally:
        if not was_tracing:
            tracemalloc.stop()
    assert "+7 _Kept (now 7)" in second
    assert "       7 list <- dict\n" in second
    assert holders("_Kept")["list <- dict"] == 7
    assert len(kept["k"]) == 7
