"""``stfn compare``: the demo's comparison on the user's own videos and splits, in one command.

One call::

    run_compare("videos/", "splits/", "runs/compare", preset="quick")

1. ``stfn prepare`` of the videos into ``OUT/prepared`` (resumable; skipped for a prepared folder);
2. the split checked against the prepared videos (missing videos, too few classes or videos for the
   preset, groups of UCF101's ``_gNN_`` on both sides: a warning) and the backbone's weights loaded;
3. :func:`stfn.study.pipeline.run_protocol`, the protocol of ``stfn demo``: TSN RGB and TSN flow end to
   end, TSN two-stream, cached features, every head (TSN's consensus, Temporal-Inception, TS-LSTM,
   TLE, STFN without fusion, STFN) over several seeds;
4. ``results.json``, ``report.md`` (:mod:`stfn.study.compare_report`) and the plots.

Every step resumes: the same command again continues a stopped run; ``OUT/compare.json`` records the
settings, and a changed one on an existing folder is refused with a sentence naming it. Layout::

    OUT/compare.json  OUT/prepared/  OUT/features/  OUT/runs/<model>/
    OUT/results.json  OUT/report.md  OUT/curves.png  OUT/classes.png  OUT/confusion_<model>.png
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch

from stfn.config import Config, config_from_dict
from stfn.data.prepare.manifest import VIDEO_EXTENSIONS, load_manifest
from stfn.data.prepare.run import prepare_dataset
from stfn.data.splits import Split, check_prepared, load_split
from stfn.errors import ParameterError, StfnError
from stfn.fileio import atomic_write_json
from stfn.machine import loadavg, machine_info
from stfn.models.backbone import BUILTIN_BACKBONES, build_rgb_network
from stfn.study.compare_report import write_compare_report
from stfn.study.pipeline import Steps, backbone_amp, check_stamp, model_entries, run_protocol, test_videos
from stfn.study.presets import COMPARE_PRESETS, HEADS, MODELS, ComparePreset

__all__ = ["HEAD_CHOICES", "compare_config", "run_compare"]

# --models names (run folders) -> the heads' display names
HEAD_CHOICES: dict[str, str] = {MODELS[name]: name for name in HEADS}
_RESERVED = ("overall", "mean_class_acc", "top5", "counts", "temporal_order_pair")  # result keys, not classes


def _is_prepared(source: Path) -> bool:
    return any(source.glob("manifest*.json"))


def _check_videos(source: Path) -> None:
    """A video file, or a folder with video files below it (the error names the extensions looked for)."""
    if not source.exists():
        raise StfnError(f"'{source}' does not exist (give a folder of videos or a folder written by stfn prepare)")
    if source.is_file() or any(p.suffix.lower() in VIDEO_EXTENSIONS for p in source.rglob("*") if p.is_file()):
        return
    raise StfnError(f"no videos found in '{source}' (looked for {', '.join(VIDEO_EXTENSIONS)} files in its "
                    "folders), and it is not a prepared folder (no manifest.json)")


def _check_split(split: Split, prepared: Path, source: Path, preset: str, p: ComparePreset) -> None:
    """The split's lists name the prepared videos, and hold enough classes and videos for the preset."""
    videos = load_manifest(prepared).videos
    for side in ("train", "test"):
        listed = split.records(side)
        usable, missing, failed = check_prepared(listed, videos)
        if listed and not usable:
            raise StfnError(f"none of the {len(listed)} videos of the {side} list of split {split.split} is in "
                            f"'{source}' (e.g. '{listed[0].key}'): are these the lists of these videos?")
        if missing or failed:
            bad = (missing + failed)[:3]
            raise StfnError(f"{len(missing)} videos of the {side} list of split {split.split} are not in '{source}' "
                            f"and {len(failed)} failed to prepare (e.g. {', '.join(repr(k) for k in bad)}); "
                            "fix the lists or the videos (`stfn data-info` lists them all)")
    trained = {r.label for r in split.train}
    if len(trained) < 2 or not split.test:
        raise StfnError(f"split {split.split} has {len(trained)} class(es) with training videos and "
                        f"{len(split.test)} test videos: a comparison needs at least 2 classes and test videos")
    if len(split.train) < 2 * p.batch_size:
        raise StfnError(f"split {split.split} has {len(split.train)} training videos; preset '{preset}' trains "
                        f"in batches of {p.batch_size} and needs at least {2 * p.batch_size} "
                        "(choose a preset with smaller batches, e.g. --preset tiny)")
    clash = [c for c in split.classes if c in _RESERVED]
    if clash:
        raise StfnError(f"class name '{clash[0]}' is a name stfn compare uses for a result; rename that class")


def _check_classes(split: Split) -> None:
    """Every class of the split's class list has training videos (else the comparison could not learn it)."""
    trained = {r.label for r in split.train}
    unlearnt = [c for i, c in enumerate(split.classes) if i not in trained]
    if unlearnt and split.train:
        raise StfnError(f"class '{unlearnt[0]}' of the class list of split {split.split} has no video in its train "
                        f"list ({len(unlearnt)} such class(es)): a comparison cannot learn it; list its training "
                        "videos or take it out of the class list (classInd.txt, or data.class_names)")


def _check_class_folders(splits: Path, dataset: str) -> None:
    """A ``--dataset folder`` tree whose class folder holds no file is one sentence (the class would
    otherwise be left out of the comparison without a word)."""
    if dataset != "folder":
        return
    for side in ("train", "test", "val"):
        folders = sorted(d for d in (splits / side).glob("*") if d.is_dir()) if (splits / side).is_dir() else []
        empty = [d for d in folders if not any(f.is_file() for f in d.rglob("*"))]
        if empty:
            raise StfnError(f"class folder '{empty[0]}' holds no videos: add its videos or remove the folder "
                            "(a class with no videos cannot be compared)")


def _check_backbone(p: ComparePreset) -> None:
    """Build the backbone now (and load its ImageNet weights), so that a name or a download that fails
    stops the run before any training."""
    try:
        build_rgb_network(p.backbone, pretrained=p.pretrained)
    except StfnError as e:
        raise StfnError(f"{e} (stfn compare: --backbone cnn_small needs no weights)") from None


def compare_config(p: ComparePreset, dataset: str, prepared: Path, splits: Path, split: int, seed: int) -> Config:
    """The settings every model of the comparison shares (data, backbone, run-time): the frames were
    prepared at ``p.size`` (short side) and are cropped to ``p.size`` squares (multi-scale in training)."""
    return config_from_dict({
        "name": "compare",
        "model": {"backbone": p.backbone, "flow_length": p.flow_length, "pretrained": p.pretrained},
        "data": {"dataset": dataset, "root": str(prepared), "splits": str(splits), "split": split,
                 "frames": p.frames, "scale_size": p.size, "crop_size": p.size, "test_crops": 1,
                 "num_workers": p.workers},
        "train": {"batch_size": p.batch_size, "optimizer": "adamw", "weight_decay": 1e-4, "schedule": "cosine",
                  "amp": "auto", "channels_last": True, "seed": seed, "clip_grad": 20.0},
    })


def _preset(preset: str, backbone: str | None, seeds: int | None) -> ComparePreset:
    if preset not in COMPARE_PRESETS:
        raise StfnError(f"unknown compare preset '{preset}' (choose from {', '.join(COMPARE_PRESETS)})")
    p = COMPARE_PRESETS[preset]
    if seeds is not None:
        if seeds < 1:
            raise ParameterError("seeds", f"must be at least 1, got {seeds}")
        p = dataclasses.replace(p, head_seeds=seeds)
    if backbone:
        p = dataclasses.replace(p, backbone=backbone, pretrained=backbone not in BUILTIN_BACKBONES)
    return p


def _heads(models: list[str] | None) -> dict[str, tuple[str, str]]:
    if not models:
        return dict(HEADS)
    unknown = [m for m in models if m not in HEAD_CHOICES]
    if unknown:
        raise ParameterError("models", f"names an unknown head '{unknown[0]}' (choose from "
                             f"{', '.join(HEAD_CHOICES)}; the TSN streams and their fusion always run)")
    return {HEAD_CHOICES[m]: HEADS[HEAD_CHOICES[m]] for m in HEAD_CHOICES if m in models}


def _warn_shared_groups(split: Split, log: Any) -> list[dict[str, str]]:
    """The groups (UCF101's ``_gNN_``) with videos on both sides of ``split``, logged as a warning
    when there are any: such a test set is not leave-groups-out."""
    shared = split.shared_groups()
    if shared:
        log(f"stfn compare: warning: {len(shared)} group(s) (_gNN_) have videos on both sides of split "
            f"{split.split} (e.g. {shared[0]['group']}: train '{shared[0]['train']}', test '{shared[0]['test']}'): "
            "the test set is not leave-groups-out")
    return shared


def _command_line(source: Path, splits: Path, out: Path, split: int, dataset: str, preset: str,
                  backbone: str | None, seeds: int | None, models: list[str] | None) -> str:
    """The ``stfn compare`` command line of a :func:`run_compare` call (``results.json``'s ``command``)."""
    return (f"stfn compare {source} --splits {splits} --split {split} --dataset {dataset} --out {out} "
            f"--preset {preset}" + (f" --backbone {backbone}" if backbone else "")
            + (f" --seeds {seeds}" if seeds is not None else "")
            + (f" --models {' '.join(models)}" if models else ""))


def run_compare(source: str | Path, splits: str | Path, out_dir: str | Path = "runs/compare", *, split: int = 1,
                dataset: str = "ucf101", preset: str = "quick", backbone: str | None = None,
                seeds: int | None = None, models: list[str] | None = None, seed: int = 0,
                progress: bool = True, log: Any = print) -> dict[str, Any]:
    """Run the comparison into ``out_dir``; returns what ``results.json`` holds (module docstring)."""
    p, heads = _preset(preset, backbone, seeds), _heads(models)
    source, splits, out = Path(source), Path(splits), Path(out_dir)
    prepared_input = source.is_dir() and _is_prepared(source)
    if not prepared_input:
        _check_videos(source)
    t0, load_start = time.perf_counter(), loadavg()
    stamp = {"input": str(source.resolve()), "splits": str(splits.resolve()), "split": split, "dataset": dataset,
             "preset": preset, "settings": dataclasses.asdict(p), "models": list(heads), "seed": seed}
    check_stamp(out / "compare.json", stamp, "compare")
    _check_class_folders(splits, dataset)
    the_split = load_split(dataset, splits, split)
    _check_classes(the_split)
    _check_backbone(p)
    atomic_write_json(out / "compare.json", stamp)
    steps = Steps(6 - int(prepared_input), log, "compare")
    log(f"stfn compare: '{source}' with split {split} of '{splits}' ({dataset}), preset '{preset}' "
        f"({dataclasses.asdict(p)}), seed {seed}, {torch.get_num_threads()} torch threads, output in '{out}'")
    prepared = source if prepared_input else out / "prepared"
    if not prepared_input:
        steps.start("prepare", f"stfn prepare: decoding, short side {p.size}, DIS optical flow into {prepared}")
        prepare_dataset(source, prepared, flow="dis", short_side=p.size, progress=progress)
    _check_split(the_split, prepared, source, preset, p)
    shared = _warn_shared_groups(the_split, log)

    base = compare_config(p, dataset, prepared, splits, split, seed)
    done = run_protocol(base, p, out, steps, seed, progress, heads=heads)
    classes = done["classes"]
    keys = ("overall", *classes, "mean_class_acc", "top5")  # group_accuracy per class, then top-5
    steps.start("report", "scoring, tables and plots")
    results, histories = model_entries(done["trained"], done["tsn2"], out / "runs", seed, done["head_seeds"],
                                       list(classes), {}, keys)
    steps.end()
    manifest = load_manifest(prepared)
    summary = {
        "stfn_compare": 1,
        "command": _command_line(source, splits, out, split, dataset, preset, backbone, seeds, models),
        "input": str(source), "prepared": str(prepared), "splits": str(splits), "split": split, "dataset": dataset,
        "identity": the_split.identity, "preset": preset,
        "settings": {**dataclasses.asdict(p), "hflip": base.data.hflip, "backbone_amp": backbone_amp(base)},
        "seed": seed, "backbone": p.backbone, "fusion": base.model.head.fusion,
        "flow": {"algorithm": manifest.flow.get("algorithm", "dis"), "bound": manifest.flow_bound},
        "train_videos": len(the_split.train), "shared_groups": shared,
        "classes": [{"name": c, "group": c} for c in classes],
        "test_videos": test_videos(done["tsn2"]["predictions"], list(classes)),
        "models": results, "timings": steps.times, "time_s": round(time.perf_counter() - t0, 1),
        "machine": machine_info(load_start),
    }
    write_compare_report(out, summary, histories)
    atomic_write_json(out / "results.json", summary)
    log(f"stfn compare: finished in {summary['time_s'] / 60:.1f} min; report in '{out / 'report.md'}'")
    return summary
