"""`stfn prepare` on the command line: the options are checked, and a mistake is one sentence, before
any output. Preparing itself (frames, flow, manifest, resume, a full disk through `stfn prepare`):
tests/data/prepare/test_prepare.py; its worker pool and `kill -9` then resume (a subprocess of
`stfn prepare`): tests/data/prepare/test_pool.py."""

from __future__ import annotations

import pytest

from stfn.cli import main

from .command_helpers import check_documented_usage, one_sentence


def test_a_user_mistake_is_one_sentence(tmp_path, capsys) -> None:
    missing = str(tmp_path / "missing")
    one_sentence(capsys, "prepare", [missing, str(tmp_path / "out")], f"video root '{missing}' does not exist")


def test_out_of_range_values_are_refused_not_clamped(tmp_path, capsys) -> None:
    """``--workers -1`` and ``--jpeg-quality 500`` used to be replaced by a default or clamped without a
    word; each is one sentence naming the option, before any output."""
    one_sentence(capsys, "prepare", [str(tmp_path), str(tmp_path / "p1"), "--workers", "-1"], "--workers must be 0")
    one_sentence(capsys, "prepare", [str(tmp_path), str(tmp_path / "p2"), "--jpeg-quality", "500"],
                 "--jpeg-quality must be from 1 to 100")
    assert not (tmp_path / "p1").exists() and not (tmp_path / "p2").exists()


@pytest.mark.parametrize(("args", "expected"), [
    (["--size", "340"], "argument --size: size '340' must look like WxH, e.g. 340x256"),
    (["--size", "0x256"], "argument --size: size '0x256' must be positive"),
    (["--short-side", "0"], "argument --short-side: '0' must be a positive integer"),
    (["--raft-iters", "-3"], "argument --raft-iters: '-3' must be a positive integer"),
    (["--short-side", "abc"], "argument --short-side: 'abc' is not a whole number"),
    (["--batch-size", "1.5"], "argument --batch-size: '1.5' is not a whole number"),
    (["--size", "340x256", "--short-side", "256"], "argument --short-side: not allowed with argument --size"),
])
def test_bad_sizes_are_refused_by_the_parser(args, expected, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as done:
        main(["prepare", str(tmp_path), str(tmp_path / "out"), *args])
    assert done.value.code == 2
    assert capsys.readouterr().err.strip().endswith(f"stfn prepare: error: {expected}")
    assert not (tmp_path / "out").exists()


def test_help_lists_the_documented_flags(capsys) -> None:
    text = check_documented_usage("prepare", capsys)
    assert all(algo in text for algo in ("dis", "tvl1", "raft", "none"))  # the --flow choices
