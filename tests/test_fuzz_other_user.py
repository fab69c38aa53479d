"""Another login on A's tab (the fuzz case of bench/fuzz_other_user.py). In process: a second
login sends A's page id to every canvas endpoint (A's label selected each time): 404, nothing
written, A's page still works. Slow: the bench's cases through the real server, canvas and
Gradio (A's session hash; in process: tests/test_gradio_sessions.py)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from annotator.predictor_service import PredictorService
from annotator.store import SQLiteStore
from annotator.web_api import web_routes
from box2mask import build_predictor

REPO = Path(__file__).resolve().parents[1]
ACTIONS = ["accept", "delete", "reject", "more", "less", "refine", "tighten", "undo", "redo"]


def _bodies(sid: str) -> list[tuple[str, dict]]:
    return [
        ("select", {"sid": sid, "index": 0}),
        ("box", {"sid": sid, "box": [20.0, 20.0, 90.0, 90.0]}),
        ("click", {"sid": sid, "x": 60.0, "y": 60.0, "inside": True}),
        ("brush", {"sid": sid, "x": 60.0, "y": 60.0, "radius": 5.0, "erase": True}),
        ("class", {"sid": sid, "number": 2}),
        ("export", {"sid": sid, "verified_only": False}),
        *[("action", {"sid": sid, "name": name}) for name in ACTIONS],
    ]


def _rows(store):
    return [(lb.id, lb.box_xyxy, lb.mask_rle, lb.revision) for lb in store.labels("chelsea.png")]


def test_another_login_on_a_page_is_refused_and_writes_nothing(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(REPO / "demo" / "chelsea.png", images / "chelsea.png")
    store = SQLiteStore(tmp_path / "labels.sqlite", images)
    routes = web_routes(
        store=store,
        images_dir=images,
        service=PredictorService(build_predictor(None, "cpu")),
        classes=["cat", "cup"],
        export_dir=tmp_path / "export",
    )
    app = Starlette(routes=routes)
    # what web_api reads of Gradio's login: two logins, each with its session cookie
    app.auth, app.cookie_id = {"a": "pa", "b": "pb"}, "t"
    app.tokens = {"token-a": "a", "token-b": "b"}
    with TestClient(app) as a, TestClient(app) as b:
        a.cookies.set("access-token-t", "token-a")
        b.cookies.set("access-token-t", "token-b")
        sid = a.post("/b2m/api/open", json={}).json()["sid"]
        assert a.post("/b2m/api/box", json={"sid": sid, "box": [30, 30, 150, 150]}).json()
        before = _rows(store)
        for name, body in _bodies(sid):
            assert a.post("/b2m/api/select", json={"sid": sid, "index": 0}).status_code == 200
            answer = b.post(f"/b2m/api/{name}", json=body)
            assert answer.status_code == 404, (name, body, answer.text)
            assert _rows(store) == before, (name, body)
        assert b.get(f"/b2m/api/image?sid={sid}").status_code == 404
        own = b.post("/b2m/api/open", json={"sid": sid}).json()["sid"]
        assert own != sid  # B gets a page of its own
        assert not (tmp_path / "export").exists()
        # A's own page still answers, and its accept writes
        assert a.post("/b2m/api/action", json={"sid": sid, "name": "accept"}).status_code == 200
        assert store.labels("chelsea.png")[0].verified
    store.close()


@pytest.mark.slow
def test_the_fuzz_refuses_another_login_through_the_real_server(tmp_path):
    out = tmp_path / "fuzz.json"
    cmd = [sys.executable, "-m", "bench.fuzz_http", "--cases", "20", "--json", str(out)]
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, timeout=600)
    result = json.loads(out.read_text())
    other = [r for r in result["results"] if r["kind"] == "other user"]
    assert len(other) == 21 and all(r["ok"] for r in other), [r for r in other if not r["ok"]]
    assert sum(r["status"] == "refused" for r in other) == 4  # the Gradio events
    assert result["control"]  # A's own accept afterwards is written
