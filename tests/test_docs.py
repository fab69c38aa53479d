"""Every command in README.md and docs/*.md parses against the real code; the cheap ones run.

How commands are found and checked: tests/doc_commands.py. A block marked `<!-- doc-test: run -->`
runs here in a scratch folder (its entries link to the repository's, so outputs stay out of the
tree); the rest (training for minutes, benchmarks, servers, several GPUs) are parsed only:
`python -m tests.doc_commands` lists them.
"""

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.doc_commands import REPO, all_commands, check_command, doc_files, extract

COMMANDS = all_commands()
RUN_TIMEOUT_S = 120
# pages other work of this round is writing: a link to one is checked once the page exists
PAGES_BEING_WRITTEN = {REPO / "docs" / "browser.md", REPO / "docs" / "reliability.md"}
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)[^)]*\)")


@pytest.mark.parametrize("command", COMMANDS, ids=[c.where for c in COMMANDS])
def test_documented_command_parses(command):
    problems = check_command(command)
    assert not problems, "\n".join(problems)


def _scratch_repo(tmp_path: Path) -> Path:
    """A folder whose entries link to the repository's (runs/ and box2mask_export/ are real
    folders), so a documented command finds demo/, configs/ and .venv/ and writes nowhere else."""
    root = tmp_path / "repo"
    root.mkdir()
    for entry in REPO.iterdir():
        if entry.name not in ("runs", "box2mask_export", ".git"):
            (root / entry.name).symlink_to(entry)
    (REPO.parent / "shared").exists() and (tmp_path / "shared").symlink_to(REPO.parent / "shared")
    return root


RUN = [c for c in COMMANDS if c.run]


@pytest.mark.parametrize("command", RUN, ids=[c.where for c in RUN])
def test_documented_command_runs(command, tmp_path):
    root = _scratch_repo(tmp_path)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}",
    }
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", command.text],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    tail = (done.stdout + done.stderr)[-2000:]
    assert done.returncode == 0, (
        f"{command.where}: `{command.text}` exited {done.returncode}:\n{tail}"
    )


@pytest.mark.parametrize("doc", doc_files(), ids=[str(p.relative_to(REPO)) for p in doc_files()])
def test_links_point_to_files(doc):
    """Every relative link and picture in a document names a file that exists."""
    missing = []
    for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), start=1):
        for target in LINK.findall(line):
            if re.match(r"^[a-z]+:", target) or target.startswith("#"):
                continue  # http(s):, mailto:, an anchor in the same page
            path = (doc.parent / target.split("#")[0]).resolve()
            if not path.exists() and path not in PAGES_BEING_WRITTEN:
                missing.append(
                    f"{doc.relative_to(REPO)}:{number}: link to {target}, which does not exist"
                )
    assert not missing, "\n".join(missing)


def test_readme_is_short():
    lines = (REPO / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines < 200, f"README.md has {lines} lines: move detail into docs/"


def test_quick_start_commands_are_checked():
    """The README's two quick-start commands are among the checked ones, as written."""
    texts = [c.text for c in extract(REPO / "README.md")]
    assert "bash scripts/setup.sh && .venv/bin/box2mask annotate demo/" in texts
    assert "bash scripts/setup.sh && .venv/bin/python -m pytest -q" in texts


BROKEN_DOC = """\
Some text.

```bash
box2mask segment --images demo --boxes demo/boxes.json --out o.json --no-such-flag
.venv/bin/python -m bench.quality --data ../shared/data/balloon --nope 3
box2mask train --config configs/no_such.yaml --data d
torchrun --nproc-per-node 2 -m box2mask segmint --images d
python -m bench.no_such_bench
bash scripts/no_such.sh && frobnicate
```

```python
box2mask.not_checked("python blocks are skipped")
```

<!-- doc-test: skip -->
```bash
box2mask --not-a-command-block
```

```
box2mask   folder tree line: a block with no language that starts with box2mask is checked
```
"""


def test_checker_names_each_broken_command(tmp_path):
    """Flags, subcommands, files, modules and programs that do not exist are each reported with
    the file and line; python blocks and blocks marked skip are not read."""
    doc = tmp_path / "broken.md"
    doc.write_text(BROKEN_DOC)
    commands = extract(doc)
    assert [c.line for c in commands] == [4, 5, 6, 7, 8, 9, 22]
    problems = {c.line: "\n".join(check_command(c)) for c in commands}
    assert "unrecognized arguments: --no-such-flag" in problems[4]
    assert problems[4].startswith(f"{doc}:4: `box2mask segment")
    assert "unrecognized arguments: --nope 3" in problems[5]
    assert "configs/no_such.yaml, which does not exist" in problems[6]
    assert "invalid choice: 'segmint'" in problems[7]
    assert "bench.no_such_bench, which does not exist" in problems[8]
    assert "scripts/no_such.sh, which does not exist" in problems[9]
    assert "unknown program 'frobnicate'" in problems[9]
    assert "invalid choice: 'folder'" in problems[22]


def test_checker_passes_a_good_command(tmp_path):
    doc = tmp_path / "good.md"
    doc.write_text(
        "```bash\nOMP_NUM_THREADS=1 nice -n 10 .venv/bin/python -m bench.quality --data ../shared/data/balloon \\\n"
        "    --methods box,default --limit 2   # a comment\nbox2mask --help\n```\n"
    )
    commands = extract(doc)
    assert [(c.line, c.run) for c in commands] == [(2, False), (4, False)]
    assert commands[0].text.endswith("--limit 2   # a comment")
    assert [check_command(c) for c in commands] == [[], []]
