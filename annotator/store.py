"""The label store, as the annotator has always imported it: it lives in `box2mask.labels` so the
retraining loop (`train`) can read it without importing the annotator."""

from box2mask.labels.store import (  # noqa: F401  (re-exported)
    IMAGE_EXTENSIONS,
    SOURCES,
    STATUSES,
    Label,
    LabelStore,
    SQLiteStore,
    StaleWriteError,
    check_label,
    list_image_files,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "SOURCES",
    "STATUSES",
    "Label",
    "LabelStore",
    "SQLiteStore",
    "StaleWriteError",
    "list_image_files",
]
