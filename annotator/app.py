"""Gradio wiring for `box2mask annotate`: widgets call AnnotationSession methods, nothing more.

Each browser tab gets its own AnnotationSession in a `gr.State` (made on page load); the label
store and the model (PredictorService) are shared. Every event that may call the model uses one
`concurrency_id`, so model calls run one at a time in arrival order.
"""

import functools
import shutil
import tempfile
import uuid
from pathlib import Path

import cv2
import gradio as gr
from gradio_image_annotation import image_annotator

from annotator.export import export_coco, import_coco
from annotator.gradio_sessions import SessionOwners, drop_event_copies
from annotator.image_queue import FILTERS
from annotator.overlay import CLASS_COLORS
from annotator.session import AnnotationSession
from annotator.store import StaleWriteError
from annotator.temp_cleaner import RENDERS
from annotator.yolo_export import export_yolo
from box2mask.io.image_io import ImageLoadError

__all__ = ["build_app", "SHORTCUTS_JS"]

_UNCHANGED = object()  # an action's answer meaning "nothing changed: leave the widgets alone"
# Gradio's temp files (each render is a JPEG there), when no `shown_files` is given (then the
# caller's TempCleaner deletes them, annotator/temp_cleaner.py): every minute, those over 10
# minutes old are deleted, so a server left running keeps ~10 minutes of renders, not an hour's
TEMP_FILES = (60, 600)  # (how often, minimum age), seconds
MODEL_QUEUE = "box2mask-model"  # the concurrency_id shared by every event that may call the model

# Keyboard shortcuts: key -> elem_id of the button it presses (ignored while typing in a text box).
SHORTCUTS_JS = """
<script>
document.addEventListener("keydown", (e) => {
  const t = e.target;
  const typing = t && (t.tagName === "TEXTAREA" || t.isContentEditable ||
    (t.tagName === "INPUT" && !["radio", "checkbox", "button", "range"].includes(t.type)));
  if (typing || e.altKey) return;
  const k = e.key.toLowerCase();
  let id = null;
  if (e.ctrlKey || e.metaKey) {
    if (k === "z") id = e.shiftKey ? "b2m-redo" : "b2m-undo";
    else if (k === "y") id = "b2m-redo";
  } else if (/^[1-9]$/.test(k)) {
    id = "b2m-class-" + k;  // the class of the next box and of the selected label
  } else if (k === "delete" || k === "backspace") {
    id = "b2m-delete";  // the canvas handles these itself while it has the focus
  } else if (k === "escape") {
    id = "b2m-deselect";
  } else {
    id = {a: "b2m-accept", x: "b2m-reject", n: "b2m-next", p: "b2m-prev", f: "b2m-done",
          "[": "b2m-less", "]": "b2m-more", b: "b2m-brush-mode", r: "b2m-refine",
          t: "b2m-tighten"}[k] || null;
  }
  const el = id && document.getElementById(id);
  if (el) { e.preventDefault(); el.click(); }
});
</script>
"""

HELP = (
    "Drag on the image to draw a box (its mask appears when you release); drag a box to move it, "
    "its corners to resize. Keys: **1-9** class of the selected label and of the next box (the "
    "next box gets the class used last), **Delete** remove the selected label, **Esc** deselect, "
    "**A** accept, "
    "**X** reject mask, **R** refine the mask (start from it, not the box), "
    "**T** tighten the box to its mask, **[ / ]** less / more smoothing, **B** brush add/erase, **Ctrl+Z / Ctrl+Y** "
    "undo / redo, **N / P** next / previous image, **F** mark image done."
)


def _describe(index: int, label) -> str:
    mask = "no mask" if label.mask_rle is None else label.source
    score = f" {label.score:.2f}" if label.score is not None and label.source == "model" else ""
    check = " ✓ accepted" if label.verified else ""
    return f"{index + 1}. {label.class_name} · {mask}{score}{check}"


def _jpeg(image, cache_dir: Path) -> str:
    """Write an RGB image as JPEG into Gradio's cache (served as is: far faster than WebP/PNG).
    The image is turned into BGR in place (no second full-size buffer per render)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"{uuid.uuid4().hex}.jpg"
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR, dst=image)
    cv2.imwrite(str(path), bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return str(path)


def build_app(
    *,
    store,
    images_dir,
    service,
    classes: list[str],
    export_dir,
    title="box2mask annotate",
    shown_files=None,
) -> gr.Blocks:
    """The annotator UI over a shared store and model. `export_dir`: where exports are written.
    `shown_files`: a temp_cleaner.ShownFiles told which render each session shows (its
    TempCleaner then deletes the temp files; Gradio's own deletion is off)."""
    export_dir = Path(export_dir)
    delete_cache = TEMP_FILES if shown_files is None else None

    with gr.Blocks(title=title, delete_cache=delete_cache) as demo:
        state = gr.State(None)
        gr.Markdown(f"### box2mask annotator\n{HELP}")
        with gr.Row():
            prev_btn = gr.Button("◀ Previous (P)", elem_id="b2m-prev", scale=1)
            next_btn = gr.Button("Next (N) ▶", elem_id="b2m-next", scale=1)
            jump = gr.Dropdown(label="Jump to image", choices=[], scale=2, elem_id="b2m-jump")
            status_filter = gr.Radio(list(FILTERS), value="all", label="Show", scale=2)
            done_btn = gr.Button("Mark image done (F)", elem_id="b2m-done", scale=1)
        progress = gr.Markdown(elem_id="b2m-progress")
        with gr.Row():
            with gr.Column(scale=3):
                annot = image_annotator(
                    label_list=list(classes),
                    label_colors=[CLASS_COLORS[i % len(CLASS_COLORS)] for i in range(len(classes))],
                    use_default_label=True,
                    boxes_alpha=0.0,  # outline only: the mask tint shows what was segmented
                    sources=[],
                    box_min_size=4,
                    show_clear_button=False,
                    show_remove_button=True,
                    show_download_button=False,
                    image_type="numpy",
                    show_label=False,  # a label would sit on the canvas and catch clicks
                    elem_id="b2m-annotator",
                )
            with gr.Column(scale=2):
                labels = gr.Radio(
                    [], type="index", label="Labels on this image", elem_id="b2m-labels"
                )
                with gr.Row():
                    class_btns = [
                        gr.Button(f"{i + 1} {name}", elem_id=f"b2m-class-{i + 1}", size="sm")
                        for i, name in enumerate(classes[:9])
                    ]
                with gr.Row():
                    accept_btn = gr.Button("Accept (A)", variant="primary", elem_id="b2m-accept")
                    reject_btn = gr.Button("Reject mask (X)", elem_id="b2m-reject")
                    delete_btn = gr.Button("Delete label (Del)", elem_id="b2m-delete")
                    deselect_btn = gr.Button("Deselect (Esc)", elem_id="b2m-deselect")
                with gr.Row():
                    less_btn = gr.Button("Less smoothing ([)", elem_id="b2m-less")
                    more_btn = gr.Button("More smoothing (])", elem_id="b2m-more")
                    refine_btn = gr.Button("Refine mask (R)", elem_id="b2m-refine")
                    tighten_btn = gr.Button("Tighten box (T)", elem_id="b2m-tighten")
                with gr.Row():
                    undo_btn = gr.Button("Undo (Ctrl+Z)", elem_id="b2m-undo")
                    redo_btn = gr.Button("Redo (Ctrl+Y)", elem_id="b2m-redo")
                with gr.Row():
                    brush_mode = gr.Radio(
                        ["add", "erase", "click +", "click -"],
                        value="add",
                        label="Brush (paint) or click (re-segment with the click as a prompt)",
                        scale=2,
                    )
                    brush_toggle = gr.Button("Toggle (B)", elem_id="b2m-brush-mode", scale=1)
                    radius = gr.Slider(1, 40, value=6, step=1, label="Brush radius (px)", scale=2)
                crop = gr.Image(
                    label="Selected label: click to paint (brush) or to place a +/- click (re-segments the box)",
                    interactive=False,
                    format="jpeg",
                    height=360,
                    elem_id="b2m-crop",
                )
                message = gr.Markdown(elem_id="b2m-status")
                image_info = gr.Markdown(elem_id="b2m-image-info")
        with gr.Accordion("Export / import", open=False):
            with gr.Row():
                verified_only = gr.Checkbox(False, label="Accepted labels only")
                export_btn = gr.Button("Export COCO (RLE) + YOLO-seg", elem_id="b2m-export")
            export_files = gr.File(label="Exported files", file_count="multiple")
            with gr.Row():
                import_file = gr.File(label="COCO file to import", file_types=[".json"])
                import_btn = gr.Button("Import boxes (and masks) from COCO", elem_id="b2m-import")

        label_view = [annot, labels, crop, message, image_info]
        full_view = label_view + [progress, jump]
        cache_dir = Path(annot.GRADIO_CACHE) / RENDERS
        owners = SessionOwners()

        def render(session, note="", full=False):
            drop_event_copies(demo)  # what Gradio kept of this session's earlier updates
            boxes = session.annotator_boxes()
            value = {"image": _jpeg(session.overlay(), cache_dir), "boxes": boxes}
            if shown_files is not None:  # the browser sends this file back with its next box
                shown_files.show(session, value["image"])
            shown = [_describe(i, x) for i, x in enumerate(session.labels_shown())]
            chosen = shown[session.selected] if session.selected is not None else None
            zoom = session.selected_crop()
            out = [
                value,
                gr.update(choices=shown, value=chosen),
                zoom[0] if zoom is not None else None,
                note,
                f"**{session.image_key}**: {store.image_status(session.image_key)} · "
                f"model `{service.model_version}` · next box: **{session.next_class}**",
            ]
            if full:  # the whole folder: costs one status look-up per image
                done, total = session.progress()
                out += [
                    f"**{done} / {total} images done**",
                    gr.update(choices=session.image_list(), value=session.image_key),
                ]
            return tuple(out)

        def guarded(full: bool):
            """Run a session action; show refusals and mistakes as a message instead of a crash."""

            def wrap(action):
                @functools.wraps(action)
                def handler(session, *args):
                    try:
                        owners.check(session)  # another login's tab: refused, nothing runs
                    except PermissionError as err:
                        raise gr.Error(str(err)) from None
                    try:
                        note = action(session, *args) or ""
                    except StaleWriteError as err:
                        gr.Warning(str(err))
                        note = f"⚠️ Refused: {err}"
                    except (IndexError, ValueError, OSError, ImageLoadError) as err:  # OSError:
                        # the store refused the write (disk full, read-only): nothing was saved
                        note = f"⚠️ {err}"
                    if note is _UNCHANGED:
                        return tuple(gr.skip() for _ in (full_view if full else label_view))
                    return render(session, note, full=full)

                return handler

            return wrap

        def on_load():
            session = AnnotationSession(store, Path(images_dir), service, list(classes))
            owners.claim(session)  # this tab's events must come from the same login
            everything = session.image_list()
            keys = [k for k in everything if store.image_status(k) != "done"] or everything
            if not keys:
                raise gr.Error(f"no images found in {images_dir}")
            session.open_image(keys[0])
            return (session, *render(session, full=True))

        demo.load(on_load, outputs=[state] + full_view, concurrency_id=MODEL_QUEUE)

        @guarded(full=False)
        def on_change(session, value):
            if value is None or value.get("image") is None or session.image is None:
                return _UNCHANGED
            if tuple(value["image"].shape[:2]) != session.image.shape[:2]:
                return _UNCHANGED  # an event from the previous image arriving late
            if not session.on_boxes_changed(value.get("boxes") or []):
                return _UNCHANGED  # our own update echoed back
            return ""

        annot.change(on_change, [state, annot], label_view, concurrency_id=MODEL_QUEUE)

        def action(button, fn, full=False, extra=()):
            button.click(
                guarded(full)(fn),
                [state, *extra],
                full_view if full else label_view,
                concurrency_id=MODEL_QUEUE,
                # every press counts (Gradio's default drops a click while the last one runs):
                # three quick Ctrl+Z are three undo steps
                trigger_mode="multiple",
            )

        for number, button in enumerate(class_btns, start=1):
            action(button, lambda s, n=number: s.set_class(n))
        action(delete_btn, lambda s: s.delete())
        action(deselect_btn, lambda s: s.deselect())
        action(accept_btn, lambda s: s.accept())
        action(reject_btn, lambda s: s.reject())
        action(less_btn, lambda s: s.refine(-1))
        action(more_btn, lambda s: s.refine(+1))
        action(refine_btn, lambda s: s.refine_mask())
        action(tighten_btn, lambda s: s.tighten())
        action(undo_btn, lambda s: None if s.undo() else "Nothing to undo on this image.")
        action(redo_btn, lambda s: None if s.redo() else "Nothing to redo.")
        action(done_btn, lambda s: s.set_done(True) or "Image marked done.", full=True)
        action(prev_btn, lambda s, f: _step(s, -1, f), full=True, extra=[status_filter])
        action(next_btn, lambda s, f: _step(s, +1, f), full=True, extra=[status_filter])
        labels.input(guarded(False)(lambda s, i: s.select(i)), [state, labels], label_view)
        jump.input(
            guarded(True)(lambda s, k: s.open_image(k)),
            [state, jump],
            full_view,
            concurrency_id=MODEL_QUEUE,
        )
        brush_toggle.click(lambda m: "erase" if m == "add" else "add", brush_mode, brush_mode)
        status_filter.change(_on_filter, [state, status_filter], message)  # no model call

        def on_brush(session, mode, size, evt: gr.SelectData):
            zoom = session.selected_crop()
            if zoom is None:
                raise IndexError("select a label first (click it in the list)")
            _, scale, x0, y0 = zoom
            u, v = evt.index
            x, y = x0 + (u + 0.5) / scale, y0 + (v + 0.5) / scale
            if mode.startswith("click"):
                session.click(x, y, inside=mode == "click +")
            else:
                session.brush(x, y, float(size), mode == "erase")

        crop.select(
            guarded(False)(on_brush),
            [state, brush_mode, radius],
            label_view,
            concurrency_id=MODEL_QUEUE,
        )

        def on_export(session, only_verified):
            try:
                coco = export_coco(
                    store, export_dir / "coco.json", images_dir, classes, only_verified
                )
                stats = export_yolo(store, export_dir / "yolo", images_dir, classes, only_verified)
            except OSError as err:  # disk full, read-only folder
                return (
                    [],
                    f"⚠️ Export failed: {err}. No export file is half-written (each is the new or the previous one).",
                )
            download = Path(tempfile.mkdtemp(prefix="box2mask-export-"))  # Gradio serves from here
            shutil.copy(export_dir / "coco.json", download / "coco.json")
            yolo_zip = shutil.make_archive(str(download / "yolo"), "zip", export_dir / "yolo")
            note = (
                f"Exported {len(coco['annotations'])} labels to {export_dir}/coco.json and "
                f"{stats['objects']} polygons to {export_dir}/yolo/ (Ultralytics data.yaml: "
                f"{stats['train_images']} train / {stats['val_images']} val images; "
                f"{stats['skipped_no_mask']} labels without a mask skipped in YOLO)."
            )
            return [str(download / "coco.json"), yolo_zip], note

        export_btn.click(on_export, [state, verified_only], [export_files, message])

        @guarded(full=True)
        def on_import(session, upload):
            if upload is None:
                raise ValueError("choose a COCO .json file first")
            stats = import_coco(store, upload)
            session.open_image(session.image_key)
            return f"Imported {stats['added']} labels ({stats['skipped']} skipped: image not in the folder)."

        import_btn.click(on_import, [state, import_file], full_view, concurrency_id=MODEL_QUEUE)
    return demo


def _step(session, step, status_filter):
    if session.step_image(step, status_filter) is None:
        return f"No images with status '{status_filter}'."
    if status_filter == "label next":  # how much of the queue is ranked, or why it is file order
        return session.service.label_next.note
    return None


def _on_filter(session, status_filter):
    """Choosing "label next" asks for its scores at once (in the background) and says how far
    they are; the other filters change nothing until N / P."""
    if session is None or status_filter != "label next":
        return gr.skip()
    session.image_list(status_filter)
    return session.service.label_next.note
