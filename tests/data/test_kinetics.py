"""The Kinetics CSV reader (stfn.data.kinetics) and its split (load_split('kinetics400', ...)): the real
column names, quoted labels with commas and quotes, the is_cc column, an unlabelled test.csv, BOM and
CRLF, and clips matched by name in any folder layout; malformed files refused in one sentence naming
the file and line. The end-to-end run on real clips: tests/commands/test_annotation_datasets.py."""

from __future__ import annotations

import pytest

from stfn.data.clip_lists import listed_videos
from stfn.data.kinetics import clip_name, read_kinetics_csv
from stfn.data.split_files import SplitError
from stfn.data.splits import check_prepared, load_split

HEADER = "label,youtube_id,time_start,time_end,split"


def write(path, *lines: str, newline: str = "\n", bom: bool = False) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + newline.join(lines).encode("utf-8") + newline.encode())
    return str(path)


def kinetics_folder(tmp_path):
    folder = tmp_path / "kinetics400"
    write(folder / "train.csv", HEADER + ",is_cc",
          "abseiling,--07WQ2iBlw,1,11,train,0",
          '"passing American football (in game)",a1b2c3d4e5f,14,24,train,1',
          '"say ""cheese"", please",q_w-e_r-t_y,0,10,train,0',
          "air drumming,zzzzzzzzzzz,300,310,train,0", newline="\r\n", bom=True)
    write(folder / "validate.csv", HEADER,
          "abseiling,VALIDATION1,5,15,val",
          "air drumming,VALIDATION2,30.0,40.0,val")
    write(folder / "test.csv", "youtube_id,time_start,time_end,split", "TESTCLIP001,0,10,test")
    return folder


def test_the_official_columns_parse_to_the_right_classes(tmp_path) -> None:
    split = load_split("kinetics400", kinetics_folder(tmp_path))
    assert split.classes == ["abseiling", "air drumming", "passing American football (in game)",
                             'say "cheese", please']
    assert [(r.key, split.classes[r.label]) for r in split.train] == [
        ("--07WQ2iBlw_000001_000011", "abseiling"),
        ("a1b2c3d4e5f_000014_000024", "passing American football (in game)"),
        ("q_w-e_r-t_y_000000_000010", 'say "cheese", please'),
        ("zzzzzzzzzzz_000300_000310", "air drumming")]
    assert [r.key for r in split.test] == ["VALIDATION1_000005_000015", "VALIDATION2_000030_000040"]
    assert all(r.by_name for r in split.train + split.test)
    assert split.sources["test"][0].endswith("validate.csv") and split.split == 1


def test_an_unlabelled_test_csv_and_the_clip_names(tmp_path) -> None:
    folder = kinetics_folder(tmp_path)
    assert read_kinetics_csv(folder / "test.csv", labelled=None)[0].label is None
    assert read_kinetics_csv(folder / "test.csv", labelled=None)[0].name == "TESTCLIP001_000000_000010"
    assert clip_name("abc", 7, 17) == "abc_000007_000017"
    with pytest.raises(SplitError, match=r"test.csv, line 1: the header has no column 'label'"):
        read_kinetics_csv(folder / "test.csv", labelled=True)


@pytest.mark.parametrize(("lines", "expected"), [
    (["label,youtube_id,time_start,split", "a,b,1,train"], r"train.csv, line 1: the header has no column 'time_end'"),
    ([HEADER, "passing American football, in game,abc,1,11,train"],
     r"train.csv, line 2: expected 5 fields as the header has, got 6 \(a label with a comma must be in double quotes\)"),
    ([HEADER, "abseiling,abc,one,11,train"], r"train.csv, line 2: column 'time_start' must be a time in seconds"),
    ([HEADER, "abseiling,abc,1,11,train", "", "air drumming,abc,1,11,train"],
     r"train.csv, line 4: clip 'abc_000001_000011' is already listed on line 2 with label 'abseiling'"),
    ([HEADER, ",abc,1,11,train"], r"train.csv, line 2: column 'label' is empty"),
    ([], r"'.*train.csv' is empty"),
])
def test_a_malformed_csv_is_one_sentence_naming_the_file_and_line(tmp_path, lines, expected) -> None:
    write(tmp_path / "k" / "train.csv", *lines)
    write(tmp_path / "k" / "validate.csv", HEADER)
    with pytest.raises(SplitError, match=expected) as raised:
        load_split("kinetics700", tmp_path / "k")
    assert "\n" not in str(raised.value) and str(tmp_path / "k" / "train.csv") in str(raised.value)


def test_missing_files_and_splits_are_named(tmp_path) -> None:
    with pytest.raises(SplitError, match="Kinetics annotation folder '.*nowhere' does not exist"):
        load_split("kinetics600", tmp_path / "nowhere")
    write(tmp_path / "k" / "train.csv", HEADER, "a,b,1,2,train")
    with pytest.raises(SplitError, match=r"has no validation file \(validate.csv or val.csv\)"):
        load_split("kinetics600", tmp_path / "k")
    write(tmp_path / "k" / "val.csv", HEADER, "a,c,1,2,val")  # the other spelling counts
    assert [r.key for r in load_split("kinetics600", tmp_path / "k").test] == ["c_000001_000002"]
    with pytest.raises(SplitError, match="has one split .* got split 2"):
        load_split("kinetics600", tmp_path / "k", 2)
    (tmp_path / "bad.csv").write_bytes(b"label\xff\n")
    with pytest.raises(SplitError, match="is not UTF-8 text"):
        read_kinetics_csv(tmp_path / "bad.csv")


@pytest.mark.parametrize("layout", ["{label}/{name}", "{underscored}/{name}", "{name}", "train/{name}"])
def test_clips_are_found_by_name_in_any_layout_and_missing_ones_counted(tmp_path, layout) -> None:
    split = load_split("kinetics400", kinetics_folder(tmp_path))
    present = split.train[1:]  # the first clip is gone from YouTube
    keys = {layout.format(label=split.classes[r.label], underscored=split.classes[r.label].replace(" ", "_"),
                          name=r.key): {"status": "ok", "frames": 10} for r in present}
    usable, missing, failed = check_prepared(split.train, keys)
    assert missing == [split.train[0].key] and failed == []
    assert sorted(r.key for r in usable) == sorted(keys)  # the manifest's own keys, to read the frames from
    assert [r.label for r in usable] == [r.label for r in present]


def test_a_clip_prepared_twice_is_refused_and_a_failed_one_named_by_its_key(tmp_path) -> None:
    split = load_split("kinetics400", kinetics_folder(tmp_path))
    name = split.train[0].key
    with pytest.raises(SplitError, match=f"video '{name}' is in the prepared folder twice, as 'a/{name}' and 'b/{name}'"):
        check_prepared(split.train, {f"a/{name}": {"frames": 1}, f"b/{name}": {"frames": 1}})
    assert check_prepared(split.train[:1], {f"x/{name}": {"status": "failed"}}) == ([], [], [f"x/{name}"])


def test_the_video_list_of_a_csv_holds_the_clips_that_are_there(tmp_path) -> None:
    folder = kinetics_folder(tmp_path)
    videos = tmp_path / "videos"
    for rel in ("abseiling/--07WQ2iBlw_000001_000011.mp4", "air_drumming/zzzzzzzzzzz_000300_000310.mkv",
                "unrelated/other_000001_000002.mp4"):
        (videos / rel).parent.mkdir(parents=True, exist_ok=True)
        (videos / rel).write_bytes(b"")
    found, missing = listed_videos(videos, folder / "train.csv")
    assert found == ["abseiling/--07WQ2iBlw_000001_000011.mp4", "air_drumming/zzzzzzzzzzz_000300_000310.mkv"]
    assert missing == ["a1b2c3d4e5f_000014_000024", "q_w-e_r-t_y_000000_000010"]
