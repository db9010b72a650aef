"""The comparison protocol shared by ``stfn demo`` and ``stfn compare``: TSN RGB and TSN flow end to end,
TSN two-stream (late fusion), cached features of both backbones, every head on them over several
seeds (the two-stage protocol, :mod:`stfn.study.protocol`), optionally STFN end to end, and each
model's ``results.json`` entry (metrics per seed, mean ± std, per-video outcomes for the paired tests).

A *preset* is any object with the fields of :class:`stfn.study.presets.DemoPreset` that the configs
read (``frames``, ``feature_frames``, ``flow_length``, epochs, learning rates, ``head_hidden``,
``batch_size``, ``workers``, ``e2e_epochs``, ``head_seeds``). Every step resumes.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

from stfn.config import STREAMS, Config
from stfn.engine.checkpoint import load_checkpoint
from stfn.engine.evaluate import fuse_predictions, metrics_from_predictions
from stfn.engine.features import extract_features
from stfn.errors import StfnError
from stfn.runtime import describe_dtype, resolve_amp, resolve_device
from stfn.study.analysis import group_accuracy
from stfn.study.presets import E2E_MODEL, HEADS, MODELS
from stfn.study.protocol import (
    build_two_stream_checkpoint,
    parallel_processes,
    train_backbones,
    train_run,
    train_runs,
)
from stfn.study.report import summarize
from stfn.study.significance import video_outcomes

__all__ = [
    "DEMO_KEYS",
    "HEAD_COST",
    "PROTOCOLS",
    "Steps",
    "backbone_amp",
    "backbone_config",
    "check_stamp",
    "end_to_end_config",
    "head_config",
    "model_entries",
    "run_protocol",
    "seed_dir",
    "test_videos",
    "train_heads",
    "tsn_two_stream",
]

# The metrics of a model's entry on the synthetic benchmark (its class groups), then top-5.
DEMO_KEYS = ("overall", "appearance", "motion", "temporal_order", "appearance_motion", "temporal_order_pair",
             "mean_class_acc", "top5")

# A head's training time relative to STFN's on the demo's features (2-core Zen 4, one thread; TSN's
# consensus head 0.1, TLE 0.4, TS-LSTM 1.0, Temporal-Inception 1.7): the costliest start first.
HEAD_COST = {"temporal_inception": 1.7, "ts_lstm": 1.0, "stfn": 1.0, "tle": 0.4, "tsn": 0.1}

# How each model of the table is trained (``results.json``'s ``protocol``).
_TWO_STAGE = "two-stage: heads on frozen cached features of the TSN backbones"
PROTOCOLS: dict[str, str] = {
    "TSN RGB": "end to end, RGB only", "TSN flow": "end to end, flow only",
    "TSN two-stream": "late fusion of TSN RGB and TSN flow (1:1.5, TSN's weighted sum of logits)",
    "TSN (cached features)": _TWO_STAGE + " (TSN's consensus head: per-frame classifier, average, logit fusion)",
    "Temporal-Inception": _TWO_STAGE, "TS-LSTM": _TWO_STAGE, "TLE": _TWO_STAGE,
    "STFN (no fusion)": _TWO_STAGE, "STFN": _TWO_STAGE,
    E2E_MODEL: "end to end, backbones initialised from TSN RGB / TSN flow",
}


class Steps:
    """Numbered progress lines with the time each step took."""

    def __init__(self, total: int, log: Any, name: str = "demo") -> None:
        self.total, self.log, self.i, self.times, self.what = total, log, 0, {}, name
        self._name, self._start = "", 0.0

    def start(self, name: str, text: str) -> None:
        self.end()
        self.i += 1
        self._name, self._start = name, time.perf_counter()
        self.log(f"[{self.what} {self.i}/{self.total}] {text}")

    def end(self) -> None:
        if self._name:
            self.times[self._name] = round(time.perf_counter() - self._start, 2)
            self.log(f"[{self.what} {self.i}/{self.total}] done in {self.times[self._name]:.1f} s")
            self._name = ""


def backbone_config(base: Config, p: Any) -> Config:
    """TSN, trained end to end on each stream alone (:func:`stfn.study.protocol.train_backbones`)."""
    cfg = copy.deepcopy(base)
    cfg.name = f"{base.name}-tsn"
    cfg.model.arch, cfg.model.tsn_dropout = "tsn", 0.5
    cfg.train.epochs, cfg.train.lr = p.backbone_epochs, p.backbone_lr
    cfg.train.eval_every = max(1, p.backbone_epochs // 2)  # scoring 650 test videos costs about an epoch
    return cfg


def head_config(base: Config, p: Any, arch: str, fusion: str, features: Path, seed: int | None = None) -> Config:
    """A two-stream head trained on cached features, with training seed ``seed`` (default: the
    base config's)."""
    cfg = copy.deepcopy(base)
    cfg.name = f"{base.name}-{arch}-{fusion}"
    cfg.train.seed = base.train.seed if seed is None else seed
    cfg.model.arch, cfg.model.streams, cfg.model.freeze_backbone = arch, list(STREAMS), True
    cfg.model.head.fusion, cfg.model.head.hidden_dim = fusion, p.head_hidden
    cfg.model.tsn_dropout = 0.5  # TSN's consensus head as on the backbones (step 3)
    if arch == "temporal_inception":
        cfg.model.head.dropout = 0.2  # Ma et al.'s run.lua (both of its dropouts)
    if arch == "tle":
        cfg.model.fusion_weights = [1.0, 1.0]  # Diba et al. average the two streams' scores
    cfg.data.features, cfg.data.num_workers = str(features), 0  # cached features load fastest in-process
    cfg.train.epochs, cfg.train.lr = p.head_epochs, p.head_lr
    cfg.train.eval_every = max(1, p.head_epochs // 6)  # points of the training curves
    cfg.train.save_every = cfg.train.eval_every  # an epoch takes a fraction of a second: a kill loses seconds
    # train.amp stays the base config's (auto: bf16 where the CPU has it in hardware, as for the backbones;
    # TwoStreamNet.forward_head keeps a head in float32 where bf16 is emulated)
    return cfg


def end_to_end_config(base: Config, p: Any, features: Path, runs: Path) -> Config:
    """STFN fine-tuned end to end from the TSN backbones (``--end-to-end``)."""
    cfg = head_config(base, p, "stfn", base.model.head.fusion, features)
    cfg.name, cfg.data.features, cfg.model.freeze_backbone = f"{base.name}-stfn-e2e", "", False
    cfg.data.num_workers, cfg.train.amp, cfg.train.eval_every = p.workers, base.train.amp, p.e2e_epochs
    cfg.train.epochs, cfg.train.backbone_lr_mult = p.e2e_epochs, 0.1
    cfg.train.init_rgb, cfg.train.init_flow = str(runs / "tsn_rgb" / "last.pt"), str(runs / "tsn_flow" / "last.pt")
    return cfg


def check_stamp(path: Path, stamp: dict[str, Any], what: str = "demo") -> None:
    """Refuse to resume a folder of a run made with other settings (preset, its settings, seed, ...),
    naming each setting that differs."""
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise StfnError(f"'{path}' is not a readable {what} record ({e}); choose another --out") from None
    if old == stamp:
        return
    diff = [f"{k} {old.get(k)!r} there, {v!r} now" for k, v in stamp.items() if k != "settings" and old.get(k) != v]
    before = old.get("settings") if isinstance(old.get("settings"), dict) else {}
    diff += [f"{k} {before.get(k)!r} there, {v!r} now" for k, v in stamp["settings"].items() if before.get(k) != v]
    raise StfnError(f"'{path.parent}' holds a {what} run with other settings ({'; '.join(diff)}); "
                    "choose another --out or delete that folder")


def backbone_amp(base: Config) -> str:
    """What ``train.amp: auto`` ran the backbones in on this machine (it depends on the CPU or GPU)."""
    device = resolve_device(base.train.device, what="config key 'train.device'")
    dtype, _ = resolve_amp(base.train.amp, device, base.train.channels_last)
    return describe_dtype(dtype) if dtype is not None else "float32"


def seed_dir(run_dir: Path, seed: int, first: int) -> Path:
    """``runs/stfn`` for the demo's seed, ``runs/stfn_seed1`` for the extra seeds of a head."""
    return run_dir if seed == first else run_dir.with_name(f"{run_dir.name}_seed{seed}")


def tsn_two_stream(base: Config, runs: Path, trained: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """The two-stream TSN checkpoint, and its evaluation from the two single-stream ones."""
    two = build_two_stream_checkpoint(runs / "tsn_rgb" / "last.pt", runs / "tsn_flow" / "last.pt",
                                      runs / "tsn_two_stream" / "last.pt")
    preds = fuse_predictions({s: trained[s]["last"]["predictions"] for s in STREAMS}, base.model.fusion_weights,
                             base.model.fusion_rule)
    return two, {**metrics_from_predictions(preds, len(preds[0]["scores"])), "predictions": preds}


def train_heads(base: Config, p: Any, feats: Path, runs: Path, head_seeds: list[int], progress: bool,
                heads: dict[str, tuple[str, str]] = HEADS, log: Any = print) -> dict[str, list[dict[str, Any]]]:
    """Each head of ``heads`` (default :data:`HEADS`) on the cached features, once per seed of
    ``head_seeds`` (same features, epochs, learning rate and seeds for every head), several at a time
    (:func:`stfn.study.protocol.train_runs`: one thread per run, so the numbers do not depend on how
    many run at once; the costliest heads start first)."""
    jobs, names = [], []
    for name, (arch, fusion) in heads.items():
        fusion = base.model.head.fusion if fusion == "default" else fusion
        for s in head_seeds:
            jobs.append((f"{name} (seed {s})", head_config(base, p, arch, fusion, feats, s),
                         seed_dir(runs / MODELS[name], s, head_seeds[0])))
            names.append(name)
    order = sorted(range(len(jobs)), key=lambda i: -HEAD_COST.get(jobs[i][1].model.arch, 1.0))
    processes = parallel_processes(len(jobs), base.train.device)
    results = train_runs([jobs[i] for i in order], processes, log, progress)
    trained: dict[str, list[dict[str, Any]]] = {name: [] for name in heads}
    for i, result in sorted(zip(order, results, strict=True)):
        trained[names[i]].append(result)
    return trained


def _model_entry(name: str, run_dirs: list[Path], results: list[dict[str, Any]], seeds: list[int],
                 history: list[dict] | None, groups: list[str], pairs: dict[int, int],
                 keys: tuple[str, ...] = DEMO_KEYS) -> dict[str, Any]:
    """One model's ``results.json`` entry from its evaluations, one per training seed: ``metrics`` (mean
    over seeds), ``metrics_std``, ``per_seed`` metrics and per-video ``outcomes`` (for paired claims);
    the run folder, curve and confusion matrix are those of the first seed. ``keys`` are the metrics kept
    (:func:`stfn.study.analysis.group_accuracy`'s, then ``top5``)."""
    per_seed, outcomes = [], []
    for result in results:
        acc = group_accuracy(result["predictions"], groups, pairs)
        per_seed.append({k: acc.get(k) for k in keys[:-1]} | {"top5": result.get("top5")})
        outcomes.append({k: v for k, v in video_outcomes(result["predictions"], pairs).items() if k != "videos"})
    stats = {k: summarize([m[k] for m in per_seed]) for k in keys}
    return {"name": name, "run": str(run_dirs[0]), "runs": [str(d) for d in run_dirs], "protocol": PROTOCOLS[name],
            "seeds": seeds, "metrics": {k: v["mean"] for k, v in stats.items()},
            "metrics_std": {k: v["std"] for k, v in stats.items()}, "per_seed": per_seed, "outcomes": outcomes,
            "counts": acc["counts"], "history": history or [], "confusion": results[0].get("confusion")}


def model_entries(trained: dict[str, Any], tsn2: dict[str, Any], runs: Path, seed: int, head_seeds: list[int],
                  groups: list[str], pairs: dict[int, int],
                  keys: tuple[str, ...] = DEMO_KEYS) -> tuple[dict[str, Any], dict[str, list[dict]]]:
    """Every trained model's entry (table order) and training history (the curves)."""
    results: dict[str, dict[str, Any]] = {}
    histories: dict[str, list[dict]] = {}
    names = {"TSN RGB": "rgb", "TSN flow": "flow"}
    for name in [*MODELS, E2E_MODEL]:
        if name == "TSN two-stream":
            results[name] = _model_entry(name, [runs / MODELS[name]], [tsn2], [seed], None, groups, pairs, keys)
            continue
        res = trained.get(names.get(name, name))
        if res is None:
            continue
        res = res if isinstance(res, list) else [res]
        histories[name] = res[0]["history"]
        results[name] = _model_entry(name, [Path(r["out_dir"]) for r in res], [r["last"] for r in res],
                                     head_seeds if len(res) > 1 else [seed], res[0]["history"], groups, pairs,
                                     keys)
    return results, histories


def test_videos(predictions: list[dict[str, Any]], groups: list[str]) -> list[dict[str, Any]]:
    """The test videos in the order of every model's per-video ``outcomes`` strings
    (:func:`stfn.study.significance.video_outcomes`), with label and group."""
    labels = {str(q["video"]): int(q["label"]) for q in predictions}
    return [{"video": v, "label": labels[v], "group": groups[labels[v]]} for v in video_outcomes(predictions)["videos"]]


def run_protocol(base: Config, p: Any, out: Path, steps: Steps, seed: int, progress: bool, end_to_end: bool = False,
                 heads: dict[str, tuple[str, str]] = HEADS) -> dict[str, Any]:
    """The protocol's training steps on ``base``'s data into ``out/runs`` and ``out/features``: TSN
    backbones, TSN two-stream, features, ``heads`` over ``p.head_seeds`` seeds, and (``end_to_end``)
    STFN end to end. Returns ``{"trained": {name: train result(s)}, "two_stream": checkpoint path,
    "tsn2": its fused evaluation, "classes", "head_seeds"}``."""
    feats, runs = out / "features", out / "runs"
    steps.start("backbones", f"training TSN RGB and TSN flow end to end ({base.model.backbone}, T={p.frames}, "
                             f"L={p.flow_length}, {p.backbone_epochs} epochs each)")
    trained: dict[str, Any] = dict(train_backbones(backbone_config(base, p), runs, progress, steps.log))
    steps.start("two_stream", "TSN two-stream: late fusion of the two networks (rgb:flow = 1:1.5)")
    two, tsn2 = tsn_two_stream(base, runs, trained)
    classes = list(load_checkpoint(two)["classes"])
    steps.start("features", f"caching per-frame features of both backbones ({p.feature_frames} positions per video)")
    extract_features(two, feats, frames=p.feature_frames, progress=progress)
    head_seeds = [seed + s for s in range(p.head_seeds)]
    steps.start("heads", f"training heads on the cached features ({p.head_epochs} epochs, seeds "
                         f"{', '.join(map(str, head_seeds))})")
    trained.update(train_heads(base, p, feats, runs, head_seeds, progress, heads, steps.log))
    if end_to_end:
        steps.start("end_to_end", f"STFN end to end from the TSN backbones ({p.e2e_epochs} epochs)")
        trained[E2E_MODEL] = train_run(end_to_end_config(base, p, feats, runs), runs / "stfn_e2e", progress)
    return {"trained": trained, "two_stream": two, "tsn2": tsn2, "classes": classes, "head_seeds": head_seeds}
