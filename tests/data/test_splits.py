"""Split-list parsers: the official UCF101 / HMDB51 files, MMAction2 lists, folder trees, malformed input."""

from __future__ import annotations

import json
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stfn.data.split_files import (
    SplitError,
    parse_class_ind,
    parse_hmdb51,
    parse_mmaction_list,
    parse_ucf101_list,
)
from stfn.data.splits import available_splits, load_split
from stfn.errors import StfnError
from suite_helpers import DATASETS

UCF = DATASETS / "ucf101" / "ucfTrainTestlist"
HMDB = DATASETS / "hmdb51" / "testTrainMulti_7030_splits"
needs_shared = pytest.mark.shared("datasets/ucf101/ucfTrainTestlist", "datasets/hmdb51/testTrainMulti_7030_splits")

UCF_COUNTS = {1: (9537, 3783), 2: (9586, 3734), 3: (9624, 3696)}


# --- the official files -----------------------------------------------------------------------------


@needs_shared
@pytest.mark.parametrize("split", [1, 2, 3])
def test_ucf101_official_counts_labels_and_no_overlap(split):
    s = load_split("ucf101", UCF, split)
    assert len(s.classes) == 101
    assert s.classes[0] == "ApplyEyeMakeup" and s.classes[-1] == "YoYo"
    assert (len(s.train), len(s.test)) == UCF_COUNTS[split]
    assert len(s.train) + len(s.test) == 13320
    assert s.overlap() == []
    assert not {r.key for r in s.train} & {r.key for r in s.test}
    # 0-based labels map back to the class folder of every video, on both sides
    for rec in s.train + s.test:
        assert 0 <= rec.label < 101
        assert s.classes[rec.label] == rec.key.split("/")[0]
    assert {r.label for r in s.train} == set(range(101)) == {r.label for r in s.test}


@needs_shared
def test_ucf101_keys_are_canonical_and_match_the_file_labels():
    s = load_split("ucf101", UCF, 1)
    first = s.train[0]
    assert first.key == "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01" and first.label == 0
    lines = (UCF / "trainlist01.txt").read_bytes().decode().splitlines()
    # label in the file is 1-based: "path 37" -> 36 in memory, and the CRLF is gone from the key
    path, label = lines[5000].split()
    rec = s.train[5000]
    assert rec.key == path[: -len(".avi")] and rec.label == int(label) - 1
    assert all("\r" not in r.key and not r.key.endswith(".avi") for r in s.train + s.test)
    hs = [r for r in s.train if r.key.startswith("HandstandPushups/")][0]
    assert s.classes[hs.label] == "HandstandPushups" and "v_HandStandPushups" in hs.key


@needs_shared
@pytest.mark.parametrize("split", [1, 2, 3])
def test_hmdb51_official_70_train_30_test_per_class(split):
    s = load_split("hmdb51", HMDB, split)
    assert len(s.classes) == 51 and s.classes == sorted(s.classes)
    assert "brush_hair" in s.classes and "climb_stairs" in s.classes and "climb" in s.classes
    assert (len(s.train), len(s.test)) == (70 * 51, 30 * 51)
    for label in range(51):
        assert sum(r.label == label for r in s.train) == 70
        assert sum(r.label == label for r in s.test) == 30
    assert s.overlap() == []
    for rec in s.train + s.test:
        cls, name = rec.key.split("/", 1)
        assert s.classes[rec.label] == cls and not name.endswith(".avi") and not name.endswith(" ")
    # the same video is in the same class in every split
    other = load_split("hmdb51", HMDB, 1 + split % 3)
    labels = {r.key: r.label for r in other.train + other.test}
    assert all(labels.get(r.key, r.label) == r.label for r in s.train + s.test)


@needs_shared
def test_hmdb51_class_from_file_name_and_tags():
    classes, train, test, files = parse_hmdb51(HMDB, 1)
    assert len(files) == 51
    text = (HMDB / "brush_hair_test_split1.txt").read_text().splitlines()
    tags = {line.split()[0][: -len(".avi")]: int(line.split()[1]) for line in text}
    brush = {r.key.split("/", 1)[1]: "train" for r in train if r.key.startswith("brush_hair/")}
    brush |= {r.key.split("/", 1)[1]: "test" for r in test if r.key.startswith("brush_hair/")}
    assert {k for k, t in tags.items() if t == 1} == {k for k, s in brush.items() if s == "train"}
    assert {k for k, t in tags.items() if t == 2} == {k for k, s in brush.items() if s == "test"}
    assert not any(tags[k] == 0 for k in brush)  # 0 = unused


@needs_shared
def test_available_splits_and_identity():
    assert available_splits("ucf101", UCF) == [1, 2, 3]
    assert available_splits("hmdb51", HMDB) == [1, 2, 3]
    ids = [load_split("ucf101", UCF, n).identity for n in (1, 2, 3)]
    assert ids[0] == load_split("ucf101", UCF, 1).identity  # stable
    assert ids[0]["dataset"] == "ucf101" and ids[0]["split"] == 1 and ids[0]["num_classes"] == 101
    assert len({i["train_list_sha256"] for i in ids}) == 3 and len({i["test_list_sha256"] for i in ids}) == 3
    assert ids[0]["train_list_sha256"] != ids[0]["test_list_sha256"]
    with pytest.raises(SplitError, match="split 4 does not exist.*splits there: 1, 2, 3"):
        load_split("ucf101", UCF, 4)


def test_identity_ignores_line_endings_and_order(tmp_path):
    def write(folder, eol, reverse):
        folder.mkdir()
        (folder / "classInd.txt").write_bytes(f"1 A{eol}2 B{eol}".encode())
        lines = ["A/a1.avi 1", "B/b1.avi 2", "A/a2.avi 1"]
        lines = lines[::-1] if reverse else lines
        (folder / "trainlist01.txt").write_bytes(eol.join(lines).encode() + eol.encode())
        (folder / "testlist01.txt").write_bytes(f"A/a3.avi{eol}B/b2.avi{eol}".encode())
        return load_split("ucf101", folder, 1).identity

    assert write(tmp_path / "crlf", "\r\n", False) == write(tmp_path / "lf", "\n", True)


# --- small files and errors ---------------------------------------------------------------------------


def test_ucf101_list_errors_name_file_and_line(tmp_path):
    classes = ["A", "B"]
    f = tmp_path / "trainlist01.txt"
    f.write_text("A/a1.avi 1\nB/b1.avi 1\n")
    with pytest.raises(SplitError, match=r"trainlist01.txt, line 2: label 1 is class 'A' but the video is in folder 'B'"):
        parse_ucf101_list(f, classes, labelled=True)
    f.write_text("A/a1.avi 1\n\nC/c.avi 2\n")
    with pytest.raises(SplitError, match=r"line 3: class folder 'C' is not in the class list"):
        parse_ucf101_list(f, classes, labelled=True)
    f.write_text("A/a1.avi 1\nA/a1.avi 1\n")
    with pytest.raises(SplitError, match=r"line 2: video 'A/a1' is already listed on line 1"):
        parse_ucf101_list(f, classes, labelled=True)
    f.write_text("A/a1.avi\n")
    with pytest.raises(SplitError, match=r"line 1: expected '<Class>/<video> <label from 1>'"):
        parse_ucf101_list(f, classes, labelled=True)
    f.write_bytes(b"A/a1.avi 1\n\xff\xfe\n")
    with pytest.raises(StfnError, match="not UTF-8"):
        parse_ucf101_list(f, classes, labelled=True)
    with pytest.raises(SplitError, match="does not exist"):
        parse_ucf101_list(tmp_path / "nope.txt", classes, labelled=False)


def test_class_ind_errors(tmp_path):
    f = tmp_path / "classInd.txt"
    f.write_text("1 A\n3 B\n")
    with pytest.raises(SplitError, match="1..2 without gaps"):
        parse_class_ind(f)
    f.write_text("1 A\nx B\n")
    with pytest.raises(SplitError, match=r"classInd.txt, line 2: expected '<index from 1> <class name>'"):
        parse_class_ind(f)
    f.write_text("2 B\r\n1 A\r\n")
    assert parse_class_ind(f) == ["A", "B"]


def test_mmaction_lists_both_formats(tmp_path):
    raw = tmp_path / "train_rawframes.txt"
    raw.write_text("a/v1 30 0\nb/v2/ 12 1\n\n# comment\nc/v3 7 2\n")
    recs = parse_mmaction_list(raw)
    assert [(r.key, r.frames, r.label) for r in recs] == [("a/v1", 30, 0), ("b/v2", 12, 1), ("c/v3", 7, 2)]
    vids = tmp_path / "test_videos.txt"
    vids.write_text("a/v1.mp4 0\nb/v2.avi 1\n")
    assert [(r.key, r.frames, r.label) for r in parse_mmaction_list(vids)] == [("a/v1", None, 0), ("b/v2", None, 1)]
    names = tmp_path / "classes.txt"
    names.write_text("walk\nrun\njump\n")
    s = load_split("list", train_list=str(raw), test_list=str(vids), class_names=str(names))
    assert s.classes == ["walk", "run", "jump"] and len(s.train) == 3 and len(s.test) == 2
    assert s.overlap() == ["a/v1", "b/v2"]
    s = load_split("list", train_list=str(raw))
    assert s.classes == ["0", "1", "2"] and s.test == []
    names.write_text("walk\n")
    with pytest.raises(SplitError, match="uses label 2 but .* names only 1 classes"):
        load_split("list", train_list=str(raw), class_names=str(names))
    with pytest.raises(SplitError, match="needs data.train_list"):
        load_split("list")


def test_folder_dataset_from_video_tree_and_prepared_folder(tmp_path):
    for rel in ["train/walk/a.mp4", "train/run/b.avi", "train/run/sub/c.mkv", "val/walk/d.mp4", "test/run/e.mp4"]:
        (tmp_path / "videos" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "videos" / rel).write_bytes(b"")
    (tmp_path / "videos" / "train" / "notes.txt").write_text("ignored")
    s = load_split("folder", tmp_path / "videos")
    assert s.classes == ["run", "walk"]
    assert sorted((r.key, r.label) for r in s.train) == [("train/run/b", 0), ("train/run/sub/c", 0), ("train/walk/a", 1)]
    assert sorted((r.key, r.label) for r in s.test) == [("test/run/e", 0), ("val/walk/d", 1)]
    # a prepared folder (no video files): the manifest keys
    prep = tmp_path / "prep"
    prep.mkdir()
    videos = {k: {"status": "ok", "frames": 3, "flows": 2} for k in ["train/x/v1", "test/y/v2"]}
    (prep / "manifest.json").write_text(json.dumps({"version": 1, "flow": {"algorithm": "dis", "bound": 20.0},
                                                    "resize": {"short_side": 256}, "videos": videos}))
    s = load_split("folder", prep)
    assert s.classes == ["x", "y"] and [r.key for r in s.train] == ["train/x/v1"]
    (tmp_path / "bad" / "walk").mkdir(parents=True)
    (tmp_path / "bad" / "walk" / "a.mp4").write_bytes(b"")
    with pytest.raises(SplitError, match="'walk/a' is not under train/<class>/ or test/<class>/"):
        load_split("folder", tmp_path / "bad")


def test_unknown_dataset_and_missing_splits(tmp_path):
    with pytest.raises(SplitError, match="unknown dataset 'kinetics'"):
        load_split("kinetics", tmp_path)
    with pytest.raises(SplitError, match="needs data.splits"):
        load_split("ucf101", "")
    with pytest.raises(SplitError, match="classInd.txt' does not exist"):
        load_split("synthetic", tmp_path)


# --- property tests ----------------------------------------------------------------------------------

NAME = st.text(string.ascii_letters + string.digits + "_-", min_size=1, max_size=12)


@st.composite
def ucf_lists(draw):
    classes = draw(st.lists(NAME, min_size=1, max_size=6, unique=True))
    videos = draw(st.lists(st.tuples(st.integers(0, len(classes) - 1), NAME), min_size=1, max_size=20,
                           unique_by=lambda v: (classes[v[0]], v[1])))
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    return classes, videos, eol


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=ucf_lists())
def test_property_ucf101_lists_round_trip(tmp_path, data):
    classes, videos, eol = data
    (tmp_path / "classInd.txt").write_bytes("".join(f"{i + 1} {c}{eol}" for i, c in enumerate(classes)).encode())
    (tmp_path / "trainlist01.txt").write_bytes(
        "".join(f"{classes[c]}/{n}.avi {c + 1}{eol}" for c, n in videos).encode())
    (tmp_path / "testlist01.txt").write_bytes("".join(f"{classes[c]}/{n}.avi{eol}" for c, n in videos).encode())
    s = load_split("ucf101", tmp_path, 1)
    assert s.classes == classes
    expected = [(f"{classes[c]}/{n}", c) for c, n in videos]
    assert [(r.key, r.label) for r in s.train] == expected == [(r.key, r.label) for r in s.test]


MALFORMED = st.sampled_from([
    "{path}",  # no label where one is required
    "{path} 1 2",  # too many fields
    "{path} x",  # label not a number
    "{path} -1",  # negative label
    "{path} 99999",  # label out of range
])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n_good=st.integers(0, 15), where=st.integers(0, 15), bad=MALFORMED, blank=st.booleans(),
       eol=st.sampled_from(["\n", "\r\n"]))
def test_property_malformed_ucf101_line_names_file_and_line(tmp_path, n_good, where, bad, blank, eol):
    where = min(where, n_good)
    lines = [f"A/v{i}.avi 1" for i in range(n_good)]
    lines.insert(where, bad.format(path="A/bad.avi"))
    if blank:
        lines.insert(0, "")
    f = tmp_path / "trainlist01.txt"
    f.write_bytes((eol.join(lines) + eol).encode())
    lineno = where + 1 + int(blank)
    with pytest.raises(SplitError) as err:
        parse_ucf101_list(f, ["A"], labelled=True)
    assert f"{f}, line {lineno}:" in str(err.value)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fmt=st.sampled_from(["raw", "video"]), n_good=st.integers(1, 12), where=st.integers(0, 12),
       bad=st.sampled_from(["{k}", "{k} 5 3 1", "{k} -2", "{k} a 1", "{k} 0 1", "{k} 3.5", "../{k} 1"]))
def test_property_malformed_mmaction_line_names_file_and_line(tmp_path, fmt, n_good, where, bad):
    good = [f"cls/v{i} {i + 3} {i % 4}" if fmt == "raw" else f"cls/v{i}.mp4 {i % 4}" for i in range(n_good)]
    where = min(where, n_good)
    bad_line = bad.format(k=f"cls/bad{where}")
    fields = bad_line.split()
    # skip a "bad" line that happens to be valid in this format
    valid_raw = fmt == "raw" and len(fields) == 3 and fields[1].isdigit() and int(fields[1]) >= 1 and fields[2].isdigit()
    valid_video = fmt == "video" and len(fields) == 2 and fields[1].isdigit() and not fields[0].startswith("..")
    if valid_raw or valid_video:
        return
    lines = good[:where] + [bad_line] + good[where:]
    f = tmp_path / f"{fmt}.txt"
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(SplitError) as err:
        parse_mmaction_list(f)
    assert f"{f}, line {where + 1}:" in str(err.value)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tags=st.lists(st.sampled_from(["0", "1", "2", "3", "x", "", "1 1"]), min_size=1, max_size=12))
def test_property_hmdb51_tags(tmp_path, tags):
    f = tmp_path / "wave_test_split1.txt"
    f.write_text("".join(f"clip_{i}.avi {t} \n" for i, t in enumerate(tags)))
    bad = [i for i, t in enumerate(tags) if t not in ("0", "1", "2")]
    if bad:
        with pytest.raises(SplitError) as err:
            parse_hmdb51(tmp_path, 1)
        assert f"{f}, line {bad[0] + 1}:" in str(err.value)
    else:
        classes, train, test, _ = parse_hmdb51(tmp_path, 1)
        assert classes == ["wave"]
        assert [r.key for r in train] == [f"wave/clip_{i}" for i, t in enumerate(tags) if t == "1"]
        assert [r.key for r in test] == [f"wave/clip_{i}" for i, t in enumerate(tags) if t == "2"]
