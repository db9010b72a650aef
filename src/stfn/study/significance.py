"""Paired comparison of two models scored on the same test videos, over one or more training seeds.

Two models evaluated on the same videos are compared video by video (McNemar's test): only the
*discordant* videos count, ``b`` (A right, B wrong) and ``c`` (A wrong, B right). Under "no difference"
``b - c`` has mean 0 and variance ``b + c``, so ``z = (b - c) / sqrt(b + c)``. This is sharper than
comparing two accuracies as if they came from independent test sets, and honest about ties.

With several training seeds per model, the outcomes of seed ``s`` of A are paired with seed ``s`` of B
(a model with one seed is paired with itself for every seed of the other), the discordant counts are
pooled, and the per-seed accuracy differences are kept: a claim holds only when ``z > 2`` *and* no seed
says the opposite, so training randomness cannot pass for an effect.

Outcomes are strings of ``"0"``/``"1"``, one character per test video in a fixed order (JSON-friendly)::

    hits = video_outcomes(predictions, pairs)        # {"hit": "0110...", "pair_hit": "1?1..."}
    compare([a_seed0, a_seed1], [b_seed0], mask)     # -> {"b", "c", "n", "z", "diffs", "verdict"}
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["argmax", "compare", "video_outcomes", "verdict_text"]

NOT_SCORED = "-"  # a video outside the comparison (e.g. within-pair hit of a non-pair class)


def argmax(scores: Sequence[float]) -> int:
    """Index of the largest score (the first on a tie), on plain lists."""
    return max(range(len(scores)), key=lambda i: scores[i])


def video_outcomes(predictions: Sequence[Mapping[str, Any]], pairs: Mapping[int, int] | None = None) -> dict[str, str]:
    """Per-video outcomes of one evaluation, in the order of the video names.

    Returns ``{"videos": [names], "hit": "0/1 per video (top-1 correct)", "pair_hit": "0/1 per video of
    a temporal-order pair (true class scored above its partner), '-' for the other videos"}``.
    """
    rows = sorted(predictions, key=lambda p: str(p["video"]))
    hit, pair_hit = [], []
    for p in rows:
        label, scores = int(p["label"]), p["scores"]
        hit.append("1" if argmax(scores) == label else "0")
        if pairs and label in pairs:
            pair_hit.append("1" if scores[label] > scores[pairs[label]] else "0")
        else:
            pair_hit.append(NOT_SCORED)
    return {"videos": [str(p["video"]) for p in rows], "hit": "".join(hit), "pair_hit": "".join(pair_hit)}


def compare(a: Sequence[str], b: Sequence[str], mask: Sequence[bool] | None = None) -> dict[str, Any]:
    """Paired comparison of model A (outcome strings per seed) with model B on the masked videos.

    Args:
        a, b: one outcome string per seed (see :func:`video_outcomes`), all of the same length; a list
            of one is paired with every seed of the other.
        mask: which videos take part (default: all); videos marked ``'-'`` in either string never do.

    Returns ``{"b": A-right-B-wrong, "c": A-wrong-B-right, "n": videos x seed pairs, "z", "diffs":
    [per seed pair, accuracy of A - accuracy of B in points], "verdict": "holds" | "reversed" |
    "unresolved" | "tie"}``.
    """
    if not a or not b:
        raise ValueError("compare needs at least one outcome string per model")
    seeds = max(len(a), len(b))
    if len(a) not in (1, seeds) or len(b) not in (1, seeds):
        raise ValueError(f"cannot pair {len(a)} seeds with {len(b)}")
    length = len(a[0])
    if any(len(s) != length for s in (*a, *b)):
        raise ValueError("outcome strings of different lengths: the models did not score the same videos")
    if mask is not None and len(mask) != length:
        raise ValueError(f"mask has {len(mask)} entries for {length} videos")
    b_count = c_count = n = 0
    diffs = []
    for s in range(seeds):
        x, y = a[s if len(a) > 1 else 0], b[s if len(b) > 1 else 0]
        right_a = right_b = m = 0
        for i, (u, v) in enumerate(zip(x, y, strict=True)):
            if (mask is not None and not mask[i]) or NOT_SCORED in (u, v):
                continue
            m += 1
            right_a, right_b = right_a + (u == "1"), right_b + (v == "1")
            b_count += u == "1" and v == "0"
            c_count += u == "0" and v == "1"
        n += m
        if m:
            diffs.append(100.0 * (right_a - right_b) / m)
    z = (b_count - c_count) / math.sqrt(b_count + c_count) if b_count + c_count else 0.0
    if b_count == c_count:
        verdict = "tie" if b_count == 0 else "unresolved"
    elif z > 2 and all(d >= 0 for d in diffs):
        verdict = "holds"
    elif z < -2 and all(d <= 0 for d in diffs):
        verdict = "reversed"
    else:
        verdict = "unresolved"
    return {"b": b_count, "c": c_count, "n": n, "z": round(z, 2), "diffs": [round(d, 1) for d in diffs],
            "verdict": verdict}


def verdict_text(result: Mapping[str, Any], a: str = "A", b: str = "B") -> str:
    """One clause for a report: the verdict with the discordant counts behind it (``a``, ``b``: names)."""
    counts = f"right only by {a}: {result['b']}, only by {b}: {result['c']}, z = {result['z']:+.1f}"
    if len(result["diffs"]) > 1:
        counts += "; difference per seed " + ", ".join(f"{d:+.1f}" for d in result["diffs"])
    verdict = {"holds": "holds", "reversed": "does **not** hold (the opposite does)",
               "unresolved": "not resolved", "tie": "a tie"}[result["verdict"]]
    return f"{verdict} ({counts})"
