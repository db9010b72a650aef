"""Result tables, per-group accuracy on the synthetic benchmark, machine facts and PNG plots.

Shared by ``stfn demo`` and ``stfn ablate``. Everything here works on plain Python data (lists of
prediction dicts, metric dicts), so it is tested without training anything.

A *prediction* is one test video as the engine reports it::

    {"video": "MoveLeft/v_0001", "label": 3, "scores": [K floats]}

The synthetic benchmark's ``classes.json`` gives each class a ``group`` (``appearance``, ``motion``,
``temporal_order``, ``appearance_motion``); the ``temporal_order`` classes come in pairs that hold
the same frames and motions in a different order, and their *within-pair accuracy* (is the true
class scored above its partner? chance 0.5) is the number that tells order-aware models apart.
"""

from __future__ import annotations

import io
import json
import math
import os
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from stfn.errors import StfnError
from stfn.significance import argmax

__all__ = [
    "GROUPS",
    "class_groups",
    "curve_points",
    "demo_markdown",
    "demo_table",
    "fmt_pct",
    "fmt_summary",
    "group_accuracy",
    "load_classes_meta",
    "machine_info",
    "markdown_table",
    "plot_confusion",
    "plot_group_accuracy",
    "plot_training_curves",
    "summarize",
    "temporal_pairs",
    "write_demo_report",
]

GROUPS: tuple[str, ...] = ("appearance", "motion", "temporal_order", "appearance_motion")


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


# ----------------------------------------------------------------------------- class groups


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


# ----------------------------------------------------------------------------- machine


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """CPU model, cores usable by this process, torch/python versions, accelerator if any."""
    import torch

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS / Windows
        cores = os.cpu_count() or 1
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": cores,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


# ----------------------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike) -> Path:
    from stfn.fileio import atomic_write_bytes

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
    results: Mapping[str, Mapping[str, Any]], path: str | os.PathLike, groups: Sequence[str] = GROUPS
) -> Path:
    """Grouped bars: accuracy per class group (and overall, and within-pair) for each model."""
    plt = _pyplot()
    cols = [g for g in groups] + ["temporal_order_pair", "overall"]
    labels = [g.replace("_", "\n") for g in groups] + ["order\nwithin-pair", "overall"]
    models = list(results)
    width = 0.8 / max(1, len(models))
    fig, ax = plt.subplots(figsize=(max(8, 1.6 * len(cols)), 4.2))
    for i, m in enumerate(models):
        vals = [results[m].get(c) for c in cols]
        xs = [j + (i - (len(models) - 1) / 2) * width for j in range(len(cols))]
        ax.bar(xs, [v if v is not None else 0.0 for v in vals], width, label=m)
    ax.axhline(50.0, color="grey", lw=0.8, ls=":")
    ax.set_xticks(range(len(cols)), labels, fontsize=8)
    ax.set(ylabel="test accuracy (%)", ylim=(0, 105), title="accuracy per class group (dotted: pair chance)")
    ax.legend(fontsize=7, ncol=min(4, len(models)), loc="upper center", bbox_to_anchor=(0.5, -0.14))
    ax.grid(axis="y", alpha=0.3)
    path = _save(fig, path)
    plt.close(fig)
    return path


def plot_confusion(
    confusion: Sequence[Sequence[float]], classes: Sequence[str], path: str | os.PathLike, title: str = ""
) -> Path:
    """Row-normalised confusion matrix (rows: true class, columns: predicted) as a heat map."""
    import numpy as np

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


def _claim(text: str, a: str, b: str, key: str, summary: Mapping[str, Any]) -> str | None:
    """One line comparing models ``a`` and ``b`` on ``key`` by a paired test on the same test videos
    (:mod:`stfn.significance`): a difference the test cannot separate from noise is called unresolved."""
    from stfn.significance import compare, verdict_text

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


def demo_markdown(summary: Mapping[str, Any]) -> str:
    """``report.md`` of a demo run from its ``results.json`` content."""
    models, m = summary["models"], summary["machine"]
    claims = [
        _claim("Temporal order needs temporal modelling (TSN averages over time)", "STFN", "TSN two-stream",
               "temporal_order_pair", summary),
        _claim("The fusion connection helps where appearance and motion must be bound", "STFN", "STFN (no fusion)",
               "appearance_motion", summary),
        _claim("The fusion connection helps overall", "STFN", "STFN (no fusion)", "overall", summary),
        _claim("STFN improves on Temporal-Inception (same features)", "STFN", "Temporal-Inception", "overall",
               summary),
        _claim("STFN improves on TSN two-stream", "STFN", "TSN two-stream", "overall", summary),
    ]
    seeds = max((len(e.get("seeds") or []) for e in models.values()), default=1)
    lines = [
        "# stfn demo report", "",
        f"Command: `{summary['command']}`. Seed {summary['seed']}. Total time "
        f"{summary['time_s'] / 60:.1f} min on {m['cpu']} ({m['cores']} cores, torch {m['torch']}"
        f"{', GPU ' + m['cuda'] if m.get('cuda') else ''}).", "",
        "## Test accuracy (%) per class group", "",
        demo_table(models),
        "Temporal-order classes come in pairs holding the same frames and motions in a different order; "
        "*within pair* asks whether the true class scores above its partner (chance 50).", "",
        ("Models trained on cached features show mean ± std over their training seeds "
         f"({seeds} seeds, same backbones and test videos); the TSN rows are one seed." if seeds > 1 else
         "Every row is one training seed."), "",
        "## The paper's claims, checked on this run", "",
        "Each claim is a paired test on the same test videos (McNemar): the videos only one of the two models "
        "gets right, pooled over seeds (seed s of one model against seed s of the other). It *holds* when "
        "z > 2 and no seed shows the opposite; otherwise it is not resolved by this run.", "",
        *[c for c in claims if c],
        "",
        "A small benchmark and few seeds: `stfn ablate --seeds N` measures the spread of more settings.", "",
        "## Protocol", "",
        "TSN RGB and TSN flow are trained end to end, each on its own stream; TSN two-stream fuses their "
        "scores 1:1.5. **Temporal-Inception, STFN without fusion and STFN use the two-stage protocol**: the "
        "backbones are the TSN ones, frozen, and the heads train on their cached per-frame features. "
        "A head trains in seconds, so each trains with several seeds; `stfn demo --end-to-end` adds STFN "
        "fine-tuned end to end from the TSN backbones. Scores are those of the last epoch (no model selection on the test split).", "",
        "| model | protocol | run folder |", "| --- | --- | --- |",
        *[f"| {name} | {e['protocol']} | `{e['run']}` |" for name, e in models.items()], "",
    ]
    margins = summary.get("tsn_position_margins") or {}
    if margins:
        n = len(next(iter(margins.values()))["acc"])
        lines += [
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
    settings = dict(summary["settings"], backbone=summary["backbone"], fusion=summary["fusion"],
                    flow=f"{summary['flow']['algorithm']}, bound {summary['flow']['bound']:g}")
    groups: dict[str, list[str]] = {}
    for c in summary["classes"]:
        groups.setdefault(c["group"], []).append(c["name"])
    lines += [
        "## Settings", "",
        markdown_table(["setting", "value"], [[k, v] for k, v in settings.items()]),
        "Classes per group: " + "; ".join(f"{g} ({len(v)}): {', '.join(v)}" for g, v in groups.items()) + ".", "",
        "## Time per step (s)", "",
        markdown_table(["step", "seconds"], [[k, f"{v:.1f}"] for k, v in summary["timings"].items()], align="lr"),
        "## Machine", "",
        markdown_table(["", ""], [[k, v] for k, v in m.items()]),
        "## Plots", "",
        "![training curves](curves.png)", "", "![accuracy per group](groups.png)", "",
        "![STFN confusion matrix](confusion_stfn.png)", "",
    ]
    return "\n".join(lines)


def write_demo_report(out_dir: str | os.PathLike, summary: Mapping[str, Any],
                      histories: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
    """``report.md``, ``curves.png``, ``groups.png`` and ``confusion_stfn.png`` in ``out_dir``."""
    from stfn.fileio import atomic_write_text

    out = Path(out_dir)
    models = summary["models"]
    plot_training_curves(histories, out / "curves.png")
    plot_group_accuracy({k: v["metrics"] for k, v in models.items()}, out / "groups.png")
    stfn = models.get("STFN")
    if stfn and stfn.get("confusion"):
        plot_confusion(stfn["confusion"], [c["name"] for c in summary["classes"]], out / "confusion_stfn.png",
                       title="STFN, test split")
    atomic_write_text(out / "report.md", demo_markdown(summary))
