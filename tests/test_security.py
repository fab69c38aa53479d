"""The annotator served over HTTP refuses what it must: no login, path traversal, big uploads.

Starts the real `box2mask annotate` command in a subprocess (as a user would) and probes it.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("sec")
    images = root / "images"
    images.mkdir()
    shutil.copy(REPO / "demo" / "chelsea.png", images / "chelsea.png")
    (root / "secret.txt").write_text("TOP-SECRET-LABELS")
    port = _free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "box2mask",
            "annotate",
            str(images),
            "--port",
            str(port),
            "--auth",
            "alice:s3cret",
            "--max-upload-mb",
            "1",
        ],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"annotate exited early:\n{proc.stdout.read()}")
        try:
            httpx.get(base + "/", timeout=2)
            break
        except httpx.HTTPError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("annotate did not start within 120 s")
    yield base, root
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def _login(base, password="s3cret") -> httpx.Client:
    client = httpx.Client(base_url=base, timeout=10)
    client.post("/login", data={"username": "alice", "password": password})
    return client


def test_requests_without_credentials_are_refused(server):
    base, _ = server
    for route in (
        "/config",
        "/gradio_api/info",
        "/gradio_api/file=" + str(REPO / "demo" / "chelsea.png"),
    ):
        r = httpx.get(base + route, timeout=10)
        assert r.status_code in (401, 403), (route, r.status_code)
    wrong = _login(base, password="guess")
    assert wrong.get("/config").status_code in (401, 403)
    right = _login(base)
    assert right.get("/config").status_code == 200


@pytest.mark.parametrize(
    "target",
    [
        "/etc/passwd",
        "{root}/secret.txt",
        "{root}/images/../secret.txt",
        "{root}/images/%2e%2e/secret.txt",
        "{repo}/pyproject.toml",
    ],
)
def test_path_traversal_is_refused_on_file_routes(server, target):
    base, root = server
    path = target.format(root=root, repo=REPO)
    client = _login(base)
    for route in (f"/gradio_api/file={path}", f"/file={path}", f"/gradio_api/file/{path}"):
        r = client.get(route)
        assert r.status_code in (403, 404, 405), (route, r.status_code)
        assert "TOP-SECRET" not in r.text and "root:" not in r.text


def test_oversized_upload_is_refused(server):
    base, _ = server
    client = _login(base)
    big = b"{" + b" " * (2 * 1024 * 1024) + b"}"
    r = client.post("/gradio_api/upload", files={"files": ("big.json", big, "application/json")})
    assert r.status_code == 413, r.status_code
    small = client.post(
        "/gradio_api/upload", files={"files": ("small.json", b"{}", "application/json")}
    )
    assert small.status_code == 200


def test_several_logins_with_auth_repeated():
    from annotator.annotate_cmd import check_network_args

    assert check_network_args("0.0.0.0", ["ann:pw1"]) == ("ann", "pw1")
    assert check_network_args("0.0.0.0", ["ann:pw1", "bo:p:w2"]) == [("ann", "pw1"), ("bo", "p:w2")]
    with pytest.raises(ValueError, match="--auth ann: given twice"):
        check_network_args("0.0.0.0", ["ann:pw1", "ann:pw2"])
    with pytest.raises(ValueError, match="both parts non-empty"):
        check_network_args("127.0.0.1", ["ann:pw1", "bo:"])
