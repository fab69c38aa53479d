"""`box2mask fiftyone ...`: segment, review, evaluate and move labels in FiftyOne datasets.

    box2mask fiftyone apply    --dataset NAME --boxes ground_truth --out box2mask [--checkpoint CKPT]
    torchrun --nproc-per-node N -m box2mask fiftyone apply ...   (N processes share the work)
    box2mask fiftyone evaluate --dataset NAME --pred box2mask --gt ground_truth
    box2mask fiftyone rank     --dataset NAME --boxes ground_truth --checkpoint CKPT
    box2mask fiftyone app      --dataset NAME
    box2mask fiftyone import   --dataset NAME --field box2mask (--sqlite DB | --coco JSON) --images DIR
    box2mask fiftyone export   --dataset NAME --field box2mask (--sqlite DB | --coco JSON) --images DIR
    box2mask fiftyone plugin   (the App plugin's folder, for FIFTYONE_PLUGINS_DIR)

FiftyOne is imported only when a subcommand runs (importing it takes seconds).
"""

import argparse
import sys
from datetime import timedelta

from box2mask.segment.shards import DIST_TIMEOUT

CHUNK_SAMPLES = (
    32  # default --chunk-size (annotator.fiftyone.apply.CHUNK_SAMPLES, without fiftyone)
)

HELP = {
    "apply": "masks for every box of a Detections field, into a new field (resumable)",
    "evaluate": "mask evaluation against ground-truth masks, with a per-sample IoU field",
    "rank": "what to label next: per-sample uncertainty of a learner vs the default, sorted view",
    "app": "open the FiftyOne App on a dataset to review (tag labels verified / needs_fix)",
    "import": "labels from a SQLite label store or a COCO file into a dataset field",
    "export": "labels of a dataset field to a SQLite label store or a COCO file",
    "plugin": "print the FiftyOne App plugin's folder and files (for FIFTYONE_PLUGINS_DIR)",
}


APPLY_NOTES = """Samples whose --out field is already filled are skipped: a killed run, rerun, does only the
rest. Under `torchrun --nproc-per-node N -m box2mask fiftyone apply ...` (or --nnodes M)
the pending samples are dealt out to the N processes by box count; each writes its own samples
and rank 0 creates the field first. The result equals one process's exactly. On several nodes,
point FIFTYONE_DATABASE_URI at one MongoDB that all of them reach.
"""

EXAMPLES = """examples (the embedded default model; add --checkpoint CKPT for a trained one):
  box2mask fiftyone import   --dataset demo --field ground_truth --coco demo/boxes.json --images demo
  box2mask fiftyone apply    --dataset demo --boxes ground_truth --out box2mask
  torchrun --nproc-per-node 2 -m box2mask fiftyone apply --dataset demo --boxes ground_truth --out box2mask
  box2mask fiftyone app      --dataset demo          # review: tag labels verified / needs_fix
  box2mask fiftyone evaluate --dataset NAME --pred box2mask --gt ground_truth   # needs GT masks
  box2mask fiftyone rank     --dataset demo --boxes ground_truth --checkpoint runs/crop_photos/last.pt
  box2mask fiftyone export   --dataset demo --field box2mask --coco runs/demo.json --images demo
"""


RANK_NOTES = """The uncertainty of a sample is the mean disagreement (1 - IoU) of the learner
(--checkpoint) and the embedded default on its boxes: where they disagree, a correction teaches
the next round most (train/label_next.py; the annotator's "label next" queue is the same order).
Writes FIELD (the uncertainty; None without boxes) and FIELD_rank (1 = label first) on every sample
not marked done (the annotator's <boxes>_done flag), None on done ones, and saves the view VIEW:
  dataset.load_saved_view("label_next")          # exactly this order
  dataset.sort_by("b2m_label_next", reverse=True)   # the same up to ties
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EXAMPLES
    sub = parser.add_subparsers(dest="fiftyone_command", metavar="ACTION", required=True)
    for name, text in HELP.items():
        p = sub.add_parser(name, help=text, description=text)
        if name == "plugin":
            continue
        p.add_argument("--dataset", required=True, help="FiftyOne dataset name")
        if name == "apply":
            p.formatter_class = argparse.RawDescriptionHelpFormatter
            p.epilog = APPLY_NOTES
            p.add_argument("--boxes", required=True, help="Detections field with the box prompts")
            p.add_argument("--out", required=True, help="new Detections field for the masks")
            p.add_argument("--checkpoint", default=None, help="trained model (default: embedded)")
            p.add_argument(
                "--device",
                default="cpu",
                choices=["cpu", "cuda"],
                help="cpu or cuda (default: cpu); under torchrun, cuda means cuda:LOCAL_RANK",
            )
            p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
            p.add_argument(
                "--chunk-size",
                type=int,
                default=CHUNK_SAMPLES,
                metavar="N",
                help=f"samples per apply_model call; bounds memory (default {CHUNK_SAMPLES})",
            )
            p.add_argument(
                "--dist-timeout",
                type=float,
                default=DIST_TIMEOUT.total_seconds() / 60,
                metavar="MIN",
                help="under torchrun: minutes a process waits for the others (at the end, for "
                "the slowest share) before it stops with an error "
                f"(default {DIST_TIMEOUT.total_seconds() / 60:.0f})",
            )
        elif name == "evaluate":
            p.add_argument("--pred", required=True, help="Detections field with predicted masks")
            p.add_argument("--gt", required=True, help="Detections field with ground-truth masks")
            p.add_argument("--eval-key", default="eval_box2mask", help="prefix of result fields")
        elif name == "rank":
            p.formatter_class = argparse.RawDescriptionHelpFormatter
            p.epilog = RANK_NOTES
            p.add_argument("--boxes", required=True, help="Detections field with the boxes")
            p.add_argument(
                "--checkpoint",
                required=True,
                help="the learner (a crop-learner checkpoint, e.g. the registry's promoted one)",
            )
            p.add_argument(
                "--field", default="b2m_label_next", help="sample field (default b2m_label_next)"
            )
            p.add_argument(
                "--view", default="label_next", help="saved view name (default label_next)"
            )
            p.add_argument(
                "--device", default="cpu", choices=["cpu", "cuda"], help="torch device (cpu)"
            )
            p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
        elif name == "app":
            p.add_argument("--port", type=int, default=5151, help="App port (default: 5151)")
            p.add_argument("--address", default="127.0.0.1", help="address to serve on")
        else:
            p.add_argument(
                "--field", default="box2mask", help="Detections field of the labels (box2mask)"
            )
            src = p.add_mutually_exclusive_group(required=True)
            src.add_argument("--sqlite", help="SQLite label store file (box2mask annotate's)")
            src.add_argument("--coco", help="COCO instances JSON file (RLE masks)")
            p.add_argument(
                "--images",
                required=True,
                help="images folder: SQLite/COCO image keys are file paths relative to it",
            )
            p.add_argument(
                "--replace",
                action="store_true",
                help="replace the destination's labels of each copied image (default: images "
                "that already have labels there are left unchanged)",
            )


def run(args: argparse.Namespace) -> int:
    try:
        if args.fiftyone_command == "apply":
            return _apply(args)
        if args.fiftyone_command == "evaluate":
            return _evaluate(args)
        if args.fiftyone_command == "app":
            return _app(args)
        if args.fiftyone_command == "rank":
            return _rank(args)
        if args.fiftyone_command == "plugin":
            return _plugin()
        return _transfer(args)
    except (KeyError, ValueError, FileNotFoundError) as err:
        print(f"box2mask fiftyone {args.fiftyone_command}: {err}", file=sys.stderr)
        return 2


def _plugin() -> int:
    """The plugin ships inside the package (annotator/fiftyone/plugin), also in a wheel."""
    from importlib.resources import files

    folder = files("annotator.fiftyone.plugin")
    print(folder)
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.is_file() and not entry.name.endswith(".pyc"):
            print(f"  {entry.name}")
    print(f"use it: export FIFTYONE_PLUGINS_DIR={folder}")
    return 0


def _load(name: str):
    import fiftyone as fo

    if not fo.dataset_exists(name):
        raise KeyError(f"no FiftyOne dataset named {name!r}; existing: {fo.list_datasets()}")
    return fo.load_dataset(name)


def _apply(args) -> int:
    """One process of `fiftyone apply`; under torchrun (WORLD_SIZE > 1) each shares the work.

    Rank 0 opens the dataset first (it may start FiftyOne's database, which the others then use;
    on several nodes, set FIFTYONE_DATABASE_URI to one MongoDB for all). Every process loads the
    model on its device, segments its share and writes its samples; all agree on every error
    through a gloo process group, whose timeout bounds every wait.
    """
    from box2mask.segment.shards import RankError, Ranks, start_process_group, stop_process_group

    if args.chunk_size < 1:
        raise ValueError(f"--chunk-size must be >= 1, got {args.chunk_size}")
    ranks = Ranks.from_env()
    if ranks.world_size == 1:
        return _apply_rank(args, ranks)
    start_process_group("gloo", timedelta(minutes=args.dist_timeout))
    try:
        return _apply_rank(args, ranks)
    except RankError as err:  # also: a partner died, or a wait passed --dist-timeout
        print(f"box2mask fiftyone apply: error: {err}", file=sys.stderr)
        return 2
    finally:
        stop_process_group()


def _apply_rank(args, ranks) -> int:
    from annotator.fiftyone.apply import apply_masks
    from annotator.fiftyone.model import Box2MaskFiftyOneModel
    from box2mask.segment.shards import agreed, rank_device

    # rank 0 first: it may start FiftyOne's database, which the other processes then share
    dataset = agreed(lambda: _load(args.dataset) if ranks.rank == 0 else None, ranks)
    dataset = agreed(lambda: dataset if dataset is not None else _load(args.dataset), ranks)

    def model():
        device = rank_device(args.device, ranks.local_rank)
        return Box2MaskFiftyOneModel(checkpoint=args.checkpoint, device=device)

    model = agreed(model, ranks)
    result = apply_masks(
        dataset,
        model,
        boxes_field=args.boxes,
        out_field=args.out,
        chunk_size=args.chunk_size,
        ranks=ranks,
        progress=not args.no_progress,
    )
    if ranks.rank == 0:
        print(
            f"{args.out}: {result.done} samples segmented now, {result.skipped} already done, "
            f"{result.failed} failed (model {model.model_version})"
        )
        for path in result.failed_paths[:10]:
            print(f"  failed: {path} (rerun to retry)", file=sys.stderr)
    return 1 if result.failed else 0


def _evaluate(args) -> int:
    from annotator.fiftyone.apply import evaluate_masks

    dataset = _load(args.dataset)
    summary = evaluate_masks(dataset, pred_field=args.pred, gt_field=args.gt, key=args.eval_key)
    print(
        f"mask mAP {summary['map']:.4f}, mean mask IoU {summary['mean_iou']:.4f} over "
        f"{summary['pairs']} prompt/ground-truth pairs"
    )
    print(
        f"worst samples first: dataset.sort_by('{args.eval_key}_mean_iou') "
        f"(or sort by that field in the App: box2mask fiftyone app --dataset {args.dataset})"
    )
    return 0


def _rank(args) -> int:
    from annotator.fiftyone.rank import rank_samples
    from box2mask import build_predictor
    from box2mask.io.checkpoint import CheckpointError

    dataset = _load(args.dataset)
    try:
        learner = build_predictor(args.checkpoint, args.device)
    except CheckpointError as err:
        raise ValueError(str(err)) from err
    base = build_predictor(None, args.device)
    if learner.model_version == base.model_version:
        raise ValueError(f"{args.checkpoint} is the default itself: nothing to disagree with")
    result = rank_samples(
        dataset,
        boxes_field=args.boxes,
        base=base,
        learner=learner,
        field_name=args.field,
        view_name=args.view,
        progress=not args.no_progress,
    )
    print(
        f"{args.field}: {result.ranked} samples ranked ({learner.model_version} vs "
        f"{base.model_version}), {result.without_boxes} without boxes last, {result.done} done "
        f"left out; view {args.view!r} saved"
    )
    for n, sample_id in enumerate(result.order[:5], start=1):
        score = result.scores.get(sample_id)
        shown = "no boxes" if score is None else f"{score:.3f}"
        print(f"  {n}. {dataset[sample_id].filepath} ({shown})")
    print(
        f"label next: dataset.load_saved_view({args.view!r}) or "
        f"dataset.sort_by({args.field!r}, reverse=True)"
    )
    return 0


def _app(args) -> int:
    import fiftyone as fo

    dataset = _load(args.dataset)
    session = fo.launch_app(dataset, port=args.port, address=args.address, remote=True)
    print(
        f"FiftyOne App on http://{args.address}:{args.port} - tag labels 'verified' or "
        "'needs_fix'; Ctrl+C to stop"
    )
    # SIGTERM (`kill`) stops the App too: box2mask.cli turns it into KeyboardInterrupt
    try:
        session.wait(-1)  # serve until interrupted, whether or not a browser tab is open
    except KeyboardInterrupt:
        pass
    finally:
        session.close()
    return 0


def _transfer(args) -> int:
    from annotator.fiftyone.transfer import coco_to_fiftyone, copy_labels, fiftyone_to_coco

    importing = args.fiftyone_command == "import"
    fo_store = _fiftyone_store(args.dataset, args.field, create=importing)
    if args.sqlite:
        from annotator.store import SQLiteStore

        sqlite = SQLiteStore(args.sqlite, args.images)
        try:
            if importing:
                src, dst = sqlite, fo_store
            else:
                src, dst = fo_store, sqlite
            n = copy_labels(
                src,
                dst,
                images_dir=args.images,
                to_fiftyone=importing,
                replace_existing=args.replace,
            )
        finally:
            sqlite.close()
    elif importing:
        n = coco_to_fiftyone(
            args.coco, fo_store, images_dir=args.images, replace_existing=args.replace
        )
    else:
        n = fiftyone_to_coco(fo_store, args.coco, images_dir=args.images)
    where = args.sqlite or args.coco
    verb = f"imported from {where} into" if importing else f"exported to {where} from"
    print(f"{n} labels {verb} {args.dataset}:{args.field}")
    return 0


def _fiftyone_store(name: str, field: str, create: bool):
    import fiftyone as fo

    from annotator.fiftyone.store import FiftyOneStore

    if create and not fo.dataset_exists(name):
        dataset = fo.Dataset(name, persistent=True)
    else:
        dataset = _load(name)
    return FiftyOneStore(dataset, label_field=field)
