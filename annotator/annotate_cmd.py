"""`box2mask annotate IMAGES_DIR`: open the browser annotator on a folder of images."""

import argparse
import os
import sys
from pathlib import Path

LOOPBACK = ("127.0.0.1", "localhost", "::1")
STORE_NAME = "box2mask_labels.sqlite"  # default store file, inside IMAGES_DIR


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "images_dir",
        metavar="IMAGES_DIR",
        nargs="?",
        help="folder of images to annotate (searched recursively); omit with --fiftyone",
    )
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="trained box2mask checkpoint (.pt); default: the embedded level-set segmenter",
    )
    parser.add_argument(
        "--store",
        default=None,
        help=f"SQLite label store (created if missing); default: IMAGES_DIR/{STORE_NAME}",
    )
    parser.add_argument(
        "--classes",
        default=None,
        help="comma-separated class names offered for boxes; the first is the default "
        "(default: object, or the FiftyOne field's classes)",
    )
    parser.add_argument(
        "--fiftyone",
        default=None,
        metavar="DATASET",
        help="annotate a FiftyOne dataset instead of a folder (labels stored in the dataset)",
    )
    parser.add_argument(
        "--label-field",
        default="box2mask",
        help="with --fiftyone: the Detections field holding the labels (default box2mask)",
    )
    parser.add_argument("--device", default="cpu", help="torch device for the model (cpu, cuda)")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only); any other needs --auth",
    )
    parser.add_argument("--port", type=int, default=7860, help="port to listen on (default 7860)")
    parser.add_argument(
        "--auth",
        default=None,
        action="append",
        metavar="USER:PASSWORD",
        help="require this login (required when --host is not a loopback address); repeat it "
        "for several people, each with their own login (a page is its login's alone)",
    )
    parser.add_argument(
        "--max-upload-mb",
        type=float,
        default=50.0,
        help="largest upload accepted (the COCO import), in MB (default 50)",
    )
    parser.add_argument(
        "--cache-dir",
        default=None,
        help="where image encodings computed in the background are kept "
        "(default: IMAGES_DIR/.box2mask_cache; used with --checkpoint models)",
    )
    parser.add_argument(
        "--cache-gb",
        type=float,
        default=2.0,
        help="size limit of that cache in GB; 0 turns background encoding off (default 2)",
    )
    parser.add_argument(
        "--registry",
        default=None,
        help="model registry folder: its promoted model is served (unless --checkpoint) and a newly "
        "promoted one is loaded without a restart",
    )


def check_network_args(
    host: str, auth: str | list[str] | None
) -> tuple[str, str] | list[tuple[str, str]] | None:
    """Validate --host/--auth (one USER:PASSWORD or a list, --auth repeated); returns the
    (user, password) pair, a list of them for several logins, or None. Raises ValueError."""
    pair = None
    logins = [auth] if isinstance(auth, str) else list(auth or [])
    pairs = []
    for login in logins:
        user, sep, password = login.partition(":")
        if not sep or not user or not password:
            raise ValueError("--auth must be USER:PASSWORD with both parts non-empty")
        if user in dict(pairs):
            raise ValueError(f"--auth {user}: given twice")
        pairs.append((user, password))
    if pairs:
        pair = pairs[0] if len(pairs) == 1 else pairs
    if host not in LOOPBACK and pair is None:
        raise ValueError(
            f"refusing to listen on {host} without a login: anyone on the network could read and "
            "change your labels. Add --auth USER:PASSWORD, or use --host 127.0.0.1"
        )
    return pair


def run(args) -> int:
    try:
        auth = check_network_args(args.host, args.auth)
    except ValueError as err:
        print(f"box2mask annotate: {err}", file=sys.stderr)
        return 2
    if (args.images_dir is None) == (args.fiftyone is None):
        print(
            "box2mask annotate: give IMAGES_DIR or --fiftyone DATASET (one of them)",
            file=sys.stderr,
        )
        return 2
    classes = [c.strip() for c in (args.classes or "").split(",") if c.strip()]
    if args.classes is not None and not classes:
        print("box2mask annotate: --classes needs at least one name", file=sys.stderr)
        return 2

    from annotator.malloc_tuning import tune_malloc

    # a server runs all day: keep large short-lived buffers out of glibc's heap, before any are
    # made (annotator/malloc_tuning.py says why; a no-op on other C libraries)
    tune_malloc()
    from annotator.memory_probe import probe_from_env

    probe_from_env()  # opt-in debug switch (BOX2MASK_MEMORY_PROBE=FILE): memory reports

    # renders go to a Gradio temp folder of this server, emptied of old files while it runs
    from annotator.temp_cleaner import ShownFiles, TempCleaner, own_temp_folder

    user_temp = bool(os.environ.get("GRADIO_TEMP_DIR"))
    shown_files = ShownFiles()  # the render each session shows is kept however old it is
    # before Gradio is imported: it reads the variable
    cleaner = TempCleaner(own_temp_folder(), keep=shown_files.paths)

    from annotator.app import SHORTCUTS_JS, build_app
    from annotator.predictor_service import PredictorService
    from annotator.web_api import web_routes
    from box2mask import build_predictor

    if args.fiftyone:
        from annotator.fiftyone.store import open_for_annotation

        store, images_dir, dataset_classes = open_for_annotation(args.fiftyone, args.label_field)
        classes = classes or list(dataset_classes) or ["object"]
        export_dir = Path.cwd() / "box2mask_export"
        where = f"FiftyOne dataset {args.fiftyone!r}, field {args.label_field!r}"
    else:
        from annotator.store import SQLiteStore

        images_dir = Path(args.images_dir)
        if not images_dir.is_dir():
            print(f"box2mask annotate: {images_dir}: no such folder", file=sys.stderr)
            cleaner.stop(remove=not user_temp)
            return 2
        store_path = Path(args.store) if args.store else images_dir / STORE_NAME
        try:
            store = SQLiteStore(store_path, images_dir)
        except (RuntimeError, OSError) as err:  # e.g. a read-only folder: a message, no traceback
            print(f"box2mask annotate: {err}", file=sys.stderr)
            cleaner.stop(remove=not user_temp)
            return 2
        classes = classes or ["object"]
        export_dir = store_path.parent / "box2mask_export"
        where = str(store_path)
    if not store.list_images():
        print(f"box2mask annotate: no images (.jpg, .png, ...) in {images_dir}", file=sys.stderr)
        cleaner.stop(remove=not user_temp)
        return 2
    predictor = _startup_predictor(args, build_predictor)
    service = PredictorService(
        predictor, prefetcher=_prefetcher(args, predictor, store, images_dir)
    )
    print(f"model: {service.model_version}; labels saved to {where}")
    watcher = None
    if args.registry:
        from annotator.model_watch import RegistryWatcher

        def on_promote(path, version):
            service.reload(build_predictor(path, args.device))
            print(f"loaded promoted model {version}")

        watcher = RegistryWatcher(args.registry, on_promote).start()
    demo = build_app(
        store=store,
        images_dir=images_dir,
        service=service,
        classes=classes,
        export_dir=export_dir,
        shown_files=shown_files,
    )
    demo.queue(default_concurrency_limit=1)
    cleaner.forget = _forget_in(demo)
    cleaner.start()
    try:
        demo.launch(
            server_name=args.host,
            server_port=args.port,
            auth=auth,
            max_file_size=int(args.max_upload_mb * 1024 * 1024),
            allowed_paths=[],
            head=SHORTCUTS_JS,
            footer_links=[],
            show_error=True,
            # the canvas front-end at /b2m/ (annotator/web_api.py): same session, store, login
            app_kwargs={
                "routes": web_routes(
                    store=store,
                    images_dir=images_dir,
                    service=service,
                    classes=classes,
                    export_dir=export_dir,
                )
            },
        )
    finally:
        cleaner.stop(remove=not user_temp)
        if watcher is not None:
            watcher.stop()
        service.close()
        store.close()
    return 0


def _startup_predictor(args, build_predictor):
    """--checkpoint's model; with --registry and no --checkpoint the promoted model (the
    embedded default, said so, when its checkpoint cannot be loaded or none is promoted)."""
    checkpoint = args.checkpoint
    if checkpoint is None and args.registry:
        from annotator.model_watch import promoted_checkpoint

        checkpoint = promoted_checkpoint(args.registry)
        try:
            predictor = build_predictor(checkpoint, args.device)
            if checkpoint is not None:
                print(f"serving promoted model {checkpoint.parent.name} of {args.registry}")
            return predictor
        except Exception as err:  # keep annotating with the default; the watcher may fix it
            print(f"box2mask annotate: could not load the promoted model ({err}); serving the "
                  "embedded default", file=sys.stderr)  # fmt: skip
            return build_predictor(None, args.device)
    return build_predictor(checkpoint, args.device)


def _forget_in(demo):
    """Drop deleted temp files from the sets where Gradio records its files (with its own
    deletion off nothing else prunes them, and a server running all day would keep every
    render's path)."""

    def forget(paths: list[str]) -> None:
        gone = set(paths)
        for temp_set in getattr(demo, "temp_file_sets", []):
            temp_set.difference_update(gone)

    return forget


def _prefetcher(args, predictor, store, images_dir):
    """Background encoding of the next images into an on-disk cache, for models that support it
    (the embedded default encodes in a few ms and needs none); None when off or not possible."""
    if args.cache_gb <= 0:
        return None
    from annotator.prefetch import Prefetcher, stateful
    from box2mask.io.embedding_cache import EmbeddingCache
    from box2mask.io.image_io import load_image

    try:
        stateful(predictor)
    except TypeError:
        return None
    cache_dir = Path(args.cache_dir) if args.cache_dir else Path(images_dir) / ".box2mask_cache"
    return Prefetcher(
        predictor,
        EmbeddingCache(cache_dir, max_bytes=int(args.cache_gb * 1024**3)),
        images=store.list_images(),
        load=lambda key: load_image(Path(images_dir) / key),
    )
