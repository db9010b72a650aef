"""``stfn demo``: the whole toolkit on its own synthetic benchmark, in minutes on a CPU.

One call, no data or weights needed::

    run_demo("runs/demo", preset="small")

1. generate the synthetic benchmark (:func:`stfn.data.synthetic.generate`): real H.264 videos;
2. ``stfn prepare``: decode, resize, DIS optical flow clipped at the benchmark's flow bound;
3. train TSN RGB and TSN flow end to end (``cnn_small`` backbone, T frames, flow stacks of L fields);
4. TSN two-stream: late fusion of the two networks' test scores, RGB:flow = 1:1.5 (TSN); the two
   networks are also joined into one two-stream TSN checkpoint (``runs/tsn_two_stream/last.pt``);
5. cache per-frame features of both backbones (``stfn extract-features``);
6. train heads on the cached features: Temporal-Inception, STFN without fusion, STFN;
7. score every model on the test split; accuracy per class group (and within-pair accuracy of the
   temporal-order pairs), TSN's per-position margins, ``results.json``, ``report.md``, PNG plots.

STFN and the head baselines use the two-stage protocol here (:mod:`stfn.study.protocol`: backbones
trained per stream, then heads on frozen features): a head trains in seconds, so each trains with several seeds. ``end_to_end=True``
adds STFN fine-tuned end to end from the TSN backbones. Every step resumes: re-running the same command
redoes only what is missing. Output layout::

    OUT/demo.json (preset, its settings and seed: a re-run must match them)
    OUT/data/synthetic/  OUT/data/prepared/  OUT/features/
    OUT/runs/<model>/    (config.yaml, last.pt, metrics.csv, predictions_last.json, ...)
    OUT/results.json  OUT/report.md  OUT/curves.png  OUT/groups.png  OUT/confusion_stfn.png
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from stfn.config import STREAMS, Config, config_from_dict
from stfn.data.features import FeatureDataset, load_features_meta
from stfn.data.prepare import prepare_dataset
from stfn.data.synthetic import generate
from stfn.engine.checkpoint import load_checkpoint, load_model
from stfn.engine.evaluate import fuse_predictions, metrics_from_predictions
from stfn.engine.features import extract_features
from stfn.errors import StfnError
from stfn.fileio import atomic_write_json
from stfn.runtime import describe_dtype, resolve_amp, resolve_device
from stfn.study.analysis import class_groups, group_accuracy, load_classes_meta, temporal_pairs
from stfn.study.machine import machine_info
from stfn.study.presets import E2E_MODEL, HEADS, MODELS, PRESETS, DemoPreset
from stfn.study.protocol import build_two_stream_checkpoint, train_backbones, train_run
from stfn.study.report import summarize, write_demo_report
from stfn.study.significance import video_outcomes

__all__ = [
    "backbone_config",
    "base_config",
    "head_config",
    "run_demo",
    "tsn_position_margins",
]

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


class _Steps:
    """Numbered progress lines with the time each step took."""

    def __init__(self, total: int, log: Any) -> None:
        self.total, self.log, self.i, self.times = total, log, 0, {}
        self._name, self._start = "", 0.0

    def start(self, name: str, text: str) -> None:
        self.end()
        self.i += 1
        self._name, self._start = name, time.perf_counter()
        self.log(f"[demo {self.i}/{self.total}] {text}")

    def end(self) -> None:
        if self._name:
            self.times[self._name] = round(time.perf_counter() - self._start, 2)
            self.log(f"[demo {self.i}/{self.total}] done in {self.times[self._name]:.1f} s")
            self._name = ""


# ----------------------------------------------------------------------------- configs


def base_config(p: DemoPreset, data_root: Path, splits: Path, size: int, seed: int) -> Config:
    """The settings every demo model shares (data, backbone, run-time). Frames keep the generated
    ``size`` (no resize, no crop: ``scale_size = crop_size = size``; training still crops multi-scale).

    No horizontal flips: the benchmark's mirror pairs (SlideRight/SlideLeft, the spins,
    LeftThenRight/RightThenLeft, the red/green bullseyes) turn into their twin class when mirrored, so a
    flip is a wrong label. Measured: TSN flow reached 28.9% test top-1 with flips, 43.1% without.
    """
    return config_from_dict({
        "name": "demo",
        "model": {"backbone": "cnn_small", "flow_length": p.flow_length, "pretrained": False},
        "data": {"dataset": "synthetic", "root": str(data_root), "splits": str(splits), "split": 1,
                 "frames": p.frames, "scale_size": size, "crop_size": size, "test_crops": 1,
                 "num_workers": p.workers, "synthetic_preset": p.synthetic, "hflip": False},
        "train": {"batch_size": p.batch_size, "optimizer": "adamw", "weight_decay": 1e-4, "schedule": "cosine",
                  "amp": "auto", "channels_last": True, "seed": seed, "clip_grad": 20.0,
                  "compile": False},  # eager, as the published demo numbers were made (compile: auto would not pay)
    })


def backbone_config(base: Config, p: DemoPreset) -> Config:
    """TSN, trained end to end on each stream alone (step 3, :func:`stfn.study.protocol.train_backbones`)."""
    cfg = copy.deepcopy(base)
    cfg.name = "demo-tsn"
    cfg.model.arch, cfg.model.tsn_dropout = "tsn", 0.5
    cfg.train.epochs, cfg.train.lr = p.backbone_epochs, p.backbone_lr
    cfg.train.eval_every = max(1, p.backbone_epochs // 2)  # scoring 650 test videos costs about an epoch
    return cfg


def head_config(base: Config, p: DemoPreset, arch: str, fusion: str, features: Path, seed: int | None = None) -> Config:
    """A two-stream head trained on cached features (step 6), with training seed ``seed`` (default: the
    base config's)."""
    cfg = copy.deepcopy(base)
    cfg.name = f"demo-{arch}-{fusion}"
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
    cfg.train.amp = "none"  # heads are cheap in float32; bf16 gains nothing on their small matrices
    return cfg


def _end_to_end_config(base: Config, p: DemoPreset, features: Path, runs: Path) -> Config:
    """STFN fine-tuned end to end from the TSN backbones (``--end-to-end``)."""
    cfg = head_config(base, p, "stfn", base.model.head.fusion, features)
    cfg.name, cfg.data.features, cfg.model.freeze_backbone = "demo-stfn-e2e", "", False
    cfg.data.num_workers, cfg.train.amp, cfg.train.eval_every = p.workers, base.train.amp, p.e2e_epochs
    cfg.train.epochs, cfg.train.backbone_lr_mult = p.e2e_epochs, 0.1
    cfg.train.init_rgb, cfg.train.init_flow = str(runs / "tsn_rgb" / "last.pt"), str(runs / "tsn_flow" / "last.pt")
    return cfg


# ----------------------------------------------------------------------------- scoring


def tsn_position_margins(tsn_ckpt: Path, features: Path, pairs: dict[int, int]) -> dict[str, Any]:
    """TSN's temporal-order leak check on the cached test features.

    For each stream and each cached position t, the TSN classifier scores that single position; the
    *margin* is logit[true class] - logit[pair partner]. A position whose within-pair accuracy is far
    from 0.5 leaks the order locally (one frame or flow stack decides the pair). Returns
    ``{stream: {"acc": [per position %], "margin": [mean per position]}}`` over temporal-order videos.
    """
    model, cfg, _ = load_model(tsn_ckpt)
    n = int(load_features_meta(features)["frames"])
    ds = FeatureDataset(features, "test", cfg.model.streams, frames=n, train=False)
    rows = [i for i, label in enumerate(ds.labels) if label in pairs]
    if not rows:
        return {}
    items = [ds[i] for i in rows]
    labels = torch.tensor([it["label"] for it in items])
    partners = torch.tensor([pairs[int(y)] for y in labels])
    feats = {f"{s}_feat": torch.stack([it[f"{s}_feat"] for it in items]) for s in cfg.model.streams}  # (N, T, C)
    out = {s: {"acc": [], "margin": []} for s in cfg.model.streams}
    with torch.no_grad():
        for t in range(n):
            logits = model.stream_logits({k: v[:, t : t + 1] for k, v in feats.items()})  # {stream: (N, K)}
            for s, lg in logits.items():
                m = lg.gather(1, labels[:, None]) - lg.gather(1, partners[:, None])
                out[s]["acc"].append(round(100.0 * (m > 0).float().mean().item(), 1))
                out[s]["margin"].append(round(m.mean().item(), 3))
    return out


def _model_entry(name: str, run_dirs: list[Path], results: list[dict[str, Any]], seeds: list[int],
                 history: list[dict] | None, groups: list[str], pairs: dict[int, int]) -> dict[str, Any]:
    """One model's ``results.json`` entry from its evaluations, one per training seed: ``metrics`` (mean
    over seeds), ``metrics_std``, ``per_seed`` metrics and per-video ``outcomes`` (for paired claims);
    the run folder, curve and confusion matrix are those of the first seed."""
    keys = ("overall", "appearance", "motion", "temporal_order", "appearance_motion", "temporal_order_pair",
            "mean_class_acc", "top5")
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


def _model_entries(trained: dict[str, Any], tsn2: dict[str, Any], runs: Path, seed: int, head_seeds: list[int],
                   groups: list[str], pairs: dict[int, int]) -> tuple[dict[str, Any], dict[str, list[dict]]]:
    """Every trained model's entry (table order) and training history (the curves)."""
    results: dict[str, dict[str, Any]] = {}
    histories: dict[str, list[dict]] = {}
    names = {"TSN RGB": "rgb", "TSN flow": "flow"}
    for name in [*MODELS, E2E_MODEL]:
        if name == "TSN two-stream":
            results[name] = _model_entry(name, [runs / MODELS[name]], [tsn2], [seed], None, groups, pairs)
            continue
        res = trained.get(names.get(name, name))
        if res is None:
            continue
        res = res if isinstance(res, list) else [res]
        histories[name] = res[0]["history"]
        results[name] = _model_entry(name, [Path(r["out_dir"]) for r in res], [r["last"] for r in res],
                                     head_seeds if len(res) > 1 else [seed], res[0]["history"], groups, pairs)
    return results, histories


# ----------------------------------------------------------------------------- the run


def _check_stamp(path: Path, stamp: dict[str, Any]) -> None:
    """Refuse to resume a demo folder made with another preset, preset settings or seed (naming them)."""
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise StfnError(f"'{path}' is not a readable demo record ({e}); choose another --out") from None
    if old == stamp:
        return
    diff = [f"{k} {old.get(k)!r} there, {v!r} now" for k, v in stamp.items() if k != "settings" and old.get(k) != v]
    before = old.get("settings") if isinstance(old.get("settings"), dict) else {}
    diff += [f"{k} {before.get(k)!r} there, {v!r} now" for k, v in stamp["settings"].items() if before.get(k) != v]
    raise StfnError(f"'{path.parent}' holds a demo run with other settings ({'; '.join(diff)}); "
                    "choose another --out or delete that folder")


def _backbone_amp(base: Config) -> str:
    """What ``train.amp: auto`` ran the backbones in on this machine (it depends on the CPU or GPU)."""
    device = resolve_device(base.train.device, what="config key 'train.device'")
    dtype, _ = resolve_amp(base.train.amp, device, base.train.channels_last)
    return describe_dtype(dtype) if dtype is not None else "float32"


def _seed_dir(run_dir: Path, seed: int, first: int) -> Path:
    """``runs/stfn`` for the demo's seed, ``runs/stfn_seed1`` for the extra seeds of a head."""
    return run_dir if seed == first else run_dir.with_name(f"{run_dir.name}_seed{seed}")


def _make_benchmark(p: DemoPreset, seed: int, out: Path, steps: _Steps, progress: bool) -> tuple[dict[str, Any], float, int]:
    """Steps 1-2: the synthetic benchmark, generated and prepared; returns its ``classes.json``, flow bound
    and frame size."""
    synth, prepared = out / "data" / "synthetic", out / "data" / "prepared"
    steps.start("generate", f"generating the synthetic benchmark (preset '{p.synthetic}') in {synth}")
    generate(synth, preset=p.synthetic, seed=seed, workers=2, progress=progress)  # returns at once when done
    meta = load_classes_meta(synth / "classes.json")
    bound = float(meta.get("flow_bound") or 20.0)
    size = int(meta.get("params", {}).get("size") or 64)
    steps.start("prepare", f"stfn prepare: decoding and DIS optical flow (bound {bound:g}) into {prepared}")
    prepare_dataset(synth / "videos", prepared, flow="dis", bound=bound, progress=progress)
    return meta, bound, size


def _tsn_two_stream(base: Config, runs: Path, trained: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """Step 4: the two-stream TSN checkpoint, and its evaluation from the two single-stream ones."""
    two = build_two_stream_checkpoint(runs / "tsn_rgb" / "last.pt", runs / "tsn_flow" / "last.pt",
                                      runs / "tsn_two_stream" / "last.pt")
    preds = fuse_predictions({s: trained[s]["last"]["predictions"] for s in STREAMS}, base.model.fusion_weights,
                             base.model.fusion_rule)
    return two, {**metrics_from_predictions(preds, len(preds[0]["scores"])), "predictions": preds}


def _train_heads(base: Config, p: DemoPreset, feats: Path, runs: Path, head_seeds: list[int],
                 progress: bool) -> dict[str, list[dict[str, Any]]]:
    """Step 6: each head of :data:`HEADS` on the cached features, once per seed of ``head_seeds``
    (same features, epochs, learning rate and seeds for every head)."""
    trained = {}
    for name, (arch, fusion) in HEADS.items():
        fusion = base.model.head.fusion if fusion == "default" else fusion
        # One thread: the heads' matrices are small, and a second thread that must wait for a core
        # another process holds made them 10-30x slower (measured on a shared 2-core machine).
        trained[name] = [train_run(head_config(base, p, arch, fusion, feats, s),
                                   _seed_dir(runs / MODELS[name], s, head_seeds[0]), progress, threads=1)
                         for s in head_seeds]
    return trained


def run_demo(out_dir: str | Path, preset: str = "small", seed: int = 0, end_to_end: bool = False,
             progress: bool = True, log: Any = print) -> dict[str, Any]:
    """Run the demo into ``out_dir``; returns what ``results.json`` holds. See the module docstring."""
    if preset not in PRESETS:
        raise StfnError(f"unknown demo preset '{preset}' (choose from {', '.join(PRESETS)})")
    p = PRESETS[preset]
    out = Path(out_dir)
    feats, runs = out / "features", out / "runs"
    t0 = time.perf_counter()
    stamp = {"preset": preset, "settings": asdict(p), "seed": seed}
    _check_stamp(out / "demo.json", stamp)
    atomic_write_json(out / "demo.json", stamp)
    steps = _Steps(7 + int(end_to_end), log)
    log(f"stfn demo: preset '{preset}' ({asdict(p)}), seed {seed}, {torch.get_num_threads()} torch threads, "
        f"output in '{out}'")
    meta, bound, size = _make_benchmark(p, seed, out, steps, progress)

    base = base_config(p, out / "data" / "prepared", out / "data" / "synthetic" / "splits", size, seed)
    steps.start("backbones", f"training TSN RGB and TSN flow end to end (cnn_small, T={p.frames}, L={p.flow_length}, "
                             f"{p.backbone_epochs} epochs each)")
    trained: dict[str, Any] = dict(train_backbones(backbone_config(base, p), runs, progress))
    steps.start("two_stream", "TSN two-stream: late fusion of the two networks (rgb:flow = 1:1.5)")
    two, tsn2 = _tsn_two_stream(base, runs, trained)
    classes = list(load_checkpoint(two)["classes"])
    groups, pairs = class_groups(meta, classes), temporal_pairs(meta, classes)

    steps.start("features", f"caching per-frame features of both backbones ({p.feature_frames} positions per video)")
    extract_features(two, feats, frames=p.feature_frames, progress=progress)
    head_seeds = [seed + s for s in range(p.head_seeds)]
    steps.start("heads", f"training heads on the cached features ({p.head_epochs} epochs, seeds "
                         f"{', '.join(map(str, head_seeds))})")
    trained.update(_train_heads(base, p, feats, runs, head_seeds, progress))
    if end_to_end:
        steps.start("end_to_end", f"STFN end to end from the TSN backbones ({p.e2e_epochs} epochs)")
        trained[E2E_MODEL] = train_run(_end_to_end_config(base, p, feats, runs), runs / "stfn_e2e", progress)

    steps.start("report", "scoring, tables and plots")
    results, histories = _model_entries(trained, tsn2, runs, seed, head_seeds, groups, pairs)
    margins = tsn_position_margins(two, feats, pairs) if pairs else {}
    steps.end()
    summary = {
        "stfn_demo": 1,
        "command": f"stfn demo --out {out} --preset {preset} --seed {seed}" + (" --end-to-end" if end_to_end else ""),
        "preset": preset, "settings": {**asdict(p), "hflip": base.data.hflip, "backbone_amp": _backbone_amp(base)},
        "seed": seed, "backbone": base.model.backbone, "fusion": base.model.head.fusion,
        "flow": {"algorithm": "dis", "bound": bound},
        "classes": [{"name": c, "group": g} for c, g in zip(classes, groups, strict=True)],
        "pairs": {classes[a]: classes[b] for a, b in pairs.items()},
        "test_videos": _test_videos(tsn2["predictions"], groups),
        "models": results, "tsn_position_margins": margins,
        "timings": steps.times, "time_s": round(time.perf_counter() - t0, 1), "machine": machine_info(),
    }
    write_demo_report(out, summary, histories)
    atomic_write_json(out / "results.json", summary)
    log(f"stfn demo: finished in {summary['time_s'] / 60:.1f} min; report in '{out / 'report.md'}'")
    return summary


def _test_videos(predictions: list[dict[str, Any]], groups: list[str]) -> list[dict[str, Any]]:
    """The test videos in the order of every model's per-video ``outcomes`` strings
    (:func:`stfn.study.significance.video_outcomes`), with label and group."""
    labels = {str(q["video"]): int(q["label"]) for q in predictions}
    return [{"video": v, "label": labels[v], "group": groups[labels[v]]} for v in video_outcomes(predictions)["videos"]]
