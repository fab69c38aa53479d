"""Load: simulated annotators on one `box2mask annotate` server; no write lost or mixed up.

    .venv/bin/python bench/load.py [--users 8] [--seconds 120] [--think 0.5] [--balloon 3]
    .venv/bin/python bench/load.py --servers 2 --users 8 --seconds 90   # two servers, one store
    .venv/bin/python bench/load.py --soak --users 8 --seconds 1800      # the 10 s soak series

Starts the real command (`box2mask annotate DIR --port P`, a subprocess) on a temporary folder
with the demo images and a few balloon images (resized to --max-side), then runs one
gradio_client `Client` per user, each in its own thread and its own browser session. Each user
loops: open an image (half the time the one image every user shares, else an image of its own
that one other user also works on), draw a box (its class is the user's name, u0, u1, ...,
so every label says who drew it), sometimes ask for more smoothing, accept the mask, sometimes
accept another user's label on the shared image, sometimes delete one of its own labels, with an
exponential pause of mean --think seconds between actions.

Afterwards the SQLite store is checked against what the users were told:
    lost        a label a user drew (and did not delete) is missing, or one it accepted is not
                marked verified
    mixed up    a stored label whose box its user never drew on that image, or a label twice
    revision    a label whose revision is not 1 + the number of its updates the users were told
                succeeded (every accepted write counted once)
    resurrected a label whose delete succeeded is still there
Refused stale writes (two users touched the same label) are correct behaviour and are counted.
Latency: p50 / p95 per action, as seen by the client (queueing included). Memory: RSS of the
server process sampled every second; it must stay flat (the model holds one encoded image).

--servers N starts N servers on the same folder (one SQLite store, two people each running
`box2mask annotate`); users are dealt to them in turn, so stale writes cross processes and the
same store check applies. --soak adds a series every 10 s of server 0's RSS, open file
descriptors, threads, Gradio's temp folder and the store's WAL (bench/load_soak.py).
"""

import argparse
import collections
import json
import os
import random
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from box2mask.io.rle import rle_to_bbox_xywh

REPO = Path(__file__).resolve().parents[1]
BALLOON = REPO.parent / "shared" / "data" / "balloon" / "images"
ELEM_IDS = {  # action -> (elem_id of the widget, its event), resolved to api names at run time
    "accept": ("b2m-accept", "click"),
    "refine": ("b2m-more", "click"),
    "select": ("b2m-labels", "input"),
    "open image": ("b2m-jump", "input"),
    "draw box": ("b2m-annotator", "change"),
}
PROBLEMS = ("lost", "mixed up", "revision", "resurrected")  # what check_store counts
ACTIONS = ("load", "open image", "draw box", "refine", "accept", "select", "delete box")


@dataclass
class LoadConfig:
    users: int = 8  # simulated annotators, one thread and one browser session each
    seconds: float = 120.0  # how long they keep working
    think_s: float = 0.5  # mean pause between a user's actions (exponential), seconds
    max_own: int = 0  # >0: a user deletes one of its labels on an image before drawing its
    #                   max_own+1-th there, so the store stops growing (memory must be flat)
    balloon: int = 3  # balloon images added to the 3 demo images
    max_side: int = 1024  # balloon images are resized to this longer side
    seed: int = 0  # random choices of the users
    servers: int = 1  # `box2mask annotate` processes on the same folder and store (two people
    #                   each starting it); user i talks to server i % servers
    soak_every_s: float = 0.0  # >0: sample server 0's RSS, fds, threads, Gradio temp folder and
    #                            the store's WAL this often (bench/load_soak.py)


# ---------------------------------------------------------------------------- the server


def prepare_images(folder: Path, *, balloon: int, max_side: int) -> dict[str, tuple[int, int]]:
    """Copy demo/*.png and `balloon` resized balloon images into `folder`; name -> (width, height)."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in sorted((REPO / "demo").glob("*.png")):
        shutil.copy(path, folder / path.name)
    for path in sorted(BALLOON.glob("*.jpg"))[:balloon]:
        image = Image.open(path).convert("RGB")
        image.thumbnail((max_side, max_side))
        image.save(folder / path.name, quality=92)
    return {p.name: Image.open(p).size for p in sorted(folder.iterdir()) if p.is_file()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    images_dir: Path, classes: list[str], workdir: Path, timeout_s: float = 180, name="server"
):
    """Run `box2mask annotate` in a subprocess; returns (process, base URL) once it answers.
    Its output goes to `workdir/NAME.log`."""
    import httpx

    port = free_port()
    env = {
        **os.environ,
        "GRADIO_ANALYTICS_ENABLED": "False",
        "GRADIO_TEMP_DIR": str(workdir / "gradio-tmp"),  # measured: what the renders leave behind
        "PYTHONPATH": str(REPO),
    }
    cmd = [sys.executable, "-m", "box2mask", "annotate", str(images_dir)]
    cmd += ["--port", str(port), "--classes", ",".join(classes)]
    log = open(workdir / f"{name}.log", "w")  # noqa: SIM115 (closed with the process)
    proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"annotate exited early:\n{(workdir / f'{name}.log').read_text()}")
        try:
            httpx.get(base + "/config", timeout=2).raise_for_status()
            return proc, base
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"annotate did not answer within {timeout_s:.0f} s")


def stop_server(proc) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def api_names(base: str) -> dict[str, str]:
    """action -> api_name, found from the widgets' elem_ids in the app's /config."""
    import httpx

    config = httpx.get(base + "/config", timeout=10).json()
    by_elem = {c["props"].get("elem_id"): c["id"] for c in config["components"] if "props" in c}
    names = {}
    for dep in config["dependencies"]:
        for target, event in dep["targets"]:
            for action, (elem, want) in ELEM_IDS.items():
                if by_elem.get(elem) == target and event == want:
                    names[action] = "/" + dep["api_name"]
            if event == "load":
                names["load"] = "/" + dep["api_name"]
    missing = set(ELEM_IDS) - set(names)
    if missing:
        raise RuntimeError(f"the app has no event for {sorted(missing)}")
    return names


class RSSSampler(threading.Thread):
    """Samples the resident memory (MB) of one process every `every_s` seconds."""

    def __init__(self, pid: int, every_s: float = 1.0):
        super().__init__(daemon=True)
        import psutil

        self.process, self.every_s = psutil.Process(pid), every_s
        self.samples: list[tuple[float, float]] = []  # (seconds since start, MB)
        self.stop = threading.Event()

    def run(self) -> None:
        start = time.perf_counter()
        while not self.stop.is_set():
            try:
                rss = self.process.memory_info().rss / 2**20
            except Exception:  # the process ended
                return
            self.samples.append((time.perf_counter() - start, rss))
            self.stop.wait(self.every_s)


# ---------------------------------------------------------------------------- one annotator


@dataclass
class Ledger:
    """What the users were told, shared by all threads (guarded by `lock`)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    added: set = field(default_factory=set)  # label keys (image, box, class) whose add succeeded
    deleted: set = field(default_factory=set)  # keys whose delete succeeded
    accepted: set = field(default_factory=set)  # keys last accepted by their owner
    updates: collections.Counter = field(default_factory=collections.Counter)  # key -> updates
    uncertain: set = field(default_factory=set)  # keys touched by a call that failed in transit
    times: dict = field(default_factory=lambda: collections.defaultdict(list))  # action -> [s]
    outcome: collections.Counter = field(default_factory=collections.Counter)  # (action, result)


def box_key(image: str, box: dict) -> tuple:
    return (image, (box["xmin"], box["ymin"], box["xmax"], box["ymax"]), box["label"])


class Annotator:
    """One simulated person: its own gradio_client session, drawing and accepting."""

    def __init__(
        self, user, *, base, api, sizes, images, ledger, rng, think_s, deadline, max_own=0
    ):
        from gradio_client import Client

        self.user, self.name = user, f"u{user}"
        # a browser waits for a busy server; httpx's default 5 s would fail requests in the queue
        self.client = Client(
            base, verbose=False, download_files=False, httpx_kwargs={"timeout": 120}
        )
        self.api, self.sizes, self.images, self.ledger = api, sizes, images, ledger
        self.rng, self.think_s, self.deadline, self.max_own = rng, think_s, deadline, max_own
        self.image, self.value, self.choices = None, None, []
        self.error: str | None = None

    def call(self, action: str, *args, keys=()):
        """One request; records its latency and result. Returns the outputs or None if it failed."""
        t = time.perf_counter()
        try:
            out = self.client.predict(*args, api_name=self.api[action])
        except Exception as err:  # the request failed in transit: outcome unknown
            with self.ledger.lock:
                self.ledger.outcome[(action, "error")] += 1
                self.ledger.uncertain.update(keys)
            self.error = f"{action}: {type(err).__name__}: {err}"[:200]
            return None
        dt = time.perf_counter() - t
        value, radio, message = out[0], out[1], out[3]
        if isinstance(value, dict) and value.get("image") is not None:
            self.value = value
        if isinstance(radio, dict) and "choices" in radio:
            self.choices = [c[1] for c in radio["choices"]]
        result = "refused" if "Refused" in (message or "") else "ok" if not message else "other"
        with self.ledger.lock:
            self.ledger.times[action].append(dt)
            self.ledger.outcome[(action, result)] += 1
        return out, result

    def boxes(self) -> list[dict]:
        """The boxes on screen, as the browser sends them back (the colour is the widget's own)."""
        keep = ("xmin", "ymin", "xmax", "ymax", "label")
        return [{k: b[k] for k in keep} for b in (self.value or {}).get("boxes", [])]

    def pause(self) -> None:
        time.sleep(min(self.rng.expovariate(1 / self.think_s), 5 * self.think_s))

    def run(self) -> None:
        try:
            self._run()
        except Exception as err:  # a bug in the harness or an unexpected answer: reported
            self.error = f"{type(err).__name__}: {err}"[:200]

    def _run(self) -> None:
        if self.call("load") is None:
            return
        self.image = None
        shared, own = self.images[0], self.images[1 + self.user % (len(self.images) - 1)]
        while time.time() < self.deadline:
            target = shared if self.rng.random() < 0.5 else own
            if target != self.image or self.rng.random() < 0.3:  # reopening shows others' labels
                if self.call("open image", target) is None:
                    return
                self.image = target
            self.pause()
            own_labels = [b for b in self.boxes() if b["label"] == self.name]
            if self.max_own and len(own_labels) >= self.max_own:
                self._delete_own()
                self.pause()
            key = self._draw()
            if key is None:
                continue
            self.pause()
            if self.rng.random() < 0.25:
                self._update("refine", key, owner=True)
                self.pause()
            if self.rng.random() < 0.85:
                self._update("accept", key, owner=True)
                self.pause()
            if self.image == shared and self.rng.random() < 0.4:
                self._accept_other()
                self.pause()
            if self.rng.random() < 0.15:
                self._delete_own()
                self.pause()

    def _draw(self):
        """Drag a new box (unique to this user) on the open image; its key if the add succeeded."""
        width, height = self.sizes[self.image]
        mine = {box_key(self.image, b) for b in self.boxes()}
        while True:
            w, h = self.rng.randint(24, width // 3), self.rng.randint(24, height // 3)
            x0, y0 = self.rng.randint(0, width - w - 1), self.rng.randint(0, height - h - 1)
            box = dict(xmin=x0, ymin=y0, xmax=x0 + w, ymax=y0 + h, label=self.name)
            key = box_key(self.image, box)
            if key not in mine and key not in self.ledger.added:
                break
        value = {"image": self.value["image"], "boxes": self.boxes() + [box]}
        answer = self.call("draw box", value, keys=[key])
        if answer is None:
            return None
        shown = {box_key(self.image, b) for b in self.boxes()}
        if answer[1] == "ok" and key in shown:
            with self.ledger.lock:
                self.ledger.added.add(key)
            return key
        return None

    def _select(self, key) -> bool:
        keys = [box_key(self.image, b) for b in self.boxes()]
        if key not in keys or len(self.choices) != len(keys):
            return False
        answer = self.call("select", self.choices[keys.index(key)])
        return answer is not None and answer[1] == "ok"

    def _update(self, action: str, key, owner: bool) -> None:
        """Accept or refine the label `key` (selected first); the ledger counts the write."""
        if not self._select(key):
            return
        answer = self.call(action, keys=[key])
        if answer is None or answer[1] != "ok":
            return
        with self.ledger.lock:
            self.ledger.updates[key] += 1
            if owner and action == "accept":
                self.ledger.accepted.add(key)
            elif owner:
                self.ledger.accepted.discard(key)  # a new mask: not accepted any more

    def _accept_other(self) -> None:
        others = [box_key(self.image, b) for b in self.boxes() if b["label"] != self.name]
        if others:
            self._update("accept", self.rng.choice(others), owner=False)

    def _delete_own(self) -> None:
        boxes = self.boxes()
        mine = [i for i, b in enumerate(boxes) if b["label"] == self.name]
        if not mine:
            return
        gone = boxes.pop(self.rng.choice(mine))
        key = box_key(self.image, gone)
        answer = self.call("delete box", {"image": self.value["image"], "boxes": boxes}, keys=[key])
        if answer is not None and answer[1] == "ok":
            with self.ledger.lock:
                self.ledger.deleted.add(key)
                self.ledger.accepted.discard(key)


# ---------------------------------------------------------------------------- checks


def check_store(store_path: Path, ledger: Ledger) -> dict[str, int]:
    """Compare the store with what the users were told: a count per PROBLEMS, and labels stored."""
    db = sqlite3.connect(f"file:{store_path}?mode=ro", uri=True)
    rows = db.execute(
        "SELECT image, box_xyxy, class_name, verified, revision FROM labels"
    ).fetchall()
    db.close()
    stored = collections.defaultdict(list)
    for image, box, class_name, verified, revision in rows:
        key = (image, tuple(int(round(v)) for v in json.loads(box)), class_name)
        stored[key].append((bool(verified), revision))
    alive = ledger.added - ledger.deleted
    problems = collections.Counter()
    for key, copies in stored.items():
        if key not in ledger.added or len(copies) > 1:
            problems["mixed up"] += 1
        if key in ledger.deleted:
            problems["resurrected"] += 1
        verified, revision = copies[0]
        if key in ledger.accepted and not verified and key not in ledger.uncertain:
            problems["lost"] += 1  # an accept the owner saw succeed is not in the store
        if key not in ledger.uncertain and revision != 1 + ledger.updates[key]:
            problems["revision"] += 1
    problems["lost"] += len([k for k in alive if k not in stored and k not in ledger.uncertain])
    return {**{k: problems[k] for k in PROBLEMS}, "labels stored": len(rows)}


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def run_load(cfg: LoadConfig, workdir: Path) -> dict:
    """Run the whole load test in `workdir`; returns latencies, outcomes, memory and checks."""
    images_dir = workdir / "images"
    sizes = prepare_images(images_dir, balloon=cfg.balloon, max_side=cfg.max_side)
    images = sorted(sizes)
    classes = [f"u{i}" for i in range(cfg.users)]
    load_before = os.getloadavg()
    store_path = images_dir / "box2mask_labels.sqlite"
    servers = []
    try:
        for i in range(cfg.servers):
            servers.append(start_server(images_dir, classes, workdir, name=f"server{i}"))
        apis = [api_names(base) for _, base in servers]
        for api in apis:
            api["delete box"] = api["draw box"]  # a delete is a box list without the box
        sampler = RSSSampler(servers[0][0].pid)
        sampler.start()
        soak = None
        if cfg.soak_every_s > 0:
            from bench.load_soak import SoakSampler

            soak = SoakSampler(
                servers[0][0].pid, workdir / "gradio-tmp", store_path, every_s=cfg.soak_every_s
            )
            soak.start()
        ledger = Ledger()
        deadline = time.time() + cfg.seconds
        users = [
            Annotator(
                i,
                base=servers[i % cfg.servers][1],
                api=apis[i % cfg.servers],
                sizes=sizes,
                images=images,
                ledger=ledger,
                rng=random.Random(cfg.seed * 1000 + i),
                think_s=cfg.think_s,
                max_own=cfg.max_own,
                deadline=deadline,
            )
            for i in range(cfg.users)
        ]
        threads = [threading.Thread(target=u.run, daemon=True) for u in users]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=cfg.seconds + 300)
        sampler.stop.set()
        sampler.join()
        if soak is not None:
            soak.stop.set()
            soak.join()
    finally:
        for proc, _ in servers:
            stop_server(proc)
    temp_mb = sum(p.stat().st_size for p in (workdir / "gradio-tmp").rglob("*") if p.is_file())
    return {
        "ledger": ledger,
        "checks": check_store(store_path, ledger),
        "mask_mb": mask_memory_mb(store_path, [u.image for u in users]),
        "rss": sampler.samples,  # of server 0
        "soak": soak.samples if soak is not None else [],
        "errors": [u.error for u in users if u.error],
        "temp_mb": temp_mb / 2**20,
        "load": (load_before, os.getloadavg()),
        "images": images,
    }


def memory_summary(samples: list[tuple[float, float]]) -> dict:
    """RSS (MB) at the first quarter, at the end and at its peak; growth over the second half;
    `series`: the RSS at every tenth of the run."""
    mb = [m for _, m in samples]
    n = len(mb)
    quarter, half = mb[n // 4], mb[n // 2]
    series = [mb[min(n - 1, round(i * (n - 1) / 10))] for i in range(11)]
    return {
        "quarter": quarter,
        "end": mb[-1],
        "peak": max(mb),
        "second_half": mb[-1] - half,
        "series": series,
    }


def mask_memory_mb(store_path: Path, open_images: list[str]) -> float:
    """Memory the sessions need for their decoded masks, from the labels now in the store: each
    session keeps every mask of the image it has open as its bounding rectangle (a MaskPatch,
    one byte per pixel), the part of RSS that grows with the labels, by design."""
    db = sqlite3.connect(f"file:{store_path}?mode=ro", uri=True)
    rows = db.execute("SELECT image, mask_rle FROM labels WHERE mask_rle IS NOT NULL").fetchall()
    db.close()
    per_image = collections.Counter()
    for image, rle in rows:
        _, _, w, h = rle_to_bbox_xywh(json.loads(rle))
        per_image[image] += int(w) * int(h)
    return sum(per_image[k] for k in open_images if k) / 2**20


def print_report(cfg: LoadConfig, result: dict) -> None:
    ledger, checks = result["ledger"], result["checks"]
    print(
        f"{cfg.users} users x {cfg.seconds:.0f} s on {cfg.servers} server(s), think {cfg.think_s} s, "
        f"{f'at most {cfg.max_own} labels per user and image, ' if cfg.max_own else ''}"
        f"{len(result['images'])} images ({result['images'][0]} shared); "
        f"load average {result['load'][0][0]:.1f} before, {result['load'][1][0]:.1f} after, "
        f"{os.cpu_count()} CPUs"
    )
    print("\n| action | requests | ok | refused (stale) | failed | p50 ms | p95 ms |")
    print("|---|---|---|---|---|---|---|")
    for action in ACTIONS:
        times = ledger.times[action]
        out = {r: ledger.outcome[(action, r)] for r in ("ok", "refused", "other", "error")}
        total = sum(out.values())
        if not total:
            continue
        p50, p95 = percentile(times, 50) * 1000, percentile(times, 95) * 1000
        print(
            f"| {action} | {total} | {out['ok']} | {out['refused']} | "
            f"{out['other'] + out['error']} | {p50:.0f} | {p95:.0f} |"
        )
    mem = memory_summary(result["rss"])
    alive = len(ledger.added - ledger.deleted)
    print(
        f"\nlabels drawn {len(ledger.added)}, deleted {len(ledger.deleted)}, in the store "
        f"{checks['labels stored']} (expected {alive}); accepted by their owner "
        f"{len(ledger.accepted)}; lost {checks['lost']}, mixed up "
        f"{checks['mixed up']}, wrong revision {checks['revision']}, resurrected "
        f"{checks['resurrected']}; in-transit failures {len(ledger.uncertain)}"
    )
    print(
        f"server RSS MB: {mem['quarter']:.0f} at 1/4 of the run, {mem['end']:.0f} at the end, "
        f"peak {mem['peak']:.0f}, second-half growth {mem['second_half']:+.0f} "
        f"(every tenth: {' '.join(f'{m:.0f}' for m in mem['series'])}); decoded masks the "
        f"sessions hold at the end: {result['mask_mb']:.0f} MB; "
        f"Gradio temp files left: {result['temp_mb']:.0f} MB"
    )
    for error in result["errors"]:
        print(f"user error: {error}")
    if result["soak"]:
        from bench.load_soak import print_series

        print_series(result["soak"])


def main() -> None:
    sys.path.insert(0, str(REPO))  # bench.load_soak, when run as a script
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = LoadConfig()
    parser.add_argument("--users", type=int, default=defaults.users)
    parser.add_argument("--seconds", type=float, default=defaults.seconds)
    parser.add_argument("--think", type=float, default=defaults.think_s, help="mean pause, s")
    parser.add_argument(
        "--max-own",
        type=int,
        default=defaults.max_own,
        help="keep at most this many labels per user and image (0: no limit)",
    )
    parser.add_argument("--balloon", type=int, default=defaults.balloon)
    parser.add_argument("--max-side", type=int, default=defaults.max_side)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument(
        "--servers",
        type=int,
        default=defaults.servers,
        help="annotate processes on the same folder and store; users dealt round-robin",
    )
    parser.add_argument(
        "--soak",
        action="store_true",
        help="sample server 0's RSS, fds, threads, Gradio temp folder and WAL every 10 s",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    cfg = LoadConfig(
        users=args.users,
        seconds=args.seconds,
        think_s=args.think,
        max_own=args.max_own,
        balloon=args.balloon,
        max_side=args.max_side,
        seed=args.seed,
        servers=args.servers,
        soak_every_s=10.0 if args.soak else 0.0,
    )
    workdir = Path(tempfile.mkdtemp(prefix="box2mask-load-"))
    try:
        result = run_load(cfg, workdir)
        print_report(cfg, result)
    finally:
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
