"""JSON endpoints of the canvas front-end (`/b2m/`), served by the same app as the Gradio UI.

Every endpoint goes through the same `AnnotationSession` methods, label store and model service
as the Gradio UI; inputs are checked in annotator/web_inputs.py; when the app has a login
(--auth), every endpoint wants the same Gradio session cookie (no cookie: 401). A page holds a
session id (`sid`) from /b2m/api/open; the server keeps at most `MAX_SESSIONS` (oldest dropped).
Events run one at a time (`_EVENTS`), like the Gradio UI's shared queue. docs/browser.md lists
the endpoints and their payloads.
"""

import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import cv2
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from annotator import web_inputs as inp
from annotator.export import export_coco
from annotator.image_queue import FILTERS
from annotator.overlay import CLASS_COLORS
from annotator.session import AnnotationSession
from annotator.store import StaleWriteError
from annotator.web_view import ViewTracker
from annotator.yolo_export import export_yolo
from box2mask.io.image_io import ImageLoadError

__all__ = ["web_routes", "MAX_SESSIONS"]

MAX_SESSIONS = 64  # open pages kept (each holds one decoded image); the oldest is dropped
JPEG_QUALITY = 90  # the picture, sent once per image
PREVIEW_SIDE = 2048  # a bigger picture is sent first at this longer side, then once in full
PAGE = Path(__file__).with_name("web") / "index.html"
_EVENTS = threading.Lock()  # one event at a time (the model and the store are shared)


class UnknownPage(LookupError):
    """A sid this server does not hold (expired, never made, or another login's): HTTP 404."""


@dataclass
class WebPage:
    session: AnnotationSession  # the same session class the Gradio UI uses
    view: ViewTracker = field(default_factory=ViewTracker)  # what this page was sent
    jpeg: dict = field(default_factory=dict)  # (image key, longer side or 0) -> JPEG bytes
    user: str | None = None  # the login that opened it (another login may not use it)


def _user(request: Request) -> tuple[bool, str | None]:
    """(allowed, user) under the app's Gradio login; allowed when the app has none."""
    app = request.app
    if getattr(app, "auth", None) is None and getattr(app, "auth_dependency", None) is None:
        return True, None
    cookies = request.cookies
    cookie_id = getattr(app, "cookie_id", "")
    token = cookies.get(f"access-token-{cookie_id}") or cookies.get(
        f"access-token-unsecure-{cookie_id}"
    )
    user = app.tokens.get(token)
    return user is not None, user


def web_routes(*, store, images_dir, service, classes: list[str], export_dir) -> list[Route]:
    """The page and its endpoints, to be given to the app (`app_kwargs={"routes": ...}`)."""
    pages: OrderedDict[str, WebPage] = OrderedDict()
    classes, export_dir, images_dir = list(classes), Path(export_dir), Path(images_dir)
    colors = [list(CLASS_COLORS[i % len(CLASS_COLORS)]) for i in range(len(classes))]

    def new_page(user) -> tuple[str, WebPage]:
        session = AnnotationSession(store, images_dir, service, classes)
        everything = session.image_list()
        keys = [k for k in everything if store.image_status(k) != "done"] or everything
        if not keys:
            raise inp.BadInput(f"no images found in {images_dir}")
        session.open_image(keys[0])
        sid = secrets.token_urlsafe(16)
        pages[sid] = WebPage(session=session, user=user)
        while len(pages) > MAX_SESSIONS:
            pages.popitem(last=False)
        return sid, pages[sid]

    def page_of(body, user) -> WebPage:
        sid = inp.text(body, "sid", max_len=64)
        page = pages.get(sid) if sid else None
        if page is None or page.user != user:
            raise UnknownPage("unknown or expired sid: reload the page")
        pages.move_to_end(sid)
        return page

    def image_answer(sid: str, page: WebPage, note: str = "") -> dict:
        s = page.session
        h, w = s.image.shape[:2]
        done, total = s.progress()
        return dict(
            sid=sid,
            image=s.image_key,
            width=w,
            height=h,
            image_url=f"/b2m/api/image?sid={sid}&key={s.image_key}",
            preview_url=(
                f"/b2m/api/image?sid={sid}&key={s.image_key}&side={PREVIEW_SIDE}"
                if max(h, w) > PREVIEW_SIDE
                else None
            ),
            classes=classes,
            colors=colors,
            progress=[done, total],
            status=store.image_status(s.image_key),
            model=service.model_version,
            note=note,
            **page.view.full(s),
        )

    def do_open(body, user):
        sid = inp.text(body, "sid", max_len=64)
        if sid is None or sid not in pages or pages[sid].user != user:
            sid, page = new_page(user)
            return image_answer(sid, page)
        page = page_of(body, user)
        s = page.session
        key = inp.text(body, "image", max_len=4096)
        step = inp.integer(body, "step", low=-1, high=1, default=0)
        status_filter = inp.text(body, "filter", choices=FILTERS, default="all")
        note = ""
        if key is not None:
            s.open_image(key)
        elif step:
            if s.step_image(step, status_filter) is None:
                note = f"No images with status '{status_filter}'."
        elif status_filter == "label next":  # the filter was chosen: its scores are asked now
            s.image_list(status_filter)
        if status_filter == "label next" and not note:  # how much is ranked, or why file order
            note = service.label_next.note
        return image_answer(sid, page, note)

    def event(body, user, run) -> dict:
        page = page_of(body, user)
        note = run(page.session, body) or ""
        return dict(note=note, **page.view.delta(page.session))

    def on_box(s, body):
        h, w = s.image.shape[:2]
        x0, y0, x1, y1 = inp.box_in_image(body, width=w, height=h)
        boxes = s.annotator_boxes() + [dict(xmin=x0, ymin=y0, xmax=x1, ymax=y1)]
        if not s.on_boxes_changed(boxes):
            raise inp.BadInput("box too small or outside the image")
        return None

    def on_click(s, body):
        x, y = inp.point_in_image(body, shape=s.image.shape)
        s.click(x, y, inside=inp.flag(body, "inside"))

    def on_brush(s, body):
        x, y = inp.point_in_image(body, shape=s.image.shape)
        radius = inp.number(body, "radius", low=1, high=200)
        s.brush(x, y, radius, inp.flag(body, "erase"))

    def on_select(s, body):
        index, count = inp.integer(body, "index", low=0, high=1 << 20), len(s.labels_shown())
        if index is not None and index >= count:
            raise inp.BadInput(f"index {index}: this image has {count} labels")
        s.select(index)

    def on_class(s, body):
        s.set_class(inp.integer(body, "number", low=1, high=9))

    def on_action(s, body):
        name = inp.text(body, "name", choices=inp.ACTIONS)
        if name is None:
            raise inp.BadInput("name is required")
        if name == "undo":
            return None if s.undo() else "Nothing to undo on this image."
        if name == "redo":
            return None if s.redo() else "Nothing to redo."
        if name == "done":
            s.set_done(True)
            return "Image marked done."
        run = dict(
            accept=s.accept,
            reject=s.reject,
            delete=s.delete,
            deselect=s.deselect,
            tighten=s.tighten,
            refine_mask=s.refine_mask,
            less=lambda: s.refine(-1),
            more=lambda: s.refine(+1),
        )[name]
        run()
        return None

    def on_export(s, body):
        only_verified = inp.flag(body, "verified_only")
        coco = export_coco(store, export_dir / "coco.json", images_dir, classes, only_verified)
        stats = export_yolo(store, export_dir / "yolo", images_dir, classes, only_verified)
        return (
            f"Exported {len(coco['annotations'])} labels to {export_dir}/coco.json and "
            f"{stats['objects']} polygons to {export_dir}/yolo/."
        )

    handlers = dict(
        box=on_box,
        click=on_click,
        brush=on_brush,
        select=on_select,
        **{"class": on_class},
        action=on_action,
        export=on_export,
    )

    async def read_body(request: Request) -> bytes:
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > inp.MAX_BODY:
            raise inp.BadInput(f"body of {size} bytes is over the {inp.MAX_BODY}-byte limit")
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > inp.MAX_BODY:
                raise inp.BadInput(f"body is over the {inp.MAX_BODY}-byte limit")
        return raw

    def answer(work):
        """Run one event under the shared lock; refusals become messages, not crashes."""
        with _EVENTS:
            try:
                return JSONResponse(work())
            except inp.BadInput as err:
                return JSONResponse({"error": str(err)}, status_code=400)
            except UnknownPage as err:
                return JSONResponse({"error": str(err)}, status_code=404)
            except StaleWriteError as err:
                return JSONResponse({"error": f"Refused: {err}"}, status_code=409)
            except (IndexError, ValueError, OSError, ImageLoadError) as err:
                return JSONResponse({"error": str(err)}, status_code=422)

    async def endpoint(request: Request):
        allowed, user = _user(request)
        if not allowed:
            return JSONResponse({"error": "log in first (open / in this browser)"}, 401)
        name = request.path_params["name"]
        try:
            body = inp.parse_body(await read_body(request))
        except inp.BadInput as err:
            return JSONResponse({"error": str(err)}, status_code=400)
        if name == "open":
            return await run_in_threadpool(answer, lambda: do_open(body, user))
        if name not in handlers:
            return JSONResponse({"error": f"no endpoint {name!r}"}, status_code=404)
        return await run_in_threadpool(answer, lambda: event(body, user, handlers[name]))

    def jpeg_of(sid: str, user, side: int) -> bytes | None:
        """The open image as JPEG (longer side at most `side`; 0: full size), encoded once per
        image and size, outside the event lock (a big picture must not hold up a box)."""
        with _EVENTS:
            page = pages.get(sid)
            if page is None or page.user != user:
                return None
            key, image = page.session.image_key, page.session.image
            cached = page.jpeg.get((key, side))
        if cached is not None:
            return cached
        h, w = image.shape[:2]
        if side and max(h, w) > side:
            size = (max(1, round(w * side / max(h, w))), max(1, round(h * side / max(h, w))))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1].tobytes()
        with _EVENTS:  # keep the open image's pictures only
            page.jpeg = {k: v for k, v in page.jpeg.items() if k[0] == page.session.image_key}
            if key == page.session.image_key:
                page.jpeg[(key, side)] = data
        return data

    async def image(request: Request):
        allowed, user = _user(request)
        if not allowed:
            return Response(status_code=401)
        side = request.query_params.get("side", "0")
        side = int(side) if side.isdigit() and int(side) <= 1 << 16 else 0
        sid = request.query_params.get("sid", "")
        data = await run_in_threadpool(jpeg_of, sid, user, side)
        if data is None:
            return Response(status_code=404)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    async def index(request: Request):
        if not _user(request)[0]:
            return RedirectResponse("/")  # the Gradio login page; then come back to /b2m/
        return FileResponse(PAGE, headers={"Cache-Control": "no-store"})

    return [
        Route("/b2m/", index, methods=["GET"]),
        Route("/b2m/api/image", image, methods=["GET"]),
        Route("/b2m/api/{name}", endpoint, methods=["POST"]),
    ]
