"""`stfn serve` on the command line, without the serve extra: a checkpoint that is not there is one
sentence before anything is imported or started. With the extra (tests/serve/ is skipped without it):
its other flags and a port in use, tests/serve/test_command.py; the server run by `stfn serve` (a
subprocess) and its backends: tests/serve/test_backend.py, tests/serve/test_browser.py; the API:
tests/serve/test_app.py."""

from __future__ import annotations

from .command_helpers import check_documented_usage, one_sentence


def test_a_user_mistake_is_one_sentence(tmp_path, capsys) -> None:
    missing = str(tmp_path / "missing.pt")
    one_sentence(capsys, "serve", [missing], f"checkpoint '{missing}' does not exist")


def test_a_missing_second_checkpoint_is_one_sentence(tmp_path, tiny_checkpoint, capsys) -> None:
    """Every CHECKPOINT is checked before anything starts (a folder is a Hub model folder, an ORG/NAME a
    Hub repo id: both are read when the models load, tests/engine/test_hub.py)."""
    missing = str(tmp_path / "runs" / "best.pt")
    one_sentence(capsys, "serve", [str(tiny_checkpoint), missing], f"checkpoint '{missing}' does not exist")


def test_help_lists_the_documented_flags(capsys) -> None:
    text = check_documented_usage("serve", capsys)
    assert "default 127.0.0.1" in text and "(default 8000)" in text
