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

STFN and the head baselines use the two-stage protocol here (backbones trained per stream, then heads
on frozen features): a head trains in seconds, so each trains with several seeds. ``end_to_end=True``
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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from stfn.config import Config, config_from_dict
from stfn.errors import StfnError
from stfn.fileio import atomic_write_json

__all__ = [
    "PRESETS",
    "DemoPreset",
    "build_features",
    "build_two_stream_checkpoint",
    "fuse_predictions",
    "run_demo",
    "train_backbones",
    "tsn_position_margins",
]


@dataclass(frozen=True)
class DemoPreset:
    """What the demo generates and trains (README, "What `make demo` shows", has the times)."""

    synthetic: str  # preset of the generator
    frames: int  # T: positions per video for the backbones and the heads
    feature_frames: int  # positions cached per video (heads sample T of them: one per segment)
    flow_length: int  # L
    backbone_epochs: int
    backbone_lr: float
    head_epochs: int
    head_lr: float
    head_hidden: int  # model.head.hidden_dim of the STFN / Temporal-Inception heads
    batch_size: int
    workers: int
    e2e_epochs: int  # --end-to-end: STFN fine-tuned from the TSN backbones
    head_seeds: int  # each head trains with seeds seed, seed+1, ...: the table gives mean ± std


PRESETS: dict[str, DemoPreset] = {
    # the test's smoke run: the generator's tiny preset (8 classes, 32x32), one epoch per backbone
    "tiny": DemoPreset("tiny", frames=4, feature_frames=4, flow_length=2, backbone_epochs=1, backbone_lr=1e-3,
                       head_epochs=2, head_lr=1e-3, head_hidden=32, batch_size=8, workers=0, e2e_epochs=1,
                       head_seeds=2),
    # the demo: the generator's small preset (14 classes, 64x64), about 4 minutes on an idle 2-core CPU
    "small": DemoPreset("small", frames=8, feature_frames=16, flow_length=5, backbone_epochs=10, backbone_lr=1e-3,
                        head_epochs=30, head_lr=1e-3, head_hidden=256, batch_size=16, workers=1, e2e_epochs=20,
                        head_seeds=3),
}

# Display name -> run folder, in table order.
MODELS: dict[str, str] = {
    "TSN RGB": "tsn_rgb",
    "TSN flow": "tsn_flow",
    "TSN two-stream": "tsn_two_stream",
    "Temporal-Inception": "temporal_inception",
    "STFN (no fusion)": "stfn_nofusion",
    "STFN": "stfn",
}
E2E_MODEL = "STFN (end-to-end)"


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


def _no_flip() -> dict[str, bool]:
    """``{"hflip": False}`` where the config has that key (see :func:`base_config`)."""
    import dataclasses

    from stfn.config import DataConfig

    return {"hflip": False} if "hflip" in {f.name for f in dataclasses.fields(DataConfig)} else {}


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
                 "num_workers": p.workers, "synthetic_preset": p.synthetic, **_no_flip()},
        "train": {"batch_size": p.batch_size, "optimizer": "adamw", "weight_decay": 1e-4, "schedule": "cosine",
                  "amp": "auto", "channels_last": True, "seed": seed, "clip_grad": 20.0},
    })


def backbone_config(base: Config, p: DemoPreset) -> Config:
    """TSN, trained end to end on each stream alone (step 3, :func:`train_backbones`)."""
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
    cfg.model.arch, cfg.model.streams, cfg.model.freeze_backbone = arch, ["rgb", "flow"], True
    cfg.model.head.fusion, cfg.model.head.hidden_dim = fusion, p.head_hidden
    cfg.data.features, cfg.data.num_workers = str(features), 0  # cached features load fastest in-process
    cfg.train.epochs, cfg.train.lr = p.head_epochs, p.head_lr
    cfg.train.eval_every = max(1, p.head_epochs // 6)  # points of the training curves
    cfg.train.amp = "none"  # heads are cheap in float32; bf16 gains nothing on their small matrices
    return cfg


def build_two_stream_checkpoint(rgb_ckpt: Path, flow_ckpt: Path, out_path: Path) -> Path:
    """One TSN checkpoint holding the RGB network of ``rgb_ckpt`` and the flow network of ``flow_ckpt``.

    Its ``forward`` is TSN's weighted late fusion (``model.fusion_weights``, 1:1.5); it is also the
    source of the two-stream cached features. Written atomically; reused when it already exists.
    """
    from stfn.engine.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint
    from stfn.models import build_model

    if out_path.is_file():
        return out_path
    rgb, flow = load_checkpoint(rgb_ckpt), load_checkpoint(flow_ckpt)
    if rgb["classes"] != flow["classes"] or sorted(rgb["train_videos"]) != sorted(flow["train_videos"]):
        raise StfnError(f"'{rgb_ckpt}' and '{flow_ckpt}' were not trained on the same classes and videos")
    cfg = config_from_dict(rgb["config"])
    cfg.name, cfg.model.streams = "demo-tsn-two-stream", ["rgb", "flow"]
    model = build_model(cfg.model)
    state = {k: v for k, v in rgb["model"].items() if ".rgb." in k or k.endswith(".rgb")}
    state.update({k: v for k, v in flow["model"].items() if ".flow." in k or k.endswith(".flow")})
    model.load_state_dict(state, strict=True)
    ckpt = make_checkpoint(model, cfg, rgb["classes"], 0, dataset=rgb.get("dataset"),
                           train_videos=rgb["train_videos"], history=[])
    save_checkpoint(ckpt, out_path)
    return out_path


def train_backbones(tsn: Config, runs_dir: Path, progress: bool = True) -> dict[str, dict[str, Any]]:
    """Train single-stream TSN on RGB and on flow (``tsn`` with ``model.streams`` replaced) into
    ``runs_dir/tsn_rgb`` and ``runs_dir/tsn_flow``; returns ``train``'s result per stream."""
    out = {}
    for stream in ("rgb", "flow"):
        cfg = copy.deepcopy(tsn)
        cfg.name, cfg.model.arch, cfg.model.streams = f"{tsn.name}-{stream}", "tsn", [stream]
        cfg.data.features, cfg.model.freeze_backbone = "", False
        out[stream] = _train(cfg, runs_dir / f"tsn_{stream}", progress)
    return out


def build_features(tsn: Config, runs_dir: Path, features_dir: Path, frames: int, progress: bool = True) -> Path:
    """The two-stage protocol's first stage: TSN backbones per stream (:func:`train_backbones`), joined
    into one checkpoint, whose per-frame features (``frames`` positions per video) go to ``features_dir``."""
    from stfn.engine.features import extract_features

    train_backbones(tsn, runs_dir, progress)
    two = build_two_stream_checkpoint(runs_dir / "tsn_rgb" / "last.pt", runs_dir / "tsn_flow" / "last.pt",
                                      runs_dir / "tsn_two_stream" / "last.pt")
    return extract_features(two, features_dir, frames=frames, device=tsn.train.device, progress=progress)


def fuse_predictions(rgb: list[dict[str, Any]], flow: list[dict[str, Any]],
                     weights: tuple[float, float] = (1.0, 1.5)) -> list[dict[str, Any]]:
    """TSN late fusion of two single-stream evaluations of the same test videos (same views and
    positions): ``log(sum_s w_s softmax(scores_s) / sum_s w_s)``, exactly what the two-stream TSN
    network's ``forward`` computes. Rows as :func:`stfn.engine.evaluate.evaluate` writes them."""
    import torch

    by_video = {p["video"]: p for p in flow}
    if set(by_video) != {p["video"] for p in rgb}:
        raise StfnError("the RGB and flow evaluations did not score the same test videos")
    out = []
    for p in rgb:
        q = by_video[p["video"]]
        s = {"rgb": torch.tensor(p["scores"]), "flow": torch.tensor(q["scores"])}
        fused = (weights[0] * s["rgb"].softmax(0) + weights[1] * s["flow"].softmax(0)) / sum(weights)
        scores = fused.log()
        out.append({"index": p["index"], "video": p["video"], "label": p["label"], "pred": int(scores.argmax()),
                    "scores": scores.tolist(), "stream_scores": {k: v.tolist() for k, v in s.items()}})
    return out


def tsn_position_margins(tsn_ckpt: Path, features: Path, pairs: dict[int, int]) -> dict[str, Any]:
    """TSN's temporal-order leak check on the cached test features.

    For each stream and each cached position t, the TSN classifier scores that single position; the
    *margin* is logit[true class] - logit[pair partner]. A position whose within-pair accuracy is far
    from 0.5 leaks the order locally (one frame or flow stack decides the pair). Returns
    ``{stream: {"acc": [per position %], "margin": [mean per position]}}`` over temporal-order videos.
    """
    import torch

    from stfn.data.features import FeatureDataset, load_features_meta
    from stfn.engine.checkpoint import load_model

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
    import torch

    from stfn.runtime import resolve_amp

    cuda = (torch.cuda.is_available() and base.train.device == "auto") or base.train.device.startswith("cuda")
    dtype, _ = resolve_amp(base.train.amp, torch.device("cuda" if cuda else "cpu"), base.train.channels_last)
    return str(dtype).replace("torch.", "") if dtype is not None else "float32"


def _seed_dir(run_dir: Path, seed: int, first: int) -> Path:
    """``runs/stfn`` for the demo's seed, ``runs/stfn_seed1`` for the extra seeds of a head."""
    return run_dir if seed == first else run_dir.with_name(f"{run_dir.name}_seed{seed}")


def _train(cfg: Config, run_dir: Path, progress: bool, threads: int = 0) -> dict[str, Any]:
    """``train(..., resume=True)``, with ``threads`` torch CPU threads for its duration (0: unchanged)."""
    import torch

    from stfn.engine.train import train

    before = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        return train(cfg, run_dir, resume=True, progress=progress)
    finally:
        torch.set_num_threads(before)


def _model_entry(name: str, run_dirs: list[Path], results: list[dict[str, Any]], seeds: list[int], protocol: str,
                 history: list[dict] | None, groups: list[str], pairs: dict[int, int]) -> dict[str, Any]:
    """One model's ``results.json`` entry from its evaluations, one per training seed: ``metrics`` (mean
    over seeds), ``metrics_std``, ``per_seed`` metrics and per-video ``outcomes`` (for paired claims);
    the run folder, curve and confusion matrix are those of the first seed."""
    from stfn.report import group_accuracy, summarize
    from stfn.significance import video_outcomes

    keys = ("overall", "appearance", "motion", "temporal_order", "appearance_motion", "temporal_order_pair",
            "mean_class_acc", "top5")
    per_seed, outcomes = [], []
    for result in results:
        acc = group_accuracy(result["predictions"], groups, pairs)
        per_seed.append({k: acc.get(k) for k in keys[:-1]} | {"top5": result.get("top5")})
        outcomes.append({k: v for k, v in video_outcomes(result["predictions"], pairs).items() if k != "videos"})
    stats = {k: summarize([m[k] for m in per_seed]) for k in keys}
    return {"name": name, "run": str(run_dirs[0]), "runs": [str(d) for d in run_dirs], "protocol": protocol,
            "seeds": seeds, "metrics": {k: v["mean"] for k, v in stats.items()},
            "metrics_std": {k: v["std"] for k, v in stats.items()}, "per_seed": per_seed, "outcomes": outcomes,
            "counts": acc["counts"], "history": history or [], "confusion": results[0].get("confusion")}


def run_demo(out_dir: str | Path, preset: str = "small", seed: int = 0, end_to_end: bool = False,
             progress: bool = True, log: Any = print) -> dict[str, Any]:
    """Run the demo into ``out_dir``; returns what ``results.json`` holds. See the module docstring."""
    import torch

    from stfn.data.prepare import prepare_dataset
    from stfn.data.synthetic import generate
    from stfn.engine.checkpoint import load_checkpoint
    from stfn.engine.evaluate import metrics_from_predictions
    from stfn.engine.features import extract_features
    from stfn.report import class_groups, load_classes_meta, machine_info, temporal_pairs, write_demo_report
    from stfn.significance import video_outcomes

    if preset not in PRESETS:
        raise StfnError(f"unknown demo preset '{preset}' (choose from {', '.join(PRESETS)})")
    p = PRESETS[preset]
    out = Path(out_dir)
    synth, prepared, feats, runs = out / "data" / "synthetic", out / "data" / "prepared", out / "features", out / "runs"
    t0 = time.perf_counter()
    stamp = {"preset": preset, "settings": asdict(p), "seed": seed}
    _check_stamp(out / "demo.json", stamp)
    atomic_write_json(out / "demo.json", stamp)
    steps = _Steps(7 + int(end_to_end), log)
    log(f"stfn demo: preset '{preset}' ({asdict(p)}), seed {seed}, {torch.get_num_threads()} torch threads, "
        f"output in '{out}'")

    steps.start("generate", f"generating the synthetic benchmark (preset '{p.synthetic}') in {synth}")
    generate(synth, preset=p.synthetic, seed=seed, workers=2, progress=progress)  # returns at once when done
    meta = load_classes_meta(synth / "classes.json")
    bound = float(meta.get("flow_bound") or 20.0)
    size = int(meta.get("params", {}).get("size") or 64)

    steps.start("prepare", f"stfn prepare: decoding and DIS optical flow (bound {bound:g}) into {prepared}")
    prepare_dataset(synth / "videos", prepared, flow="dis", bound=bound, progress=progress)

    base = base_config(p, prepared, synth / "splits", size, seed)
    results: dict[str, dict[str, Any]] = {}
    histories: dict[str, list[dict]] = {}
    trained: dict[str, dict[str, Any]] = {}
    steps.start("backbones", f"training TSN RGB and TSN flow end to end (cnn_small, T={p.frames}, L={p.flow_length}, "
                             f"{p.backbone_epochs} epochs each)")
    trained.update(train_backbones(backbone_config(base, p), runs, progress))

    steps.start("two_stream", "TSN two-stream: late fusion of the two networks (rgb:flow = 1:1.5)")
    two = build_two_stream_checkpoint(runs / "tsn_rgb" / "last.pt", runs / "tsn_flow" / "last.pt",
                                      runs / "tsn_two_stream" / "last.pt")
    preds = fuse_predictions(trained["rgb"]["last"]["predictions"], trained["flow"]["last"]["predictions"],
                             tuple(base.model.fusion_weights))
    tsn2 = {**metrics_from_predictions(preds, len(preds[0]["scores"])), "predictions": preds}
    classes = list(load_checkpoint(two)["classes"])
    groups, pairs = class_groups(meta, classes), temporal_pairs(meta, classes)

    steps.start("features", f"caching per-frame features of both backbones ({p.feature_frames} positions per video)")
    extract_features(two, feats, frames=p.feature_frames, progress=progress)

    head_seeds = [seed + s for s in range(p.head_seeds)]
    steps.start("heads", f"training heads on the cached features ({p.head_epochs} epochs, seeds "
                         f"{', '.join(map(str, head_seeds))})")
    heads = {"Temporal-Inception": ("temporal_inception", "none"), "STFN (no fusion)": ("stfn", "none"),
             "STFN": ("stfn", base.model.head.fusion)}
    for name, (arch, fusion) in heads.items():
        # One thread: the heads' matrices are small, and a second thread that must wait for a core
        # another process holds made them 10-30x slower (measured on a shared 2-core machine).
        trained[name] = [_train(head_config(base, p, arch, fusion, feats, s), _seed_dir(runs / MODELS[name], s, seed),
                                progress, threads=1)
                         for s in head_seeds]

    if end_to_end:
        steps.start("end_to_end", f"STFN end to end from the TSN backbones ({p.e2e_epochs} epochs)")
        cfg = head_config(base, p, "stfn", base.model.head.fusion, feats)
        cfg.name, cfg.data.features, cfg.model.freeze_backbone = "demo-stfn-e2e", "", False
        cfg.data.num_workers, cfg.train.amp, cfg.train.eval_every = p.workers, base.train.amp, p.e2e_epochs
        cfg.train.epochs, cfg.train.backbone_lr_mult = p.e2e_epochs, 0.1
        cfg.train.init_rgb, cfg.train.init_flow = str(runs / "tsn_rgb" / "last.pt"), str(runs / "tsn_flow" / "last.pt")
        trained[E2E_MODEL] = _train(cfg, runs / "stfn_e2e", progress)

    steps.start("report", "scoring, tables and plots")
    two_stage = "two-stage: heads on frozen cached features of the TSN backbones"
    protocols = {"TSN RGB": "end to end, RGB only", "TSN flow": "end to end, flow only",
                 "TSN two-stream": "late fusion of TSN RGB and TSN flow (1:1.5)", "Temporal-Inception": two_stage,
                 "STFN (no fusion)": two_stage, "STFN": two_stage,
                 E2E_MODEL: "end to end, backbones initialised from TSN RGB / TSN flow"}
    names = {"TSN RGB": "rgb", "TSN flow": "flow"}
    for name in [*MODELS, E2E_MODEL]:
        if name == "TSN two-stream":
            results[name] = _model_entry(name, [runs / MODELS[name]], [tsn2], [seed], protocols[name], None,
                                         groups, pairs)
            continue
        res = trained.get(names.get(name, name))
        if res is None:
            continue
        res = res if isinstance(res, list) else [res]
        histories[name] = res[0]["history"]
        results[name] = _model_entry(name, [Path(r["out_dir"]) for r in res], [r["last"] for r in res],
                                     head_seeds if len(res) > 1 else [seed], protocols[name], res[0]["history"],
                                     groups, pairs)
    margins = tsn_position_margins(two, feats, pairs) if pairs else {}
    labels = {str(q["video"]): int(q["label"]) for q in preds}
    steps.end()

    summary = {
        "stfn_demo": 1,
        "command": f"stfn demo --out {out} --preset {preset} --seed {seed}" + (" --end-to-end" if end_to_end else ""),
        "preset": preset, "settings": {**asdict(p), "hflip": getattr(base.data, "hflip", True),
                                       "backbone_amp": _backbone_amp(base)}, "seed": seed,
        "backbone": base.model.backbone, "fusion": base.model.head.fusion, "flow": {"algorithm": "dis", "bound": bound},
        "classes": [{"name": c, "group": g} for c, g in zip(classes, groups, strict=True)],
        "pairs": {classes[a]: classes[b] for a, b in pairs.items()},
        # the order of every model's per-video ``outcomes`` strings (stfn.significance.video_outcomes)
        "test_videos": [{"video": v, "label": labels[v], "group": groups[labels[v]]}
                        for v in video_outcomes(preds)["videos"]],
        "models": results, "tsn_position_margins": margins,
        "timings": steps.times, "time_s": round(time.perf_counter() - t0, 1), "machine": machine_info(),
    }
    write_demo_report(out, summary, histories)
    atomic_write_json(out / "results.json", summary)
    log(f"stfn demo: finished in {summary['time_s'] / 60:.1f} min; report in '{out / 'report.md'}'")
    return summary

