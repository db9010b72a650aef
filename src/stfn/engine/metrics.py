"""Classification metrics on video-level scores, and the CSV/PNG files that show them.

All accuracies are percentages in ``[0, 100]``. ``scores`` are ``(N, K)`` (logits, probabilities or
fused scores: only their order matters), ``labels`` are ``(N,)`` class indices.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from stfn.fileio import atomic_write_bytes, atomic_write_text

__all__ = [
    "compute_metrics",
    "confusion_matrix",
    "summary_line",
    "topk_accuracy",
    "write_confusion_png",
    "write_per_class_csv",
]


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Percentage of rows whose label is among the ``k`` highest scores (``k`` capped at ``K``)."""
    if scores.shape[0] == 0:
        return float("nan")
    k = min(k, scores.shape[1])
    top = scores.topk(k, dim=1).indices
    return 100.0 * (top == labels[:, None]).any(dim=1).float().mean().item()


def confusion_matrix(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(K, K)`` int64 counts; row = true class, column = predicted class."""
    idx = labels.long() * num_classes + preds.long()
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def compute_metrics(scores: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None) -> dict[str, Any]:
    """Top-1, top-5, mean class accuracy, per-class accuracy and the confusion matrix.

    ``per_class`` holds one accuracy per class, ``None`` for a class without test videos; the mean
    class accuracy averages the classes that have videos (the UCF101/HMDB51 reporting convention).
    """
    scores = scores.float()
    labels = labels.long()
    k = num_classes if num_classes is not None else scores.shape[1]
    conf = confusion_matrix(scores.argmax(dim=1), labels, k)
    support = conf.sum(dim=1)
    per_class: list[float | None] = [
        (100.0 * conf[c, c].item() / support[c].item()) if support[c] > 0 else None for c in range(k)
    ]
    present = [a for a in per_class if a is not None]
    return {
        "n": int(labels.numel()),
        "top1": topk_accuracy(scores, labels, 1),
        "top5": topk_accuracy(scores, labels, 5),
        "mean_class_acc": sum(present) / len(present) if present else float("nan"),
        "per_class": per_class,
        "confusion": conf.tolist(),
    }


def write_per_class_csv(path: str | os.PathLike, metrics: dict[str, Any], classes: Sequence[str]) -> None:
    """``class_index,class,videos,correct,accuracy`` per class (atomic)."""
    conf = metrics["confusion"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["class_index", "class", "videos", "correct", "accuracy"])
    for c, name in enumerate(classes):
        acc = metrics["per_class"][c]
        w.writerow([c, name, sum(conf[c]), conf[c][c], "" if acc is None else f"{acc:.4f}"])
    atomic_write_text(path, buf.getvalue())


def write_confusion_png(
    path: str | os.PathLike, confusion: Sequence[Sequence[int]], classes: Sequence[str], title: str = ""
) -> None:
    """Row-normalised confusion matrix as a PNG (matplotlib, Agg backend; atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conf = torch.tensor(confusion, dtype=torch.float64)
    norm = conf / conf.sum(dim=1, keepdim=True).clamp(min=1)
    k = len(classes)
    side = min(4 + 0.18 * k, 30)
    fig, ax = plt.subplots(figsize=(side, side))
    im = ax.imshow(norm.numpy(), cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    ticks = list(range(k))
    fontsize = max(3, min(10, int(600 / max(k, 1) / 4)))
    ax.set_xticks(ticks, labels=list(classes), rotation=90, fontsize=fontsize)
    ax.set_yticks(ticks, labels=list(classes), fontsize=fontsize)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if conf[i, j] > 0:
                    color = "white" if norm[i, j] > 0.5 else "black"
                    ax.text(j, i, str(int(conf[i, j])), ha="center", va="center", fontsize=8, color=color)
    if title:
        ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())


def summary_line(metrics: dict[str, Any]) -> str:
    """``top1 80.00  top5 95.00  mean class 79.50  (n=40)``"""

    def f(x: float) -> str:
        return "nan" if x is None or math.isnan(x) else f"{x:.2f}"

    return (
        f"top1 {f(metrics['top1'])}  top5 {f(metrics['top5'])}  "
        f"mean class {f(metrics['mean_class_acc'])}  (n={metrics['n']})"
    )
