"""Which images the annotator offers: the status filters, the progress, the next / previous one."""

from annotator.store import LabelStore

__all__ = ["FILTERS", "image_list", "progress", "step_target"]

# "worst first": images with unreviewed proposals, lowest mask-quality score first (review queue);
# "label next": images not done, the served model's most uncertain first (label_next_queue.py)
FILTERS = ("all", "unlabeled", "in progress", "done", "worst first", "label next")


def image_list(store: LabelStore, status_filter: str = "all", rank=None) -> list[str]:
    """The store's images that pass `status_filter` (one of FILTERS), in the filter's order.
    `rank`: keys -> the same keys in "label next" order (None: file order)."""
    if status_filter not in FILTERS:
        raise ValueError(f"filter must be one of {FILTERS}, got {status_filter!r}")
    keys = store.list_images()
    if status_filter == "all":
        return keys
    if status_filter == "label next":
        keys = [k for k in keys if store.image_status(k) != "done"]
        return keys if rank is None else rank(keys)
    if status_filter == "worst first":
        worst = {}
        for k in keys:
            pending = [lb.score for lb in store.labels(k) if not lb.verified]
            pending = [s for s in pending if s is not None]
            if pending:
                worst[k] = min(pending)
        return sorted(worst, key=lambda k: (worst[k], k))
    return [k for k in keys if store.image_status(k) == status_filter]


def progress(store: LabelStore) -> tuple[int, int]:
    """(images done, images in all)."""
    keys = store.list_images()
    return sum(store.image_status(k) == "done" for k in keys), len(keys)


def step_target(
    store: LabelStore, current: str | None, step: int, status_filter: str = "all", rank=None
) -> str | None:
    """The next (+1) or previous (-1) image after `current` among those passing the filter
    (wrapping round); None when none passes. "label next" steps along its own order (an image
    that left the queue, e.g. just marked done, is followed by the queue's first)."""
    keys = image_list(store, status_filter, rank=rank)
    if not keys:
        return None
    if status_filter == "label next":
        if current not in keys:
            return keys[0 if step > 0 else -1]
        return keys[(keys.index(current) + (1 if step > 0 else -1)) % len(keys)]
    everything = store.list_images()
    here = everything.index(current) if current in everything else -1
    ahead = [k for k in keys if everything.index(k) > here] if step > 0 else []
    behind = [k for k in keys if everything.index(k) < here] if step < 0 else []
    return ahead[0] if ahead else behind[-1] if behind else keys[0 if step > 0 else -1]
