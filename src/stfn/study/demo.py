"""``stfn demo``: the whole toolkit on its own synthetic benchmark, in minutes on a CPU.

One call, no data or weights needed::

    run_demo("runs/demo", preset="small")

1. generate the synthetic benchmark (:func:`stfn.data.synthetic.generate.generate`): real H.264 videos;
2. ``stfn prepare``: decode, resize, DIS optical flow clipped at the benchmark's flow bound;
3. train TSN RGB and TSN flow end to end (``cnn_small`` backbone, T frames, flow stacks of L fields);
4. TSN two-stream: late fusion of the two networks' test scores, RGB:flow = 1:1.5 (TSN); the two
   networks are also joined into one two-stream TSN checkpoint (``runs/tsn_two_stream/last.pt``);
5. cache per-frame features of both backbones (``stfn extract-features``);
6. train heads on the cached features: Temporal-Inception, STFN without fusion, STFN;
7. score every model on the test split; accuracy per class group (and within-pair accuracy of the
   temporal-order pairs), TSN's per-position margins, ``results.json``, ``report.md``, PNG plots.

Steps 3-6 are :func:`stfn.study.pipeline.run_protocol`, the code path of ``stfn compare`` (which runs
them on the user's data); the demo adds the synthetic benchmark and what only it has: class groups,
temporal-order pairs and TSN's per-position leak check.

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

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from stfn.config import Config, config_from_dict
from stfn.data.features import FeatureDataset, load_features_meta
from stfn.data.prepare.run import prepare_dataset
from stfn.data.synthetic.generate import generate
from stfn.engine.checkpoint import load_model
from stfn.errors import StfnError
from stfn.fileio import atomic_write_json
from stfn.machine import loadavg, machine_info
from stfn.study.analysis import class_groups, load_classes_meta, temporal_pairs
from stfn.study.pipeline import (
    Steps,
    backbone_amp,
    backbone_config,
    check_stamp,
    head_config,
    model_entries,
    run_protocol,
    test_videos,
)
from stfn.study.presets import PRESETS, DemoPreset
from stfn.study.report import write_demo_report

__all__ = [
    "backbone_config",  # from stfn.study.pipeline, where stfn ablate's tests find them
    "base_config",
    "head_config",
    "run_demo",
    "tsn_position_margins",
]

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


# ----------------------------------------------------------------------------- the run


def _make_benchmark(p: DemoPreset, seed: int, out: Path, steps: Steps, progress: bool) -> tuple[dict[str, Any], float, int]:
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


def run_demo(out_dir: str | Path, preset: str = "small", seed: int = 0, end_to_end: bool = False,
             progress: bool = True, log: Any = print) -> dict[str, Any]:
    """Run the demo into ``out_dir``; returns what ``results.json`` holds. See the module docstring."""
    if preset not in PRESETS:
        raise StfnError(f"unknown demo preset '{preset}' (choose from {', '.join(PRESETS)})")
    p = PRESETS[preset]
    out = Path(out_dir)
    t0, load_start = time.perf_counter(), loadavg()
    stamp = {"preset": preset, "settings": asdict(p), "seed": seed}
    check_stamp(out / "demo.json", stamp)
    atomic_write_json(out / "demo.json", stamp)
    steps = Steps(7 + int(end_to_end), log)
    log(f"stfn demo: preset '{preset}' ({asdict(p)}), seed {seed}, {torch.get_num_threads()} torch threads, "
        f"output in '{out}'")
    meta, bound, size = _make_benchmark(p, seed, out, steps, progress)

    base = base_config(p, out / "data" / "prepared", out / "data" / "synthetic" / "splits", size, seed)
    done = run_protocol(base, p, out, steps, seed, progress, end_to_end)
    classes, two, tsn2 = done["classes"], done["two_stream"], done["tsn2"]
    groups, pairs = class_groups(meta, classes), temporal_pairs(meta, classes)

    steps.start("report", "scoring, tables and plots")
    results, histories = model_entries(done["trained"], tsn2, out / "runs", seed, done["head_seeds"], groups, pairs)
    margins = tsn_position_margins(two, out / "features", pairs) if pairs else {}
    steps.end()
    summary = {
        "stfn_demo": 1,
        "command": f"stfn demo --out {out} --preset {preset} --seed {seed}" + (" --end-to-end" if end_to_end else ""),
        "preset": preset, "settings": {**asdict(p), "hflip": base.data.hflip, "backbone_amp": backbone_amp(base)},
        "seed": seed, "backbone": base.model.backbone, "fusion": base.model.head.fusion,
        "flow": {"algorithm": "dis", "bound": bound},
        "classes": [{"name": c, "group": g} for c, g in zip(classes, groups, strict=True)],
        "pairs": {classes[a]: classes[b] for a, b in pairs.items()},
        "test_videos": test_videos(tsn2["predictions"], groups),
        "models": results, "tsn_position_margins": margins,
        "timings": steps.times, "time_s": round(time.perf_counter() - t0, 1), "machine": machine_info(load_start),
    }
    write_demo_report(out, summary, histories)
    atomic_write_json(out / "results.json", summary)
    log(f"stfn demo: finished in {summary['time_s'] / 60:.1f} min; report in '{out / 'report.md'}'")
    return summary
