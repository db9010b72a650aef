"""Tests of the per-group accuracy of the synthetic benchmark (``stfn.study.analysis``), hand-computed."""

from __future__ import annotations

import json

import pytest

from stfn.errors import StfnError
from stfn.study.analysis import GROUPS, class_groups, group_accuracy, load_classes_meta, temporal_pairs

META = {
    "flow_bound": 9.0,
    "classes": [
        {"name": "Square", "group": "appearance"},
        {"name": "SlideRight", "group": "motion", "twin": "SlideLeft"},
        {"name": "SlideLeft", "group": "motion", "twin": "SlideRight"},
        {"name": "LeftThenRight", "group": "temporal_order", "twin": "RightThenLeft"},
        {"name": "RightThenLeft", "group": "temporal_order", "twin": "LeftThenRight"},
        {"name": "RedLeft", "group": "appearance_motion", "twin": "GreenLeft"},
        {"name": "GreenLeft", "group": "appearance_motion", "twin": "RedLeft"},
    ],
}
CLASSES = [c["name"] for c in META["classes"]]


def _pred(label: int, scores: list[float]) -> dict:
    return {"video": f"v{label}", "label": label, "scores": scores}


def test_class_groups_and_pairs_follow_label_order():
    order = list(reversed(CLASSES))  # the dataset's label order need not be classes.json's
    groups = class_groups(META, order + ["Unknown"])
    assert groups[0] == "appearance_motion" and groups[-2] == "appearance" and groups[-1] == "other"
    pairs = temporal_pairs(META, order)
    i, j = order.index("LeftThenRight"), order.index("RightThenLeft")
    assert pairs == {i: j, j: i}  # only the temporal-order twins
    assert set(groups[:-1]) == set(GROUPS)


def test_temporal_pairs_without_twin_keys_pair_in_listed_order():
    meta = {"classes": [{"name": n, "group": "temporal_order"} for n in "ABCD"]}
    assert temporal_pairs(meta, list("ABCD")) == {0: 1, 1: 0, 2: 3, 3: 2}
    # classes the dataset lacks are left out, and an odd one has no partner
    assert temporal_pairs(meta, list("ABC")) == {0: 1, 1: 0}


def test_group_accuracy_hand_computed():
    groups = class_groups(META, CLASSES)
    pairs = temporal_pairs(META, CLASSES)
    k = len(CLASSES)

    def onehot(c, partner=None, second=None):
        s = [0.0] * k
        s[c] = 1.0
        if partner is not None:
            s[partner] = second
        return s

    preds = [
        _pred(0, onehot(0)),  # appearance right
        _pred(0, onehot(1)),  # appearance wrong
        _pred(1, onehot(1)),  # motion right
        # temporal order: top-1 wrong (class 0 wins) but the true class beats its partner
        _pred(3, onehot(0, partner=3, second=0.5)),
        # temporal order: partner beats the true class
        _pred(4, onehot(3)),
        _pred(5, onehot(6)),  # appearance+motion wrong
    ]
    acc = group_accuracy(preds, groups, pairs)
    assert acc["appearance"] == pytest.approx(50.0)
    assert acc["motion"] == pytest.approx(100.0)
    assert acc["temporal_order"] == pytest.approx(0.0)
    assert acc["temporal_order_pair"] == pytest.approx(50.0)
    assert acc["appearance_motion"] == pytest.approx(0.0)
    assert acc["overall"] == pytest.approx(100.0 * 2 / 6)
    # classes 0, 1, 3, 4, 5 have videos: per-class 50, 100, 0, 0, 0
    assert acc["mean_class_acc"] == pytest.approx(30.0)
    assert acc["counts"] == {"appearance": 2, "motion": 1, "temporal_order": 2, "appearance_motion": 1}


def test_group_accuracy_without_pairs_or_predictions():
    acc = group_accuracy([_pred(0, [1.0, 0.0])], ["appearance", "motion"])
    assert acc["temporal_order_pair"] is None and acc["overall"] == 100.0
    empty = group_accuracy([], ["appearance"])
    assert empty == {"mean_class_acc": None, "temporal_order_pair": None, "counts": {}}
    # a label beyond the known groups counts as "other"
    assert group_accuracy([_pred(2, [0.0, 0.0, 1.0])], ["appearance"])["counts"] == {"other": 1}


def test_load_classes_meta_reads_and_checks_the_file(tmp_path):
    good = tmp_path / "classes.json"
    good.write_text(json.dumps(META))
    assert load_classes_meta(good) == META
    with pytest.raises(StfnError, match="does not exist"):
        load_classes_meta(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(StfnError, match="bad.json"):
        load_classes_meta(bad)
    bad.write_text(json.dumps({"classes": [{"name": "x"}]}))
    with pytest.raises(StfnError, match="entry 0"):
        load_classes_meta(bad)
    bad.write_text(json.dumps([1, 2]))
    with pytest.raises(StfnError, match="no 'classes' list"):
        load_classes_meta(bad)
