"""The work folder `OUT.json.partial/` of a segment run: indexed, resumed, merged, removed.

`prepare_work_dir` (rank 0) indexes IN.json there (`box2mask.segment.index`) or resumes an earlier
run of the same input, images folder and model; `finish` (rank 0) merges the ranks' part files,
writes OUT.json atomically and removes the folder.
"""

import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from box2mask.segment import index as coco_index
from box2mask.segment.errors import SegmentError, say

__all__ = ["MAX_PROBLEM_LINES", "WorkDir", "prepare_work_dir", "finish"]

MAX_PROBLEM_LINES = 50  # problems found while indexing IN.json printed (all are in OUT.json)


@dataclass(frozen=True)
class WorkDir:
    """The work folder of one output: `OUT.json.partial/` beside OUT.json."""

    root: Path  # the folder

    @classmethod
    def for_output(cls, out_path) -> "WorkDir":
        out_path = Path(out_path)
        return cls(out_path.with_name(out_path.name + ".partial"))

    @property
    def index(self) -> Path:
        return self.root / "index.sqlite"

    def part(self, rank: int) -> Path:
        return self.root / "parts" / f"rank{rank:05d}.jsonl"

    def parts(self) -> list[Path]:
        return sorted((self.root / "parts").glob("rank*.jsonl"))


def prepare_work_dir(
    work: WorkDir, boxes_path, images_dir, fingerprint_extra: dict
) -> sqlite3.Connection:
    """Index IN.json into the work folder, or resume a matching earlier run. Rank 0 only.

    Raises SegmentError for a malformed IN.json (nothing else is written then).
    """
    fingerprint = {
        "input_sha256": coco_index.file_sha256(boxes_path),
        "images_dir": str(Path(images_dir).resolve()),
        **fingerprint_extra,
    }
    if work.index.exists():
        conn = coco_index.open_index(work.index)
        if coco_index.read_fingerprint(conn) == fingerprint:
            coco_index.import_parts(conn, work.parts())
            done = conn.execute("SELECT COUNT(*) FROM done").fetchone()[0]
            say(f"resuming the run in {work.root}: {done} images already done")
            return conn
        conn.close()
        say(f"{work.root} holds a run of another input or model: starting over")
    shutil.rmtree(work.root, ignore_errors=True)
    work.root.mkdir(parents=True)
    try:
        problems = coco_index.build_index(boxes_path, work.index, fingerprint)
    except coco_index.CocoFormatError as err:
        shutil.rmtree(work.root, ignore_errors=True)
        raise SegmentError(str(err)) from None
    for line in problems[:MAX_PROBLEM_LINES]:
        say(f"{boxes_path}: {line}")
    if len(problems) > MAX_PROBLEM_LINES:
        say(f"... and {len(problems) - MAX_PROBLEM_LINES} more problems in {boxes_path}")
    return coco_index.open_index(work.index)


def finish(conn, work: WorkDir, out_path) -> int:
    """Merge the part files, write OUT.json atomically, remove the work folder. Rank 0 only.

    Returns the number of annotations without a mask.
    """
    coco_index.import_parts(conn, work.parts())
    pending_images, _ = coco_index.count_pending(conn)
    if pending_images:
        raise SegmentError(f"{pending_images} images were not segmented; rerun to finish them")
    try:
        coco_index.write_coco(conn, out_path)
    except OSError as err:  # e.g. disk full: the finished work stays in the work folder
        raise SegmentError(
            f"cannot write {out_path}: {err}; the finished work is kept in {work.root}, "
            "rerun the same command to write it"
        ) from None
    failed = coco_index.count_failures(conn)
    conn.close()
    shutil.rmtree(work.root, ignore_errors=True)
    return failed
