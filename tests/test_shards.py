"""box2mask.segment.shards: the snake deal, the torchrun environment, and ranks agreeing on errors.

The agreement tests start 2 real gloo processes (torch.multiprocessing, a file rendezvous).
"""

import time
from datetime import timedelta

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from box2mask.segment.shards import RankError, Ranks, agreed, snake_rank


def test_snake_rank_deals_laps_in_alternating_directions():
    assert [snake_rank(p, 3) for p in range(9)] == [0, 1, 2, 2, 1, 0, 0, 1, 2]
    assert [snake_rank(p, 1) for p in range(4)] == [0, 0, 0, 0]
    work = [9, 8, 7, 5, 5, 4, 2, 1]  # sorted by decreasing work
    totals = [sum(w for p, w in enumerate(work) if snake_rank(p, 2) == r) for r in (0, 1)]
    assert totals == [9 + 5 + 5 + 1, 8 + 7 + 4 + 2] and abs(totals[0] - totals[1]) <= max(work)


def test_ranks_from_the_torchrun_environment():
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}
    assert Ranks.from_env(env) == Ranks(rank=3, world_size=4, local_rank=1)
    assert Ranks.from_env({}) == Ranks(rank=0, world_size=1, local_rank=0)


def test_a_single_process_step_raises_its_own_error():
    ranks = Ranks(rank=0, world_size=1, local_rank=0)
    assert agreed(lambda: 7, ranks) == 7
    with pytest.raises(KeyError):
        agreed(lambda: {}["x"], ranks)


def _worker(rank, init, results, fail_rank, hang_rank, timeout_s):
    dist.init_process_group(
        "gloo", init_method=init, rank=rank, world_size=2, timeout=timedelta(seconds=timeout_s)
    )
    ranks = Ranks(rank=rank, world_size=2, local_rank=rank)

    def step():
        if rank == hang_rank:
            time.sleep(3 * timeout_s)  # never reaches the collective in time
        if rank == fail_rank:
            raise ValueError(f"the shard of rank {rank} cannot be read")
        return rank * 10

    start = time.monotonic()
    try:
        results[rank] = ("ok", agreed(step, ranks), time.monotonic() - start)
    except RankError as err:
        results[rank] = ("RankError", str(err), time.monotonic() - start)
    finally:
        if rank != hang_rank:
            dist.destroy_process_group()


def _run_two(tmp_path, fail_rank=None, hang_rank=None, timeout_s=60.0):
    tmp_path.mkdir(parents=True, exist_ok=True)
    results = mp.Manager().dict()
    init = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(_worker, args=(init, results, fail_rank, hang_rank, timeout_s), nprocs=2)
    return dict(results)


def test_two_ranks_agree_on_values_and_on_one_rank_failing(tmp_path):
    assert {r: v[:2] for r, v in _run_two(tmp_path / "a").items()} == {
        0: ("ok", 0),
        1: ("ok", 10),
    }
    results = _run_two(tmp_path / "b", fail_rank=1)
    message = "rank 1: the shard of rank 1 cannot be read"
    assert {r: v[:2] for r, v in results.items()} == {
        0: ("RankError", message),
        1: ("RankError", message),
    }


def test_a_rank_that_never_arrives_fails_the_wait_after_the_timeout(tmp_path):
    results = _run_two(tmp_path, hang_rank=1, timeout_s=1.0)
    kind, message, waited = results[0]
    assert kind == "RankError" and 0.8 < waited < 30  # stopped by the timeout, not hung
    assert message.startswith("rank 0: lost the other processes") and "Timed out" in message
