"""``stfn compare``'s ``report.md`` and plots, on plain Python data (its ``results.json`` content).

The same numbers as the demo's report (:mod:`stfn.study.report`) without the synthetic benchmark's
class groups: top-1, mean class accuracy and top-5 per model, accuracy per class per model, the
claims checked by paired tests on the whole test set, the protocol, every setting, the time per step
and the machine.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from stfn.fileio import atomic_write_text
from stfn.machine import machine_caption
from stfn.study.plots import plot_confusion, plot_group_accuracy, plot_training_curves
from stfn.study.report import claim_line, fmt_pct, loss_fall, markdown_table

__all__ = ["COMPARE_COLUMNS", "compare_markdown", "compare_table", "confusion_name", "write_compare_report"]

COMPARE_COLUMNS: tuple[tuple[str, str], ...] = (("overall", "top-1"), ("mean_class_acc", "mean class"),
                                                ("top5", "top-5"))


def _cell(model: Mapping[str, Any], key: str) -> str:
    std = (model.get("metrics_std") or {}).get(key)
    text = fmt_pct(model["metrics"].get(key))
    return f"{text} ± {fmt_pct(std)}" if len(model.get("seeds") or []) > 1 and std is not None else text


def compare_table(models: Mapping[str, Mapping[str, Any]]) -> str:
    """One row per model: top-1, mean class accuracy and top-5 (%), mean ± std over seeds."""
    rows = [[name] + [_cell(m, k) for k, _ in COMPARE_COLUMNS] for name, m in models.items()]
    return markdown_table(["model"] + [h for _, h in COMPARE_COLUMNS], rows, align="lrrr")


def _class_table(summary: Mapping[str, Any]) -> str:
    """Accuracy (%) per class (rows) and model (columns), and the test videos per class."""
    models = summary["models"]
    counts = next(iter(models.values()))["counts"] if models else {}
    rows = [[c["name"], counts.get(c["name"], 0)] + [fmt_pct(m["metrics"].get(c["name"])) for m in models.values()]
            for c in summary["classes"]]
    return markdown_table(["class", "test videos", *models], rows, align="lr" + "r" * len(models))


def _claims(summary: Mapping[str, Any]) -> list[str]:
    pairs = [("Temporal modelling helps on the same features and budget", "TSN (cached features)"),
             ("The fusion connection helps", "STFN (no fusion)"),
             *[(f"STFN improves on {b} (same features)", b) for b in ("Temporal-Inception", "TS-LSTM", "TLE")],
             ("STFN improves on TSN two-stream", "TSN two-stream")]
    lines = [claim_line(text, "STFN", b, "overall", summary) for text, b in pairs]
    return [x for x in lines if x]


def confusion_name(model: str) -> str:
    """``confusion_<model>.png`` with the model's name as a file name (``STFN (no fusion)`` -> ``stfn_no_fusion``)."""
    return "confusion_" + re.sub(r"[^a-z0-9]+", "_", model.lower()).strip("_") + ".png"


def compare_markdown(summary: Mapping[str, Any]) -> str:
    """``report.md`` of a comparison."""
    models, m = summary["models"], summary["machine"]
    seeds = max((len(e.get("seeds") or []) for e in models.values()), default=1)
    settings = dict(summary["settings"], dataset=summary["dataset"], split=summary["split"],
                    input=summary["input"], splits=summary["splits"], prepared=summary["prepared"],
                    flow=f"{summary['flow']['algorithm']}, bound {summary['flow']['bound']:g}", seed=summary["seed"])
    shared = summary.get("shared_groups") or []
    lines = [
        "# stfn compare report", "",
        f"Command: `{summary['command']}`. Total time {summary['time_s'] / 60:.1f} min on "
        f"{machine_caption(m)}.", "",
        f"{len(summary['classes'])} classes, {summary['train_videos']} training and {len(summary['test_videos'])} "
        f"test videos (split {summary['split']} of `{summary['splits']}`).", "",
    ]
    if shared:
        lines += [f"**Warning:** {len(shared)} group(s) of the names' `_gNN_` have videos on both sides "
                  f"(e.g. {shared[0]['group']}: `{shared[0]['train']}` in training, `{shared[0]['test']}` in test): "
                  "the test set is not leave-groups-out and the numbers may be optimistic.", ""]
    lines += [
        "## Test accuracy (%)", "", compare_table(models),
        *([f"With {len(summary['classes'])} classes, top-5 is 100 by construction.", ""]
          if len(summary["classes"]) <= 5 else []),
        (f"Heads trained on cached features show mean ± std over {seeds} training seeds (same backbones and "
         "test videos); the TSN rows are one seed." if seeds > 1 else "Every row is one training seed."), "",
        "## Claims, checked on this run", "",
        "Each is a paired test on the same test videos (McNemar), pooled over seeds; it *holds* when z > 2 "
        "and no seed shows the opposite, otherwise this run does not resolve it.", "", *_claims(summary), "",
        "## Accuracy per class (%)", "", _class_table(summary),
        "## Protocol", "",
        "TSN RGB and TSN flow train end to end, each on its own stream; TSN two-stream fuses their scores "
        "1:1.5 (TSN's weighted sum of logits). The other rows use the two-stage protocol: the TSN backbones, "
        "frozen, and heads trained on their cached per-frame features with the same epochs, learning rate "
        "and seeds (*TSN (cached features)* is TSN's own consensus head trained that way). Scores are those "
        "of the last epoch: no model selection on the test split.", "",
        "| model | protocol | epochs | training loss, last epoch | its fall over the last quarter | run folder |",
        "| --- | --- | ---: | ---: | ---: | --- |",
        *[f"| {name} | {e['protocol']} | {loss_fall(e.get('history') or [])} | `{e['run']}` |"
          for name, e in models.items()], "",
        "## Settings", "", markdown_table(["setting", "value"], [[k, v] for k, v in settings.items()]),
        "## Time per step (s)", "",
        markdown_table(["step", "seconds"], [[k, f"{v:.1f}"] for k, v in summary["timings"].items()], align="lr"),
        "## Machine", "", markdown_table(["", ""], [[k, v] for k, v in m.items()]),
        "## Plots", "", "![training curves](curves.png)", "", "![accuracy per class](classes.png)", "",
        *[f"![{name} confusion matrix]({confusion_name(name)})" for name, e in models.items() if e.get("confusion")],
        "",
    ]
    return "\n".join(lines)


def write_compare_report(out_dir: str | os.PathLike, summary: Mapping[str, Any],
                         histories: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
    """``report.md``, ``curves.png``, ``classes.png`` and one ``confusion_<model>.png`` per model."""
    out = Path(out_dir)
    models = summary["models"]
    names = [c["name"] for c in summary["classes"]]
    plot_training_curves(histories, out / "curves.png")
    plot_group_accuracy({k: v["metrics"] for k, v in models.items()}, out / "classes.png", groups=names,
                        pairs=False, title="test accuracy per class")
    for name, e in models.items():
        if e.get("confusion"):
            plot_confusion(e["confusion"], names, out / confusion_name(name), title=f"{name}, test split")
    atomic_write_text(out / "report.md", compare_markdown(summary))
