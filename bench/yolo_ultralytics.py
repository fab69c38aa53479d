"""Load a box2mask YOLO-seg export with Ultralytics' own loader and print one table.

    python -m bench.yolo_ultralytics EXPORT/data.yaml [--expect-images N] [--expect-objects M]

Run it with a Python that has `ultralytics` installed, in a throwaway venv, never the project's:
ultralytics pulls `opencv-python`, which shadows the project's `opencv-python-headless`:

    python3 -m venv /tmp/ultra && /tmp/ultra/bin/pip install ultralytics
    /tmp/ultra/bin/python -m bench.yolo_ultralytics runs/export/yolo/data.yaml

It imports nothing from box2mask. Steps: `check_det_dataset` (the check that `yolo train`
runs first: data.yaml keys, paths), then a segmentation `YOLODataset` per split, which reads
every label file the way training does (image -> label path by Ultralytics' rule, polygons,
class ids against `names`). Exit status 1 when a check fails or a count differs from
--expect-*, with the reason on stderr.
"""

import argparse
import os
import sys
import tempfile


def load(data_yaml: str) -> dict:
    """{split: (images, objects, objects with a polygon, images whose labels Ultralytics
    rejected)} for the train and val splits of `data_yaml`."""
    os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="ultralytics-config-"))
    from ultralytics.data.dataset import YOLODataset
    from ultralytics.data.utils import check_det_dataset

    data = check_det_dataset(data_yaml, autodownload=False)
    rows = {}
    for split in ("train", "val"):
        dataset = YOLODataset(
            img_path=data[split], data=data, task="segment", augment=False, imgsz=640, cache=False
        )
        labels = dataset.labels
        objects = sum(len(x["cls"]) for x in labels)
        polygons = sum(sum(len(s) >= 3 for s in x["segments"]) for x in labels)
        rows[split] = (len(labels), objects, polygons, len(dataset.im_files) - len(labels))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data_yaml", help="the export's data.yaml")
    parser.add_argument("--expect-images", type=int, default=None, help="train + val images")
    parser.add_argument("--expect-objects", type=int, default=None, help="train + val objects")
    args = parser.parse_args(argv)
    try:
        rows = load(args.data_yaml)
    except Exception as err:  # any refusal of Ultralytics' loader is the finding
        print(f"yolo_ultralytics: Ultralytics refused {args.data_yaml}: {err}", file=sys.stderr)
        return 1
    import ultralytics

    print(f"Ultralytics {ultralytics.__version__}, {args.data_yaml}")
    print("| split | images | objects | objects with a polygon | images rejected |")
    print("|---|---|---|---|---|")
    for split, (images, objects, polygons, rejected) in rows.items():
        print(f"| {split} | {images} | {objects} | {polygons} | {rejected} |")
    # an export without val images points val at the train images: count those once
    splits = [rows["train"]] if rows["val"] == rows["train"] else list(rows.values())
    images, objects = sum(r[0] for r in splits), sum(r[1] for r in splits)
    problems = []
    if args.expect_images is not None and images != args.expect_images:
        problems.append(f"{images} images loaded, expected {args.expect_images}")
    if args.expect_objects is not None and objects != args.expect_objects:
        problems.append(f"{objects} objects loaded, expected {args.expect_objects}")
    if any(r[2] != r[1] for r in splits):
        problems.append("some objects have no polygon")
    for problem in problems:
        print(f"yolo_ultralytics: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
