"""Result tables and the demo's ``report.md``, on plain Python data (tested without training).

Shared by ``stfn demo`` and ``stfn ablate``: :func:`summarize` (mean and spread over seeds), number
formats, :func:`markdown_table`; then the demo's table, its claims checked by paired tests
(:mod:`stfn.study.significance`) and :func:`write_demo_report` (``report.md`` and the plots of
:mod:`stfn.study.plots`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from stfn.fileio import atomic_write_text
from stfn.machine import machine_caption
from stfn.study.plots import plot_confusion, plot_group_accuracy, plot_training_curves
from stfn.study.significance import compare, verdict_text

__all__ = [
    "DEMO_COLUMNS",
    "claim_line",
    "demo_markdown",
    "demo_table",
    "fmt_pct",
    "fmt_summary",
    "loss_fall",
    "markdown_table",
    "summarize",
    "write_demo_report",
]

# ----------------------------------------------------------------------------- numbers and tables


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample standard deviation (0 for one value), min and max of ``values`` (NaNs dropped)."""
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not vals:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0, "values": []}
    n = len(vals)
    mean = sum(vals) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "std": std, "min": min(vals), "max": max(vals), "n": n, "values": vals}


def fmt_pct(x: float | None, digits: int = 1) -> str:
    """A percentage with ``digits`` decimals (``87.5123 -> "87.5"``); ``None`` or NaN as ``"–"``."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.{digits}f}"


def fmt_summary(s: Mapping[str, Any], digits: int = 1) -> str:
    """``"87.5 ± 2.1 (85.0–90.0)"`` for several seeds, ``"87.5"`` for one, ``"–"`` for none."""
    if not s or s.get("n", 0) == 0:
        return "–"
    if s["n"] == 1:
        return fmt_pct(s["mean"], digits)
    return (
        f"{fmt_pct(s['mean'], digits)} ± {fmt_pct(s['std'], digits)} "
        f"({fmt_pct(s['min'], digits)}–{fmt_pct(s['max'], digits)})"
    )


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    """A GitHub markdown table. ``align`` has one letter per column: ``l`` (default) or ``r``."""
    if any(len(r) != len(header) for r in rows):
        raise ValueError("every row must have one cell per header column")
    align = align or "l" * len(header)
    cells = [[str(c).replace("|", "\\|") for c in r] for r in rows]
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in cells]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- the demo's report.md

# (column key, header) of the demo table; accuracies in %
DEMO_COLUMNS: tuple[tuple[str, str], ...] = (
    ("appearance", "appearance"),
    ("motion", "motion"),
    ("temporal_order", "temporal order"),
    ("temporal_order_pair", "order, within pair (chance 50)"),
    ("appearance_motion", "appearance+motion"),
    ("overall", "overall"),
)


def _cell(model: Mapping[str, Any], key: str) -> str:
    """``"90.8"``, or ``"90.8 ± 1.2"`` for a model trained with several seeds."""
    std = (model.get("metrics_std") or {}).get(key)
    text = fmt_pct(model["metrics"].get(key))
    return f"{text} ± {fmt_pct(std)}" if len(model.get("seeds") or []) > 1 and std is not None else text


def demo_table(models: Mapping[str, Mapping[str, Any]]) -> str:
    """The demo's markdown table: one row per model, accuracy (%) per class group and overall (mean ± std
    over seeds for models trained with several)."""
    rows = [[name] + [_cell(m, k) for k, _ in DEMO_COLUMNS] for name, m in models.items()]
    return markdown_table(["model"] + [h for _, h in DEMO_COLUMNS], rows, align="l" + "r" * len(DEMO_COLUMNS))


def claim_line(text: str, a: str, b: str, key: str, summary: Mapping[str, Any]) -> str | None:
    """One line comparing models ``a`` and ``b`` on ``key`` by a paired test on the same test videos
    (:mod:`stfn.study.significance`): a difference the test cannot separate from noise is called unresolved."""
    models = summary["models"]
    if a not in models or b not in models:
        return None
    x, y = models[a]["metrics"].get(key), models[b]["metrics"].get(key)
    if x is None or y is None or not models[a].get("outcomes") or not models[b].get("outcomes"):
        return None
    field = "pair_hit" if key == "temporal_order_pair" else "hit"
    groups = [v["group"] for v in summary["test_videos"]]
    mask = None if key in ("overall", "temporal_order_pair") else [g == key for g in groups]
    result = compare([o[field] for o in models[a]["outcomes"]], [o[field] for o in models[b]["outcomes"]], mask)
    return f"- {text}: {a} {fmt_pct(x)} vs {b} {fmt_pct(y)} ({key.replace('_', ' ')}) — {verdict_text(result, a, b)}."


def _results_lines(summary: Mapping[str, Any]) -> list[str]:
    """Title, command and machine, and the accuracy table."""
    models, m = summary["models"], summary["machine"]
    seeds = max((len(e.get("seeds") or []) for e in models.values()), default=1)
    return [
        "# stfn demo report", "",
        f"Command: `{summary['command']}`. Seed {summary['seed']}. Total time "
        f"{summary['time_s'] / 60:.1f} min on {machine_caption(m)}.", "",
        "## Test accuracy (%) per class group", "",
        demo_table(models),
        "Temporal-order classes come in pairs holding the same frames and motions in a different order; "
        "*within pair* asks whether the true class scores above its partner (chance 50).", "",
        ("Models trained on cached features show mean ± std over their training seeds "
         f"({seeds} seeds, same backbones and test videos); the TSN rows are one seed." if seeds > 1 else
         "Every row is one training seed."), "",
    ]


def _claim_lines(summary: Mapping[str, Any]) -> list[str]:
    """The paper's claims, each checked by a paired test (a claim without both models is left out)."""
    claims = [
        claim_line("Temporal order needs temporal modelling (TSN averages over time)", "STFN", "TSN two-stream",
               "temporal_order_pair", summary),
        claim_line("Temporal modelling helps on the same features and budget", "STFN", "TSN (cached features)",
               "overall", summary),
        claim_line("The fusion connection helps where appearance and motion must be bound", "STFN", "STFN (no fusion)",
               "appearance_motion", summary),
        claim_line("The fusion connection helps overall", "STFN", "STFN (no fusion)", "overall", summary),
        *[claim_line(f"STFN improves on {b} (same features)", "STFN", b, "overall", summary)
          for b in ("Temporal-Inception", "TS-LSTM", "TLE")],
        claim_line("STFN improves on TSN two-stream", "STFN", "TSN two-stream", "overall", summary),
    ]
    return [
        "## The paper's claims, checked on this run", "",
        "Each claim is a paired test on the same test videos (McNemar): the videos only one of the two models "
        "gets right, pooled over seeds (seed s of one model against seed s of the other). It *holds* when "
        "z > 2 and no seed shows the opposite; otherwise it is not resolved by this run.", "",
        *[c for c in claims if c],
        "",
        "A small benchmark and few seeds: `stfn ablate --seeds N` measures the spread of more settings.", "",
    ]


def _protocol_lines(models: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """How each model was trained, its run folder, and how far its training loss still fell at the end."""
    return [
        "## Protocol", "",
        "TSN RGB and TSN flow are trained end to end, each on its own stream; TSN two-stream fuses their "
        "scores 1:1.5 by TSN's rule (the weighted sum of the logits). **Every other row except STFN end to "
        "end uses the two-stage protocol**: the backbones are the TSN ones, frozen, and the heads train on "
        "their cached per-frame features with the same epochs, learning rate and seeds; *TSN (cached "
        "features)* is TSN's own consensus head trained that way, so that the comparison of the heads "
        "isolates temporal modelling from the training budget. A head trains in seconds, so each trains "
        "with several seeds; `stfn demo --end-to-end` adds STFN fine-tuned end to end from the TSN "
        "backbones. Scores are those of the last epoch (no model selection on the test split).", "",
        "| model | protocol | epochs | training loss, last epoch | its fall over the last quarter | run folder |",
        "| --- | --- | ---: | ---: | ---: | --- |",
        *[f"| {name} | {e['protocol']} | {loss_fall(e.get('history') or [])} | `{e['run']}` |"
          for name, e in models.items()], "",
        "A training loss that still falls by several percent over the last quarter of the epochs is not "
        "converged: that model would gain from a longer schedule.", "",
    ]


def loss_fall(history: Sequence[Mapping[str, Any]]) -> str:
    """``epochs | last loss | fall over the last quarter (%)`` cells of a training history."""
    losses = [h["train_loss"] for h in history if "train_loss" in h]
    if not losses:
        return "- | - | -"
    back = max(1, len(losses) // 4)
    before = losses[-1 - back] if len(losses) > back else losses[0]
    fall = 100.0 * (before - losses[-1]) / before if before else 0.0
    return f"{len(losses)} | {losses[-1]:.3f} | {fall:.0f}% (epochs {len(losses) - back}-{len(losses)})".replace("-0%", "0%")


def _margin_lines(margins: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The leak check: TSN's within-pair accuracy on single positions (none without margins)."""
    if not margins:
        return []
    n = len(next(iter(margins.values()))["acc"])
    return [
        "## Leak check: TSN on single positions of the temporal-order pairs", "",
        "Within-pair accuracy (%) of TSN's per-frame classifier at each cached position of the test "
        "videos. TSN averages its scores over positions, so what it can get is about the mean over "
        "positions: " + ", ".join(f"{s} {fmt_pct(sum(v['acc']) / len(v['acc']))}" for s, v in margins.items())
        + " (chance 50). A single position far from 50 says that a frame at a *known* place in the video "
        "carries the order (e.g. where the object rests at the start); only a model that knows where "
        "its frames are in time can use that.", "",
        markdown_table(["stream"] + [str(t + 1) for t in range(n)],
                       [[s] + [fmt_pct(a, 0) for a in v["acc"]] for s, v in margins.items()],
                       align="l" + "r" * n),
    ]


def _settings_lines(summary: Mapping[str, Any]) -> list[str]:
    """Settings, classes per group, time per step, the machine and the plots."""
    settings = dict(summary["settings"], backbone=summary["backbone"], fusion=summary["fusion"],
                    flow=f"{summary['flow']['algorithm']}, bound {summary['flow']['bound']:g}")
    groups: dict[str, list[str]] = {}
    for c in summary["classes"]:
        groups.setdefault(c["group"], []).append(c["name"])
    return [
        "## Settings", "",
        markdown_table(["setting", "value"], [[k, v] for k, v in settings.items()]),
        "Classes per group: " + "; ".join(f"{g} ({len(v)}): {', '.join(v)}" for g, v in groups.items()) + ".", "",
        "## Time per step (s)", "",
        markdown_table(["step", "seconds"], [[k, f"{v:.1f}"] for k, v in summary["timings"].items()], align="lr"),
        "## Machine", "",
        markdown_table(["", ""], [[k, v] for k, v in summary["machine"].items()]),
        "## Plots", "",
        "![training curves](curves.png)", "", "![accuracy per group](groups.png)", "",
        "![STFN confusion matrix](confusion_stfn.png)", "",
    ]


def demo_markdown(summary: Mapping[str, Any]) -> str:
    """``report.md`` of a demo run from its ``results.json`` content."""
    return "\n".join([*_results_lines(summary), *_claim_lines(summary), *_protocol_lines(summary["models"]),
                      *_margin_lines(summary.get("tsn_position_margins") or {}), *_settings_lines(summary)])


def write_demo_report(out_dir: str | os.PathLike, summary: Mapping[str, Any],
                      histories: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
    """``report.md``, ``curves.png``, ``groups.png`` and ``confusion_stfn.png`` in ``out_dir``."""
    out = Path(out_dir)
    models = summary["models"]
    plot_training_curves(histories, out / "curves.png")
    plot_group_accuracy({k: v["metrics"] for k, v in models.items()}, out / "groups.png")
    stfn = models.get("STFN")
    if stfn and stfn.get("confusion"):
        plot_confusion(stfn["confusion"], [c["name"] for c in summary["classes"]], out / "confusion_stfn.png",
                       title="STFN, test split")
    atomic_write_text(out / "report.md", demo_markdown(summary))
