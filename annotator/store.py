"""The label store, as the annotator has always imported it: it lives in `box2mask.labels` so the
retraining loop (`train`) can read it without importing the annotator."""

from box2mask.labels import *  # noqa: F403  (re-exported: Label, LabelStore, SQLiteStore, ...)
from box2mask.labels import __all__  # noqa: F401
