"""Kill the learning loop anywhere: SIGKILL `box2mask retrain` (and the annotator's hot reload).

    .venv/bin/python -m bench.kill_loop [--points 50] [--seed 0] [--iterations 20] [--json OUT]
    .venv/bin/python -m bench.kill_loop --points 3 --phases checkpoint,registry,promotion

A temporary project (synthetic blob images, a SQLite store of verified masks, a registry) gets
one unkilled crop-learner round first (the baseline: it times each phase and promotes the first
model), then one point per kill, the phases in turn:
    bank, train, gate   SIGKILL from outside a random time into the phase (uniform over the
                        baseline's duration of it): the crop bank's build, training steps
                        (checkpoint writes among them), the promotion gate's evaluations
    checkpoint          the K-th write of last.pt, half written / written not renamed / renamed
    registry            the candidate's copy into the registry: half copied / copied / complete
                        folder not renamed / renamed
    promotion           promoted.json: half written / written not renamed / renamed
    reload              an annotator (`box2mask annotate --registry`) SIGKILLed 0-3 s after a
                        round promoted a model (before, during or after its hot reload), then
                        started again
The short writes are killed by the retrain process itself (bench/kill_child.py: the same CLI in
process, SIGKILL on itself at that instruction). Rounds run with --margin -1 (every complete one
promotes) and one --work folder per point, so the next retrain may resume.

After each kill (bench/kill_checks.py): every version folder of the registry loads, promoted.json
names a complete version whose model answers a box, the store's rows and their hash are
unchanged. Then the next `box2mask retrain` (a plain subprocess, same --work) must exit 0,
promote a new complete version, leave no temporary file in the registry or the work folder and
keep the labels; a restarted annotator must serve the promoted version.
"""

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.kill_checks import leftovers, registry_state, store_digest

REPO = Path(__file__).resolve().parents[1]
PHASES = ("bank", "train", "checkpoint", "gate", "registry", "promotion", "reload")
HOWS = {
    "checkpoint": ("mid", "before", "after"),
    "registry": ("mid", "copied", "before", "after"),
    "promotion": ("mid", "before", "after"),
}


@dataclass
class KillConfig:
    points: int = 50  # kills in all, the phases in turn
    phases: tuple = PHASES  # which phases get points
    seed: int = 0  # random delays and kill sub-points
    iterations: int = 20  # crop-learner steps per round (tiny: a round is seconds)
    checkpoint_every: int = 5  # steps between last.pt writes
    images: int = 8  # synthetic images in the store, one verified mask each


@dataclass
class Point:
    index: int  # 0-based
    phase: str  # the phase aimed at
    how: str = ""  # the sub-point of a self-kill, or the delay in s of an outside kill
    killed_in: str = ""  # the last phase mark seen before the process died ('' = none)
    exit: int | None = None  # the killed process's exit status (-9 = SIGKILL)
    problems: list = field(default_factory=list)  # every check that failed, said how
    resumed_from: int | None = None  # the step of the last.pt the next retrain resumed from
    seconds: float = 0.0  # wall time of the point, kill and recovery


def make_project(folder: Path, images: int) -> Path:
    """Synthetic images (a red ellipse on noise) with one verified mask each in a SQLite store
    (folder/labels.sqlite); returns the images folder."""
    import numpy as np
    from PIL import Image

    from annotator.store import Label, SQLiteStore
    from box2mask.io.rle import encode_rle

    rng = np.random.default_rng(0)
    image_dir = folder / "images"
    image_dir.mkdir(parents=True)
    yy, xx = np.mgrid[:96, :96]
    store = SQLiteStore(folder / "labels.sqlite", image_dir)
    for i in range(images):
        image = rng.integers(0, 60, (96, 96, 3)).astype(np.uint8)
        cx, cy = rng.uniform(30, 66, 2)
        mask = ((xx - cx) / 14) ** 2 + ((yy - cy) / 11) ** 2 <= 1
        image[mask] = (220, 60, 40)
        Image.fromarray(image).save(image_dir / f"{i}.png")
        ys, xs = np.nonzero(mask)
        box = [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
        store.add(Label(f"{i}.png", box, "blob", encode_rle(mask), "human-corrected", "m0", True))
    store.close()
    return image_dir


def retrain_args(cfg: KillConfig, folder: Path, work: Path) -> list[str]:
    return [
        "retrain",
        *("--store", str(folder / "labels.sqlite"), "--images", str(folder / "images")),
        *("--registry", str(folder / "models"), "--work", str(work)),
        *("--config", str(REPO / "configs" / "crop_photos.yaml"), "--eval-fraction", "0.5"),
        *("--margin", "-1", "--device", "cpu", "--set", f"iterations={cfg.iterations}"),
        *(f"checkpoint_every={cfg.checkpoint_every}", "views=2", "batch_size=8"),
        *("log_every=5", "model.test_flips=false"),
    ]


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def run_child(point: str, args: list[str], log: Path, kill_at: tuple[str, float] | None = None):
    """bench.kill_child POINT -- ARGS; with `kill_at` (phase, delay) SIGKILL it `delay` s after
    that phase's mark. Returns (exit status, [(phase, seconds since start)])."""
    cmd = [sys.executable, "-m", "bench.kill_child", point, "--", *args]
    with open(log, "a") as err:
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=err, text=True
        )
    start, marks, seen = time.perf_counter(), [], threading.Event()

    def read():
        for line in proc.stdout:
            if line.startswith("PHASE "):
                marks.append((line.split()[1], time.perf_counter() - start))
                if kill_at and marks[-1][0] == kill_at[0]:
                    seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if kill_at is not None:
        while not seen.wait(0.05) and proc.poll() is None:
            pass
        if proc.poll() is None:
            time.sleep(kill_at[1])
            proc.send_signal(signal.SIGKILL)
    code = proc.wait(timeout=600)
    reader.join(timeout=10)
    return code, marks


def run_retrain(args: list[str], log: Path) -> tuple[int, str]:
    """The plain `box2mask retrain` (a subprocess); (exit status, its stdout)."""
    cmd = [sys.executable, "-m", "box2mask", *args]
    with open(log, "a") as err:
        done = subprocess.run(
            cmd, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=err, text=True, timeout=600
        )
    return done.returncode, done.stdout


class Annotator:
    """`box2mask annotate IMAGES --registry R` in a subprocess, its output in a log file."""

    def __init__(self, folder: Path, log: Path):
        self.folder, self.log, self.proc = folder, log, None

    def start(self, timeout_s: float = 240) -> None:
        import httpx

        from bench.load_server import free_port

        port = free_port()
        cmd = [sys.executable, "-m", "box2mask", "annotate", str(self.folder / "images")]
        cmd += ["--port", str(port), "--registry", str(self.folder / "models")]
        self.log.write_text("")
        with open(self.log, "a") as out:
            env = {**ENV, "GRADIO_ANALYTICS_ENABLED": "False"}
            self.proc = subprocess.Popen(cmd, cwd=self.folder, env=env, stdout=out, stderr=out)
        deadline = time.time() + timeout_s
        while time.time() < deadline and self.proc.poll() is None:
            try:
                httpx.get(f"http://127.0.0.1:{port}/config", timeout=2).raise_for_status()
                return
            except httpx.HTTPError:
                time.sleep(0.3)
        raise RuntimeError(f"annotate did not start:\n{self.log.read_text()[-2000:]}")

    def output(self) -> str:
        return self.log.read_text()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


def check_after_kill(folder: Path, digest, before: dict, point: Point) -> None:
    state = registry_state(folder / "models")
    if state["broken"]:
        point.problems.append(f"broken versions {state['broken']}")
    if state["promoted_error"]:
        point.problems.append(f"served model: {state['promoted_error']}")
    if state["promoted"] not in (before["promoted"], *state["versions"]):
        point.problems.append(f"promoted {state['promoted']} is not a complete version")
    if store_digest(folder / "labels.sqlite") != digest:
        point.problems.append("the label store changed")


def check_after_recovery(folder: Path, work: Path, digest, before: dict, code, out, point):
    state = registry_state(folder / "models")
    if code != 0 or "promoted" not in out:
        point.problems.append(f"next retrain exited {code}: {out.strip()[-200:]}")
    if state["broken"] or state["promoted_error"]:
        point.problems.append(
            f"after the next retrain: {state['broken']} {state['promoted_error']}"
        )
    if len(state["versions"]) <= len(before["versions"]) or state["promoted"] != max(
        state["versions"]
    ):
        point.problems.append(f"the next retrain did not promote a new version: {state}")
    left = state["leftovers"] + leftovers(work)
    if left:
        point.problems.append(f"temporary files left after the next retrain: {left[:4]}")
    if store_digest(folder / "labels.sqlite") != digest:
        point.problems.append("the label store changed")
    return state


def reload_point(folder: Path, cfg: KillConfig, point: Point, rng, logs: Path) -> None:
    """Kill the annotator around a hot reload; the restarted one must serve the promoted model."""
    annotator = Annotator(folder, logs / f"annotate{point.index:02d}.log")
    digest = store_digest(folder / "labels.sqlite")
    before = registry_state(folder / "models")
    annotator.start()
    try:
        if f"serving promoted model {before['promoted']}" not in annotator.output():
            point.problems.append(f"annotator did not start on {before['promoted']}")
        work = folder / "work" / f"p{point.index:02d}"
        code, out = run_retrain(retrain_args(cfg, folder, work), logs / "retrain.log")
        state = check_after_recovery(folder, work, digest, before, code, out, point)
        delay = rng.uniform(0, 3.0)
        point.how = f"{delay:.1f} s"
        time.sleep(delay)
        loaded = f"loaded promoted model {state['promoted']}" in annotator.output()
        point.killed_in = "after reload" if loaded else "before or during reload"
        annotator.kill()
        point.exit = annotator.proc.returncode
        annotator.start()
        if f"serving promoted model {state['promoted']}" not in annotator.output():
            point.problems.append(f"restarted annotator does not serve {state['promoted']}")
    finally:
        annotator.stop()


def kill_point(folder: Path, cfg: KillConfig, point: Point, durations, rng, logs: Path) -> None:
    """One kill of `box2mask retrain` in `point.phase`, the checks, the next retrain."""
    work = folder / "work" / f"p{point.index:02d}"
    args = retrain_args(cfg, folder, work)
    digest = store_digest(folder / "labels.sqlite")
    before = registry_state(folder / "models")
    if point.phase in HOWS:
        point.how = rng.choice(HOWS[point.phase])
        spec = f"{point.phase}:{point.how}"
        if point.phase == "checkpoint":
            writes = cfg.iterations // cfg.checkpoint_every + 1  # and the one after the loop
            spec = f"checkpoint:{rng.randint(1, writes)}:{point.how}"
            point.how = spec.split(":", 1)[1]
        code, marks = run_child(spec, args, logs / "retrain.log")
    else:
        delay = rng.uniform(0, durations[point.phase])
        for _ in range(4):  # a round faster than the baseline's may finish first: kill sooner
            point.how = f"{delay:.2f} s"
            code, marks = run_child("none", args, logs / "retrain.log", (point.phase, delay))
            if code == -signal.SIGKILL:
                break
            delay /= 3
    point.exit, point.killed_in = code, marks[-1][0] if marks else ""
    if code != -signal.SIGKILL:
        point.problems.append(f"not killed: exit {code} after {[m for m, _ in marks]}")
    check_after_kill(folder, digest, before, point)
    last = work / "candidate" / "last.pt"
    if last.is_file():
        from box2mask.io.checkpoint import load_checkpoint

        point.resumed_from = int(load_checkpoint(last)["extra"]["step"])
    code, out = run_retrain(args, logs / "retrain.log")
    check_after_recovery(folder, work, digest, before, code, out, point)


def run_kill_loop(cfg: KillConfig, folder: Path) -> dict:
    """The baseline round, then `cfg.points` kill points; returns the baseline and the points."""
    make_project(folder, cfg.images)
    logs = folder / "logs"
    logs.mkdir()
    start = time.perf_counter()
    code, marks = run_child(
        "none", retrain_args(cfg, folder, folder / "work" / "base"), logs / "retrain.log"
    )
    baseline_s = time.perf_counter() - start
    if code != 0 or not registry_state(folder / "models")["promoted"]:
        raise RuntimeError(
            f"the baseline round failed ({code}):\n{(logs / 'retrain.log').read_text()[-3000:]}"
        )
    times = dict(marks)
    ends = {"bank": "train", "train": "gate", "gate": "registry"}
    durations = {
        p: max(0.05, times[e] - times[p]) for p, e in ends.items() if p in times and e in times
    }
    rng = random.Random(cfg.seed)
    points = []
    for index in range(cfg.points):
        point = Point(index=index, phase=cfg.phases[index % len(cfg.phases)])
        t = time.perf_counter()
        try:
            if point.phase == "reload":
                reload_point(folder, cfg, point, rng, logs)
            else:
                kill_point(folder, cfg, point, durations, rng, logs)
        except Exception as err:  # a harness failure is a failed point, said why
            point.problems.append(f"{type(err).__name__}: {err}"[:300])
        point.seconds = time.perf_counter() - t
        points.append(point)
        print(f"point {index}: {point.phase} {point.how} -> killed in {point.killed_in or '-'}; "
              f"{'ok' if not point.problems else point.problems}", file=sys.stderr, flush=True)  # fmt: skip
    return {"baseline_s": baseline_s, "durations": durations, "marks": marks, "points": points}


def print_report(cfg: KillConfig, result: dict) -> None:
    points = result["points"]
    marks = " ".join(f"{p} {t:.1f}s" for p, t in result["marks"])
    print(f"{len(points)} kill points, {cfg.iterations} crop-learner steps per round, "
          f"{cfg.images} images; baseline round {result['baseline_s']:.1f} s (phase marks: {marks}); "
          f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs")  # fmt: skip
    print("\n| phase | points | killed there | served model loads | registry consistent | "
          "labels intact | next retrain ok (resumed) | s per point |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for phase in cfg.phases:
        rows = [p for p in points if p.phase == phase]
        if not rows:
            continue
        there = sum(p.killed_in in (phase, "after reload", "before or during reload") for p in rows)
        served = sum(not any("served" in x or "serve" in x for x in p.problems) for p in rows)
        registry = sum(
            not any("version" in x or "temporary" in x for x in p.problems) for p in rows
        )
        labels = sum(not any("label store" in x for x in p.problems) for p in rows)
        nxt = sum(not any("next retrain" in x for x in p.problems) for p in rows)
        resumed = sum(p.resumed_from is not None for p in rows)
        secs = sum(p.seconds for p in rows) / len(rows)
        print(f"| {phase} | {len(rows)} | {there} | {served} | {registry} | {labels} | "
              f"{nxt} ({resumed}) | {secs:.0f} |")  # fmt: skip
    bad = [p for p in points if p.problems]
    print(f"\n{len(points) - len(bad)}/{len(points)} points passed every check")
    for p in bad:
        print(f"point {p.index} ({p.phase} {p.how}, killed in {p.killed_in}): {p.problems}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = KillConfig()
    parser.add_argument("--points", type=int, default=defaults.points)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--iterations", type=int, default=defaults.iterations)
    parser.add_argument("--phases", default=",".join(PHASES), help="comma-separated, in turn")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    phases = tuple(p for p in args.phases.split(",") if p)
    unknown = set(phases) - set(PHASES)
    if unknown:
        parser.error(f"unknown phases {sorted(unknown)}: choose from {PHASES}")
    cfg = KillConfig(points=args.points, phases=phases, seed=args.seed, iterations=args.iterations)
    folder = Path(tempfile.mkdtemp(prefix="box2mask-kill-"))
    try:
        result = run_kill_loop(cfg, folder)
        print_report(cfg, result)
        if args.json is not None:
            out = {**result, "points": [asdict(p) for p in result["points"]], "config": asdict(cfg)}
            args.json.write_text(json.dumps(out))
    finally:
        if args.keep:
            print(f"kept {folder}", file=sys.stderr)
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
