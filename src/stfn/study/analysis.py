"""Accuracy per class group of the synthetic benchmark, on plain Python data (tested without training).

A *prediction* is one test video as the engine reports it::

    {"video": "MoveLeft/v_0001", "label": 3, "scores": [K floats]}

The synthetic benchmark's ``classes.json`` gives each class a ``group`` (``appearance``, ``motion``,
``temporal_order``, ``appearance_motion``); the ``temporal_order`` classes come in pairs that hold
the same frames and motions in a different order, and their *within-pair accuracy* (is the true
class scored above its partner? chance 0.5) is the number that tells order-aware models apart.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from stfn.errors import StfnError
from stfn.study.significance import argmax

__all__ = ["GROUPS", "class_groups", "group_accuracy", "load_classes_meta", "temporal_pairs"]

GROUPS: tuple[str, ...] = ("appearance", "motion", "temporal_order", "appearance_motion")


def load_classes_meta(path: str | os.PathLike) -> dict[str, Any]:
    """Read the synthetic benchmark's ``classes.json``; a missing or broken file is a :class:`StfnError`."""
    p = Path(path)
    try:
        meta = json.loads(p.read_text())
    except FileNotFoundError:
        raise StfnError(f"class description file '{p}' does not exist") from None
    except (OSError, json.JSONDecodeError) as e:
        raise StfnError(f"class description file '{p}' cannot be read: {e}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("classes"), list):
        raise StfnError(f"class description file '{p}' has no 'classes' list")
    for i, c in enumerate(meta["classes"]):
        if not isinstance(c, dict) or "name" not in c or "group" not in c:
            raise StfnError(f"class description file '{p}': entry {i} needs 'name' and 'group'")
    return meta


def class_groups(meta: Mapping[str, Any], classes: Sequence[str]) -> list[str]:
    """The group of each class in ``classes`` (the dataset's label order); unknown names -> ``"other"``."""
    by_name = {c["name"]: c["group"] for c in meta["classes"]}
    return [by_name.get(name, "other") for name in classes]


def temporal_pairs(meta: Mapping[str, Any], classes: Sequence[str]) -> dict[int, int]:
    """Label -> partner label for the ``temporal_order`` classes.

    Uses each entry's partner (``twin`` or ``pair``: the other class's name) when the generator writes
    it; otherwise the ``temporal_order`` classes pair up in the order ``classes.json`` lists them.
    """
    index = {name: i for i, name in enumerate(classes)}
    entries = [c for c in meta["classes"] if c["group"] == "temporal_order" and c["name"] in index]
    pairs: dict[int, int] = {}
    if entries and all(c.get("twin") or c.get("pair") for c in entries):
        for c in entries:
            partner = c.get("twin") or c.get("pair")
            if partner in index:
                pairs[index[c["name"]]] = index[partner]
        return pairs
    for a, b in zip(entries[0::2], entries[1::2], strict=False):
        pairs[index[a["name"]]] = index[b["name"]]
        pairs[index[b["name"]]] = index[a["name"]]
    return pairs


def group_accuracy(
    predictions: Sequence[Mapping[str, Any]], groups: Sequence[str], pairs: Mapping[int, int] | None = None
) -> dict[str, Any]:
    """Top-1 accuracy per class group and overall, plus within-pair accuracy of temporal-order pairs.

    Args:
        predictions: one dict per test video with ``label`` (int) and ``scores`` (K floats).
        groups: the group of each class, indexed by label (see :func:`class_groups`).
        pairs: label -> partner label for ``temporal_order`` classes (see :func:`temporal_pairs`).

    Returns ``{"overall", "mean_class_acc", "<group>" for each group present, "temporal_order_pair",
    "counts": {group: videos}}``; accuracies are percentages in [0, 100], like the engine's metrics.
    """
    correct: dict[str, int] = {}
    count: dict[str, int] = {}
    per_class: dict[int, list[int]] = {}
    pair_hits = pair_n = 0
    for p in predictions:
        label, scores = int(p["label"]), p["scores"]
        hit = int(argmax(scores) == label)
        g = groups[label] if label < len(groups) else "other"
        for key in (g, "overall"):
            correct[key] = correct.get(key, 0) + hit
            count[key] = count.get(key, 0) + 1
        per_class.setdefault(label, []).append(hit)
        if pairs and label in pairs:
            pair_hits += int(scores[label] > scores[pairs[label]])
            pair_n += 1
    out: dict[str, Any] = {k: 100.0 * correct[k] / count[k] for k in count}
    out["mean_class_acc"] = (
        100.0 * sum(sum(h) / len(h) for h in per_class.values()) / len(per_class) if per_class else None
    )
    out["temporal_order_pair"] = 100.0 * pair_hits / pair_n if pair_n else None
    out["counts"] = {k: v for k, v in count.items() if k != "overall"}
    return out

