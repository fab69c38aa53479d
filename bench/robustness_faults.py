"""Robustness cases: faults. SIGKILL of `train` (then --resume, compared with an uninterrupted run),
a disk that fills up while a checkpoint is saved (the training scenarios of tests/test_faults.py),
and SIGKILL of a process writing the label store."""

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from box2mask.cli import main as cli_main

REPO = Path(__file__).resolve().parents[1]


def _faults():
    """The training-fault scenarios of tests/test_faults.py (imported: one version of each)."""
    import torch

    from tests import test_faults

    torch.set_num_threads(1)  # the same thread count as the subprocess runs: same sums
    return test_faults


def _reference_run(folder: Path, faults) -> tuple[Path, Path]:
    """A tiny dataset and an uninterrupted training run on it (the reference)."""
    from tests.test_train_loop import make_shapes_dataset
    from train.train_cmd import train

    shapes = make_shapes_dataset(folder / "data")
    straight = folder / "straight"
    config = faults.tiny_config(shapes, straight, iterations=faults.STEPS, checkpoint_every=2)
    train(config, progress=False)
    return shapes, straight


def train_sigkill_case(folder: Path, name: str) -> tuple[str, str, int]:
    faults = _faults()
    shapes, straight = _reference_run(folder, faults)
    out = folder / "killed"
    killed_at = faults.kill_after_first_checkpoint(shapes, out)
    code = faults.resume(out)
    problems = faults.differences(out, straight)
    message = f"killed with last.pt at step {killed_at}; --resume exit {code}; " + (
        "; ".join(problems) or f"{faults.STEPS} steps, weights identical to an uninterrupted run"
    )
    return ("handled" if code == 0 and not problems else "crash"), message, 0


def train_disk_full_case(folder: Path, name: str) -> tuple[str, str, int]:
    """Disk full at the step-4 checkpoint of `box2mask train`: step 2 kept, then --resume."""
    from box2mask.io.checkpoint import load_checkpoint

    faults = _faults()
    shapes, straight = _reference_run(folder, faults)
    out = folder / "full"
    err = io.StringIO()
    try:
        with faults.disk_full_at_step(4), contextlib.redirect_stderr(err):
            code = cli_main(faults.train_args(shapes, out))
        last_line = err.getvalue().strip().splitlines()[-1]
        how = f"exit {code}: {last_line[:60]}... {'names' if 'last.pt' in last_line else 'does not name'} last.pt"
    except OSError as error:
        code, how = None, f"traceback ({error.strerror}, no message naming last.pt)"
    kept = load_checkpoint(out / "last.pt")["extra"]["step"]
    temps = [p.name for p in out.iterdir() if p.name.startswith(".tmp")]
    resumed = faults.resume(out)
    problems = faults.differences(out, straight)
    message = f"{how}; last.pt kept at step {kept}, temp files {len(temps)}; --resume: " + (
        "; ".join(problems) or "weights identical to an uninterrupted run"
    )
    intact = kept == 2 and not temps and resumed == 0 and not problems
    clear = code not in (None, 0) and "names last.pt" in how
    return ("handled" if intact and clear else "crash" if intact else "wrong"), message, 0


def checkpoint_disk_full_case(folder: Path, name: str) -> tuple[str, str, int]:
    """save_checkpoint when the disk fills up half way: the previous file intact, no temp file."""
    import errno

    import torch

    from box2mask.io.checkpoint import load_checkpoint, save_checkpoint
    from box2mask.model.config import ModelConfig

    faults = _faults()
    model = torch.nn.Linear(3, 2)
    args = dict(model_config=ModelConfig(), class_names=["c"], config={}, model_version="v")
    path = folder / "last.pt"
    save_checkpoint(path, model=model, extra={"step": 2}, **args)
    before = path.read_bytes()
    torch.save = faults.disk_full_after(len(before) // 2)
    try:
        save_checkpoint(path, model=model, extra={"step": 4}, **args)
        return "wrong", "no error although the disk was full", 0
    except OSError as err:
        raised = err.errno == errno.ENOSPC
    finally:
        torch.save = faults.REAL_SAVE
    intact = path.read_bytes() == before and load_checkpoint(path)["extra"]["step"] == 2
    others = [p.name for p in folder.iterdir() if p.name != "last.pt"]
    ok = raised and intact and not others
    message = (
        f"OSError ENOSPC raised: {raised}; previous last.pt intact: {intact}; temp files: {others}"
    )
    return ("handled" if ok else "wrong"), message, 0


_STORE_WRITER = """
import sys
from annotator.store import Label, SQLiteStore
store = SQLiteStore(sys.argv[1])
rle = {"size": [40, 56], "counts": "0" * 30}
while True:
    label = store.add(Label(image="a.png", box_xyxy=[1, 2, 30, 40], class_name="c", mask_rle=rle,
                            source="model", model_version="v", verified=False))
    label = store.update(Label(**{**label.__dict__, "verified": True}))
    print(label.id, label.revision, flush=True)
"""


def store_sigkill_case(folder: Path, name: str, kills: int = 5) -> tuple[str, str, int]:
    """SIGKILL a process adding and accepting labels, `kills` times at random moments; after
    each, every label it reported as committed must be in the store, accepted, and the file sound."""
    import random
    import sqlite3

    from annotator.store import SQLiteStore

    db_path = folder / "labels.sqlite"
    committed, rng = {}, random.Random(0)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for _ in range(kills):
        proc = subprocess.Popen(
            [sys.executable, "-c", _STORE_WRITER, str(db_path)], stdout=subprocess.PIPE, env=env
        )
        proc.stdout.readline()  # writing has started
        time.sleep(rng.uniform(0.05, 0.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for line in proc.stdout.read().split(b"\n")[:-1]:  # complete lines only
            label_id, revision = line.decode().split()
            committed[label_id] = int(revision)
    sound = sqlite3.connect(db_path).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store = SQLiteStore(db_path)
    lost = 0
    for label_id, revision in committed.items():
        try:
            label = store.get(label_id)
            lost += not (label.verified and label.revision == revision)
        except KeyError:
            lost += 1
    store.close()
    message = f"{kills} kills, {len(committed)} labels committed, integrity_check ok: {sound}"
    return ("handled" if sound and not lost else "crash"), message, lost
