"""LabelStore backend on a FiftyOne dataset: the labels are the detections of one field.

Mapping of a store `Label` onto a `fo.Detection` of `label_field` (default "box2mask"):

    image          the sample's filepath
    box_xyxy       bounding_box (relative XYWH; see annotator.fiftyone.convert)
    class_name     label
    mask_rle       mask, cropped to the box's pixel window (full-size RLE in the store API)
    score          confidence
    source, model_version, revision     attributes of the same names
    verified       the tags a reviewer sets in the FiftyOne App: "verified" and not "needs_fix"
    id             the detection's id

The image's done flag is the sample's bool field `<label_field>_done` (added when first set).
Other tags and attributes of a detection (evaluation results, `prompt_id`, ...) are kept on
update. Every write is one conditional MongoDB update of the sample's document: an update or
delete matches only while the detection is still at the revision the edit was based on, and an
add pushes onto the list, so two processes (two annotators on one dataset) can neither both pass
the stale check nor lose each other's labels. A lock serialises writes in this process (the
annotator's worker threads). Edits made elsewhere (the App, another process) are seen on the
next read. One limit: the App does not bump revisions, so its edits are not conflict-checked
against ours. Sample filepaths must be unique in the dataset (they are the image keys).
"""

import logging
import os
import threading
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import fiftyone as fo
from bson import ObjectId

from annotator.fiftyone.convert import (
    bbox_to_xyxy,
    crop_to_rle,
    dropped_pixels,
    rle_to_crop,
    xyxy_to_bbox,
)
from box2mask.io.rle import decode_rle
from box2mask.labels.store import Label, StaleWriteError, check_label

__all__ = [
    "open_for_annotation",
    "VERIFIED_TAG",
    "NEEDS_FIX_TAG",
    "FiftyOneStore",
    "detection_to_label",
    "write_label_into",
]

VERIFIED_TAG = "verified"  # label tag a reviewer sets on an accepted label
NEEDS_FIX_TAG = "needs_fix"  # label tag a reviewer sets on a label to correct

logger = logging.getLogger(__name__)


def detection_to_label(det: fo.Detection, image: str, width: int, height: int) -> Label:
    """A stored detection -> a store Label (full-size RLE, absolute XYXY box)."""
    mask = det.get_mask() if (det.mask is not None or det.mask_path) else None
    tags = set(det.tags or [])
    revision = det.get_field("revision") if det.has_field("revision") else None
    source = det.get_field("source") if det.has_field("source") else None
    version = det.get_field("model_version") if det.has_field("model_version") else None
    return Label(
        image=image,
        box_xyxy=bbox_to_xyxy(det.bounding_box, width, height),
        class_name=det.label,
        mask_rle=crop_to_rle(mask, det.bounding_box, width, height) if mask is not None else None,
        source=source or "human",  # detections from elsewhere count as human labels
        model_version=version,
        verified=VERIFIED_TAG in tags and NEEDS_FIX_TAG not in tags,
        score=det.confidence,
        id=det.id,
        revision=int(revision) if revision is not None else 1,
    )


def write_label_into(det: fo.Detection, label: Label, width: int, height: int) -> fo.Detection:
    """Set a detection's fields from a store Label (revision included); returns `det`."""
    bbox = xyxy_to_bbox(label.box_xyxy, width, height)
    mask = None
    if label.mask_rle is not None:
        size = [int(v) for v in label.mask_rle["size"]]
        if size != [height, width]:
            raise ValueError(
                f"{label.image}: mask is {size[0]}x{size[1]} (HxW) but the image is "
                f"{height}x{width}"
            )
        lost = dropped_pixels(decode_rle(label.mask_rle), bbox)
        if lost:
            logger.warning(
                "%s: %d mask pixels lie outside the label's box %s and are dropped "
                "(FiftyOne stores masks cropped to their box)",
                label.image,
                lost,
                label.box_xyxy,
            )
        mask = rle_to_crop(label.mask_rle, bbox)
    det.label = label.class_name
    det.bounding_box = bbox
    det.mask = mask
    det.mask_path = None
    det.confidence = None if label.score is None else float(label.score)
    det["source"] = label.source
    det["model_version"] = label.model_version
    det["revision"] = int(label.revision)
    tags = [t for t in (det.tags or []) if t not in (VERIFIED_TAG, NEEDS_FIX_TAG)]
    if label.verified:
        tags.append(VERIFIED_TAG)
    elif NEEDS_FIX_TAG in (det.tags or []):
        tags.append(NEEDS_FIX_TAG)
    det.tags = tags
    return det


class FiftyOneStore:
    """LabelStore on the Detections field `label_field` of a FiftyOne dataset.

    Args:
        dataset: a fo.Dataset or the name of one.
        label_field: the Detections field holding the labels (created when missing).
    """

    def __init__(self, dataset, label_field: str = "box2mask"):
        if isinstance(dataset, str):
            if not fo.dataset_exists(dataset):
                raise KeyError(
                    f"no FiftyOne dataset named {dataset!r}; existing: {fo.list_datasets()}"
                )
            dataset = fo.load_dataset(dataset)
        self.dataset = dataset
        self.label_field = label_field
        self.done_field = f"{label_field}_done"
        schema = dataset.get_field_schema()
        if label_field not in schema:
            dataset.add_sample_field(
                label_field, fo.EmbeddedDocumentField, embedded_doc_type=fo.Detections
            )
        elif getattr(schema[label_field], "document_type", None) is not fo.Detections:
            raise ValueError(
                f"field {label_field!r} of dataset {dataset.name!r} is {schema[label_field]}, "
                "not Detections; choose another label field"
            )
        self._lock = threading.Lock()

    @property
    def classes(self) -> list[str]:
        """The field's class list (`dataset.classes[label_field]`), [] when unset."""
        return list(self.dataset.classes.get(self.label_field, []))

    @classes.setter
    def classes(self, names: list[str]) -> None:
        self.dataset.classes = {**self.dataset.classes, self.label_field: list(names)}
        self.dataset.save()

    # -- images --------------------------------------------------------------------------------
    def list_images(self) -> list[str]:
        return sorted(self.dataset.values("filepath"))

    def add_image(self, filepath: str) -> str:
        """Add a sample for an image file unless the dataset has it; returns its key (filepath)."""
        with self._lock:
            key = fo.Sample(filepath=filepath).filepath  # FiftyOne's normalised absolute path
            if key not in set(self.dataset.values("filepath")):
                sample = fo.Sample(filepath=key)
                sample.compute_metadata()
                self.dataset.add_sample(sample)
            return key

    def image_status(self, image: str) -> str:
        sample = self._sample(image)
        if sample.has_field(self.done_field) and sample[self.done_field]:
            return "done"
        return "in progress" if self._detections(sample) else "unlabeled"

    def set_image_done(self, image: str, done: bool) -> None:
        with self._lock:
            sample = self._sample(image)
            if not done and not sample.has_field(self.done_field):
                return  # never marked done: nothing to clear (and no field to add)
            sample[self.done_field] = bool(done)
            sample.save()

    # -- labels --------------------------------------------------------------------------------
    def labels(self, image: str) -> list[Label]:
        sample = self._sample(image)
        width, height = self._size(sample)
        return [
            detection_to_label(d, sample.filepath, width, height) for d in self._detections(sample)
        ]

    def get(self, label_id: str) -> Label:
        sample, det = self._locate(label_id)
        width, height = self._size(sample)
        return detection_to_label(det, sample.filepath, width, height)

    def add(self, label: Label) -> Label:
        check_label(label)
        with self._lock:
            sample = self._sample(label.image)
            width, height = self._size(sample)
            det = write_label_into(fo.Detection(), replace(label, revision=1), width, height)
            collection, key = self._collection(), {"_id": ObjectId(sample.id)}
            empty = fo.Detections().to_mongo()
            collection.update_one(
                {**key, self.label_field: None}, {"$set": {self.label_field: empty}}
            )
            push = {f"{self.label_field}.detections": det.to_mongo()}
            collection.update_one(key, {"$push": push, "$set": _modified_now()})
        return replace(label, image=sample.filepath, id=det.id, revision=1)

    def update(self, label: Label) -> Label:
        check_label(label)
        if label.id is None:
            raise ValueError("update needs a label with an id (add it first)")
        with self._lock:
            sample, det = self._locate(label.id, action="update")
            self._check_revision(det, label.id, label.revision, action="update")
            if label.image != sample.filepath:
                raise ValueError(
                    f"label {label.id} belongs to {sample.filepath}; the FiftyOne store cannot "
                    f"move it to {label.image} (delete it and add a new one)"
                )
            width, height = self._size(sample)
            write_label_into(det, replace(label, revision=label.revision + 1), width, height)
            change = {f"{self.label_field}.detections.$": det.to_mongo(), **_modified_now()}
            self._write_if_current(sample, label.id, label.revision, {"$set": change}, "update")
        return replace(label, revision=label.revision + 1)

    def delete(self, label_id: str, revision: int) -> None:
        with self._lock:
            sample, det = self._locate(label_id, action="delete")
            self._check_revision(det, label_id, revision, action="delete")
            change = {
                "$pull": {f"{self.label_field}.detections": {"_id": ObjectId(label_id)}},
                "$set": _modified_now(),
            }
            self._write_if_current(sample, label_id, revision, change, "delete")

    def close(self) -> None:
        """Nothing to release: the dataset stays in FiftyOne's database."""

    # -- helpers -------------------------------------------------------------------------------
    def _collection(self):
        """The dataset's MongoDB sample collection (pymongo; FiftyOne's `_sample_collection`)."""
        return self.dataset._sample_collection

    def _write_if_current(self, sample, label_id: str, revision: int, change: dict, action: str):
        """Apply the MongoDB update `change` to the sample's document only while its detection
        `label_id` is at `revision` (a detection without one counts as revision 1): the check
        and the write in one atomic database call. StaleWriteError when another process got
        there first (naming its revision, or that it deleted the label)."""
        at_revision = {"revision": revision}
        if revision == 1:
            at_revision = {"$or": [{"revision": 1}, {"revision": None}]}
        current = {"_id": ObjectId(label_id), **at_revision}
        selector = {
            "_id": ObjectId(sample.id),
            f"{self.label_field}.detections": {"$elemMatch": current},
        }
        if self._collection().update_one(selector, change).matched_count == 1:
            return
        _, det = self._locate(label_id, action=action)  # raises when it was deleted
        self._check_revision(det, label_id, revision, action=action)  # raises: a new revision
        raise StaleWriteError(f"cannot {action} label {label_id}: it changed meanwhile; reload")

    def _sample(self, image: str) -> fo.Sample:
        """The sample of an image key (filepath), re-read from the database."""
        try:
            sample = self.dataset[image]
        except (KeyError, ValueError):
            raise KeyError(
                f"image {image!r} is not in the FiftyOne dataset {self.dataset.name!r}"
            ) from None
        sample.reload()
        return sample

    def _detections(self, sample) -> list:
        value = sample[self.label_field]
        return list(value.detections) if value is not None else []

    def _locate(self, label_id: str, action: str | None = None):
        """(sample, detection) holding a label id, re-read from the database.

        Raises KeyError for an unknown id, or StaleWriteError when `action` is given (the label
        was deleted since the caller read it).
        """
        view = None
        if ObjectId.is_valid(str(label_id)):
            view = self.dataset.select_labels(ids=[str(label_id)], fields=self.label_field)
        filepaths = view.values("filepath") if view is not None else []
        if filepaths:
            sample = self._sample(filepaths[0])
            for det in self._detections(sample):
                if det.id == str(label_id):
                    return sample, det
        if action is not None:
            raise StaleWriteError(
                f"cannot {action} label {label_id}: it was deleted elsewhere (another tab, "
                "process or the FiftyOne App); reload the image to see the current labels"
            )
        raise KeyError(
            f"label {label_id} is not in field {self.label_field!r} of dataset "
            f"{self.dataset.name!r}"
        )

    @staticmethod
    def _check_revision(det, label_id: str, revision: int, action: str) -> None:
        stored = det.get_field("revision") if det.has_field("revision") else None
        stored = int(stored) if stored is not None else 1
        if stored != revision:
            raise StaleWriteError(
                f"cannot {action} label {label_id}: it is at revision {stored} but this edit was "
                f"based on revision {revision} (changed in another tab or process); reload "
                "the image to see the current version"
            )

    def _size(self, sample) -> tuple[int, int]:
        """(width, height) of a sample's image, from its metadata (computed once if missing)."""
        if sample.metadata is None or not sample.metadata.width:
            sample.compute_metadata()
            sample.save()
        return int(sample.metadata.width), int(sample.metadata.height)


def _modified_now() -> dict:
    """The sample's `last_modified_at` (FiftyOne's naive UTC time) for a raw database write."""
    return {"last_modified_at": datetime.now(UTC).replace(tzinfo=None)}


def open_for_annotation(dataset_name: str, label_field: str = "box2mask"):
    """What `box2mask annotate --fiftyone NAME` needs: (store, images_dir, class names).

    images_dir is the deepest folder holding every sample's image (the annotator reads images
    only from inside one folder; the store's keys are absolute filepaths, and `images_dir / key`
    is the key itself). The class names are the field's class list, else the classes present in
    the field, else the dataset's default classes.
    """
    store = FiftyOneStore(dataset_name, label_field=label_field)
    filepaths = store.list_images()
    if not filepaths:
        raise ValueError(f"FiftyOne dataset {dataset_name!r} has no samples")
    images_dir = Path(os.path.commonpath([os.path.dirname(p) for p in filepaths]))
    classes = (
        store.classes
        or sorted(store.dataset.distinct(f"{label_field}.detections.label"))
        or list(store.dataset.default_classes)
    )
    return store, images_dir, classes
