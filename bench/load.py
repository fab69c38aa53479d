"""Load: simulated annotators on one `box2mask annotate` server; no write lost or mixed up.

    .venv/bin/python -m bench.load [--users 8] [--seconds 120] [--think 0.5] [--balloon 3]
    .venv/bin/python -m bench.load --servers 2 --users 8 --seconds 90   # two servers, one store
    .venv/bin/python -m bench.load --soak --users 8 --seconds 1800      # the 10 s soak series

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

The server is bench/load_server.py, the users bench/load_users.py, the checks
bench/load_checks.py; this file runs them and prints the report.
"""

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.load_checks import check_store, mask_memory_mb, memory_summary, percentile
from bench.load_server import RSSSampler, api_names, prepare_images, start_server, stop_server
from bench.load_users import Annotator, Ledger

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
        ledger = Ledger()
        soak = None
        if cfg.soak_every_s > 0:
            from bench.load_soak import SoakSampler

            soak = SoakSampler(
                servers[0][0].pid,
                workdir / "gradio-tmp",
                store_path,
                every_s=cfg.soak_every_s,
                times=ledger.times,
            )
            soak.start()
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


def result_json(result: dict) -> dict:
    """The results of `run_load` as JSON: the checks, the users' errors, the ledger, outcomes and
    timed requests per action, the RSS and soak series."""
    ledger = result["ledger"]
    return {
        "checks": result["checks"],
        "errors": result["errors"],
        "ledger": ledger.to_json(),
        "outcome": {f"{action} {how}": n for (action, how), n in ledger.outcome.items()},
        "timed": {action: len(times) for action, times in ledger.times.items()},
        "rss": result["rss"],
        "soak": [asdict(sample) for sample in result["soak"]],
        "mask_mb": result["mask_mb"],
        "temp_mb": result["temp_mb"],
        "images": result["images"],
    }


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
    parser.add_argument(
        "--soak-every", type=float, default=None, metavar="S", help="the soak series every S s"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument(
        "--json", type=Path, default=None, help="also write the results here (bench/load_checks.py)"
    )
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
        soak_every_s=args.soak_every or (10.0 if args.soak else 0.0),
    )
    workdir = Path(tempfile.mkdtemp(prefix="box2mask-load-"))
    try:
        result = run_load(cfg, workdir)
        print_report(cfg, result)
        if args.json is not None:
            args.json.write_text(json.dumps(result_json(result)))
    finally:
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
