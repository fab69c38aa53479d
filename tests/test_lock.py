"""constraints.txt, the lock: every distribution box2mask[dev] pulls in is pinned there at exactly
the version installed (scripts/setup.sh installs with it; `bash scripts/lock.sh` regenerates it)."""

import re
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

LOCK = Path(__file__).resolve().parents[1] / "constraints.txt"


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _lock() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not NAME==VERSION"
            pins[_norm(name)] = version
    return pins


def _closure(name: str, extras: tuple[str, ...]) -> dict[str, str]:
    """{distribution: installed version} of `name[extras]` and everything it requires."""
    seen, todo = {}, [(name, extras)]
    while todo:
        dist_name, dist_extras = todo.pop()
        dist = metadata.distribution(dist_name)
        key = _norm(dist.metadata["Name"] or dist_name)  # a broken install has no metadata
        if key in seen and not dist_extras:
            continue
        seen[key] = dist.version
        for text in dist.requires or []:
            req = Requirement(text)
            env_extras = dist_extras or ("",)
            if req.marker and not any(req.marker.evaluate({"extra": e}) for e in env_extras):
                continue
            if _norm(req.name) == key:  # box2mask[dev] names box2mask[annotator,fiftyone]
                todo.append((req.name, tuple(req.extras)))
            elif _norm(req.name) not in seen:
                todo.append((req.name, tuple(req.extras)))
    return seen


def test_the_lock_pins_every_installed_distribution_of_dev():
    pins = _lock()
    installed = _closure("box2mask", ("dev",))
    installed.pop("box2mask")
    assert len(installed) > 50  # torch, gradio, fiftyone and what they pull in
    missing = sorted(set(installed) - set(pins))
    assert not missing, f"installed by box2mask[dev] but not in constraints.txt: {missing}"
    drift = {k: (v, pins[k]) for k, v in installed.items() if pins[k] != v}
    assert not drift, f"installed version differs from constraints.txt (installed, locked): {drift}"


def test_the_lock_holds_the_project_ranges():
    """The lock is one of the installs the pyproject.toml ranges allow."""
    pins = _lock()
    for text in metadata.distribution("box2mask").requires or []:
        req = Requirement(text)
        if _norm(req.name) in pins and req.specifier:
            assert req.specifier.contains(pins[_norm(req.name)], prereleases=True), text
