"""What "label next" costs: ranking images by learner-vs-default disagreement, one table.

    python -m bench.label_next [--checkpoint runs/crop_photos/last.pt] [--data ../shared/data/balloon]
                               [--split train] [--threads 1]

For the demo images (demo/boxes.json) and a COCO folder's split (balloon train: 61 images), all
boxes as the images' labels in a temporary SQLite store: the baselines (loading the images, the
default alone and the learner alone on every image's boxes), `train/label_next.label_order` (the
ranking itself: both models on every image), and the annotator's queue
(annotator/label_next_queue.py): its first answer (nothing scored yet: must not wait), the
background scoring until every image is ranked, and an answer from the cache (what each N press
costs once scored). `same order` checks the queue's order against `label_order`'s.
"""

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import DEMO, REPO, SHARED_DATA

DEFAULT_CHECKPOINT = REPO / "runs" / "crop_photos" / "last.pt"


def _demo_items():
    coco = json.loads((DEMO / "boxes.json").read_text())
    by_image = {}
    for ann in coco["annotations"]:
        x, y, w, h = ann["bbox"]
        by_image.setdefault(ann["image_id"], []).append([x, y, x + w, y + h])
    return DEMO, [(im["file_name"], by_image.get(im["id"], [])) for im in coco["images"]]


def _coco_items(folder: Path, split: str):
    coco = json.loads((folder / "annotations.json").read_text())
    images = sorted(
        (im for im in coco["images"] if split == "all" or im.get("split") == split),
        key=lambda im: im["id"],
    )
    by_image = {}
    for ann in coco["annotations"]:
        x, y, w, h = ann["bbox"]
        by_image.setdefault(ann["image_id"], []).append([x, y, x + w, y + h])
    return folder / "images", [(im["file_name"], by_image.get(im["id"], [])) for im in images]


def _ms(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return (time.perf_counter() - start) * 1000, out


def measure(name, images_dir, items, checkpoint) -> dict:
    from annotator.predictor_service import PredictorService
    from annotator.session import AnnotationSession
    from annotator.store import Label, SQLiteStore
    from box2mask import build_predictor
    from box2mask.io.image_io import load_image
    from train.label_next import label_order

    load_ms, loaded = _ms(lambda: [load_image(images_dir / key) for key, _ in items])
    boxes = [np.asarray(b, np.float32).reshape(-1, 4) for _, b in items]
    default, learner = build_predictor(None), build_predictor(checkpoint)

    def alone(model):
        for image, b in zip(loaded, boxes, strict=True):
            model.set_image(image)
            model.predict(b)

    default_ms, _ = _ms(lambda: alone(default))
    learner_ms, _ = _ms(lambda: alone(learner))
    triples = [(k, image, b) for (k, _), image, b in zip(items, loaded, boxes, strict=True)]
    rank_ms, expected = _ms(lambda: label_order(triples, base=default, learner=learner))
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "labels.sqlite", images_dir)
        for key, b in items:
            for box in b:
                store.add(Label(key, list(map(float, box)), "object", None, "human", None, False))
        keys = [key for key, _ in items]  # the store lists every image of the folder: only ours
        service = PredictorService(build_predictor(checkpoint))
        session = AnnotationSession(store, images_dir, service, ["object"])
        first_ms, _ = _ms(lambda: session._label_next(keys))
        start = time.perf_counter()
        service.label_next.wait_idle(timeout=3600)
        scoring_s = time.perf_counter() - start
        cached = [_ms(lambda: session._label_next(keys)) for _ in range(5)]
        store.close()
    n = len(items)
    return dict(
        data=name,
        images=n,
        boxes=sum(len(b) for b in boxes),
        load=load_ms / n,
        default=default_ms / n,
        learner=learner_ms / n,
        rank=rank_ms,
        first=first_ms,
        scoring=scoring_s,
        cached=statistics.median(ms for ms, _ in cached),
        same=cached[-1][1] == expected,
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT), help="the learner")
    parser.add_argument("--data", default=str(SHARED_DATA / "balloon"), help="a COCO folder")
    parser.add_argument("--split", default="train", help="its split (default train; all)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    data = Path(args.data)
    rows = [
        measure("demo", *_demo_items(), args.checkpoint),
        measure(f"{data.name} {args.split}", *_coco_items(data, args.split), args.checkpoint),
    ]
    print(f"learner {args.checkpoint} vs the embedded default, torch threads {args.threads}")
    head = (
        "| data | images | boxes | load ms/img | default ms/img | learner ms/img "
        "| label_order ms (total) | queue first answer ms | queue scoring s | queue cached ms "
        "| same order |"
    )
    print(head)
    print("|" + "---|" * head.count(" | ") + "---|")
    for r in rows:
        print(
            f"| {r['data']} | {r['images']} | {r['boxes']} | {r['load']:.1f} | {r['default']:.0f} "
            f"| {r['learner']:.0f} | {r['rank']:.0f} | {r['first']:.1f} | {r['scoring']:.1f} "
            f"| {r['cached']:.1f} | {'yes' if r['same'] else 'NO'} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
