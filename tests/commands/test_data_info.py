"""`stfn data-info` on the command line: its report of a prepared folder (exit status 1 when a listed
video is not usable), and its leak warnings: videos on both sides of a split, and groups (UCF101's
``_gNN_``: an actor or setting) on both sides, on the real Weizmann footage and the official UCF101
lists. The split readers: tests/data/test_splits.py; data-info on the official UCF101 and HMDB51
lists, and on a prepared UCF101 tree with a failed video: tests/data/test_datasets.py (both read
../shared)."""

from __future__ import annotations

import json
import shutil

import pytest

from dataset_helpers import video_key, write_tiny_prepared, write_tiny_splits
from stfn.cli import main
from stfn.data.splits import group_of, load_split
from suite_helpers import DATASETS, REALDATA

from .command_helpers import check_documented_usage, one_sentence

WEIZMANN = REALDATA / "weizmann" / "splits"
UCF = DATASETS / "ucf101" / "ucfTrainTestlist"
needs_weizmann = pytest.mark.shared("realdata/weizmann/splits/trainlist01.txt")


def test_a_user_mistake_is_one_sentence(tmp_path, capsys) -> None:
    missing = str(tmp_path / "missing")
    one_sentence(capsys, "data-info", ["--dataset", "ucf101", "--splits", missing, "--root", str(tmp_path)],
                 f"split folder '{missing}' does not exist")


def test_a_listed_video_that_is_not_prepared_is_named_and_exit_status_1(tmp_path, capsys) -> None:
    root = write_tiny_prepared(tmp_path / "prepared")
    args = ["data-info", "--dataset", "ucf101", "--splits", str(write_tiny_splits(tmp_path / "splits")),
            "--root", str(root)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert text.startswith("dataset ucf101: 2 classes (Jump, Wave)")
    assert f"prepared folder {root}: 12 videos (12 ok, 0 failed), flow dis bound 20.0, stored as rawframes" in text
    assert [line.split()[:3] for line in text.splitlines() if line[:5].strip().isdigit()] == [
        ["1", "8", "4"], ["2", "8", "4"], ["3", "8", "4"]]  # every split found: split, train, test
    manifest = json.loads((root / "manifest.json").read_text())
    gone = video_key("Wave", 1, 2)  # group 1: tested in split 1, trained on in splits 2 and 3
    del manifest["videos"][gone]
    (root / "manifest.json").write_text(json.dumps(manifest))
    assert main(args) == 1
    text = capsys.readouterr().out
    assert f"split 1 test: 3 of 4 usable; 1 missing: {gone}" in text and "split 1 train: 8 of 8 usable" in text
    assert f"split 3 train: 7 of 8 usable; 1 missing: {gone}" in text
    assert main([*args, "--split", "2", "--json"]) == 1
    (entry,) = json.loads(capsys.readouterr().out)["splits"]
    assert entry["prepared"]["train"] == {"listed": 8, "usable": 7, "missing": [gone], "failed": []}


def test_help_lists_the_documented_flags(capsys) -> None:
    assert "exit status 1 if any are" in " ".join(check_documented_usage("data-info", capsys).split())


def test_group_of_reads_ucf101_names() -> None:
    assert group_of("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01") == "g08"
    assert group_of("Bend/v_Bend_g7_c02") == "g07"
    assert group_of("brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0") is None  # HMDB51: no groups


@needs_weizmann
def test_actor_split_is_clean_and_a_shared_actor_is_a_warning(tmp_path, capsys) -> None:
    assert main(["data-info", "--dataset", "ucf101", "--splits", str(WEIZMANN), "--json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)["splits"]
    assert entry["shared_groups"] == [] and entry["overlap"] == []
    bad = tmp_path / "splits"
    shutil.copytree(WEIZMANN, bad)
    test = (bad / "testlist01.txt").read_text().splitlines()
    moved = next(x for x in test if "_g07_c01" in x)  # actor 7's clip to training, its mirror stays in test
    (bad / "testlist01.txt").write_text("".join(x + "\r\n" for x in test if x != moved))
    label = load_split("ucf101", WEIZMANN).classes.index(moved.split("/")[0]) + 1
    with (bad / "trainlist01.txt").open("a") as f:
        f.write(f"{moved} {label}\r\n")
    assert main(["data-info", "--dataset", "ucf101", "--splits", str(bad)]) == 0
    text = capsys.readouterr().out
    key = moved.rsplit(".", 1)[0]
    assert (f"warning: 1 group(s) of the names' _gNN_ (an actor or setting, UCF101's convention) have videos on "
            f"both sides, so the test set is not leave-groups-out: g07 (e.g. train '{key}', test "
            "'Bend/v_Bend_g07_c01')") in text  # actor 7's other test clips: the first in order


@needs_weizmann
def test_videos_on_both_sides_are_a_warning_that_names_the_refusal(tmp_path, capsys) -> None:
    bad = tmp_path / "splits"
    shutil.copytree(WEIZMANN, bad)
    first = (bad / "testlist01.txt").read_text().splitlines()[0]
    label = load_split("ucf101", WEIZMANN).classes.index(first.split("/")[0]) + 1
    with (bad / "trainlist01.txt").open("a") as f:
        f.write(f"{first} {label}\r\n")
    assert main(["data-info", "--dataset", "ucf101", "--splits", str(bad)]) == 0
    text = capsys.readouterr().out
    assert "warning: 1 videos are on both sides (`stfn train` refuses this split)" in text
    assert "group(s)" in text  # the same clip's group is on both sides too


@pytest.mark.shared("datasets/ucf101/ucfTrainTestlist/trainlist01.txt")
def test_official_ucf101_splits_keep_each_group_on_one_side() -> None:
    for n in (1, 2, 3):
        assert load_split("ucf101", UCF, n).shared_groups() == []
