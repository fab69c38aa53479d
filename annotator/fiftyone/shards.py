"""Which samples one process segments in `box2mask fiftyone apply` under torchrun, in flat memory.

The samples whose output field is still empty are sorted inside MongoDB by their number of box
prompts (most first, then by sample id) and dealt in snake order (`box2mask.segment.shards.snake_rank`),
the deal `box2mask segment` uses for images. Every rank streams the same sorted list (ids only)
and keeps its own ids in a temporary file, read back `chunk_size` at a time: memory holds one
chunk however many samples the dataset has. The lists must all be taken before any rank writes
(a barrier), since writing a sample takes it out of the pending list.
"""

from collections.abc import Iterator

from box2mask.segment.shards import snake_rank

__all__ = ["CHUNK_SAMPLES", "pending", "write_shard", "read_chunks"]

CHUNK_SAMPLES = 32  # samples per apply_model call: bounds memory, and the work a kill loses

_BOXES = "_box2mask_n_boxes"  # temporary sort key, computed in the aggregation only


def pending(samples, out_field: str):
    """The samples of `samples` (dataset or view) whose `out_field` is still empty."""
    return samples.exists(out_field, False)


def _by_work(samples, boxes_field: str, out_field: str):
    """The pending samples sorted by box count, most first, then by id; only ids are fetched."""
    count = {"$size": {"$ifNull": [f"${boxes_field}.detections", []]}}
    return (
        pending(samples, out_field)
        .mongo([{"$addFields": {_BOXES: count}}, {"$sort": {_BOXES: -1, "_id": 1}}])
        .select_fields()
    )


def write_shard(
    samples, file, *, boxes_field: str, out_field: str, rank: int = 0, world_size: int = 1
) -> tuple[int, int]:
    """Write the ids of shard `rank` of the pending samples to `file` (text, one id per line).

    Returns (pending samples over all shards, samples of this shard). `file` is left at its start.
    """
    n_pending = n_mine = 0
    for position, sample in enumerate(_by_work(samples, boxes_field, out_field).iter_samples()):
        n_pending += 1
        if snake_rank(position, world_size) == rank:
            file.write(sample.id + "\n")
            n_mine += 1
    file.flush()
    file.seek(0)
    return n_pending, n_mine


def read_chunks(file, chunk_size: int) -> Iterator[list[str]]:
    """The ids of a `write_shard` file, `chunk_size` at a time, in file order."""
    chunk = []
    for line in file:
        chunk.append(line.strip())
        if len(chunk) == chunk_size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
