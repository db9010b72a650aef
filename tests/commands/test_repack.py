"""`stfn repack` and `stfn prepare --format` on the command line. The storage itself (byte-exact both
ways, resume, damaged packs): tests/data/prepare/test_packed.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dataset_helpers import write_tiny_prepared, write_tiny_splits
from stfn.cli import main

from .command_helpers import check_documented_usage, one_sentence


def test_a_user_mistake_is_one_sentence(tmp_path: Path, capsys) -> None:
    write_tiny_prepared(tmp_path / "raw")
    one_sentence(capsys, "repack", [str(tmp_path / "nowhere"), str(tmp_path / "o"), "--format", "packed"],
                 f"prepared folder '{tmp_path / 'nowhere'}' does not exist")
    one_sentence(capsys, "repack", [str(tmp_path / "raw"), str(tmp_path / "o"), "--format", "packed", "--workers", "0"],
                 "--workers must be 1 or more, got 0")
    one_sentence(capsys, "repack", [str(tmp_path / "raw"), str(tmp_path / "o"), "--format", "rawframes"],
                 f"'{tmp_path / 'raw'}' is already stored as rawframes")
    (tmp_path / "file").write_text("x")
    one_sentence(capsys, "repack", [str(tmp_path / "raw"), str(tmp_path / "file"), "--format", "packed"], "file")
    assert not (tmp_path / "o").exists()


def test_repack_both_ways_on_the_command_line(tmp_path: Path, capsys) -> None:
    write_tiny_prepared(tmp_path / "raw")
    assert main(["repack", str(tmp_path / "raw"), str(tmp_path / "p"), "--format", "packed", "--quiet"]) == 0
    assert "12 of 12 videos stored as packed" in capsys.readouterr().out
    assert json.loads((tmp_path / "p" / "manifest.json").read_text())["format"] == "packed"
    assert len(list((tmp_path / "p").rglob("*.stfnpack"))) == 12
    splits = write_tiny_splits(tmp_path / "splits")
    assert main(["data-info", "--dataset", "ucf101", "--splits", str(splits), "--root", str(tmp_path / "p")]) == 0
    text = capsys.readouterr().out
    assert "12 videos (12 ok, 0 failed), flow dis bound 20.0, stored as packed" in text
    assert "split 1 train: 8 of 8 usable" in text
    assert main(["repack", str(tmp_path / "p"), str(tmp_path / "r"), "--format", "rawframes", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "12 image files became 156" in out, out
    first = "Jump/v_Jump_g01_c01/img_00001.jpg"
    assert (tmp_path / "r" / first).read_bytes() == (tmp_path / "raw" / first).read_bytes()


@pytest.mark.parametrize("command", ["repack", "prepare"])
def test_help_lists_the_documented_flags(command: str, capsys) -> None:
    assert "--format" in check_documented_usage(command, capsys)
