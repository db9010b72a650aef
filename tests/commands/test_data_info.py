"""`stfn data-info`'s leak warnings: videos on both sides of a split, and groups (UCF101's ``_gNN_``:
an actor or setting) on both sides, on the real Weizmann footage and the official UCF101 lists."""

from __future__ import annotations

import json
import shutil

import pytest

from stfn.cli import main
from stfn.data.splits import group_of, load_split
from suite_helpers import DATASETS, REALDATA

WEIZMANN = REALDATA / "weizmann" / "splits"
UCF = DATASETS / "ucf101" / "ucfTrainTestlist"
needs_weizmann = pytest.mark.shared("realdata/weizmann/splits/trainlist01.txt")


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
