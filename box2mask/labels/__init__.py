"""Labels: the label store (Label, LabelStore, the SQLite backend) that the annotator writes and
the retraining loop reads.

May import box2mask.ops and box2mask.io, nothing else of box2mask.
"""

from box2mask.labels.store import (
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
    "check_label",
    "list_image_files",
]
