"""Model registry: every model version kept with its config and metrics; one promoted version.

Layout of a registry folder:
    versions/<version>/checkpoint.pt    the model (self-describing checkpoint)
    versions/<version>/info.json        VersionInfo: metrics, data snapshot id, parent, time, config
    promoted.json                       {"version": "<version>", "history": [...]}, replaced atomically
    retrain.lock                        held (flock) while a retrain runs

A version folder is written under a temporary name and renamed into place, and `promoted.json` is
replaced with os.replace, so a crash at any point leaves the registry as it was before.
"""

import fcntl
import json
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from box2mask.io.atomic_write import remove_leftovers, write_text_atomic

__all__ = ["VersionInfo", "ModelRegistry", "RegistryLocked", "should_promote"]


class RegistryLocked(RuntimeError):
    """Another retrain holds the registry lock."""


@dataclass
class VersionInfo:
    version: str  # unique name, e.g. "v0003-20261125T031500"
    created: float  # UNIX time the version was registered
    metrics: (
        dict  # evaluation on the held-out verified masks, e.g. {"miou": 0.81, "boundary_f": 0.7}
    )
    data_snapshot: str  # id of the exported training data (hash of its content)
    parent: str | None = None  # version it was fine-tuned from (None: trained from scratch)
    config: dict = field(default_factory=dict)  # resolved training config
    note: str = ""  # free text (e.g. why it was or was not promoted)


def should_promote(
    candidate: dict, current: dict | None, metric: str = "miou", margin: float = 0.0
) -> bool:
    """The promotion gate: promote when there is no current model, or the candidate's `metric`
    beats the current one's by more than `margin` (absolute). A missing or non-finite candidate
    metric never promotes."""
    value = candidate.get(metric)
    if value is None or value != value:  # NaN
        return False
    if current is None or current.get(metric) is None:
        return True
    return value > current[metric] + margin


def _alive(pid: int) -> bool:
    """Whether a process with this id runs (signal 0 checks without sending anything)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: alive
        return True
    return True


def _write_json_atomic(path: Path, payload: dict) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2))


class ModelRegistry:
    """A folder of model versions with one promoted version (see the module docstring)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        (self.root / "versions").mkdir(parents=True, exist_ok=True)

    # ---- reading -------------------------------------------------------------------------
    def list_versions(self) -> list[VersionInfo]:
        """All registered versions, oldest first (half-written temporary folders are ignored)."""
        infos = []
        for d in sorted((self.root / "versions").iterdir()):
            if d.name.startswith(".") or not (d / "info.json").is_file():
                continue
            infos.append(VersionInfo(**json.loads((d / "info.json").read_text())))
        return sorted(infos, key=lambda v: (v.created, v.version))

    def get(self, version: str) -> VersionInfo:
        path = self.root / "versions" / version / "info.json"
        if not path.is_file():
            known = ", ".join(v.version for v in self.list_versions()) or "none"
            raise KeyError(f"no model version {version!r} in {self.root} (known: {known})")
        return VersionInfo(**json.loads(path.read_text()))

    def checkpoint_path(self, version: str) -> Path:
        self.get(version)
        return self.root / "versions" / version / "checkpoint.pt"

    def promoted(self) -> VersionInfo | None:
        """The promoted version, or None before the first promotion."""
        path = self.root / "promoted.json"
        if not path.is_file():
            return None
        return self.get(json.loads(path.read_text())["version"])

    def promoted_stamp(self) -> tuple[str, float] | None:
        """(version, mtime of promoted.json): cheap to poll for a hot reload."""
        path = self.root / "promoted.json"
        try:
            return json.loads(path.read_text())["version"], path.stat().st_mtime
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            return None

    # ---- writing -------------------------------------------------------------------------
    def _next_name(self) -> str:
        count = len(self.list_versions()) + 1
        return f"v{count:04d}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"

    def add_version(
        self,
        *,
        checkpoint: str | os.PathLike,
        metrics: dict,
        data_snapshot: str,
        parent: str | None = None,
        config: dict | None = None,
        note: str = "",
    ) -> VersionInfo:
        """Copy `checkpoint` into a new version folder (atomically) and return its info."""
        info = VersionInfo(
            version=self._next_name(),
            created=time.time(),
            metrics=dict(metrics),
            data_snapshot=data_snapshot,
            parent=parent,
            config=dict(config or {}),
            note=note,
        )
        final = self.root / "versions" / info.version
        tmp = self.root / "versions" / f".{info.version}.tmp-{os.getpid()}"
        tmp.mkdir()
        try:
            shutil.copyfile(checkpoint, tmp / "checkpoint.pt")
            _write_json_atomic(tmp / "info.json", asdict(info))
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return info

    def promote(self, version: str) -> VersionInfo:
        """Make `version` the promoted model (also the way to roll back to any earlier version)."""
        info = self.get(version)
        path = self.root / "promoted.json"
        remove_leftovers(self.root, min_age_s=2.0)  # a killed promotion's: a live write takes ms
        history = json.loads(path.read_text()).get("history", []) if path.is_file() else []
        history.append({"version": version, "time": time.time()})
        _write_json_atomic(path, {"version": version, "history": history})
        return info

    def _remove_dead_versions(self) -> None:
        """Delete temporary version folders (`.NAME.tmp-PID`) whose writer is dead: a retrain
        killed in `add_version` (SIGKILL: its cleanup never ran). Called under the lock."""
        for tmp in (self.root / "versions").glob(".*.tmp-*"):
            pid = tmp.name.rsplit("-", 1)[-1]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(tmp, ignore_errors=True)

    @contextmanager
    def lock(self):
        """Hold the retrain lock; raises RegistryLocked if another process holds it."""
        handle = open(self.root / "retrain.lock", "a+")
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RegistryLocked(
                    f"another retrain is running on {self.root} (it holds retrain.lock); "
                    "wait for it to finish"
                ) from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            self._remove_dead_versions()
            yield
        finally:
            handle.close()  # closing the file releases the lock, also when the process dies
