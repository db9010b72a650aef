"""`stfn extract-features` on the command line: what it is given is checked before any extraction.
Extraction itself: tests/engine/test_features.py; through `stfn extract-features` in the real chain:
tests/engine/test_commands.py; from a checkpoint whose data has moved:
tests/engine/test_data_identity.py; --compile: tests/engine/test_compile_defaults.py."""

from __future__ import annotations

from .command_helpers import check_documented_usage, one_sentence


def test_a_user_mistake_is_one_sentence(tmp_path, capsys) -> None:
    missing = str(tmp_path / "missing.pt")
    one_sentence(capsys, "extract-features", [missing, "--out", str(tmp_path / "f")],
                 f"checkpoint '{missing}' does not exist")


def test_a_missing_config_and_set_with_a_checkpoint(tmp_path, capsys) -> None:
    missing = str(tmp_path / "missing.yaml")
    one_sentence(capsys, "extract-features", [missing, "--out", str(tmp_path / "f")],
                 f"config file '{missing}' does not exist")
    one_sentence(capsys, "extract-features", [str(tmp_path / "x.pt"), "--out", str(tmp_path / "f"), "--set",
                                              "data.frames=4"], "--set only applies to a YAML config")
    assert not (tmp_path / "f").exists()


def test_an_output_under_a_file_names_the_file(tiny_checkpoint, a_file, capsys) -> None:
    """Issue 17 item 5: an output path below an existing file ended in "File exists: 'a_file'"; it says
    which file stands where a folder is needed."""
    out = a_file / "sub" / "feats"
    err = one_sentence(capsys, "extract-features", [str(tiny_checkpoint), "--out", str(out)], "")
    assert err.endswith(f"error: '{a_file}' is a file, not a folder (needed for '{out}')"), err


def test_help_lists_the_documented_flags(capsys) -> None:
    assert "CHECKPOINT_OR_CONFIG" in check_documented_usage("extract-features", capsys)
