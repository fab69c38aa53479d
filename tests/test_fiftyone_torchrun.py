"""`box2mask fiftyone apply` under torchrun: the shard deal, 2 processes == 1, errors, killed rank.

A real (non-persistent) FiftyOne dataset of synthetic images; the launched processes open it by
name in the same database. Skipped only when FiftyOne's database cannot start.
"""

import os
import signal
import subprocess
import tempfile
import time

import numpy as np
import pytest
import torch
from PIL import Image

from box2mask.cli import main as cli_main
from box2mask.segment.shards import snake_rank
from tests.torchrun_helpers import launch_env, rank_pid, torchrun_cmd

N_SAMPLES = 16


def _synthetic_samples(fo, root):
    """N_SAMPLES images of different sizes with 0-3 box prompts each (sample 5: no boxes field)."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    samples = []
    for i in range(N_SAMPLES):
        height, width = 200 + 6 * i, 260 + 4 * i
        image = rng.integers(20, 60, (height, width, 3)).astype(np.uint8)
        dets = []
        for k in range(i % 4):
            y0, x0 = 12 + 45 * k, 15 + 60 * k
            image[y0 : y0 + 60, x0 : x0 + 80] = (210, 60 + 40 * k, 40)
            box = [(x0 - 5) / width, (y0 - 6) / height, 91 / width, 71 / height]
            dets.append(fo.Detection(label=f"c{k}", bounding_box=box))
        path = root / f"im{i:03d}.png"
        Image.fromarray(image).save(path)
        boxes = None if i == 5 else fo.Detections(detections=dets)
        samples.append(fo.Sample(filepath=str(path), ground_truth=boxes))
    return samples


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The dataset, after one uninterrupted single-process apply into `ref` (1 thread)."""
    fo = pytest.importorskip("fiftyone")
    try:
        dataset = fo.Dataset()
    except Exception as err:  # noqa: BLE001 - any failure to start the database
        pytest.skip(f"FiftyOne's database (mongod) cannot start here: {err}")
    dataset.add_samples(_synthetic_samples(fo, tmp_path_factory.mktemp("fo_shards")))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the launched processes (OMP_NUM_THREADS=1)
    try:
        assert cli_main(_apply_args(dataset.name, "ref")) == 0
    finally:
        torch.set_num_threads(threads)
    yield dataset
    dataset.delete()


def _apply_args(name, out, *extra):
    return ["fiftyone", "apply", "--dataset", name, "--boxes", "ground_truth", "--out", out, *extra]


def _labels(dataset, field):
    """Per sample (by filepath): every detection's content, masks as bytes; ids left out."""
    out = {}
    for sample in dataset.select_fields(field):
        dets = sample[field].detections if sample[field] is not None else None
        out[sample.filepath] = None if dets is None else [
            (d.label, d.bounding_box, d.mask.shape, d.mask.dtype.str, d.mask.tobytes(),
             d.confidence, d.quality, d.prompt_id, d.source, d.model_version, d.revision)
            for d in dets
        ]  # fmt: skip
    return out


def _shard_ids(dataset, out_field, rank, world_size):
    from annotator.fiftyone.shards import read_chunks, write_shard

    with tempfile.TemporaryFile("w+") as f:
        write_shard(dataset, f, boxes_field="ground_truth", out_field=out_field, rank=rank,
                    world_size=world_size)  # fmt: skip
        return [i for chunk in read_chunks(f, 1000) for i in chunk]


def _count_done(dataset, ids, field):
    """How many of the samples `ids` have `field` filled, read from the database now."""
    if not dataset.has_sample_field(field):
        dataset.reload()  # a launched process may have just added it
        if not dataset.has_sample_field(field):
            return 0
    return dataset.select(ids).exists(field).count()


def test_shards_split_pending_samples_by_box_count_in_snake_order(reference):
    dataset = reference
    shards = [_shard_ids(dataset, "not_applied", rank, 2) for rank in (0, 1)]
    assert sorted(shards[0] + shards[1]) == sorted(dataset.values("id"))  # disjoint, complete
    n_boxes = dict(
        zip(dataset.values("id"), dataset.values("ground_truth.detections"), strict=True)
    )
    n_boxes = {i: len(d or []) for i, d in n_boxes.items()}
    ordered = sorted(n_boxes, key=lambda i: (-n_boxes[i], i))  # most boxes first, then by id
    for rank, ids in enumerate(shards):
        assert ids == [i for p, i in enumerate(ordered) if snake_rank(p, 2) == rank]
    assert [sum(n_boxes[i] for i in ids) for ids in shards] == [11, 12]  # 23 boxes, balanced
    assert _shard_ids(dataset, "ref", 0, 2) == []  # a finished field leaves nothing pending


def test_torchrun_two_processes_equal_one_process(reference):
    dataset = reference
    cmd = torchrun_cmd(2, 29100, *_apply_args(dataset.name, "sharded"), "--chunk-size", "3")
    result = subprocess.run(cmd, env=launch_env(), capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"sharded: {N_SAMPLES} samples segmented now, 0 already done, 0 failed" in result.stdout
    assert "rank 0/2" in result.stderr and "rank 1/2" in result.stderr  # both processes worked
    dataset.reload()  # the field the launched processes added
    reference_labels = _labels(dataset, "ref")
    assert sum(len(v or []) for v in reference_labels.values()) == 23
    assert _labels(dataset, "sharded") == reference_labels  # masks identical, bit for bit
    schema = dataset.get_field_schema(flat=True)
    assert "sharded.detections.prompt_id" in schema  # rank 0 declared the new attributes


def test_torchrun_failure_exits_2_naming_the_problem(reference):
    args = ["fiftyone", "apply", "--dataset", "no-such-dataset", "--boxes", "a", "--out", "b"]
    start = time.monotonic()
    result = subprocess.run(
        torchrun_cmd(2, 29900, *args), env=launch_env(), capture_output=True, text=True,
        timeout=240,
    )  # fmt: skip
    assert result.returncode != 0 and time.monotonic() - start < 200  # no hang
    assert "error: rank 0: no FiftyOne dataset named 'no-such-dataset'" in result.stderr


@pytest.mark.slow
def test_killed_rank_is_redone_on_rerun(reference):
    dataset = reference
    rank1 = _shard_ids(dataset, "killed", 1, 2)
    cmd = torchrun_cmd(2, 29300, *_apply_args(dataset.name, "killed"), "--chunk-size", "1")
    proc = subprocess.Popen(
        cmd, env=launch_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and _count_done(dataset, rank1, "killed") < 1:
        time.sleep(0.01)
    pid = rank_pid(proc.pid, rank=1)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "rank" in stderr  # torchrun names the failed rank
    dataset.reload()
    done_rank1 = _count_done(dataset, rank1, "killed")
    assert 1 <= done_rank1 < len(rank1)  # killed mid-shard
    finished = {s.id: [d.id for d in s.killed.detections] for s in dataset.exists("killed")}

    rerun = subprocess.run(cmd, env=launch_env(), capture_output=True, text=True, timeout=240)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    left = N_SAMPLES - len(finished)
    assert f"{left} samples segmented now, {len(finished)} already done" in rerun.stdout
    for sample in dataset.select(list(finished)):  # finished samples were not redone
        assert [d.id for d in sample.killed.detections] == finished[sample.id]
    assert _labels(dataset, "killed") == _labels(dataset, "ref")
