"""The ``stfn`` command line as a whole: the subcommands (``COMMANDS``: every module of
src/stfn/commands/, each with its tests in tests/commands/test_<module>.py, one user mistake each at
least), their ``--help``, an unknown command, the entry point and ``--version``, and what every
command shares: error messages on one printable line, and what Ctrl-C says resumes."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from stfn.cli import COMMANDS, main
from suite_helpers import REPO


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_of_every_subcommand(command: str, capsys) -> None:
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: stfn {command}") and "-h, --help" in out


def _mistake_calls(path: Path) -> set[str]:
    """The commands whose ``one_sentence`` check a test file's ``test_a_user_mistake_is_one_sentence``
    runs (tests/commands/command_helpers.py)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.FunctionDef) and node.name == "test_a_user_mistake_is_one_sentence":
            for call in ast.walk(node):
                if (isinstance(call, ast.Call) and getattr(call.func, "id", None) == "one_sentence"
                        and len(call.args) > 1 and isinstance(call.args[1], ast.Constant)):
                    found.add(call.args[1].value)
    return found


def test_every_subcommand_has_a_tested_mistake() -> None:
    """Every module of src/stfn/commands/ is a subcommand, and has its test file in tests/commands/
    whose ``test_a_user_mistake_is_one_sentence`` makes one user mistake of it (exit status 2, one
    sentence naming the file or key, no traceback)."""
    modules = {p.stem for p in (REPO / "src" / "stfn" / "commands").glob("*.py")} - {"__init__"}
    assert {m.rsplit(".", 1)[1] for m in COMMANDS.values()} == modules
    for command, module in COMMANDS.items():
        path = REPO / "tests" / "commands" / f"test_{module.rsplit('.', 1)[1]}.py"
        assert path.is_file(), f"`stfn {command}` has no test file {path.relative_to(REPO)}"
        assert command in _mistake_calls(path), f"{path.relative_to(REPO)} makes no mistake of `stfn {command}`"


def test_an_unknown_command_names_the_commands(capsys) -> None:
    with pytest.raises(SystemExit) as done:
        main(["trian", "--config", "c.yaml"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "stfn: error: argument COMMAND: invalid choice: 'trian'" in err and "'train'" in err, err


@pytest.mark.e2e
def test_the_installed_entry_point_runs() -> None:
    done = subprocess.run([sys.executable, "-m", "stfn", "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("stfn ")
    bare = subprocess.run([sys.executable, "-m", "stfn"], capture_output=True, text=True, timeout=120)
    assert bare.returncode == 2 and "COMMAND" in bare.stdout


def test_error_messages_are_one_printable_line(tmp_path: Path, capsys) -> None:
    """Issue 17 item 8: a terminal escape code in a path (or a library's message) is printed escaped,
    never raw; a random file renamed .pt is named as not a checkpoint."""
    odd = tmp_path / "red\x1b[31mname.pt"
    odd.write_bytes(bytes(range(1, 128)) * 8)
    assert main(["eval", str(odd)]) == 2
    err = capsys.readouterr().err
    assert "\x1b" not in err and "red\\x1b[31mname.pt" in err and "is not a PyTorch checkpoint" in err, err


def test_after_ctrl_c_each_command_says_what_resumes(tmp_path: Path, capsys, monkeypatch) -> None:
    """Issue 17 item 10: train said "run the same command again", which refuses without --resume; it now
    prints the command that resumes. prepare resumes by itself; eval has nothing to resume."""
    import stfn.commands.evaluate
    import stfn.commands.prepare
    import stfn.commands.train

    def interrupt(args):
        raise KeyboardInterrupt

    for module in (stfn.commands.train, stfn.commands.prepare, stfn.commands.evaluate):
        monkeypatch.setattr(module, "run", interrupt)
    run = tmp_path / "my run"
    expected = {
        ("train", "--config", "c.yaml", "--out", str(run)): f"to resume, run: stfn train --config c.yaml --out '{run}' --resume",
        ("train", "--out", str(run), "--resume"): f"to resume, run: stfn train --out '{run}' --resume",
        ("prepare", "videos", "out"): "to resume, run: stfn prepare videos out",
        ("eval", "best.pt"): "stfn eval: interrupted.",
    }
    for argv, message in expected.items():
        assert main(list(argv)) == 130
        assert capsys.readouterr().err.strip().endswith(message)
