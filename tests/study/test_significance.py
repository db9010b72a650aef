"""Paired comparisons of per-video outcomes (stfn.study.significance), against hand-counted cases."""

from __future__ import annotations

import pytest

from stfn.study.significance import compare, verdict_text, video_outcomes


def test_video_outcomes_sorted_by_name_with_pairs():
    preds = [
        {"video": "b", "label": 1, "scores": [0.2, 0.5, 0.3]},  # right; pair 1<->2: 0.5 > 0.3
        {"video": "a", "label": 2, "scores": [0.6, 0.3, 0.1]},  # wrong; pair: 0.1 < 0.3
        {"video": "c", "label": 0, "scores": [0.9, 0.05, 0.05]},  # right; not a pair class
    ]
    out = video_outcomes(preds, {1: 2, 2: 1})
    assert out == {"videos": ["a", "b", "c"], "hit": "011", "pair_hit": "01-"}
    assert video_outcomes(preds)["pair_hit"] == "---"


def test_compare_hand_counted():
    a = "1111100000"
    b = "1100000000"  # A alone right on 3 videos, B alone on none
    r = compare([a], [b])
    assert (r["b"], r["c"], r["n"]) == (3, 0, 10) and r["z"] == pytest.approx(1.73) and r["diffs"] == [30.0]
    assert r["verdict"] == "unresolved"  # 3 discordant videos cannot show it
    r = compare([a * 3], [b * 3])
    assert (r["b"], r["c"]) == (9, 0) and r["z"] == 3.0 and r["verdict"] == "holds"
    assert compare([b * 3], [a * 3])["verdict"] == "reversed"
    assert compare([a], [a])["verdict"] == "tie"
    assert compare(["10"], ["01"])["verdict"] == "unresolved"


def test_seeds_are_paired_and_must_agree():
    strong, weak = "1" * 30 + "0" * 10, "1" * 20 + "0" * 20
    r = compare([strong, strong], [weak])  # one seed of B is paired with both seeds of A
    assert (r["b"], r["c"], r["n"], r["diffs"]) == (20, 0, 80, [25.0, 25.0]) and r["verdict"] == "holds"
    # pooled z > 2, but one seed says the opposite: training noise, not an effect
    r = compare([strong, strong, "1" * 18 + "0" * 22], [weak, weak, weak])
    assert (r["b"], r["c"]) == (20, 2) and r["z"] > 2 and r["diffs"][2] == -5.0 and r["verdict"] == "unresolved"
    with pytest.raises(ValueError, match="cannot pair 2 seeds with 3"):
        compare([strong, strong], [weak, weak, weak])


def test_mask_and_unscored_videos_are_left_out():
    r = compare(["11-0"], ["00-1"], mask=[True, False, True, True])
    assert (r["b"], r["c"], r["n"]) == (1, 1, 2)
    with pytest.raises(ValueError, match="same videos"):
        compare(["101"], ["10"])
    with pytest.raises(ValueError, match="mask has 2 entries"):
        compare(["101"], ["100"], mask=[True, True])


def test_verdict_text_names_the_models():
    text = verdict_text(compare(["1" * 12], ["0" * 12]), "STFN", "TSN")
    assert text == "holds (right only by STFN: 12, only by TSN: 0, z = +3.5)"
