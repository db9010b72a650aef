"""What an evaluation gives back and writes: :class:`EvalResult` (one checkpoint scored on its test
set, :func:`stfn.engine.evaluate.evaluate_checkpoint`) and the files of an evaluation
(:func:`write_eval_outputs`: ``metrics.json``, ``per_class.csv``, ``confusion.png``, ``predictions.csv``)."""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from stfn.engine.metrics import write_confusion_png, write_per_class_csv
from stfn.fileio import atomic_write_json, atomic_write_text

__all__ = ["EvalResult", "write_eval_outputs"]


@dataclass(frozen=True)
class EvalResult:
    """What :func:`~stfn.engine.evaluate.evaluate_checkpoint` returns: one checkpoint scored on its test set.

    Metrics over the whole test set (:func:`~stfn.engine.metrics.compute_metrics`, accuracies in %):
    ``n`` (videos), ``top1``, ``top5``, ``mean_class_acc``, ``per_class`` (one accuracy per class, ``None``
    for a class without test videos) and ``confusion`` (``K x K`` counts, row = true class), all but ``n``
    ``None`` for an empty test set; ``streams``: each stream alone, ``{stream: {top1, top5,
    mean_class_acc}}`` (two-stream TSN; else ``None``). ``predictions``: one row per video (``index``,
    ``video``, ``label``, ``pred``, ``scores``, and ``stream_scores`` for TSN); ``seconds``: the scoring time.

    The run: the ``checkpoint`` path; the ``split``, ``views`` (crops) and ``frames`` it was tested
    with; its ``classes``, ``arch`` and ``model_streams``; the model's ``fusion_weights`` and the
    ``fusion_rule`` used. :meth:`to_dict` is the dict ``metrics.json`` holds (less ``predictions``).
    """

    n: int
    top1: float | None
    top5: float | None
    mean_class_acc: float | None
    per_class: list[float | None] | None
    confusion: list[list[int]] | None
    streams: dict[str, dict[str, float]] | None
    predictions: list[dict[str, Any]]
    seconds: float
    checkpoint: str
    split: int
    views: int
    frames: int
    classes: list[str]
    arch: str
    model_streams: list[str]
    fusion_weights: list[float]
    fusion_rule: str

    @classmethod
    def from_metrics(cls, metrics: dict[str, Any], **run: Any) -> EvalResult:
        """From :func:`~stfn.engine.evaluate.evaluate`'s dict and the run's fields (``checkpoint``, ``split``,
        ... ``fusion_rule``)."""
        return cls(n=metrics["n"], top1=metrics.get("top1"), top5=metrics.get("top5"),
                   mean_class_acc=metrics.get("mean_class_acc"), per_class=metrics.get("per_class"),
                   confusion=metrics.get("confusion"), streams=metrics.get("streams"),
                   predictions=metrics["predictions"], seconds=metrics["seconds"], **run)

    def to_dict(self) -> dict[str, Any]:
        """The result as one JSON-ready dict: :func:`~stfn.engine.evaluate.evaluate`'s keys (metrics,
        ``streams`` when set, ``predictions``, ``seconds``), then the run's, in that order. ``metrics.json``
        is this dict less ``predictions``; :func:`~stfn.engine.evaluate.fuse_results` takes such dicts."""
        out: dict[str, Any] = {"n": self.n}
        if self.confusion is not None:
            out.update(top1=self.top1, top5=self.top5, mean_class_acc=self.mean_class_acc,
                       per_class=self.per_class, confusion=self.confusion)
        if self.streams is not None:
            out["streams"] = self.streams
        return {**out, "predictions": self.predictions, "seconds": self.seconds, "checkpoint": self.checkpoint,
                "split": self.split, "views": self.views, "frames": self.frames, "classes": self.classes,
                "arch": self.arch, "model_streams": self.model_streams, "fusion_weights": self.fusion_weights,
                "fusion_rule": self.fusion_rule}


def write_eval_outputs(out_dir: str | os.PathLike, result: dict[str, Any], classes: list[str], title: str = "") -> None:
    """``metrics.json``, ``per_class.csv``, ``confusion.png`` and ``predictions.csv`` in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {k: v for k, v in result.items() if k != "predictions"}
    atomic_write_json(out_dir / "metrics.json", summary)
    write_per_class_csv(out_dir / "per_class.csv", result, classes)
    write_confusion_png(out_dir / "confusion.png", result["confusion"], classes, title=title)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    streams = list(result["predictions"][0].get("stream_scores", {})) if result["predictions"] else []
    w.writerow(["video", "label", "label_name", "pred", "pred_name", "correct", "score"]
               + [f"pred_{s}" for s in streams] + ["scores"])
    for p in result["predictions"]:
        row = [p["video"], p["label"], classes[p["label"]], p["pred"], classes[p["pred"]],
               int(p["pred"] == p["label"]), f"{p['scores'][p['pred']]:.5f}"]
        row += [int(torch.tensor(p["stream_scores"][s]).argmax()) for s in streams]
        row.append(json.dumps([round(x, 5) for x in p["scores"]]))
        w.writerow(row)
    atomic_write_text(out_dir / "predictions.csv", buf.getvalue())
