"""Video-level evaluation: every test video scored exactly once, over all its views.

A test item holds ``V`` views (crops) of ``T`` frames: ``rgb (V, T, 3, H, W)``, ``flow (V, T, 2L, H, W)``
or cached features ``rgb_feat (T, C)``. The views are flattened into clips and run through the
network in chunks of at most ``chunk_frames`` frames (so 25 frames x 10 crops fits in memory); a
video's score is the mean of its clips' logits (TSN). Under ``torchrun`` each rank scores its shard
(``SeededSampler(pad=False)``: no padding) and the predictions are gathered, so
every rank returns the metrics of the whole test set.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from stfn.config import Config
from stfn.data.datasets import build_loader
from stfn.data.features import build_run_dataset
from stfn.engine import distributed as dist_utils
from stfn.engine.backends import apply_backend, choose_backend, describe_backend
from stfn.engine.checkpoint import CheckpointError, checkpoint_config, load_checkpoint, load_model
from stfn.engine.data_identity import check_dataset, check_overlap, relocate
from stfn.engine.eval_result import EvalResult, write_eval_outputs
from stfn.engine.hub import is_repo_id
from stfn.engine.metrics import compute_metrics
from stfn.errors import ParameterError, StfnError
from stfn.models.fusion import late_fusion
from stfn.runtime import INPUT_KEYS, bare_model, resolve_amp, score_clips

__all__ = [
    "evaluate",
    "evaluate_checkpoint",
    "evaluate_many",
    "fuse_predictions",
    "fuse_results",
    "make_test_loader",
    "metrics_from_predictions",
]

_NDIM_NO_VIEWS = {"rgb": 5, "flow": 5, "rgb_feat": 3, "flow_feat": 3}  # batched, without a views axis


def _score_batch(
    model: nn.Module, batch: dict[str, Any], device: torch.device, amp_dtype: torch.dtype | None, chunk_frames: int
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Video scores ``(B, K)`` (mean over the ``V`` views of ``(B, V, ...)`` inputs) and per-stream
    scores when the model has them (TSN)."""
    inputs = {k: batch[k] for k in INPUT_KEYS if k in batch}
    if not inputs:
        raise StfnError(f"a test batch has none of the input keys {', '.join(INPUT_KEYS)}")
    first = next(iter(inputs))
    B = inputs[first].shape[0]
    has_views = inputs[first].ndim == _NDIM_NO_VIEWS[first] + 1
    V = inputs[first].shape[1] if has_views else 1
    clips = {k: (v.flatten(0, 1) if has_views else v) for k, v in inputs.items()}
    logits, streams = score_clips(model, clips, device, amp_dtype, chunk_frames)
    scores = logits.view(B, V, -1).mean(dim=1)
    return scores, {s: v.view(B, V, -1).mean(dim=1) for s, v in streams.items()}


def _fuse_stream_scores(model: nn.Module, streams: dict[str, torch.Tensor], weights: list[float] | None,
                        rule: str | None) -> torch.Tensor:
    """Video scores ``(B, K)`` of per-stream scores ``{stream: (B, K)}`` fused anew with ``weights`` /
    ``rule`` (each defaults to the TSN head's own)."""
    names, head = list(streams), getattr(model, "head", None)
    weights = list(weights) if weights is not None else [head.fusion_weights[s] for s in names]
    if len(names) != len(weights):
        raise StfnError(f"{len(weights)} fusion weights given for the streams {', '.join(names)}")
    return late_fusion([streams[s] for s in names], weights, rule or getattr(head, "fusion_rule", "logits"))


def metrics_from_predictions(predictions: list[dict[str, Any]], num_classes: int) -> dict[str, Any]:
    """Metrics of a list of ``{"video", "label", "scores", ["stream_scores"]}`` rows."""
    scores = torch.tensor([p["scores"] for p in predictions], dtype=torch.float32)
    labels = torch.tensor([p["label"] for p in predictions], dtype=torch.long)
    out = compute_metrics(scores.view(len(predictions), num_classes), labels, num_classes)
    stream_names = list(predictions[0].get("stream_scores", {})) if predictions else []
    if len(stream_names) > 1:  # each stream alone, next to the fused result
        out["streams"] = {}
        for s in stream_names:
            m = compute_metrics(torch.tensor([p["stream_scores"][s] for p in predictions]), labels, num_classes)
            out["streams"][s] = {k: m[k] for k in ("top1", "top5", "mean_class_acc")}
    return out


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    *,
    amp_dtype: torch.dtype | None = None,
    chunk_frames: int = 256,
    fusion_weights: list[float] | None = None,
    fusion_rule: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Score every video of ``loader`` once; metrics over the whole set, on every rank.

    Returns ``compute_metrics`` keys (``top1``, ``top5``, ``mean_class_acc``, ``per_class``,
    ``confusion``, ``n``) plus ``predictions`` (per video: ``video``, ``label``, ``pred``, ``scores``,
    and ``stream_scores`` for TSN), ``streams`` (each stream alone, for two-stream TSN) and
    ``seconds``. With ``fusion_weights`` and/or ``fusion_rule`` (``logits`` | ``softmax``, see
    :func:`stfn.models.fusion.late_fusion`) a two-stream TSN's per-stream scores are re-fused that way
    (the other one defaults to the model's own).
    """
    model = bare_model(model)
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    fuse_anew = fusion_weights is not None or fusion_rule is not None
    rows: list[dict[str, Any]] = []
    for batch in _with_progress_bar(loader, progress):
        scores, streams = _score_batch(model, batch, device, amp_dtype, chunk_frames)
        if fuse_anew and len(streams) > 1:
            scores = _fuse_stream_scores(model, streams, fusion_weights, fusion_rule)
        rows += _prediction_rows(batch, scores, streams)
    model.train(was_training)
    predictions = _gather_predictions(rows)
    num_classes = len(predictions[0]["scores"]) if predictions else 0
    out = metrics_from_predictions(predictions, num_classes) if predictions else {"n": 0}
    out["predictions"] = predictions
    out["seconds"] = time.perf_counter() - start
    return out


def _with_progress_bar(loader: DataLoader, progress: bool) -> Iterable[dict[str, Any]]:
    """``loader``'s batches, counted by a progress bar on stderr when ``progress``."""
    if not progress:
        return loader
    from tqdm import tqdm  # lazy: only an evaluation that shows progress needs it

    return tqdm(loader, total=len(loader), desc="eval", unit="batch", leave=False, dynamic_ncols=True)


def _prediction_rows(batch: dict[str, Any], scores: torch.Tensor,
                     streams: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
    """One prediction row per video of ``batch`` (``index``, ``video``, ``label``, ``pred``, ``scores``
    and, for TSN, ``stream_scores``) from its video scores ``(B, K)`` and per-stream scores."""
    rows = []
    for i in range(scores.shape[0]):
        row = {
            "index": int(batch["index"][i]),
            "video": batch["video"][i],
            "label": int(batch["label"][i]),
            "pred": int(scores[i].argmax()),
            "scores": scores[i].tolist(),
        }
        if streams:
            row["stream_scores"] = {s: v[i].tolist() for s, v in streams.items()}
        rows.append(row)
    return rows


def _gather_predictions(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every rank's prediction rows (under ``torchrun``; else this process's), one per video, in
    dataset order."""
    merged: dict[int, dict[str, Any]] = {}
    for part in dist_utils.gather_objects(rows):
        for row in part:
            merged.setdefault(row["index"], row)  # a duplicate (padded) index is scored once
    return [merged[i] for i in sorted(merged)]


def make_test_loader(test_set: Dataset, cfg: Config, distributed: bool, batch_size: int | None = None) -> DataLoader:
    """Ordered test loader, sharded without padding under ``torchrun``. The default batch holds about
    as many frames as a training batch (``train.batch_size * data.frames``), at least one video."""
    per_video = max(1, cfg.data.test_crops * cfg.data.frames) if not cfg.data.features else cfg.data.frames
    bs = batch_size or max(1, (cfg.train.batch_size * cfg.data.frames) // per_video)
    return build_loader(test_set, bs, train=False, workers=cfg.data.num_workers, distributed=distributed)


def evaluate_checkpoint(
    path: str | os.PathLike,
    *,
    split: int | None = None,
    views: int | None = None,
    frames: int | None = None,
    out_dir: str | os.PathLike | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    fusion_weights: list[float] | None = None,
    fusion_rule: str | None = None,
    chunk_frames: int = 256,
    progress: bool = True,
    data_root: str | os.PathLike | None = None,
    splits_dir: str | os.PathLike | None = None,
    features_dir: str | os.PathLike | None = None,
    torch_compile: bool | str | None = None,
    backend: str = "auto",
) -> EvalResult:
    """Load a checkpoint, score its test set (``split``/``views``/``frames`` override the
    checkpoint's data settings) and, when ``out_dir`` is given, write the files of
    :func:`write_eval_outputs` there (rank 0). Returns an :class:`EvalResult` (the metrics, the
    predictions and the settings tested with). ``torch_compile`` (``auto | true | false``; default the
    checkpoint's ``train.compile``) compiles the backbones (:func:`~stfn.runtime.should_compile`);
    ``backend`` (``auto | eager | compile | openvino``, :func:`stfn.engine.backends.choose_backend`) is
    the runtime of the backbones, ``auto`` OpenVINO where measured fastest, else ``torch_compile``'s choice.

    ``data_root`` / ``splits_dir`` (a checkpoint trained on frames) or ``features_dir`` (one trained on
    cached features) say where the data is now, when it has moved since training. Refuses data whose
    lists differ from those the checkpoint trained with (:func:`check_dataset`) and a test list that
    overlaps the videos it has seen (:func:`check_overlap`).
    """
    info, dev = dist_utils.init_distributed(device)
    model, cfg, ckpt = load_model(path)
    relocate(cfg, path, data_root, splits_dir, features_dir)
    _override_test_settings(cfg, split, views, frames)
    test_set, classes = _checked_test_set(path, cfg, ckpt)
    amp_dtype = _ready_for_inference(model, cfg, dev, len(test_set), torch_compile, backend, progress and info.is_main)
    loader = make_test_loader(test_set, cfg, info.distributed, batch_size)
    metrics = evaluate(model, loader, dev, amp_dtype=amp_dtype, chunk_frames=chunk_frames,
                       fusion_weights=fusion_weights, fusion_rule=fusion_rule, progress=progress and info.is_main)
    result = EvalResult.from_metrics(
        metrics, checkpoint=str(path), split=cfg.data.split, views=cfg.data.test_crops, frames=cfg.data.frames,
        classes=classes, arch=cfg.model.arch, model_streams=list(cfg.model.streams),
        fusion_weights=list(cfg.model.fusion_weights), fusion_rule=fusion_rule or cfg.model.fusion_rule)
    if out_dir is not None and info.is_main:
        write_eval_outputs(out_dir, result.to_dict(), classes, title=f"{Path(path).name}, split {cfg.data.split}")
    return result


def _override_test_settings(cfg: Config, split: int | None, views: int | None, frames: int | None) -> None:
    """:func:`evaluate_checkpoint`'s ``split`` / ``views`` / ``frames`` over the checkpoint's data settings."""
    if split is not None:
        cfg.data.split = split
    if views is not None:
        if views not in (1, 3, 10):
            raise ParameterError("views", f"must be 1, 3 or 10, got {views}")
        cfg.data.test_crops = views
    if frames is not None:
        cfg.data.frames = frames


def _checked_test_set(path: str | os.PathLike, cfg: Config, ckpt: dict[str, Any]) -> tuple[Dataset, list[str]]:
    """The test set of ``cfg`` and the checkpoint's classes, refused when its lists are not those the
    checkpoint trained with, its classes differ, or it holds videos the checkpoint has seen."""
    test_set = build_run_dataset(cfg, "test")
    check_dataset(ckpt, path, cfg, dict(getattr(test_set, "identity", {})))
    classes = list(ckpt["classes"])
    if list(test_set.classes) != classes:
        raise CheckpointError(
            f"checkpoint '{path}' knows {len(classes)} classes but the test set of split {cfg.data.split} "
            f"has {len(test_set.classes)} different ones (is it the same dataset?)"
        )
    check_overlap(ckpt, list(test_set.videos), f"checkpoint '{path}'", cfg.data.split)
    return test_set, classes


def _ready_for_inference(model: nn.Module, cfg: Config, dev: torch.device, videos: int,
                         torch_compile: bool | str | None, backend: str = "auto",
                         say: bool = False) -> torch.dtype | None:
    """Move ``model`` to ``dev`` (channels_last per ``train.channels_last``) and put its backbones on
    ``backend`` (:func:`~stfn.engine.backends.choose_backend` for ``videos`` test videos; ``auto`` falls
    back to ``torch_compile``, default ``train.compile``), saying which on stderr when ``say``; returns
    the autocast dtype of ``train.amp`` there."""
    model.to(dev).eval()
    if cfg.train.channels_last:
        model.to(memory_format=torch.channels_last)
    amp_dtype, _ = resolve_amp(cfg.train.amp, dev, cfg.train.channels_last)
    frames = videos * max(1, cfg.data.test_crops) * cfg.data.frames  # through each backbone
    setting, what = (cfg.train.compile, "config key 'train.compile'") if torch_compile is None else (torch_compile, "torch_compile")
    chosen = choose_backend(backend, model, dev, frames, cfg.data.crop_size, setting, compile_what=what)
    ran = apply_backend(model, chosen, amp_dtype)
    if say:
        print(f"backbones: {describe_backend(model, ran, amp_dtype)}"
              + (" (--backend auto)" if backend == "auto" else ""), file=sys.stderr, flush=True)
    return amp_dtype


SUMMARY_KEYS = ("top1", "top5", "mean_class_acc", "n")


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    keep = SUMMARY_KEYS + ("checkpoint", "checkpoints", "split", "views", "frames", "arch", "model_streams",
                           "streams", "weights", "rule", "fusion_rule", "out_dir")
    return {k: result[k] for k in keep if k in result}


def fuse_predictions(by_stream: dict[str, list[dict[str, Any]]], weights: Sequence[float],
                     rule: str = "logits") -> list[dict[str, Any]]:
    """TSN late fusion (:func:`stfn.models.fusion.late_fusion` by ``rule``) of single-stream evaluations
    of the same test videos: ``{stream: prediction rows}`` (as :func:`evaluate` writes them) -> fused
    rows with ``stream_scores``, matched by video, in the order of the first stream's rows."""
    names = list(by_stream)
    first = by_stream[names[0]]
    rows = {s: {p["video"]: p for p in by_stream[s]} for s in names}
    if any(set(rows[s]) != set(rows[names[0]]) or len(rows[s]) != len(by_stream[s]) for s in names):
        raise StfnError(f"the {' and '.join(names)} evaluations did not score the same test videos "
                        "(same split and dataset?)")
    scores = {s: torch.tensor([rows[s][p["video"]]["scores"] for p in first]) for s in names}  # (N, K) each
    fused = late_fusion([scores[s] for s in names], weights, rule)
    return [{"index": p["index"], "video": p["video"], "label": p["label"], "pred": int(fused[i].argmax()),
             "scores": fused[i].tolist(), "stream_scores": {s: scores[s][i].tolist() for s in names}}
            for i, p in enumerate(first)]


def fuse_results(results: list[dict[str, Any]], weights: list[float] | None = None,
                 rule: str | None = None) -> dict[str, Any]:
    """TSN late fusion of single-stream evaluations of one split (an RGB and a flow checkpoint), per
    video by :func:`fuse_predictions`; ``weights`` and ``rule`` default to the RGB model's
    ``model.fusion_weights`` (1 : 1.5) and ``model.fusion_rule`` (``logits``: TSN's weighted sum of
    logits). Returns the fused metrics with ``predictions`` and ``streams``."""
    by_stream = {r["model_streams"][0]: r for r in results}
    order = [s for s in ("rgb", "flow") if s in by_stream]
    weights = list(weights if weights is not None else by_stream[order[0]]["fusion_weights"])
    if len(weights) != len(order):
        raise StfnError(f"{len(weights)} fusion weights given for the {len(order)} streams {', '.join(order)}")
    rule = rule or by_stream[order[0]].get("fusion_rule", "logits")
    predictions = fuse_predictions({s: by_stream[s]["predictions"] for s in order}, weights, rule)
    out = metrics_from_predictions(predictions, len(predictions[0]["scores"]) if predictions else 0)
    out.update(predictions=predictions, split=results[0]["split"], weights=weights, rule=rule,
               checkpoints=[by_stream[s]["checkpoint"] for s in order], classes=results[0]["classes"],
               streams={s: {k: by_stream[s][k] for k in ("top1", "top5", "mean_class_acc")} for s in order})
    return out


def _default_out(path: str | os.PathLike, split: int, views: int | None, frames: int | None) -> Path:
    """Beside the checkpoint (or folder); for a Hub repo id ``org/name``, ``eval_org_name_...`` here."""
    p = Path(path)
    tag = f"split{split}" + (f"_{views}crops" if views else "") + (f"_{frames}f" if frames else "")
    if is_repo_id(str(path)):
        return Path(f"eval_{str(path).replace('/', '_')}_{tag}")
    return p.parent / f"eval_{p.stem}_{tag}"


def evaluate_many(
    paths: list[str],
    *,
    splits: list[int] | None = None,
    views: int | None = None,
    frames: int | None = None,
    out_dir: str | os.PathLike | None = None,
    fusion_weights: list[float] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """``stfn eval``: evaluate each checkpoint (on ``splits[i]``, default its own training split),
    fuse an RGB and a flow checkpoint of the same split (TSN), and average over splits.

    Files go to ``out_dir`` (one checkpoint) or ``out_dir/<name>`` (several); without ``out_dir``
    next to each checkpoint (``eval_<stem>_split<N>...``). Returns ``{"results", "fused",
    "splits": {N: final metrics}, "mean"}`` (summaries, without per-video rows).
    """
    if splits and len(splits) != len(paths):
        raise ParameterError("splits", f"lists {len(splits)} splits for {len(paths)} checkpoints: give one "
                             "checkpoint per split, in the same order")
    results = []
    for i, path in enumerate(paths):
        split = splits[i] if splits else checkpoint_config(load_checkpoint(path), path).data.split
        if out_dir is None:
            sub = _default_out(path, split, views, frames)
        else:
            sub = Path(out_dir) if len(paths) == 1 else Path(out_dir) / f"{Path(path).parent.name}_{Path(path).stem}_split{split}"
        r = evaluate_checkpoint(path, split=split, views=views, frames=frames, out_dir=sub,
                                fusion_weights=fusion_weights, **kwargs)
        results.append({**r.to_dict(), "out_dir": str(sub)})
    groups: dict[int, list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault(r["split"], []).append(r)
    fused, final = [], {}
    for split, group in sorted(groups.items()):
        singles = [r for r in group if len(r["model_streams"]) == 1]
        if len(group) == 2 and len(singles) == 2 and {r["model_streams"][0] for r in singles} == {"rgb", "flow"}:
            f = fuse_results(singles, fusion_weights, kwargs.get("fusion_rule"))
            base = Path(out_dir) if out_dir is not None else Path(singles[0]["checkpoint"]).parent
            f["out_dir"] = str(base / f"eval_fused_split{split}")
            if dist_utils.get_info().is_main:
                write_eval_outputs(f["out_dir"], f, f["classes"], title=f"fused rgb+flow, split {split}")
            fused.append(f)
            final[split] = f
        elif len(group) == 1:
            final[split] = group[0]
    out: dict[str, Any] = {"results": [_summary(r) for r in results], "fused": [_summary(f) for f in fused],
                           "splits": {s: _summary(r) for s, r in final.items()}}
    if len(final) > 1 and len(final) == len(groups):
        out["mean"] = {k: sum(r[k] for r in final.values()) / len(final) for k in ("top1", "top5", "mean_class_acc")}
        out["mean"]["splits"] = sorted(final)
    return out
