"""bench/fuzz_other_user.py's canvas cases, in process: a second login sends A's page id to every
canvas endpoint (A's label selected each time): a 4xx, nothing written, A's page still works.
The Gradio side (A's session hash) is tests/test_gradio_sessions.py."""

import shutil
from pathlib import Path

from starlette.applications import Starlette
from starlette.testclient import TestClient

from annotator.predictor_service import PredictorService
from annotator.store import SQLiteStore
from annotator.web_api import web_routes
from bench.fuzz_other_user import canvas_cases
from bench.kill_checks import store_digest
from box2mask import build_predictor

REPO = Path(__file__).resolve().parents[1]


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
        page = a.post("/b2m/api/open", json={}).json()
        assert a.post("/b2m/api/box", json={"sid": page["sid"], "box": [30, 30, 150, 150]}).json()
        digest = store_digest(tmp_path / "labels.sqlite")
        results: list = []
        canvas_cases("", a, b, tmp_path / "labels.sqlite", results)
        assert len(results) == 17  # 15 events, the page image, an open
        bad = [r for r in results if not r["ok"]]
        assert bad == []
        assert {r["status"] for r in results} == {404, 200}  # 200: B's open makes its own page
        assert store_digest(tmp_path / "labels.sqlite") == digest
        # A's own page still answers, and its accept writes
        answer = a.post("/b2m/api/action", json={"sid": page["sid"], "name": "accept"})
        assert answer.status_code == 200
        assert store.labels("chelsea.png")[0].verified
    store.close()
