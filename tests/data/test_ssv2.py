"""The Something-Something v2 reader (stfn.data.ssv2) and its split (load_split('ssv2', ...)): classes
from the template without brackets, an unlabelled test file, both file spellings; malformed files
refused in one sentence naming the file and entry; and the flip protocol: ssv2 trains without
horizontal flips (TSM's way) and refuses the 10 test views, which hold mirrored crops. The end-to-end
run on real clips: tests/commands/test_annotation_datasets.py."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from stfn.config import ConfigError, DataConfig
from stfn.data.clip_lists import listed_videos
from stfn.data.split_files import SplitError
from stfn.data.splits import check_prepared, load_split
from stfn.data.ssv2 import mirror_pairs, read_videos, template_class
from stfn.data.transforms import build_transform

LABELS = {"Pushing something from left to right": "0", "Pushing something from right to left": "1",
          "Holding something next to something": "2", "Turning the camera left while filming something": "3",
          "Turning the camera right while filming something": "4", "Tearing something into two pieces": "5"}


def entry(vid, template: str, label: str = "") -> dict:
    return {"id": vid, "label": label or template.replace("[something]", "a cup"), "template": template,
            "placeholders": ["a cup"] * template.count("[")}


def write_json(path, data, bom: bool = False) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + json.dumps(data, indent=1).encode("utf-8"))
    return str(path)


def ssv2_folder(tmp_path, prefix: str = "something-something-v2-"):
    folder = tmp_path / "ssv2"
    write_json(folder / f"{prefix}labels.json", LABELS)
    write_json(folder / f"{prefix}train.json", [
        entry("78687", "Holding [something] next to [something]", "holding potato next to vicks vaporub bottle"),
        entry("42326", "Pushing [something] from left to right"),
        entry(1000, "Pushing [something] from right to left")], bom=True)
    write_json(folder / f"{prefix}validation.json", [entry("74225", "Tearing [something] into two pieces")])
    write_json(folder / f"{prefix}test.json", [{"id": "1420"}, {"id": "99"}])
    return folder


@pytest.mark.parametrize("prefix", ["something-something-v2-", ""])
def test_the_class_is_the_template_without_brackets(tmp_path, prefix) -> None:
    split = load_split("ssv2", ssv2_folder(tmp_path, prefix))
    assert split.classes == list(LABELS)  # by the labels file's indices
    assert [(r.key, split.classes[r.label]) for r in split.train] == [
        ("78687", "Holding something next to something"), ("42326", "Pushing something from left to right"),
        ("1000", "Pushing something from right to left")]
    assert [(r.key, r.label) for r in split.test] == [("74225", 5)]
    assert template_class("Putting [something] into [something]") == "Putting something into something"


def test_the_test_file_has_no_labels(tmp_path) -> None:
    folder = ssv2_folder(tmp_path)
    records = read_videos(folder / "something-something-v2-test.json", None)
    assert [(r.key, r.label, r.by_name) for r in records] == [("1420", -1, True), ("99", -1, True)]


@pytest.mark.parametrize(("name", "data", "expected"), [
    ("train", {"id": "1"}, r"train.json' must be a JSON list of videos, got dict"),
    ("train", [entry("1", "Pushing [something] from left to right"), {"label": "x"}],
     r"train.json, entry 2: expected an object with an 'id'"),
    ("train", [entry("1", "Dropping [something]")],
     r"train.json, entry 1: template 'Dropping \[something\]' of video '1' is not a class of '.*labels.json'"),
    ("validation", [{"id": "5", "label": "x"}], r"validation.json, entry 1: video '5' has no 'template'"),
    ("validation", [entry("5", "Tearing [something] into two pieces")] * 2,
     r"validation.json, entry 2: video '5' is already listed as entry 1"),
    ("labels", ["Pushing something"], r"labels.json' must be a JSON object of class name -> index, got list"),
    ("labels", {"a": "0", "b": "2"}, r"labels.json' must number its classes 0..1 without gaps"),
])
def test_a_malformed_file_is_one_sentence_naming_the_file_and_entry(tmp_path, name, data, expected) -> None:
    folder = ssv2_folder(tmp_path)
    write_json(folder / f"something-something-v2-{name}.json", data)
    with pytest.raises(SplitError, match=expected) as raised:
        load_split("ssv2", folder)
    assert "\n" not in str(raised.value) and str(folder / f"something-something-v2-{name}.json") in str(raised.value)


def test_invalid_json_and_a_missing_file_are_named(tmp_path) -> None:
    folder = ssv2_folder(tmp_path)
    (folder / "something-something-v2-train.json").write_text('[{"id": "1",}]')
    with pytest.raises(SplitError, match=r"train.json' is not valid JSON \(line 1: "):
        load_split("ssv2", folder)
    (folder / "something-something-v2-train.json").unlink()
    with pytest.raises(SplitError, match=r"has no something-something-v2-train.json \(or train.json\)"):
        load_split("ssv2", folder)


def test_webm_and_transcoded_videos_are_found_by_id(tmp_path) -> None:
    split = load_split("ssv2", ssv2_folder(tmp_path))
    usable, missing, _ = check_prepared(split.train, {"78687": {"frames": 3}, "mp4/42326": {"frames": 3}})
    assert [r.key for r in usable] == ["78687", "mp4/42326"] and missing == ["1000"]
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("78687.webm", "42326.mp4"):
        (videos / name).write_bytes(b"")
    assert listed_videos(videos, tmp_path / "ssv2" / "something-something-v2-train.json") == (
        ["78687.webm", "42326.mp4"], ["1000"])


def test_the_swap_table_pairs_left_and_right_classes() -> None:
    classes = list(LABELS)
    assert mirror_pairs(classes) == {0: 1, 1: 0, 3: 4, 4: 3}


def test_ssv2_trains_without_flips_and_refuses_mirrored_test_views(caplog) -> None:
    cfg = DataConfig(dataset="ssv2", hflip=True, scale_size=8, crop_size=8)
    with caplog.at_level(logging.WARNING, logger="stfn.data"):
        transform = build_transform(cfg, train=True)
    assert transform.flip is False and "data.hflip is ignored for ssv2" in caplog.text
    rgb = torch.arange(8, dtype=torch.uint8).repeat(1, 3, 8, 1)  # a left-to-right ramp, (1, 3, 8, 8)
    for seed in range(8):  # a flip would reverse the ramp in about half of these
        out = transform({"rgb": rgb}, torch.Generator().manual_seed(seed))["rgb"]
        assert bool((out[0, 0, 0, 1:] >= out[0, 0, 0, :-1]).all())
    assert build_transform(DataConfig(dataset="ucf101", hflip=True), train=True).flip is True
    assert build_transform(cfg, train=False, views=3).views == 3
    with pytest.raises(ConfigError, match=r"10 test views .* hold 5 mirrored crops"):
        build_transform(cfg, train=False, views=10)
