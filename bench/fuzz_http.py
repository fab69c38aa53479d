"""Endpoint fuzz through the real HTTP server: every refused request is a clear 4xx, writes nothing.

    .venv/bin/python -m bench.fuzz_http [--cases 5000] [--seed 0] [--json OUT]

Starts `box2mask annotate DIR --auth fuzz:PASSWORD --max-upload-mb 1` (a subprocess) on a copy of
the demo images with a few labels, logs in, opens two canvas pages (`/b2m/api/open`) and sends
--cases requests drawn at random from these kinds:
    auth        no cookie, or a made-up one, on every route: the canvas endpoints and page,
                /b2m/api/image, Gradio's /config, /gradio_api/info, queue/join, upload, file=
    size        bodies over the canvas endpoints' 16 KB cap, an upload over --max-upload-mb
    path        image keys and file= paths outside the images folder (.., absolute, %2e, NUL)
    payload     every canvas endpoint's fields with wrong types, NaN, infinities, huge,
                negative, zero-sized or out-of-the-image values, label indices past the end,
                unknown actions and endpoints, bodies that are not JSON objects
    session     a page id never made, too long, or of another kind (a list)
    stale       a label changed on one page, then accepted or deleted on the other (a stale
                revision): refused with 409
    other user  a second login sends A's canvas page id and A's Gradio session hash with
                every event on A's selected label (bench/fuzz_other_user.py): refused
Each case must answer 4xx (a redirect to the login page for /b2m/ without a cookie), the store's
rows and hash must not change (bench/kill_checks.store_digest) and no file may appear in the
images or export folder; every 100 cases a valid request must still be answered.
"""

import argparse
import json
import math
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import httpx

from bench.fuzz_other_user import OTHER, run_other_user
from bench.kill_checks import store_digest
from bench.load_server import REPO, free_port

PASSWORD = "fuzz-s3cret"
ENDPOINTS = ("box", "click", "brush", "select", "class", "action", "export", "open")
BAD_NUMBERS = [None, "1", "", [], {}, [1], True, math.nan, math.inf, -math.inf, 1e308, -1e308,
               1e7, -1e7, 2**70, "NaN"]  # fmt: skip
OUTSIDE = [-1.0, -500.0, 1e5, 5000.0, -0.5]  # coordinates off a 451 x 300 / 400 x 400 image


def start(folder: Path):
    """annotate on folder/images with a login; (process, base URL, log path)."""
    import httpx

    port = free_port()
    log = folder / "annotate.log"
    cmd = [sys.executable, "-m", "box2mask", "annotate", str(folder / "images")]
    cmd += ["--port", str(port), "--auth", f"fuzz:{PASSWORD}", "--max-upload-mb", "1"]
    cmd += ["--auth", ":".join(OTHER)]  # a second login (bench/fuzz_other_user.py)
    cmd += ["--classes", "cat,cup"]
    env = {"GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(REPO)}
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd, cwd=folder, env={**__import__("os").environ, **env}, stdout=out, stderr=out
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        try:
            httpx.get(base + "/", timeout=2)
            return proc, base, log
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"annotate did not start:\n{log.read_text()[-2000:]}")


def login(base: str):
    import httpx

    client = httpx.Client(base_url=base, timeout=60)
    client.post("/login", data={"username": "fuzz", "password": PASSWORD})
    return client


def open_page(client) -> dict:
    answer = client.post("/b2m/api/open", json={})
    answer.raise_for_status()
    return answer.json()


def _bad_box(rng, w, h):
    good = [10.0, 10.0, 60.0, 60.0]
    choice = rng.randrange(8)
    if choice == 0:
        return rng.choice([None, "1,2,3,4", 5, {}, [1, 2, 3], [1, 2, 3, 4, 5], [[1, 2], [3, 4]]])
    if choice == 1:  # one bad coordinate
        box = list(good)
        box[rng.randrange(4)] = rng.choice(BAD_NUMBERS)
        return box
    if choice == 2:  # fully outside
        x = rng.choice([-400.0, w + 10.0, 1e5])
        return [x, 10.0, x + 50.0, 60.0]
    if choice == 3:
        y = rng.choice([-400.0, h + 10.0])
        return [10.0, y, 60.0, y + 50.0]
    if choice == 4:  # zero width or height (a drag from right to left is a box: not here)
        x = rng.uniform(0, w - 1)
        return rng.choice([[x, 5.0, x, 50.0], [5.0, x % h, 50.0, x % h]])
    if choice == 5:  # huge
        return [0.0, 0.0, rng.choice([1e7, 1e300]), rng.choice([1e7, 1e300])]
    if choice == 6:  # tiny (under a pixel)
        x = rng.uniform(0, w - 2)
        return [x, 5.0, x + 0.4, 5.3]
    return [rng.choice(BAD_NUMBERS) for _ in range(4)]


def payload_case(rng, page: dict) -> tuple[str, dict]:
    """(endpoint, body) of one invalid event on `page`."""
    w, h, sid = page["width"], page["height"], page["sid"]
    name = rng.choice(ENDPOINTS)
    if name == "box":
        return name, {"sid": sid, "box": _bad_box(rng, w, h)}
    if name in ("click", "brush"):
        body = {"sid": sid, "x": 20.0, "y": 20.0}
        field = rng.choice(
            ["x", "y", "radius", "erase"] if name == "brush" else ["x", "y", "inside"]
        )
        if name == "brush":
            body["radius"] = 5.0
        if field in ("x", "y"):
            body[field] = rng.choice(BAD_NUMBERS + OUTSIDE + [w + 1.0 if field == "x" else h + 1.0])
        elif field == "radius":
            body[field] = rng.choice(BAD_NUMBERS + [0.0, -3.0, 0.5, 201.0, 1e9])
        else:
            body[field] = rng.choice(["yes", 1, 0, None, [], "true"])
        return name, body
    if name == "select":
        return name, {"sid": sid, "index": rng.choice(BAD_NUMBERS + [-1, 10**6, 500, 1.5])}
    if name == "class":
        return name, {"sid": sid, "number": rng.choice(BAD_NUMBERS + [0, 10, -1, 3.5, 99])}
    if name == "action":
        return name, {
            "sid": sid,
            "name": rng.choice(["", "drop", "ACCEPT", None, 1, [], "accept "]),
        }
    if name == "export":
        return name, {"sid": sid, "verified_only": rng.choice(["yes", 1, [], "false"])}
    key = rng.choice(["../secret.txt", "/etc/passwd", "images/../../secret.txt", "%2e%2e/x",
                      "nope.png", "chelsea.png\x00.txt", "a" * 5000, "", 7, []])  # fmt: skip
    if rng.random() < 0.3:
        return name, {"sid": sid, "step": rng.choice([2, -2, 1.5, "1", 10**9])}
    return name, {"sid": sid, "image": key}


def make_case(rng, pages: list[dict], folder: Path) -> dict:
    """One request: {kind, method, url, body (bytes) or json or files, cookie (bool), expect}."""
    kind = rng.choices(["auth", "size", "path", "payload", "session"], [12, 6, 10, 64, 8])[0]
    page = pages[0]
    if kind == "auth":
        route = rng.choice(
            [f"POST /b2m/api/{rng.choice(ENDPOINTS)}", "GET /b2m/api/image", "GET /b2m/",
             "GET /config", "GET /gradio_api/info", "POST /gradio_api/queue/join",
             "POST /gradio_api/upload", f"GET /gradio_api/file={folder / 'images' / 'chelsea.png'}"]
        )  # fmt: skip
        method, url = route.split(" ", 1)
        if url == "/b2m/api/image":
            url += f"?sid={page['sid']}"
        body = {"sid": page["sid"], "box": [10, 10, 60, 60]} if method == "POST" else None
        cookie = rng.choice([None, "made-up"])
        return dict(kind=kind, method=method, url=url, json=body, cookie=cookie)
    if kind == "size":
        if rng.random() < 0.2:
            big = b"{" + b" " * (1024 * 1024 + rng.randrange(1, 10000)) + b"}"
            return dict(kind=kind, method="POST", url="/gradio_api/upload", files=big)
        pad = "x" * (16 * 1024 + rng.randrange(1, 50000))
        body = json.dumps({"sid": page["sid"], "box": [10, 10, 60, 60], "pad": pad}).encode()
        return dict(kind=kind, method="POST", url=f"/b2m/api/{rng.choice(ENDPOINTS)}", body=body)
    if kind == "path":
        target = rng.choice(["/etc/passwd", f"{folder}/secret.txt", f"{folder}/images/../secret.txt",
                             f"{folder}/images/%2e%2e/secret.txt", f"{REPO}/pyproject.toml"])  # fmt: skip
        if rng.random() < 0.5:
            route = rng.choice(["/gradio_api/file=", "/file=", "/gradio_api/file/"])
            return dict(kind=kind, method="GET", url=route + target)
        key = rng.choice([target, "../secret.txt", "../../etc/passwd", "./../secret.txt"])
        return dict(kind=kind, method="POST", url="/b2m/api/open",
                    json={"sid": page["sid"], "image": key})  # fmt: skip
    if kind == "session":
        sid = rng.choice(["", "0" * 64, "x" * 65, "deadbeef", 12, [page["sid"]], None])
        name = rng.choice(ENDPOINTS[:-1])  # open without a (valid) sid makes a page: not refused
        return dict(kind=kind, method="POST", url=f"/b2m/api/{name}",
                    json={"sid": sid, "x": 5, "y": 5, "box": [10, 10, 60, 60]})  # fmt: skip
    if rng.random() < 0.08:  # not a JSON object, or an endpoint that does not exist
        raw = rng.choice([b"[1,2]", b"not json", b"\xff\xfe", b"", b'"sid"', b"{" * 5000, b"null"])
        url = rng.choice([f"/b2m/api/{rng.choice(ENDPOINTS)}", "/b2m/api/drop", "/b2m/api/nothing"])
        return dict(kind="payload", method="POST", url=url, body=raw)
    name, body = payload_case(rng, page)
    return dict(kind="payload", method="POST", url=f"/b2m/api/{name}", json=body)


def send(client, anonymous, case: dict):
    """The response to `case`, with or without the login cookie."""
    http = client
    if "cookie" in case:  # the auth kind: no login cookie, or a made-up one
        http = anonymous
        http.cookies.clear()
        if case["cookie"]:
            http.cookies.set("access-token-made-up", case["cookie"])
    if "files" in case:
        return http.post(
            case["url"], files={"files": ("big.json", case["files"], "application/json")}
        )
    if case["method"] == "GET":
        return http.get(case["url"])
    if "body" in case:
        return http.post(
            case["url"], content=case["body"], headers={"content-type": "application/json"}
        )
    return http.request("POST", case["url"], content=json.dumps(case["json"]).encode(),
                        headers={"content-type": "application/json"})  # fmt: skip


def alive(base: str) -> bool:
    """Whether the server answers a plain request."""
    try:
        return httpx.get(base + "/b2m/", timeout=30, follow_redirects=False).status_code < 500
    except httpx.HTTPError:
        return False


def refused(case: dict, status) -> bool:
    if status == "closed":  # refused before the body was read (checked: still answering)
        return True
    if case["kind"] == "auth" and case["url"] == "/b2m/" and status in (302, 303, 307):
        return True  # the page sends a browser to the login page
    return 400 <= status < 500


def stale_cases(client, pages: list[dict], n: int, folder: Path, results: list) -> None:
    """`n` stale writes: page A changes a label, page B (which loaded it before) accepts or
    deletes it: 409, nothing written by B."""
    a, b = pages
    for i in range(n):
        client.post("/b2m/api/open", json={"sid": a["sid"], "image": a["image"]})
        client.post("/b2m/api/open", json={"sid": b["sid"], "image": a["image"]})
        for sid in (a["sid"], b["sid"]):
            client.post("/b2m/api/select", json={"sid": sid, "index": 0})
        client.post("/b2m/api/action", json={"sid": a["sid"], "name": "more" if i % 2 else "less"})
        client.post("/b2m/api/action", json={"sid": a["sid"], "name": "accept"})
        before = store_digest(folder / "images" / "box2mask_labels.sqlite")
        name = "accept" if i % 2 else "delete"
        r = client.post("/b2m/api/action", json={"sid": b["sid"], "name": name})
        after = store_digest(folder / "images" / "box2mask_labels.sqlite")
        results.append(dict(kind="stale", url=f"/b2m/api/action {name}", status=r.status_code,
                            ok=r.status_code == 409 and before == after,
                            written=before != after, detail=r.text[:160]))  # fmt: skip


def run_fuzz(cases: int, seed: int, folder: Path) -> dict:
    images = folder / "images"
    images.mkdir(parents=True)
    for name in ("chelsea.png", "coffee.png"):
        shutil.copy(REPO / "demo" / name, images / name)
    (folder / "secret.txt").write_text("TOP-SECRET-LABELS")
    proc, base, log = start(folder)
    results, rng = [], random.Random(seed)
    try:
        client, anonymous = login(base), httpx.Client(base_url=base, timeout=60)
        pages = [open_page(client), open_page(client)]
        for page in pages:  # a label to select, change and go stale
            client.post("/b2m/api/box", json={"sid": page["sid"], "box": [40, 40, 200, 200]})
        store = images / "box2mask_labels.sqlite"
        stale_cases(client, pages, max(10, cases // 100), folder, results)
        control = run_other_user(base, ("fuzz", PASSWORD), store, results)
        pages = [open_page(client)]
        files_before = sorted(p.name for p in images.iterdir())
        digest = store_digest(store)
        down = 0
        for i in range(cases):
            case = make_case(rng, pages, folder)
            try:
                r = send(client, anonymous, case)
                status, text = r.status_code, r.text[:160]
            except httpx.TransportError as err:  # the server did not answer
                status, text = 0, f"{type(err).__name__}: {err}"[:160]
                if case["kind"] == "size":  # it closed the connection on an oversized body
                    status = "closed" if alive(base) else 0
                client.close()  # a closed connection: go on with a new one, logged in again
                client = login(base)
            now = store_digest(store)
            written = now != digest
            digest = now
            leaked = "TOP-SECRET" in text or "root:x" in text
            results.append(dict(kind=case["kind"], url=case["url"][:60], status=status,
                                ok=refused(case, status) and not written and not leaked,
                                written=written, detail=text))  # fmt: skip
            if (
                i % 100 == 99
                and client.post("/b2m/api/open", json={"sid": pages[0]["sid"]}).status_code != 200
            ):
                down += 1
        new_files = sorted(set(p.name for p in images.iterdir()) - set(files_before))
        new_files = [f for f in new_files if not f.startswith("box2mask_labels.sqlite")]
        exported = (folder / "images" / "box2mask_export").exists()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    return dict(results=results, down=down, new_files=new_files, exported=exported,
                alive=proc.returncode in (0, -15, 143), control=control)  # fmt: skip


def print_report(result: dict) -> None:
    by_kind = defaultdict(list)
    for r in result["results"]:
        by_kind[r["kind"]].append(r)
    total = len(result["results"])
    print(f"{total} requests through the real server (box2mask annotate --auth, "
          f"--max-upload-mb 1); health probes failed: {result['down']}; new files in the images "
          f"folder: {result['new_files'] or 'none'}; export written: {result['exported']}")  # fmt: skip
    print("\n| kind | cases | clear 4xx, nothing written | writes | answers (status: count) |")
    print("|---|---|---|---|---|")
    for kind in ("auth", "size", "path", "payload", "session", "stale", "other user"):
        rows = by_kind.get(kind, [])
        if not rows:
            continue
        statuses = Counter(str(r["status"]) for r in rows)
        ok = sum(r["ok"] for r in rows)
        writes = sum(r["written"] for r in rows)
        print(f"| {kind} | {len(rows)} | {ok} | {writes} | "
              + ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items())) + " |")  # fmt: skip
    bad = [r for r in result["results"] if not r["ok"]]
    print(f"\n{total - len(bad)}/{total} refused cleanly; the owner's own accept after the other "
          f"login's tries: {'written' if result.get('control') else 'NOT written'}")  # fmt: skip
    for r in bad[:15]:
        print(f"not refused: {r['kind']} {r['url']} -> {r['status']} {r['detail'][:100]!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="box2mask-fuzz-http-"))
    try:
        result = run_fuzz(args.cases, args.seed, folder)
        print_report(result)
        if args.json is not None:
            args.json.write_text(json.dumps(result))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
