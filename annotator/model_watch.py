"""Hot reload: watch a model registry and swap the annotator's model when a new one is promoted.

`box2mask retrain` promotes a model by replacing `promoted.json` in the registry folder; a running
annotator polls that file (cheap: one stat and a small read) and swaps its shared predictor, so
new proposals carry the new model version without a restart.
"""

import threading

from train.registry import ModelRegistry

__all__ = ["RegistryWatcher", "promoted_checkpoint"]


def promoted_checkpoint(registry_dir):
    """The checkpoint file of the registry's promoted version, or None before the first
    promotion: what an annotator started with --registry (and no --checkpoint) serves, so one
    restarted after a crash, or killed while it hot-reloaded, serves the promoted model again."""
    registry = ModelRegistry(registry_dir)
    promoted = registry.promoted()
    return None if promoted is None else registry.checkpoint_path(promoted.version)


class RegistryWatcher:
    """Poll `registry_dir` every `interval` seconds; on a newly promoted version call
    `on_promote(checkpoint_path, version)` (e.g. build the predictor and `PredictorService.reload`).

    `check()` does one poll and is what the tests call; `start()` runs it in a daemon thread.
    """

    def __init__(self, registry_dir, on_promote, interval: float = 2.0):
        self.registry = ModelRegistry(registry_dir)
        self.on_promote = on_promote
        self.interval = interval
        self.current = self.registry.promoted_stamp()
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread = None

    def check(self) -> bool:
        """One poll; returns True when a new promotion was loaded."""
        stamp = self.registry.promoted_stamp()
        if stamp is None or stamp == self.current:
            return False
        version = stamp[0]
        try:
            self.on_promote(self.registry.checkpoint_path(version), version)
        except Exception as err:  # keep serving the old model; report and retry on the next change
            self.last_error = f"could not load promoted model {version}: {err}"
            self.current = stamp
            return False
        self.current, self.last_error = stamp, None
        return True

    def start(self) -> "RegistryWatcher":
        def loop():
            while not self._stop.wait(self.interval):
                self.check()

        self._thread = threading.Thread(target=loop, name="box2mask-registry-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval + 1)
