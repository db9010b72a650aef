"""Colour variants of the synthetic classes and the ``stress`` preset (UCF101's shape: 101 classes,
13130 videos of 320x240), generated here at a small size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stfn.data.synthetic.generate import PRESETS, SyntheticError, generate, resolve_params, video_entries
from stfn.data.synthetic.render import render
from stfn.data.synthetic.scenes import CATALOGUE, build_scene
from stfn.data.synthetic.variants import split_variant, tint, variant_class, variant_classes
from stfn.data.video.decode import read_video


def test_the_stress_preset_has_ucf101s_shape_and_whole_twin_pairs() -> None:
    p = resolve_params("stress")
    assert len(p["classes"]) == len(set(p["classes"])) == 101
    assert sum(1 for _ in video_entries(p)) == 13130 and (p["width"], p["size"]) == (320, 240)
    for name in p["classes"]:
        twin = variant_class(name).twin
        assert twin is None or twin in p["classes"], name
    assert split_variant("SlideRightV2") == ("SlideRight", 2) and variant_class("SlideRightV2").twin == "SlideLeftV2"
    assert split_variant("SquareV9") == ("SquareV9", 0) and split_variant("Square") == ("Square", 0)
    assert variant_classes(23) == list(CATALOGUE)
    with pytest.raises(ValueError, match="between 1 and 138"):
        variant_classes(139)


def test_no_variant_shows_another_class() -> None:
    """Red/green classes stay apart: a variant never turns RedLeftGreenRight into its twin's colours."""
    p = dict(PRESETS["tiny"])
    pure = np.array([[[255, 0, 0], [0, 255, 0]]], np.uint8)  # red, green
    for k in range(1, 6):
        out = tint(pure, k)
        assert not np.array_equal(out, pure) and not np.array_equal(out, pure[:, ::-1]), k
    red_left = render(build_scene("RedLeftGreenRight", p, [0, 1, 1]))
    green_left = render(build_scene("GreenLeftRedRight", p, [0, 1, 1]))
    for k in range(1, 6):
        assert np.abs(tint(red_left, k).astype(int) - green_left).mean() > 20, k


def test_a_small_stress_set_has_variant_videos_at_its_width(tmp_path: Path) -> None:
    classes = ["Square", "SquareV1", "SlideRightV2", "SlideLeftV2"]
    info = generate(tmp_path / "s", "stress", size=32, width=48, train_per_class=1, test_per_class=1,
                    classes=classes)
    assert info.class_names == classes and info.classes[2].twin == "SlideLeftV2"
    square, variant = (read_video(tmp_path / "s/videos" / f"{n}/v_{n}_g01_c01.mp4") for n in classes[:2])
    assert square.shape[1:] == variant.shape[1:] == (32, 48, 3)
    assert np.abs(square.astype(int) - variant[: len(square)].astype(int)).mean() > 10  # another clip, other colours
    right, left = (read_video(tmp_path / "s/videos" / f"{n}/v_{n}_g01_c01.mp4") for n in classes[2:])
    assert len(right) == len(left)  # twins: the same scene, one played backwards
    assert (tmp_path / "s/splits/classInd.txt").read_text().splitlines()[1] == "2 SquareV1"


@pytest.mark.parametrize(("classes", "needle"), [
    (["SlideRightV2"], "synthetic class 'SlideRightV2' needs its twin 'SlideLeftV2'"),
    (["SquareV9"], "unknown synthetic class 'SquareV9'"),
])
def test_bad_variant_names_are_one_sentence(classes: list[str], needle: str, tmp_path: Path) -> None:
    with pytest.raises(SyntheticError, match=needle):
        generate(tmp_path / "s", "stress", classes=classes)
    with pytest.raises(SyntheticError, match="'width' must be an even number"):
        resolve_params("stress", width=33)
