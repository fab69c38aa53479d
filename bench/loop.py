"""The learning loop on a real dataset: three simulated labelling rounds, retrain after each.

    .venv/bin/python -m bench.loop --data ../shared/data/nuclei --learner crop --variants box --self-train
    .venv/bin/python -m bench.loop --data ../shared/data/balloon --learner crop --variants mixed
    .venv/bin/python -m bench.loop --data ../shared/data/balloon --learner tiny --iterations 300
    .venv/bin/python -m bench.loop --data ../shared/data/balloon --learner crop --variants mixed \
        --config configs/crop_photos.yaml --order uncertain   # label-next order after round 1
    .venv/bin/python -m bench.loop --clicks --data ../shared/data/balloon \
        --config configs/crop_photos.yaml --iterations 600   # rounds counted in clicks

`--clicks`: each round a robot user labels its batch by box and clicks with the served model
(bench/loop_clicks.py: the rounds, the per-round table with val NoC@90 and the clicks spent).

Simulation: every train-split image is in a SQLite label store with its GT boxes and the current
model's proposed masks (source "model", unverified). In round r a person "corrects" another third of
the train images: their masks become the GT masks (source "human-corrected", verified). After each
round `box2mask retrain` runs (fine-tuning the previous round's candidate), its
promotion gate compares the candidate with the current model (the embedded default before the
first promotion) on the held-out verified masks, and both the candidate and the promoted model are
evaluated on the val split with GT boxes as prompts. Prints one table: box-prompt mIoU / boundary
F per round, with the filled box, GrabCut on a crop and the embedded default on the same val split
as baselines.

Learners: `crop` (configs/crop_nuclei.yaml unless --config: the crop learner, served as trained)
and `tiny` (configs/tiny_cpu.yaml: Box2Mask-T). Variants: `box` trains with box supervision only (every image's boxes); `mixed` also gives the
corrected masks of the training images a mask loss (`retrain --mask-supervision`). `--teacher
levelset` adds the embedded default's masks as down-weighted targets for the box-only instances
(config `teacher`; the crop learner always distils the default). Each Box2Mask-T candidate is evaluated as the network's mask alone and with the level-set
refinement started from it (`region_refine`, the method's inference-time evolution); the second is
what a predictor of the checkpoint serves (configs/tiny_cpu.yaml: `serve_region_refine: true`), so
it is also what the promotion gate compares.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from train.box_prompt_eval import evaluate_predictor, evaluate_predictors

REPO = Path(__file__).resolve().parents[1]


def _bench_quality():
    """bench/quality.py (its baselines: filled box, GrabCut) beside this file."""
    from bench import quality

    return quality


def _fill_store(store, data_dir: Path, predictor):
    """Every train image with its GT boxes and `predictor`'s proposed masks; returns image keys."""
    from annotator.store import Label
    from box2mask.io.image_io import load_image
    from box2mask.io.rle import encode_rle

    coco = json.loads((data_dir / "annotations.json").read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    anns = {}
    for ann in coco["annotations"]:
        anns.setdefault(ann["image_id"], []).append(ann)
    keys = []
    for im in sorted(coco["images"], key=lambda im: im["id"]):
        if im.get("split") != "train" or im["id"] not in anns:
            continue
        image = load_image(data_dir / "images" / im["file_name"])
        boxes = np.array(
            [
                [
                    a["bbox"][0],
                    a["bbox"][1],
                    a["bbox"][0] + a["bbox"][2],
                    a["bbox"][1] + a["bbox"][3],
                ]
                for a in anns[im["id"]]
            ]
        )
        predictor.set_image(image)
        masks, scores = predictor.predict(boxes)
        for ann, box, mask, score in zip(anns[im["id"]], boxes, masks, scores, strict=True):
            store.add(
                Label(
                    image=im["file_name"],
                    box_xyxy=[float(v) for v in box],
                    class_name=names[ann["category_id"]],
                    mask_rle=encode_rle(mask),
                    source="model",
                    model_version=predictor.model_version,
                    verified=False,
                    score=float(score),
                )
            )
        keys.append(im["file_name"])
    return keys, {im["file_name"]: anns[im["id"]] for im in coco["images"] if im["id"] in anns}


def _uncertain_first(data_dir: Path, keys: list, gt: dict, checkpoint: Path) -> list:
    """`keys` (unlabeled images) by train/label_next.py: the images where the default and the
    last candidate disagree most first."""
    from box2mask import build_predictor
    from box2mask.io.image_io import load_image
    from train.label_next import label_order

    images = []
    for key in keys:
        xywh = np.array([a["bbox"] for a in gt[key]], np.float32).reshape(-1, 4)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        images.append((key, load_image(data_dir / "images" / key), boxes))
    return label_order(images, base=build_predictor(None), learner=build_predictor(checkpoint))


def _correct(store, key: str, gt_anns: list[dict]):
    """A person replaces the proposals on `key` by the GT masks and verifies them."""
    from dataclasses import replace

    labels = store.labels(key)
    for label, ann in zip(labels, gt_anns, strict=True):
        store.update(
            replace(label, mask_rle=ann["segmentation"], source="human-corrected", verified=True)
        )
    store.set_image_done(key, True)


def _round_overrides(args, rnd: int, previous: Path | None) -> dict:
    """Training settings of round `rnd` (`previous`: the last round's candidate, or None). Round 1
    trains from scratch; later rounds fine-tune gently, or with --self-train (crop learner) train
    from scratch again distilling the previous candidate's masks instead of the default's."""
    if args.learner == "crop":
        if args.self_train and previous is not None:
            return {"iterations": args.iterations, "teacher": str(previous)}
        later = {"lr": args.finetune_lr, "warmup_steps": 0} if rnd > 1 else {}
        return {"iterations": args.iterations, **later}
    return {
        "iterations": args.iterations,
        "teacher": args.teacher,
        **(
            {"levelset_warmup_steps": min(100, args.iterations // 3)}
            if rnd == 1
            else {"lr": args.finetune_lr, "levelset_warmup_steps": 0}
        ),
    }


def _candidate_rows(args, checkpoint: Path) -> tuple[dict, dict]:
    """(network alone, as served) val rows of a candidate. The crop learner is served as trained;
    Box2Mask-T is served with the level-set refinement started from its masks."""
    from box2mask import build_predictor
    from box2mask.model.predictor import Box2MaskPredictor

    def val(predictor):
        return evaluate_predictor(predictor, args.data, split="val", progress=False)

    if args.learner == "crop":
        served = val(build_predictor(checkpoint))
        return served, served
    network = val(Box2MaskPredictor.from_checkpoint(checkpoint, region_refine=False))
    return network, val(Box2MaskPredictor.from_checkpoint(checkpoint, region_refine=True))


def run_variant(name: str, args, tmp: Path) -> list[dict]:
    from annotator.store import SQLiteStore
    from box2mask import build_predictor
    from train.registry import ModelRegistry
    from train.retrain import retrain

    images = args.data / "images"
    store = SQLiteStore(tmp / f"{name}.sqlite", images)
    registry = ModelRegistry(tmp / f"{name}-models")
    keys, gt = _fill_store(store, args.data, build_predictor(None))
    rows = []
    thirds = np.array_split(np.arange(len(keys)), 3)
    unlabeled = list(keys)
    init_from, previous = "scratch", None
    for rnd, idx in enumerate(thirds, start=1):
        if args.order == "uncertain" and previous is not None:
            unlabeled = _uncertain_first(args.data, unlabeled, gt, previous)
        batch, unlabeled = unlabeled[: len(idx)], unlabeled[len(idx) :]
        for key in batch:
            _correct(store, key, gt[key])
        started = time.perf_counter()
        result = retrain(
            store=store,
            images_dir=images,
            registry=registry,
            config_path=args.config,
            overrides=_round_overrides(args, rnd, previous),
            mask_supervision=name == "mixed",
            init_from=init_from,
            margin=0.0,
            eval_fraction=args.eval_fraction,
            work_dir=tmp / f"{name}-round{rnd}",
            progress=False,
        )
        minutes = (time.perf_counter() - started) / 60
        candidate_ckpt = registry.checkpoint_path(result["version"])
        previous = candidate_ckpt
        if not args.self_train:
            init_from = str(candidate_ckpt)  # the next round fine-tunes this round's candidate
        cand, refined = _candidate_rows(args, candidate_ckpt)
        promoted = registry.promoted()
        predictor = (
            build_predictor(registry.checkpoint_path(promoted.version))
            if promoted
            else build_predictor(None)
        )
        val = evaluate_predictor(predictor, args.data, split="val", progress=False)
        rows.append(
            {
                "variant": name,
                "round": rnd,
                "verified_images": int(sum(len(t) for t in thirds[:rnd])),
                "promoted": result["promoted"],
                "gate": f"{result['candidate'].get('miou', float('nan')):.3f} vs "
                f"{(result['current'] or {}).get('miou', float('nan')):.3f}",
                "candidate_miou": cand["miou"],
                "candidate_boundary_f": cand["boundary_f"],
                "refined_miou": refined["miou"],
                "refined_boundary_f": refined["boundary_f"],
                "refined_accept_85": refined["accept_85"],
                "val_miou": val["miou"],
                "val_boundary_f": val["boundary_f"],
                "val_accept_85": val["accept_85"],
                "minutes": minutes,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    store.close()
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "balloon")
    parser.add_argument(
        "--learner",
        default="crop",
        choices=["crop", "tiny"],
        help="crop: the crop learner (configs/crop_nuclei.yaml); tiny: Box2Mask-T "
        "(configs/tiny_cpu.yaml)",
    )
    parser.add_argument("--config", default=None, help="training config (default: the learner's)")
    parser.add_argument(
        "--iterations",
        type=int,
        default=None,
        help="training steps per round (default: 1500 for crop, 300 for tiny)",
    )
    parser.add_argument("--eval-fraction", type=float, default=0.2)
    parser.add_argument(
        "--finetune-lr",
        type=float,
        default=None,
        help="learning rate of rounds 2 and 3 (fine-tuning the previous candidate; round 1 uses "
        "the config's; default: 5e-4 for crop, 5e-5 for tiny)",
    )
    parser.add_argument(
        "--self-train",
        action="store_true",
        help="crop learner with an ellipse base: rounds 2 and 3 train from scratch with the "
        "previous round's candidate as the distillation teacher (instead of fine-tuning)",
    )
    parser.add_argument(
        "--variants",
        default="box,mixed",
        help="comma list: box (box supervision) and/or mixed (corrected masks get a mask loss)",
    )
    parser.add_argument(
        "--teacher",
        default="levelset",
        choices=["", "levelset"],
        help="tiny only: mask targets for box-only instances from the embedded default ('' = none)",
    )
    parser.add_argument(
        "--order",
        default="index",
        choices=["index", "random", "uncertain"],
        help="which unlabeled images a round labels: index (file order), random (--clicks only: "
        "a permutation drawn from --seed) or uncertain (after round 1, where the default and the "
        "last candidate disagree most: train/label_next.py)",
    )
    parser.add_argument(
        "--clicks",
        action="store_true",
        help="rounds counted in clicks: a robot user labels each batch by box and clicks with the "
        "served model until IoU 0.90 (or --max-clicks, then the GT mask) (bench/loop_clicks.py)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="--clicks: labelling rounds")
    parser.add_argument("--max-clicks", type=int, default=20, help="--clicks: clicks per box")
    parser.add_argument("--seed", type=int, default=0, help="--clicks: training and order seed")
    args = parser.parse_args(argv)
    if args.order == "random" and not args.clicks:
        parser.error("--order random needs --clicks")
    crop = args.learner == "crop"
    if args.config is None:
        args.config = str(REPO / "configs" / ("crop_nuclei.yaml" if crop else "tiny_cpu.yaml"))
    if args.iterations is None:
        args.iterations = 1500 if crop else 300
    if args.finetune_lr is None:
        args.finetune_lr = 5e-4 if crop else 5e-5
    if args.clicks:
        return _click_main(args)
    quality = _bench_quality()
    baselines = evaluate_predictors(
        {
            "filled box": quality.FilledBox(),
            "ellipse": quality.InscribedEllipse(),
            "GrabCut (crop)": quality.GrabCut(crop=True),
        },
        args.data,
        split="val",
        progress=False,
    )
    from box2mask import build_predictor

    baselines["embedded default"] = evaluate_predictor(
        build_predictor(None), args.data, split="val", progress=False
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="box2mask-loop-") as tmp:
        for name in args.variants.split(","):
            rows += run_variant(name, args, Path(tmp))
    teacher = f", teacher {args.teacher}" if args.teacher and not crop else ""
    learner = "crop learner" if crop else "Box2Mask-T (tiny)"
    print(
        f"\nLearning loop on {args.data.name} (val split, GT boxes as prompts), {learner}, "
        f"{args.iterations} steps per round{teacher}, "
        + ("self-training" if args.self_train else f"fine-tuning lr {args.finetune_lr:g}")
    )
    print(
        "| model | round | verified images | network mIoU / BF | served mIoU / BF / accept@0.85 | "
        "gate (candidate vs current, held-out mIoU) | promoted | promoted model mIoU / BF / "
        "accept@0.85 | minutes |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, row in baselines.items():
        print(
            f"| {name} | - | - | - | {row['miou']:.3f} / {row['boundary_f']:.3f} / "
            f"{row['accept_85']:.2f} | - | - | - | - |"
        )
    for r in rows:
        print(
            f"| {learner} ({r['variant']} supervision) | {r['round']} | {r['verified_images']} | "
            f"{r['candidate_miou']:.3f} / {r['candidate_boundary_f']:.3f} | "
            f"{r['refined_miou']:.3f} / {r['refined_boundary_f']:.3f} / "
            f"{r['refined_accept_85']:.2f} | {r['gate']} | {r['promoted']} | "
            f"{r['val_miou']:.3f} / {r['val_boundary_f']:.3f} / {r['val_accept_85']:.2f} | "
            f"{r['minutes']:.1f} |"
        )
    return 0


def _click_main(args) -> int:
    """--clicks: the rounds of bench/loop_clicks.py and their table."""
    from bench import loop_clicks

    with tempfile.TemporaryDirectory(prefix="box2mask-loop-clicks-") as tmp:
        rows = loop_clicks.run_click_loop(args, Path(tmp))
    print(
        f"\nLearning loop counted in clicks on {args.data.name} (val split, GT boxes), crop "
        f"learner ({Path(args.config).name}), {args.iterations} steps per round, fine-tuning lr "
        f"{args.finetune_lr:g}, order {args.order}, seed {args.seed}, at most {args.max_clicks} "
        "clicks per box (then the GT mask, brushed)"
    )
    print(loop_clicks.format_rows(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
