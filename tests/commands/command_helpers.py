"""Helpers of the subcommand tests: the one-sentence check of a user mistake, and the flags and
examples the documentation (README.md, the command module's docstring) gives for a subcommand."""

from __future__ import annotations

import importlib
import re
import shlex

import pytest

from stfn.cli import COMMANDS, build_parser, main
from suite_helpers import REPO

FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
PLACEHOLDERS = ("[", "|", "...", "$", "<")  # a usage line, not a command one can type


def one_sentence(capsys: pytest.CaptureFixture[str], command: str, args: list[str], expected: str) -> str:
    """Run ``stfn COMMAND ARGS``: exit status 2 and one line on stderr, ``stfn COMMAND: error: ...``
    holding ``expected``, no traceback. Returns that line."""
    assert main([command, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"stfn {command}: error: ") and expected in err, err
    assert "\n" not in err and "Traceback" not in err, err
    return err


def help_text(command: str, capsys: pytest.CaptureFixture[str]) -> str:
    """``stfn COMMAND --help`` as printed (exit status 0)."""
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


def readme_commands(command: str) -> tuple[list[str], list[str]]:
    """``stfn COMMAND ...`` in README.md: the command lines of its code blocks (continuation lines,
    after a backslash or indented deeper, joined; ``# comments`` dropped), and its inline mentions."""
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    start = re.compile(rf"stfn {re.escape(command)}(?= |$)")
    blocks, mentions = [], []
    for i, line in enumerate(lines):
        mentions += re.findall(rf"`(stfn {re.escape(command)}(?: [^`]*)?)`", line)
        if not start.match(line.strip()):
            continue
        indent = len(line) - len(line.lstrip())
        parts = [line.strip()]
        for nxt in lines[i + 1:]:
            joined = parts[-1].split("  #")[0].rstrip().endswith("\\")
            deeper = nxt.strip() and len(nxt) - len(nxt.lstrip()) > indent and not nxt.strip().startswith("stfn ")
            if not (joined or deeper):
                break
            parts.append(nxt.strip())
        blocks.append(" ".join(p.split("  #")[0].strip().removesuffix("\\").strip() for p in parts))
    return blocks, mentions


def check_documented_usage(command: str, capsys: pytest.CaptureFixture[str]) -> str:
    """Every flag that README.md or the command module's docstring gives for ``stfn COMMAND`` is in
    its ``--help``, and every complete README command line of it parses. Returns the help text."""
    blocks, mentions = readme_commands(command)
    doc = importlib.import_module(COMMANDS[command]).__doc__ or ""
    usage = re.findall(rf"``(stfn {re.escape(command)}[^`]*)``", doc)
    documented = {flag for text in blocks + mentions + usage for flag in FLAG.findall(text)}
    assert documented, f"neither README.md nor {COMMANDS[command]}'s docstring names a flag of `stfn {command}`"
    text = help_text(command, capsys)
    assert documented <= set(FLAG.findall(text)), f"documented but not in --help: {documented - set(FLAG.findall(text))}"
    parser = build_parser()
    for line in blocks:
        if any(p in line for p in PLACEHOLDERS):
            continue
        try:
            parser.parse_args(shlex.split(line)[1:])
        except SystemExit:
            pytest.fail(f"README.md's `{line}` does not parse: {capsys.readouterr().err.strip()}")
    return text
