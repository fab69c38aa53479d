"""The server side of bench/load.py: the images, `box2mask annotate` in a subprocess, the api
names of its widgets' events, and a sampler of the server's resident memory."""

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
BALLOON = REPO.parent / "shared" / "data" / "balloon" / "images"


ELEM_IDS = {  # action -> (elem_id of the widget, its event), resolved to api names at run time
    "accept": ("b2m-accept", "click"),
    "refine": ("b2m-more", "click"),
    "select": ("b2m-labels", "input"),
    "open image": ("b2m-jump", "input"),
    "draw box": ("b2m-annotator", "change"),
}


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


def api_names(base: str, config: dict | None = None, elem_ids=None) -> dict[str, str]:
    """action -> api_name, found from the widgets' elem_ids (`elem_ids`, default ELEM_IDS) in the
    app's /config (`config`: that JSON when already fetched, e.g. with a login cookie)."""
    import httpx

    elem_ids = ELEM_IDS if elem_ids is None else elem_ids
    config = httpx.get(base + "/config", timeout=10).json() if config is None else config
    by_elem = {c["props"].get("elem_id"): c["id"] for c in config["components"] if "props" in c}
    names = {}
    for dep in config["dependencies"]:
        for target, event in dep["targets"]:
            for action, (elem, want) in elem_ids.items():
                if by_elem.get(elem) == target and event == want:
                    names[action] = "/" + dep["api_name"]
            if event == "load":
                names["load"] = "/" + dep["api_name"]
    missing = set(elem_ids) - set(names)
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
