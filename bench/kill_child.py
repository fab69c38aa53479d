"""The killed side of bench/kill_loop.py: `box2mask retrain` with phase marks and kill points.

    .venv/bin/python -m bench.kill_child POINT -- retrain ARGS...

runs `box2mask.cli.main(["retrain", ARGS...])` in this process after wrapping a few functions:
    - a mark `PHASE NAME` on stdout (flushed) when a phase starts: bank (the crop bank's build),
      train (the first training step), gate (the first evaluation on the held-out masks),
      registry (the candidate's copy into the registry), promotion (promoted.json's write), so
      bench/kill_loop.py can SIGKILL this process a random time into a phase;
    - POINT `checkpoint:K:HOW`, `registry:HOW` or `promotion:HOW` kills this process itself with
      SIGKILL inside a write too short to hit from outside: K-th write of last.pt (1 = the
      first), HOW = `mid` (half the bytes written), `before` (all written, not yet renamed),
      `after` (renamed, the caller not yet told) or, for registry, `copied` (the checkpoint
      copied, its info.json not yet written). POINT `none` only marks the phases.
The process dies as `kill -9` kills it: no `finally`, no atexit, no flush.
"""

import io
import os
import shutil
import signal
import sys

__all__ = ["install", "main"]


def mark(phase: str) -> None:
    print(f"PHASE {phase}", flush=True)


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _once(phase: str, fn):
    """`fn` that marks `phase` on its first call."""
    seen = []

    def wrapped(*args, **kwargs):
        if not seen:
            seen.append(True)
            mark(phase)
        return fn(*args, **kwargs)

    return wrapped


def install(point: str) -> None:
    """Wrap the phase functions and arm the kill `point` (see the module docstring)."""
    import torch

    import box2mask.io.atomic_write as atomic
    import train.crop_bank as crop_bank
    import train.crop_train as crop_train
    import train.evaluate as evaluate
    import train.registry as registry

    kind, _, how = point.partition(":")
    crop_bank.build_crop_bank = _once("bank", crop_bank.build_crop_bank)
    crop_train.forward_crops = _once("train", crop_train.forward_crops)
    evaluate.evaluate_box_prompts = _once("gate", evaluate.evaluate_box_prompts)

    real_save, real_replace, real_copy = torch.save, os.replace, shutil.copyfile
    writes = [0]
    nth, _, when = how.partition(":") if kind == "checkpoint" else ("0", "", how)

    def save(obj, f, *args, **kwargs):
        name = getattr(f, "name", str(f))
        if kind != "checkpoint" or ".last.pt." not in os.path.basename(str(name)):
            return real_save(obj, f, *args, **kwargs)
        writes[0] += 1
        if writes[0] != int(nth):
            return real_save(obj, f, *args, **kwargs)
        mark("checkpoint")
        if when == "mid":
            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            f.write(buffer.getvalue()[: buffer.tell() // 2])
            f.flush()
            die()
        real_save(obj, f, *args, **kwargs)
        if when == "before":
            f.flush()
            die()
        return None

    def replace(src, dst):
        src_name, dst_name = os.path.basename(str(src)), os.path.basename(str(dst))
        mine = (
            (kind == "checkpoint" and dst_name == "last.pt" and writes[0] == int(nth))
            or (kind == "registry" and ".tmp-" in src_name)
            or (kind == "promotion" and dst_name == "promoted.json")
        )
        if mine and when == "before":
            die()
        real_replace(src, dst)
        if mine and when == "after":
            die()

    def copyfile(src, dst, *args, **kwargs):
        mark("registry")
        if kind == "registry" and how == "mid":
            with open(src, "rb") as source, open(dst, "wb") as target:
                target.write(source.read()[: os.path.getsize(src) // 2])
            die()
        done = real_copy(src, dst, *args, **kwargs)
        if kind == "registry" and how == "copied":  # info.json not yet written
            die()
        return done

    real_text = atomic.write_text_atomic

    def write_text(path, text, *args, **kwargs):
        if os.path.basename(str(path)) == "promoted.json":
            mark("promotion")
            if kind == "promotion" and how == "mid":
                with atomic.atomic_write(path, "w") as handle:
                    handle.write(text[: len(text) // 2])
                    handle.flush()
                    die()
        return real_text(path, text, *args, **kwargs)

    torch.save = save
    atomic.os.replace = replace  # the one os module: every os.replace of the process
    registry.shutil.copyfile = copyfile
    registry.write_text_atomic = write_text


def main() -> int:
    if len(sys.argv) < 3 or sys.argv[2] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    install(sys.argv[1])
    from box2mask.cli import main as cli_main

    return cli_main(sys.argv[3:])


if __name__ == "__main__":
    sys.exit(main())
