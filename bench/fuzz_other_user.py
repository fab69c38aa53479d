"""The "another user's label" cases of bench/fuzz_http.py: a second login tries A's tab.

The server runs with two logins (`--auth fuzz:... --auth other:...`). Labels are shared by
design (annotators review and accept each other's labels on the same image, as bench/load.py
does), so what belongs to one login is its tab: a canvas page (`sid`) and a Gradio session (its
hash), each holding A's open image, selected label and undo history. Login B (`other`) sends
A's page id to every canvas endpoint, asks for A's page image, and sends A's Gradio session hash
with the label list's select, accept, more smoothing and delete events, always with a label
selected on A's side. Each must be refused (a 4xx from the canvas, an error event from
Gradio, whose queue answers 200 and puts the refusal in the event stream) and write nothing;
A's own accept afterwards must still work (the control, not a fuzz case).

    .venv/bin/python -m bench.fuzz_http --cases 100     # includes these cases
"""

import httpx

from bench.kill_checks import store_digest
from bench.load_server import api_names

OTHER = ("other", "other-s3cret")  # login B
GRADIO_EVENTS = {  # action -> (elem_id, event) of the Gradio widgets B fires on A's session
    "select": ("b2m-labels", "input"),
    "accept": ("b2m-accept", "click"),
    "refine": ("b2m-more", "click"),
    "delete": ("b2m-delete", "click"),
}


def _canvas_bodies(sid: str) -> list[tuple[str, dict]]:
    """(endpoint, body) pairs B sends with A's page id: every endpoint, valid otherwise."""
    actions = ["accept", "delete", "reject", "more", "less", "refine", "tighten", "undo", "redo"]
    return [
        ("select", {"sid": sid, "index": 0}),
        ("box", {"sid": sid, "box": [20.0, 20.0, 90.0, 90.0]}),
        ("click", {"sid": sid, "x": 60.0, "y": 60.0, "inside": True}),
        ("brush", {"sid": sid, "x": 60.0, "y": 60.0, "radius": 5.0, "erase": True}),
        ("class", {"sid": sid, "number": 2}),
        ("export", {"sid": sid, "verified_only": False}),
        *[("action", {"sid": sid, "name": name}) for name in actions],
    ]


def canvas_cases(base: str, a, b, store, results: list) -> None:
    """B on A's canvas page, with A's first label selected before each case."""
    page = a.post("/b2m/api/open", json={}).json()
    sid = page["sid"]
    for name, body in _canvas_bodies(sid):
        a.post("/b2m/api/select", json={"sid": sid, "index": 0})
        before = store_digest(store)
        r = b.post(f"/b2m/api/{name}", json=body)
        written = store_digest(store) != before
        results.append(dict(kind="other user", url=f"/b2m/api/{name} (A's page)",
                            status=r.status_code, ok=400 <= r.status_code < 500 and not written,
                            written=written, detail=r.text[:160]))  # fmt: skip
    r = b.get(f"/b2m/api/image?sid={sid}")
    results.append(dict(kind="other user", url="/b2m/api/image (A's page)", status=r.status_code,
                        ok=400 <= r.status_code < 500, written=False, detail=r.text[:160]))  # fmt: skip
    before = store_digest(store)
    r = b.post("/b2m/api/open", json={"sid": sid})  # B gets a page of its own, not A's
    written = store_digest(store) != before
    own = r.status_code == 200 and r.json().get("sid") not in (None, sid)
    results.append(dict(kind="other user", url="/b2m/api/open (A's page)", status=r.status_code,
                        ok=own and not written, written=written,
                        detail="a new page for B" if own else r.text[:160]))  # fmt: skip


def gradio_cases(base: str, a_login: tuple[str, str], store, results: list) -> bool:
    """B fires A's Gradio session's events (A's session hash); returns whether A's own accept
    then works (the control)."""
    from gradio_client import Client

    http = httpx.Client(base_url=base, timeout=60)
    http.post("/login", data={"username": a_login[0], "password": a_login[1]})
    api = api_names(base, config=http.get("/config").json(), elem_ids=GRADIO_EVENTS)  # +load
    kwargs = dict(verbose=False, download_files=False, httpx_kwargs={"timeout": 120})
    a = Client(base, auth=a_login, **kwargs)
    out = a.predict(api_name=api["load"])
    choices = [c[1] for c in out[1]["choices"]]
    a.predict(choices[0], api_name=api["select"])
    b = Client(base, auth=OTHER, **kwargs)
    b.session_hash = a.session_hash
    for action in ("select", "accept", "refine", "delete"):
        args = (choices[-1],) if action == "select" else ()
        before = store_digest(store)
        try:
            b.predict(*args, api_name=api[action])
            status, detail = "answered", "ran on A's session"
        except Exception as err:  # Gradio's error event: the refusal
            status, detail = "refused", f"{type(err).__name__}: {err}"[:160]
        written = store_digest(store) != before
        results.append(dict(kind="other user", url=f"gradio {action} (A's session hash)",
                            status=status, ok=status == "refused" and not written,
                            written=written, detail=detail))  # fmt: skip
    before = store_digest(store)
    a.predict(api_name=api["accept"])
    return store_digest(store) != before


def run_other_user(base: str, a_login: tuple[str, str], store, results: list) -> bool:
    """All the cases; returns the control (A's own accept still writes)."""
    a = httpx.Client(base_url=base, timeout=60)
    a.post("/login", data={"username": a_login[0], "password": a_login[1]})
    b = httpx.Client(base_url=base, timeout=60)
    b.post("/login", data={"username": OTHER[0], "password": OTHER[1]})
    page = a.post("/b2m/api/open", json={}).json()
    a.post("/b2m/api/box", json={"sid": page["sid"], "box": [30.0, 30.0, 150.0, 150.0]})
    canvas_cases(base, a, b, store, results)
    return gradio_cases(base, a_login, store, results)
