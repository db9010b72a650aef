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


def test_a_folder_given_as_checkpoint_is_one_sentence(tmp_path, tiny_checkpoint, capsys) -> None:
    one_sentence(capsys, "serve", [str(tiny_checkpoint), str(tmp_path)], f"checkpoint '{tmp_path}' is not a file")


def test_help_lists_the_documented_flags(capsys) -> None:
    text = check_documented_usage("serve", capsys)
    assert "default 127.0.0.1" in text and "(default 8000)" in text
