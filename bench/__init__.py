"""Benchmarks, one table each; run from the repository root as `python -m bench.<name> ...`
(e.g. `python -m bench.quality --data ../shared/data/balloon`). Shared helpers: bench/common.py."""
