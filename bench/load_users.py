"""The simulated annotators of bench/load.py: one gradio_client session each (`Annotator`), and
the `Ledger` of what every user was told, which the store is checked against afterwards."""

import collections
import threading
import time
from dataclasses import dataclass, field


@dataclass
class Ledger:
    """What the users were told, shared by all threads (guarded by `lock`)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    added: set = field(default_factory=set)  # label keys (image, box, class) whose add succeeded
    deleted: set = field(default_factory=set)  # keys whose delete succeeded
    accepted: set = field(default_factory=set)  # keys last accepted by their owner
    updates: collections.Counter = field(default_factory=collections.Counter)  # key -> updates
    uncertain: set = field(default_factory=set)  # keys touched by a call that failed in transit
    times: dict = field(default_factory=lambda: collections.defaultdict(list))  # action -> [s]
    outcome: collections.Counter = field(default_factory=collections.Counter)  # (action, result)

    def to_json(self) -> dict:
        """The label keys of the ledger as JSON (read back by `from_json`, bench/load_checks.py)."""
        out = {name: sorted(_key_json(key) for key in getattr(self, name)) for name in KEY_SETS}
        out["updates"] = sorted([_key_json(key), n] for key, n in self.updates.items())
        return out

    @classmethod
    def from_json(cls, data: dict) -> "Ledger":
        ledger = cls()
        for name in KEY_SETS:
            getattr(ledger, name).update(_key(item) for item in data[name])
        ledger.updates.update({_key(item): n for item, n in data["updates"]})
        return ledger


KEY_SETS = ("added", "deleted", "accepted", "uncertain")  # the Ledger's sets of label keys


def _key_json(key: tuple) -> list:
    image, box, name = key
    return [image, list(box), name]


def _key(item: list) -> tuple:
    image, box, name = item
    return (image, tuple(box), name)


def box_key(image: str, box: dict) -> tuple:
    return (image, (box["xmin"], box["ymin"], box["xmax"], box["ymax"]), box["label"])


class Annotator:
    """One simulated person: its own gradio_client session, drawing and accepting."""

    def __init__(
        self, user, *, base, api, sizes, images, ledger, rng, think_s, deadline, max_own=0
    ):
        from gradio_client import Client

        self.user, self.name = user, f"u{user}"
        # a browser waits for a busy server; httpx's default 5 s would fail requests in the queue
        self.client = Client(
            base, verbose=False, download_files=False, httpx_kwargs={"timeout": 120}
        )
        self.api, self.sizes, self.images, self.ledger = api, sizes, images, ledger
        self.rng, self.think_s, self.deadline, self.max_own = rng, think_s, deadline, max_own
        self.image, self.value, self.choices = None, None, []
        self.error: str | None = None

    def call(self, action: str, *args, keys=()):
        """One request; records its latency and result. Returns the outputs or None if it failed."""
        t = time.perf_counter()
        try:
            out = self.client.predict(*args, api_name=self.api[action])
        except Exception as err:  # the request failed in transit: outcome unknown
            with self.ledger.lock:
                self.ledger.outcome[(action, "error")] += 1
                self.ledger.uncertain.update(keys)
            self.error = f"{action}: {type(err).__name__}: {err}"[:200]
            return None
        dt = time.perf_counter() - t
        value, radio, message = out[0], out[1], out[3]
        if isinstance(value, dict) and value.get("image") is not None:
            self.value = value
        if isinstance(radio, dict) and "choices" in radio:
            self.choices = [c[1] for c in radio["choices"]]
        result = "refused" if "Refused" in (message or "") else "ok" if not message else "other"
        with self.ledger.lock:
            self.ledger.times[action].append(dt)
            self.ledger.outcome[(action, result)] += 1
        return out, result

    def boxes(self) -> list[dict]:
        """The boxes on screen, as the browser sends them back (the colour is the widget's own)."""
        keep = ("xmin", "ymin", "xmax", "ymax", "label")
        return [{k: b[k] for k in keep} for b in (self.value or {}).get("boxes", [])]

    def pause(self) -> None:
        time.sleep(min(self.rng.expovariate(1 / self.think_s), 5 * self.think_s))

    def run(self) -> None:
        try:
            self._run()
        except Exception as err:  # a bug in the harness or an unexpected answer: reported
            self.error = f"{type(err).__name__}: {err}"[:200]

    def _run(self) -> None:
        if self.call("load") is None:
            return
        self.image = None
        shared, own = self.images[0], self.images[1 + self.user % (len(self.images) - 1)]
        while time.time() < self.deadline:
            target = shared if self.rng.random() < 0.5 else own
            if target != self.image or self.rng.random() < 0.3:  # reopening shows others' labels
                if self.call("open image", target) is None:
                    return
                self.image = target
            self.pause()
            own_labels = [b for b in self.boxes() if b["label"] == self.name]
            if self.max_own and len(own_labels) >= self.max_own:
                self._delete_own()
                self.pause()
            key = self._draw()
            if key is None:
                continue
            self.pause()
            if self.rng.random() < 0.25:
                self._update("refine", key, owner=True)
                self.pause()
            if self.rng.random() < 0.85:
                self._update("accept", key, owner=True)
                self.pause()
            if self.image == shared and self.rng.random() < 0.4:
                self._accept_other()
                self.pause()
            if self.rng.random() < 0.15:
                self._delete_own()
                self.pause()

    def _draw(self):
        """Drag a new box (unique to this user) on the open image; its key if the add succeeded."""
        width, height = self.sizes[self.image]
        mine = {box_key(self.image, b) for b in self.boxes()}
        while True:
            w, h = self.rng.randint(24, width // 3), self.rng.randint(24, height // 3)
            x0, y0 = self.rng.randint(0, width - w - 1), self.rng.randint(0, height - h - 1)
            box = dict(xmin=x0, ymin=y0, xmax=x0 + w, ymax=y0 + h, label=self.name)
            key = box_key(self.image, box)
            if key not in mine and key not in self.ledger.added:
                break
        value = {"image": self.value["image"], "boxes": self.boxes() + [box]}
        answer = self.call("draw box", value, keys=[key])
        if answer is None:
            return None
        shown = {box_key(self.image, b) for b in self.boxes()}
        if answer[1] == "ok" and key in shown:
            with self.ledger.lock:
                self.ledger.added.add(key)
            return key
        return None

    def _select(self, key) -> bool:
        keys = [box_key(self.image, b) for b in self.boxes()]
        if key not in keys or len(self.choices) != len(keys):
            return False
        answer = self.call("select", self.choices[keys.index(key)])
        return answer is not None and answer[1] == "ok"

    def _update(self, action: str, key, owner: bool) -> None:
        """Accept or refine the label `key` (selected first); the ledger counts the write."""
        if not self._select(key):
            return
        answer = self.call(action, keys=[key])
        if answer is None or answer[1] != "ok":
            return
        with self.ledger.lock:
            self.ledger.updates[key] += 1
            if owner and action == "accept":
                self.ledger.accepted.add(key)
            elif owner:
                self.ledger.accepted.discard(key)  # a new mask: not accepted any more

    def _accept_other(self) -> None:
        others = [box_key(self.image, b) for b in self.boxes() if b["label"] != self.name]
        if others:
            self._update("accept", self.rng.choice(others), owner=False)

    def _delete_own(self) -> None:
        boxes = self.boxes()
        mine = [i for i, b in enumerate(boxes) if b["label"] == self.name]
        if not mine:
            return
        gone = boxes.pop(self.rng.choice(mine))
        key = box_key(self.image, gone)
        answer = self.call("delete box", {"image": self.value["image"], "boxes": boxes}, keys=[key])
        if answer is not None and answer[1] == "ok":
            with self.ledger.lock:
                self.ledger.deleted.add(key)
                self.ledger.accepted.discard(key)
