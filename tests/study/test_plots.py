"""Tests of the demo's PNG plots (``stfn.study.plots``)."""

from __future__ import annotations

import struct

import pytest

from stfn.study.plots import (
    _LOSS_KEYS,
    _TEST_KEYS,
    _TRAIN_KEYS,
    curve_points,
    plot_confusion,
    plot_group_accuracy,
    plot_training_curves,
)


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_test_curve_is_never_filled_in_with_training_accuracy():
    hist = [{"epoch": e, "train_top1": 90.0 + e} for e in (1, 2, 3)]
    hist[1]["val_top1"] = 70.0  # evaluated at epoch 2 only
    assert curve_points(hist, _TEST_KEYS) == [(2, 70.0)]
    assert curve_points(hist, _TRAIN_KEYS) == [(1, 91.0), (2, 92.0), (3, 93.0)]


def test_curve_points_take_the_first_key_found_and_number_missing_epochs():
    hist = [{"loss": 3.0}, {"train_loss": 2.0, "loss": 9.0}, {}]
    assert curve_points(hist, _LOSS_KEYS) == [(1, 3.0), (2, 2.0)]  # train_loss before loss; epoch = position
    assert curve_points([], _LOSS_KEYS) == []


def test_plots_write_pngs(tmp_path):
    hist = [{"epoch": e, "train_loss": 2.0 / e, "val_top1": 10.0 * e} for e in (1, 2, 3)]
    p = plot_training_curves({"TSN RGB": hist, "STFN": hist[:2], "empty": []}, tmp_path / "curves.png")
    assert p == tmp_path / "curves.png" and _png_size(p)[0] > 100
    res = {"STFN": {"appearance": 90.0, "overall": 80.0, "temporal_order_pair": None}, "TSN": {"overall": 50.0}}
    assert _png_size(plot_group_accuracy(res, tmp_path / "groups.png"))[0] > 100
    cm = [[5, 1], [0, 6]]
    assert _png_size(plot_confusion(cm, ["a", "b"], tmp_path / "cm.png", title="t"))[0] > 100
    assert sorted(f.name for f in tmp_path.iterdir()) == ["cm.png", "curves.png", "groups.png"]  # no temp files


def test_plot_confusion_checks_the_shape(tmp_path):
    with pytest.raises(ValueError, match="2x2"):
        plot_confusion([[1, 2, 3]], ["a", "b"], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="3x3, got shape \\(2, 2\\)"):
        plot_confusion([[1, 0], [0, 1]], ["a", "b", "c"], tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()
