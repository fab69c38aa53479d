"""The shell commands written in README.md and docs/*.md, found and checked without running them.

A fenced block is a shell block when its language is bash / sh / shell / console, or when it has
no language and its first command starts with a program this checker knows (`box2mask`,
`python`, `torchrun`, `bash`, ...). Blocks in other languages (python, yaml, a folder tree) are
skipped. Each shell line (backslash continuations joined, `&&` / `|` / `;` chains split) is
checked statically:

- `box2mask ...`, `python -m box2mask ...`, `torchrun ... -m box2mask ...`: the arguments are
  parsed by the real parser (`box2mask.cli.build_parser`), so an unknown subcommand or flag, a
  missing value or a bad choice is an error; torchrun's own options by torchrun's parser.
- `python -m bench.NAME ...`: the benchmark's `main` is called with `ArgumentParser.parse_known_args`
  replaced by one that stops right after parsing (nothing runs).
- `python -m pytest ...`: the test files named exist; `python -m OTHER`: the module exists.
- `bash FILE`, `python FILE`: the file exists.
- every word that names a path inside the repository (its first part is a tracked top-level
  folder: configs/, demo/, scripts/, ...) or in ../shared (when ../shared is there) must exist.

A block preceded by the line `<!-- doc-test: run -->` is also run (tests/test_docs.py), in a
scratch folder whose entries link to the repository's, so what it writes stays out of the tree;
`<!-- doc-test: skip -->` marks a block that is not a command. Run `python -m tests.doc_commands`
to list every command and how it is checked.
"""

import argparse
import contextlib
import fnmatch
import importlib
import importlib.util
import inspect
import io
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

REPO = Path(__file__).resolve().parents[1]
SHELL_LANGUAGES = {"bash", "sh", "shell", "console", "zsh"}
RUN_MARK = "<!-- doc-test: run -->"
SKIP_MARK = "<!-- doc-test: skip -->"
# top-level folders of the repository: a word starting with one of these names a file that must exist
REPO_FOLDERS = (
    "annotator",
    "bench",
    "box2mask",
    "configs",
    "demo",
    "docs",
    "scripts",
    "tests",
    "train",
    ".ci",
)
# programs that are fine to name without a check of their arguments
PLAIN_PROGRAMS = {
    "apt-get",
    "cat",
    "cd",
    "crontab",
    "curl",
    "diff",
    "echo",
    "export",
    "git",
    "ln",
    "ls",
}
PLAIN_PROGRAMS |= {"mkdir", "pip", "pip3", "source", "sudo", "chromium", "npm", "kill", "wget", "."}
CHECKED_PROGRAMS = {"box2mask", "python", "python3", "python3.11", "torchrun", "bash", "sh"}
# prefixes that only change how a command runs: `nice -n 10 CMD`, `env A=1 CMD`, `time CMD`
WRAPPERS = {"nice": 2, "env": 0, "time": 0, "timeout": 1, "exec": 0}
CHAIN_TOKENS = {"&&", "||", ";", "|", "&", "\n"}


@dataclass(frozen=True)
class DocCommand:
    """One shell line of a document."""

    path: Path  # the markdown file
    line: int  # 1-based line of the command's first line in that file
    text: str  # the command as written, continuation lines joined
    run: bool  # its block is marked to run (RUN_MARK)

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO) if self.path.is_relative_to(REPO) else self.path}:{self.line}"


def doc_files(repo: Path = REPO) -> list[Path]:
    """README.md and every docs/**/*.md, in a stable order."""
    return [repo / "README.md", *sorted((repo / "docs").rglob("*.md"))]


def _program(words: list[str]) -> str:
    """The program a command runs, after env assignments and wrappers: `box2mask`, `python`, ..."""
    words = _unwrap(words)
    return os.path.basename(words[0]) if words else ""


def _unwrap(words: list[str]) -> list[str]:
    """`A=1 nice -n 10 env B=2 cmd args` -> `[cmd, args]`."""
    words = list(words)
    while words:
        if (
            "=" in words[0]
            and not words[0].startswith(("-", "="))
            and words[0].split("=")[0].isidentifier()
        ):
            words.pop(0)
        elif words[0] in WRAPPERS:
            name = words.pop(0)
            if name == "nice" and words[:1] == ["-n"]:
                del words[:2]
            elif name == "timeout" and words:
                words.pop(0)
        else:
            break
    return words


def _split(text: str) -> list[list[str]]:
    """A shell line -> its simple commands as word lists (redirections dropped)."""
    lex = shlex.shlex(text, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    lex.commenters = "#"
    commands, words = [], []
    tokens = list(lex)
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok in CHAIN_TOKENS:
            commands.append(words)
            words = []
        elif tok and set(tok) <= set("<>&") and tok != "&":
            i += 1  # a redirection: skip its target
            if words and words[-1].isdigit():
                words.pop()  # the fd of `2>&1`
        else:
            words.append(tok)
        i += 1
    commands.append(words)
    return [c for c in commands if c]


def _blocks(path: Path):
    """(language, marker, [(line number, text)]) for each fenced block of a markdown file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        if stripped.startswith("```"):
            fence = stripped[: len(stripped) - len(stripped.lstrip("`"))]
            language = stripped[len(fence) :].strip().split(" ")[0].lower()
            before = next((lines[k].strip() for k in range(i - 1, -1, -1) if lines[k].strip()), "")
            marker = before if before in (RUN_MARK, SKIP_MARK) else ""
            body = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith(fence):
                body.append((i + 1, lines[i]))
                i += 1
            yield language, marker, body
        i += 1


def _logical_lines(body: list[tuple[int, str]], console: bool) -> list[tuple[int, str]]:
    """Join backslash continuations; in a console block keep only `$ ` lines."""
    out, start, parts = [], None, []
    for number, raw in body:
        text = raw.strip()
        if console and not parts:
            if not text.startswith("$ "):
                continue
            text = text[2:]
        if start is None:
            start = number
        if text.endswith("\\"):
            parts.append(text[:-1])
            continue
        parts.append(text)
        joined = " ".join(p.strip() for p in parts).strip()
        if joined and not joined.startswith("#"):
            out.append((start, joined))
        start, parts = None, []
    if parts:
        out.append((start, " ".join(parts)))
    return out


def extract(path: Path) -> list[DocCommand]:
    """Every shell command line of one markdown file."""
    found = []
    for language, marker, body in _blocks(path):
        if marker == SKIP_MARK or (language and language not in SHELL_LANGUAGES):
            continue
        lines = _logical_lines(body, console=language == "console")
        if not language:  # no language: a shell block only if it starts with a known program
            first = next(iter(lines), None)
            try:
                words = _split(first[1])[0] if first else []
            except (ValueError, IndexError):
                continue
            if _program(words) not in CHECKED_PROGRAMS:
                continue
        found += [DocCommand(path, number, text, marker == RUN_MARK) for number, text in lines]
    return found


def all_commands(repo: Path = REPO) -> list[DocCommand]:  # every document's commands
    return [c for path in doc_files(repo) for c in extract(path)]


def _parse_box2mask(args: list[str]) -> str | None:
    """Parse `box2mask ARGS` with the real parser: None, or the parser's error."""
    from box2mask.cli import SUBCOMMANDS, _command, build_parser

    command = _command(args)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            build_parser(command if command in SUBCOMMANDS else None).parse_args(args)
    except SystemExit as stop:
        if stop.code not in (0, None):
            return f"`box2mask` rejects its arguments: {err.getvalue().strip().splitlines()[-1]}"
    return None


class _Parsed(Exception):
    """Raised by the patched parser once a benchmark's arguments are parsed."""


def _parse_module_main(module_name: str, args: list[str]) -> str | None:
    """Call MODULE.main with its argument parser stopping right after parsing."""
    module = importlib.import_module(module_name)
    main = getattr(module, "main", None)
    if main is None:
        return f"{module_name} has no main() to check its arguments with"
    original_known = argparse.ArgumentParser.parse_known_args
    original_args = argparse.ArgumentParser.parse_args
    depth = [0]  # nesting of parse calls (subparsers parse inside their parent)

    def stop_after(original):
        def parse_then_stop(self, *a, **k):
            depth[0] += 1
            try:
                result = original(self, *a, **k)
            finally:
                depth[0] -= 1
            if depth[0] == 0:
                raise _Parsed
            return result

        return parse_then_stop

    err = io.StringIO()
    takes_argv = bool(inspect.signature(main).parameters)
    try:
        with (
            mock.patch.object(
                argparse.ArgumentParser, "parse_known_args", stop_after(original_known)
            ),
            mock.patch.object(argparse.ArgumentParser, "parse_args", stop_after(original_args)),
            mock.patch.object(sys, "argv", [module_name, *args]),
            contextlib.redirect_stderr(err),
            contextlib.redirect_stdout(io.StringIO()),
        ):
            main(args) if takes_argv else main()
    except _Parsed:
        return None
    except SystemExit as stop:
        if stop.code in (0, None):
            return None
        return f"`python -m {module_name}` rejects its arguments: {err.getvalue().strip().splitlines()[-1]}"
    return f"{module_name}.main() returned without parsing arguments"


def _ignored_patterns(repo: Path) -> list[str]:
    """The .gitignore patterns that name files anywhere (`*.sqlite`, `runs/`): outputs a command
    makes, so a documented path matching one need not exist yet."""
    path = repo / ".gitignore"
    lines = path.read_text().splitlines() if path.exists() else []
    return [p.strip().rstrip("/") for p in lines if p.strip() and not p.startswith(("#", "!", "/"))]


def _check_paths(words: list[str], repo: Path) -> list[str]:
    """Words that name a file in the repository (or ../shared) that does not exist."""
    problems = []
    ignored = _ignored_patterns(repo)
    shared = (repo / ".." / "shared").exists()
    for word in words:
        for value in (word, word.split("=", 1)[-1]) if word.startswith("-") else (word,):
            value = value.split("::")[0].rstrip("/")
            if not value or any(ch in value for ch in "*?[$"):
                continue
            first = value.split("/")[0]
            if any(
                fnmatch.fnmatch(part, pattern) for part in value.split("/") for pattern in ignored
            ):
                continue  # an output (the label store, a run folder)
            if (first in REPO_FOLDERS and "/" in value) or (
                first == ".." and value.startswith("../shared/") and shared
            ):
                if not (repo / value).exists():
                    problems.append(f"names {value}, which does not exist")
    return problems


def _check_python(args: list[str], repo: Path) -> list[str]:
    while args and args[0].startswith("-") and args[0] not in ("-m", "-c"):
        args = args[1:]  # -u, -X ..., -O
    if not args or args[0] == "-c":
        return []
    if args[0] != "-m":
        return [] if (repo / args[0]).exists() else [f"runs {args[0]}, which does not exist"]
    module, rest = args[1], args[2:]
    if module == "box2mask":
        problem = _parse_box2mask(rest)
        return [problem] if problem else []
    if module == "pytest":
        return []  # its file arguments are checked as paths
    if (
        importlib.util.find_spec(module.split(".")[0]) is None
        or importlib.util.find_spec(module) is None
    ):
        return [f"runs module {module}, which does not exist"]
    if module.startswith("bench."):
        problem = _parse_module_main(module, rest)
        return [problem] if problem else []
    return []


def _check_torchrun(args: list[str]) -> list[str]:
    from torch.distributed.run import get_args_parser

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            parsed = get_args_parser().parse_args(args)
    except SystemExit:
        return [f"torchrun rejects its options: {err.getvalue().strip().splitlines()[-1]}"]
    if not parsed.module or parsed.training_script != "box2mask":
        return ["torchrun runs something other than `-m box2mask`"]
    problem = _parse_box2mask(list(parsed.training_script_args))
    return [problem] if problem else []


def check_command(command: DocCommand, repo: Path = REPO) -> list[str]:
    """Problems with one documented command, each as 'FILE:LINE: `command`: problem'."""
    try:
        simple = _split(command.text)
    except ValueError as err:
        return [f"{command.where}: `{command.text}`: cannot be split into words ({err})"]
    problems = []
    for words in simple:
        words = _unwrap(words)
        if not words:
            continue
        program, args = os.path.basename(words[0]), words[1:]
        found: list[str] = []
        if "/" in words[0] and not words[0].startswith("/") and not (repo / words[0]).exists():
            if not words[0].startswith(".venv/") or (repo / ".venv").exists():
                found.append(f"program {words[0]} does not exist")
        if program == "box2mask":
            found += [p for p in [_parse_box2mask(args)] if p]
        elif program.startswith("python"):
            found += _check_python(args, repo)
        elif program == "torchrun":
            found += _check_torchrun(args)
        elif program in ("bash", "sh"):
            script = next((a for a in args if not a.startswith("-")), None)
            if script and not (repo / script).exists():
                found.append(f"runs {script}, which does not exist")
        elif program not in PLAIN_PROGRAMS:
            found.append(
                f"unknown program {program!r} (tests/doc_commands.py checks {sorted(CHECKED_PROGRAMS)})"
            )
        found += _check_paths(args, repo)
        problems += [f"{command.where}: `{' '.join(words)}`: {p}" for p in found]
    return problems


def main() -> int:
    """List every documented command, whether it is run or only parsed, and any problem."""
    commands = all_commands()
    bad = 0
    for command in commands:
        problems = check_command(command)
        bad += bool(problems)
        print(f"{command.where:32} {'run  ' if command.run else 'parse'} {command.text}")
        for problem in problems:
            print(f"    PROBLEM {problem}")
    print(f"{len(commands)} commands, {sum(c.run for c in commands)} run, {bad} with problems")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
