"""Every command shown in README.md and docs/*.md parses: the docs cannot drift from the CLI (issue 15 item 4).

Commands are taken from shell code blocks (```bash, ```sh, ```console or unlabelled; label output ```text, `$ ` prompts stripped,
backslash continuations joined, comments dropped) and from inline code spans that start with a command. For each:

- a console script of pyproject.toml (`rayder-*`): its subcommand (if the parser has subcommands) must exist, and
  every `--flag` used must appear in the `--help` of that (sub)command;
- `python -m <module>` / `torchrun ... -m <module>`: the module must exist; for `sweeps.demo` the flags are checked
  against its `--help` like a console script;
- `make <target> [VAR=...]`: the target must be in the Makefile; flags inside `DEMO_ARGS="..."` are checked against
  `python -m sweeps.demo --help`;
- `python benchmarks/<x>.py`: the file must exist and define every flag used.

The documents are read when the test runs, so commands added to any page later are checked too.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import re
import shlex
import sys
import tomllib
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SCRIPTS: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
SHELL_LANGS = {"", "bash", "sh", "shell", "console"}  # label program output ```text
FLAG = re.compile(r"^--[A-Za-z][\w-]*")


def _shell_lines(text: str) -> list[tuple[int, str]]:
    """(line number, command) of shell code blocks and inline code spans that start with a known command."""
    out: list[tuple[int, str]] = []
    lines = text.splitlines()
    in_block, lang, pending, start = False, "", "", 0
    for no, line in enumerate(lines, 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            in_block, lang = (not in_block), stripped[3:].strip().lower()
            pending = ""
            continue
        if in_block:
            if lang not in SHELL_LANGS:
                continue
            cmd = stripped[2:] if stripped.startswith("$ ") else stripped
            if not pending:
                start = no
            if cmd.endswith("\\"):
                pending += cmd[:-1] + " "
                continue
            cmd, pending = pending + cmd, ""
            if _program(cmd):
                out.append((start, cmd))
        else:
            for span in re.findall(r"`([^`]+)`", line):
                if _program(span) and " " in span.strip():
                    out.append((no, span))
    return out


def _program(cmd: str) -> str | None:
    words = cmd.strip().split()
    if not words:
        return None
    first = Path(words[0]).name
    if first in SCRIPTS or first == "make" or first == "torchrun":
        return first
    if first in ("python", "python3") and len(words) > 1:
        return "python"
    return None


def _tokens(cmd: str) -> list[str]:
    try:
        toks = shlex.split(cmd, comments=True)
    except ValueError:  # an unbalanced quote in prose: fall back to whitespace
        toks = cmd.split("#")[0].split()
    out = []
    for t in toks:
        t = t.strip("[]")
        if t in ("&&", ";", "||"):
            break  # only the first command of a chain is checked here
        if t and t != "|":
            out.append(t)
    return out


def _collect() -> list[tuple[str, str]]:
    items = []
    for doc in DOCS:
        for no, cmd in _shell_lines(doc.read_text()):
            items.append((f"{doc.relative_to(ROOT)}:{no}", cmd))
    return items


COMMANDS = _collect()


@lru_cache(maxsize=None)
def _help(entry: str, args: tuple[str, ...]) -> tuple[int, str]:
    """(exit code, stdout+stderr) of `<entry point>(args)`, e.g. ('sweeps.launcher:main', ('launch', '--help'))."""
    module, func = entry.split(":")
    fn = getattr(importlib.import_module(module), func)
    buf = io.StringIO()
    code = 0
    old_argv = sys.argv
    sys.argv = [module, *args]
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            try:
                rc = fn(list(args))
                code = int(rc or 0)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = old_argv
    return code, buf.getvalue()


def _check_flags(entry: str, toks: list[str], where: str) -> None:
    """`toks` = arguments after the program. Resolve the subcommand, then check every --flag against its --help."""
    code, top = _help(entry, ("--help",))
    assert code == 0, f"{where}: `{entry} --help` exited {code}:\n{top}"
    prefix: tuple[str, ...] = ()
    choices = re.search(r"\{([\w,-]+)\} \.\.\.", top)  # argparse's usage of subcommands: {a,b,c} ...
    if choices:
        subs = choices.group(1).split(",")
        positional = [t for t in toks if not t.startswith("-")]
        if positional:
            assert positional[0] in subs, f"{where}: unknown subcommand {positional[0]!r} (have {subs})"
            prefix = (positional[0],)
    code, text = _help(entry, (*prefix, "--help")) if prefix else (code, top)
    assert code == 0, f"{where}: `{' '.join(prefix)} --help` exited {code}:\n{text}"
    for t in toks:
        m = FLAG.match(t)
        if m:
            flag = m.group(0)
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text), (
                f"{where}: {flag} is not an option of `{' '.join([entry, *prefix])}`; its --help:\n{text}")


@pytest.mark.parametrize("where,cmd", COMMANDS, ids=[w for w, _ in COMMANDS])
def test_documented_command_parses(where: str, cmd: str) -> None:
    toks = _tokens(cmd)
    prog = Path(toks[0]).name
    if prog in SCRIPTS:
        _check_flags(SCRIPTS[prog], toks[1:], where)
    elif prog == "make":
        targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.MULTILINE))
        goals = [t for t in toks[1:] if "=" not in t and not t.startswith("-")]
        for goal in goals:
            assert goal in targets, f"{where}: `make {goal}`: no such Makefile target (have {sorted(targets)})"
        for t in toks[1:]:
            if t.startswith("DEMO_ARGS="):
                _check_flags("sweeps.demo:main", shlex.split(t.split("=", 1)[1]), where)
    elif prog in ("python", "python3", "torchrun"):
        if "-m" in toks:
            module = toks[toks.index("-m") + 1]
            if module in ("pytest", "pip", "venv"):
                return
            assert importlib.util.find_spec(module) is not None, f"{where}: no module {module!r}"
            if module == "sweeps.demo":
                _check_flags("sweeps.demo:main", toks[toks.index("-m") + 2:], where)
            return
        script = next((t for t in toks[1:] if t.endswith(".py")), None)
        if script is None:
            return  # `python -c ...` and the like
        path = ROOT / script
        assert path.is_file(), f"{where}: {script} does not exist"
        source = path.read_text()
        for t in toks:
            m = FLAG.match(t)
            if m:
                assert f'"{m.group(0)}"' in source or f"'{m.group(0)}'" in source, (
                    f"{where}: {script} defines no option {m.group(0)}")


def test_the_docs_show_the_card_commands() -> None:
    """The README shows the three card commands and the two setup commands; the extractor finds them."""
    readme = [cmd for where, cmd in COMMANDS if where.startswith("README.md")]
    for needed in ("rayder-sweep launch sweeps/grid.yaml", "rayder-fit --metric mse --bench re10k", "rayder-report",
                   "make demo", "make test"):
        assert any(c.strip().startswith(needed) for c in readme), needed
    assert len(COMMANDS) > 30  # every page's examples are collected


def test_checker_catches_a_wrong_flag_and_subcommand() -> None:
    """The check can fail: a flag or subcommand that does not exist is reported."""
    with pytest.raises(AssertionError, match="--no-such-flag is not an option"):
        _check_flags(SCRIPTS["rayder-sweep"], ["launch", "g.yaml", "--no-such-flag"], "x")
    with pytest.raises(AssertionError, match="unknown subcommand 'lanch'"):
        _check_flags(SCRIPTS["rayder-sweep"], ["lanch", "g.yaml"], "x")
    with pytest.raises(AssertionError, match="--bench-family is not an option"):
        _check_flags(SCRIPTS["rayder-fit"], ["--bench-family", "re10k"], "x")
