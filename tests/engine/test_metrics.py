"""Metrics against values computed by hand."""

from __future__ import annotations

import csv

import pytest
import torch

from stfn.engine.metrics import (
    compute_metrics,
    confusion_matrix,
    summary_line,
    topk_accuracy,
    write_confusion_png,
    write_per_class_csv,
)

# 6 videos, 3 classes. Rows: true label, argmax, rank of the true class.
SCORES = torch.tensor(
    [
        [0.9, 0.05, 0.05],  # label 0, pred 0
        [0.2, 0.5, 0.3],  # label 0, pred 1 (true class 3rd)
        [0.1, 0.7, 0.2],  # label 1, pred 1
        [0.25, 0.35, 0.4],  # label 1, pred 2 (true 2nd)
        [0.6, 0.1, 0.3],  # label 2, pred 0 (true 2nd)
        [0.1, 0.2, 0.7],  # label 2, pred 2
    ]
)
LABELS = torch.tensor([0, 0, 1, 1, 2, 2])


def test_topk_by_hand() -> None:
    assert topk_accuracy(SCORES, LABELS, 1) == pytest.approx(100 * 3 / 6)
    # top-2: only row 1 misses (its true class scores last)
    assert topk_accuracy(SCORES, LABELS, 2) == pytest.approx(100 * 5 / 6)
    assert topk_accuracy(SCORES, LABELS, 5) == 100.0  # k capped at K = 3


def test_confusion_and_mean_class_by_hand() -> None:
    conf = confusion_matrix(SCORES.argmax(1), LABELS, 3)
    assert conf.tolist() == [[1, 1, 0], [0, 1, 1], [1, 0, 1]]
    m = compute_metrics(SCORES, LABELS, 3)
    assert m["n"] == 6
    assert m["top1"] == pytest.approx(50.0)
    assert m["per_class"] == [pytest.approx(50.0)] * 3
    assert m["mean_class_acc"] == pytest.approx(50.0)
    assert m["confusion"] == conf.tolist()


def test_mean_class_differs_from_top1_on_unbalanced_sets() -> None:
    # class 0: 3 videos all right; class 1: 1 video wrong; class 2: no videos.
    scores = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [1.0, 0, 0], [1.0, 0, 0]])
    labels = torch.tensor([0, 0, 0, 1])
    m = compute_metrics(scores, labels, 3)
    assert m["top1"] == pytest.approx(75.0)
    assert m["per_class"] == [100.0, 0.0, None]
    assert m["mean_class_acc"] == pytest.approx(50.0)  # (100 + 0) / 2: the empty class is left out


def test_per_class_csv_and_confusion_png(tmp_path) -> None:
    m = compute_metrics(SCORES, LABELS, 3)
    write_per_class_csv(tmp_path / "per_class.csv", m, ["a", "b", "c"])
    rows = list(csv.DictReader((tmp_path / "per_class.csv").open()))
    assert [r["class"] for r in rows] == ["a", "b", "c"]
    assert [int(r["videos"]) for r in rows] == [2, 2, 2]
    assert [int(r["correct"]) for r in rows] == [1, 1, 1]
    assert float(rows[0]["accuracy"]) == pytest.approx(50.0)
    write_confusion_png(tmp_path / "confusion.png", m["confusion"], ["a", "b", "c"], title="t")
    assert (tmp_path / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "top1 50.00" in summary_line(m)


def test_mean_class_accuracy_on_a_subset_leaves_absent_classes_out() -> None:
    """Our definition (``stfn eval --help``): the mean over the classes that have test videos. On a
    subset where class 2 has no video but is predicted once, MMAction2's definition (every class that
    is predicted or present, an absent one counting 0) is lower."""
    labels = torch.tensor([0, 0, 1, 1])
    scores = torch.tensor([[1.0, 0, 0], [0, 0, 1.0], [0, 1.0, 0], [0, 1.0, 0]])  # video 1 predicted as class 2
    m = compute_metrics(scores, labels, 3)
    assert m["per_class"] == [50.0, 100.0, None]
    assert m["mean_class_acc"] == pytest.approx(75.0)  # (50 + 100) / 2
    conf = torch.tensor(m["confusion"])
    seen = [c for c in range(3) if conf[c].sum() > 0 or conf[:, c].sum() > 0]  # MMAction2's label set
    mmaction = sum(conf[c, c].item() / conf[c].sum().item() if conf[c].sum() else 0.0 for c in seen) / len(seen)
    assert 100 * mmaction == pytest.approx(50.0)  # (50 + 100 + 0) / 3: different on a subset
