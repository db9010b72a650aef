"""PNG plots of ``stfn demo``: training curves, accuracy per class group, a confusion matrix.

Each takes plain Python data (the engine's per-epoch history dicts, metric dicts, a confusion matrix)
and writes the PNG atomically; matplotlib runs headless (``Agg``).
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stfn.fileio import atomic_write_bytes
from stfn.study.analysis import GROUPS

__all__ = ["curve_points", "plot_confusion", "plot_group_accuracy", "plot_training_curves"]


def _pyplot():
    import matplotlib  # lazy: matplotlib is slow to import and only plots need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


# metric keys tried in order for each panel; the engine's history dicts hold some of them
_LOSS_KEYS = ("train_loss", "loss")
_TEST_KEYS = ("val_top1", "top1", "val_acc")
_TRAIN_KEYS = ("train_top1", "train_acc")


def _first(d: Mapping[str, Any], keys: Sequence[str]) -> tuple[str | None, Any]:
    for k in keys:
        if d.get(k) is not None:
            return k, d[k]
    return None, None


def curve_points(history: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> list[tuple[int, float]]:
    """``(epoch, value)`` of the epochs whose history dict holds one of ``keys`` (the first found)."""
    pts = [(h.get("epoch", j + 1), _first(h, keys)[1]) for j, h in enumerate(history)]
    return [(e, v) for e, v in pts if v is not None]


def plot_training_curves(histories: Mapping[str, Sequence[Mapping[str, Any]]], path: str | os.PathLike) -> Path:
    """Training loss, and test (solid) and training (dashed) top-1 per epoch, one colour per model.

    ``histories`` maps a model name to its per-epoch metric dicts (``train.train``'s ``history``); test
    accuracy is drawn only at the epochs that were evaluated, never filled in with training accuracy.
    """
    plt = _pyplot()
    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(11, 4))
    for i, (name, hist) in enumerate(histories.items()):
        if not hist:
            continue
        colour = f"C{i % 10}"
        for ax, keys, style in ((ax_l, _LOSS_KEYS, "-"), (ax_a, _TEST_KEYS, "-"), (ax_a, _TRAIN_KEYS, "--")):
            pts = curve_points(hist, keys)
            if pts:
                test = keys is _TEST_KEYS
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, color=colour, marker="o" if test else None,
                        ms=3, lw=1.5 if style == "-" else 0.8, label=name if keys is not _TRAIN_KEYS else None)
    ax_l.set(title="training loss", xlabel="epoch", ylabel="loss")
    ax_a.set(title="top-1: test (solid, at evaluated epochs), train (dashed)", xlabel="epoch",
             ylabel="accuracy (%)", ylim=(0, 102))
    for ax in (ax_l, ax_a):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    path = _save(fig, path)
    plt.close(fig)
    return path


def plot_group_accuracy(
    results: Mapping[str, Mapping[str, Any]], path: str | os.PathLike, groups: Sequence[str] = GROUPS,
    pairs: bool = True, title: str = "accuracy per class group (dotted: pair chance)",
) -> Path:
    """Grouped bars: accuracy per class group (and overall, and, with ``pairs``, within-pair) for each
    model; ``stfn compare`` passes the class names as groups (accuracy per class)."""
    plt = _pyplot()
    cols = [g for g in groups] + (["temporal_order_pair"] if pairs else []) + ["overall"]
    labels = [g.replace("_", "\n") for g in groups] + (["order\nwithin-pair"] if pairs else []) + ["overall"]
    models = list(results)
    width = 0.8 / max(1, len(models))
    fig, ax = plt.subplots(figsize=(max(8, 1.6 * len(cols)), 4.2))
    for i, m in enumerate(models):
        vals = [results[m].get(c) for c in cols]
        xs = [j + (i - (len(models) - 1) / 2) * width for j in range(len(cols))]
        ax.bar(xs, [v if v is not None else 0.0 for v in vals], width, label=m)
    ax.axhline(50.0, color="grey", lw=0.8, ls=":")
    ax.set_xticks(range(len(cols)), labels, fontsize=8)
    ax.set(ylabel="test accuracy (%)", ylim=(0, 105), title=title)
    ax.legend(fontsize=7, ncol=min(4, len(models)), loc="upper center", bbox_to_anchor=(0.5, -0.14))
    ax.grid(axis="y", alpha=0.3)
    path = _save(fig, path)
    plt.close(fig)
    return path


def plot_confusion(
    confusion: Sequence[Sequence[float]], classes: Sequence[str], path: str | os.PathLike, title: str = ""
) -> Path:
    """Row-normalised confusion matrix (rows: true class, columns: predicted) as a heat map."""
    plt = _pyplot()
    cm = np.asarray(confusion, dtype=float)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] != len(classes):
        raise ValueError(f"confusion must be {len(classes)}x{len(classes)}, got shape {cm.shape}")
    cm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    k = len(classes)
    side = min(14, max(5, 0.32 * k + 2))
    fig, ax = plt.subplots(figsize=(side, side))
    im = ax.imshow(cm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), classes, rotation=90, fontsize=7)
    ax.set_yticks(range(k), classes, fontsize=7)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    path = _save(fig, path)
    plt.close(fig)
    return path

