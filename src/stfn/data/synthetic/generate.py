"""The synthetic action benchmark: real H.264 videos in a UCF101-like tree, generated in seconds.

``generate(out_dir, preset, seed)`` writes::

    out_dir/videos/<Class>/v_<Class>_g<GG>_c<CC>.mp4      H.264 (yuv420p) through PyAV, 25 fps
    out_dir/splits/classInd.txt, trainlist01.txt, testlist01.txt   official UCF101 format (CRLF)
    out_dir/classes.json      preset, seed, parameters, recommended flow bound, classes with group
    out_dir/scenes.jsonl      one line per video: class, subset, frames, timing and per-frame object states

so ``stfn prepare out_dir/videos ...`` and the UCF101 split parser read it unchanged (dataset
``synthetic``). Like UCF101, videos come in groups of ``clips_per_group`` that share a split side;
test groups come first. The two classes of a pair (see :mod:`stfn.data.synthetic.scenes`) are
twins: ``v_A_gXX_cYY`` and ``v_B_gXX_cYY`` show the same scene.

Which model family should solve which group:

| group | cue | solved by | not by |
| --- | --- | --- | --- |
| appearance | shape; colour layout | one RGB frame (TSN RGB) | (flow sees outlines of moving shapes) |
| motion | direction, rotation, growth; which half goes left | flow (TSN flow) | one RGB frame: chance in a pair |
| temporal_order | order of two events | a temporal model over the whole video | averaging over time (TSN): chance |
| appearance_motion | which colour goes left | fusing appearance and motion features (STFN) | either stream alone, late fusion: chance |

Train without horizontal flips: a flip turns SlideLeft into SlideRight and likewise every left/right
class into its twin. Generation is deterministic: same preset, seed and parameters, same frames.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

from stfn.data.synthetic.render import Scene, render, write_video
from stfn.data.synthetic.scenes import CATALOGUE, GROUPS, SyntheticClass, build_scene, min_frames, pair_base
from stfn.data.synthetic.variants import split_variant, tint, variant_class, variant_classes, variant_name
from stfn.errors import StfnError
from stfn.fileio import atomic_write_json, atomic_write_text

__all__ = ["PRESETS", "SyntheticError", "SyntheticInfo", "flow_bound", "generate", "load_info",
           "load_scenes", "resolve_params", "scene_record", "video_entries"]

_COMMON = {"still_gap": 5, "event_min": 5, "event_max": 8, "shake": 1, "noise_min": 2.0, "noise_max": 6.0,
           "distractors": 2, "clips_per_group": 5, "fps": 25, "crf": 20}
PRESETS: dict[str, dict] = {
    # tests and smoke runs: 2 classes per group, 40 clips of 32x32
    "tiny": {**_COMMON, "size": 32, "frames_min": 32, "frames_max": 36, "train_per_class": 3,
             "test_per_class": 2, "clips_per_group": 2,
             "classes": ["Square", "Disk", "SlideRight", "SlideLeft", "LeftThenRight", "RightThenLeft",
                         "RedLeftGreenRight", "GreenLeftRedRight"]},
    # stfn demo: 14 classes x (30 train + 35 test) = 910 clips of 64x64, 32-44 frames
    "small": {**_COMMON, "size": 64, "frames_min": 32, "frames_max": 44, "train_per_class": 30,
              "test_per_class": 35,
              "classes": ["Square", "Disk", "RedAboveGreen", "GreenAboveRed", "SlideRight", "SlideLeft",
                          "TopLeftBottomRight", "TopRightBottomLeft", "LeftThenRight", "RightThenLeft",
                          "AppearThenVanish", "VanishThenAppear", "RedLeftGreenRight", "GreenLeftRedRight"]},
    # a serious benchmark: all 23 classes x (100 train + 50 test) = 3450 clips of 112x112, 48-96 frames
    "full": {**_COMMON, "size": 112, "frames_min": 48, "frames_max": 96, "train_per_class": 100,
             "test_per_class": 50, "shake": 2, "event_min": 6, "event_max": 12,
             "classes": list(CATALOGUE)},
    # UCF101's shape for stress runs of the pipeline (prepare, loaders, manifests at 13k videos): 101
    # classes (the catalogue and its colour variants, stfn.data.synthetic.variants) x (95 train + 35
    # test) = 13130 clips of 320x240 (rendered at 240x240 and stretched), 32-36 frames
    "stress": {**_COMMON, "size": 240, "width": 320, "frames_min": 32, "frames_max": 36, "train_per_class": 95,
               "test_per_class": 35, "classes": variant_classes(101)},
}


class SyntheticError(StfnError, ValueError):
    """A wrong preset, parameter or output folder for the synthetic benchmark."""


@dataclass
class SyntheticInfo:
    """What :func:`generate` wrote (also rebuilt from disk by :func:`load_info`)."""

    root: Path
    preset: str
    seed: int
    params: dict
    classes: list[SyntheticClass]
    flow_bound: float
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # class -> {"train": n, "test": n}
    seconds: float = 0.0
    generated: int = 0  # videos written by this call (0 when everything was already there)

    @property
    def videos_dir(self) -> Path:
        return self.root / "videos"

    @property
    def splits_dir(self) -> Path:
        return self.root / "splits"

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]


def resolve_params(preset: str = "tiny", **overrides) -> dict:
    """The preset's parameters with ``overrides`` applied and checked (errors name the key)."""
    if preset not in PRESETS:
        raise SyntheticError(f"unknown synthetic preset '{preset}' (choose from {', '.join(PRESETS)})")
    p = dict(PRESETS[preset])
    for key, value in overrides.items():
        if key not in p:
            raise SyntheticError(f"unknown synthetic parameter '{key}' (valid: {', '.join(sorted(p))})")
        if key == "classes":
            if not isinstance(value, (list, tuple)) or not value:
                raise SyntheticError("synthetic parameter 'classes' must be a non-empty list of class names")
            value = list(value)
        elif not isinstance(value, (int, float)) or isinstance(value, bool):
            raise SyntheticError(f"synthetic parameter '{key}' must be a number, got {value!r}")
        elif isinstance(PRESETS[preset][key], int) and int(value) != value:
            raise SyntheticError(f"synthetic parameter '{key}' must be an integer, got {value!r}")
        p[key] = type(PRESETS[preset][key])(value) if key != "classes" else value
    for name in p["classes"]:
        if split_variant(name)[0] not in CATALOGUE:
            raise SyntheticError(f"unknown synthetic class '{name}' (known: {', '.join(CATALOGUE)}, and their "
                                 "colour variants NameV1 ... NameV5)")
        twin = variant_class(name).twin
        if twin and twin not in p["classes"]:
            raise SyntheticError(f"synthetic class '{name}' needs its twin '{twin}' in 'classes'")
    if len(set(p["classes"])) != len(p["classes"]):
        raise SyntheticError("synthetic parameter 'classes' lists a class twice")
    checks = [("size", p["size"] >= 16 and p["size"] % 2 == 0, "an even number of pixels >= 16"),
              ("frames_min", p["frames_min"] >= 8, "at least 8"),
              ("frames_max", p["frames_max"] >= p["frames_min"], "at least frames_min"),
              ("train_per_class", p["train_per_class"] >= 1, "at least 1"),
              ("test_per_class", p["test_per_class"] >= 1, "at least 1"),
              ("clips_per_group", p["clips_per_group"] >= 1, "at least 1"),
              ("event_min", p["event_min"] >= 2, "at least 2"),
              ("event_max", p["event_max"] >= p["event_min"], "at least event_min"),
              ("still_gap", p["still_gap"] >= 1, "at least 1"),
              ("shake", p["shake"] >= 0, "at least 0"), ("distractors", p["distractors"] >= 0, "at least 0"),
              ("noise_max", p["noise_max"] >= p["noise_min"] >= 0, "at least noise_min (>= 0)")]
    for key, ok, what in checks:
        if not ok:
            raise SyntheticError(f"synthetic parameter '{key}' must be {what}, got {p[key]!r}")
    if p.get("width", p["size"]) < 16 or p.get("width", p["size"]) % 2:
        raise SyntheticError(f"synthetic parameter 'width' must be an even number of pixels >= 16, got {p['width']}")
    if any(variant_class(c).group == "temporal_order" for c in p["classes"]) and p["frames_min"] < min_frames(p):
        raise SyntheticError(f"synthetic parameter 'frames_min' must be at least {min_frames(p)} for the "
                             f"temporal-order classes (4 x still_gap + 2 x event_min + 2), got {p['frames_min']}")
    return p


def flow_bound(p: dict) -> float:
    """Recommended flow clipping bound (px/frame): 1.25 x the fastest motion the parameters allow,
    rounded up. Quantising to 8 bits with this bound keeps about 255 / (2 x bound) levels per pixel
    of motion instead of 6 at the usual +/-20."""
    s = p["size"]
    fastest = max(0.025 * s + 0.1 * 0.2 * s * 1.31,  # appearance: drift + spin at the tip
                  0.5 * s / (0.6 * (p["frames_min"] - 1)),  # slides, bullseyes
                  0.2 * 0.15 * 1.5 * s,  # spin at the tip of the largest ellipse
                  0.45 * s / p["event_min"])  # temporal-order events
    return float(math.ceil(1.25 * (fastest + p["shake"])))


def video_entries(p: dict) -> Iterator[tuple[str, str, int, int]]:
    """``(class, subset, group, clip)`` for every video, test groups first (1-based group and clip)."""
    cpg = p["clips_per_group"]
    first_train_group = math.ceil(p["test_per_class"] / cpg)
    for name in p["classes"]:
        for subset, count, g0 in (("test", p["test_per_class"], 0), ("train", p["train_per_class"],
                                                                     first_train_group)):
            for i in range(count):
                yield name, subset, g0 + i // cpg + 1, i % cpg + 1


def _key(name: str, g: int, c: int) -> str:
    return f"{name}/v_{name}_g{g:02d}_c{c:02d}"


def scene_record(scene: Scene, key: str, subset: str, label: int) -> dict:
    """The JSON description of one video (one line of ``scenes.jsonl``)."""
    objects = [{"role": o.role, "shape": o.shape, "texture": o.texture, "colour": list(o.colour),
                **{k: [round(float(v), 3) for v in getattr(o, k)] for k in ("x", "y", "r", "angle", "alpha")}}
               for o in scene.main]
    return {"video": key, "class": scene.cls, "label": label, "group": scene.group, "subset": subset,
            "frames": scene.n_frames, "size": scene.size, "objects": objects,
            "distractors": len(scene.objects) - len(scene.main), "noise_sigma": scene.noise_sigma,
            "background": scene.background["kind"], "events": scene.events}


def _job(args: tuple) -> list[dict]:
    """Build, render and encode one video, or both twins of a pair; skip files already complete."""
    names, subset, g, c, labels, p, seed, videos = args
    out = []
    frames = None
    for name in names:
        base, k = split_variant(name)
        scene = build_scene(base, p, [seed, g, c] + ([k] if k else []))
        key = _key(name, g, c)
        path = Path(videos) / f"{key}.mp4"
        if not path.is_file():
            reverse = CATALOGUE[base].relation == "reverse" and base != pair_base(base) and frames is not None
            frames = frames[::-1] if reverse else render(scene)  # a reversed twin is the same frames backwards
            write_video(path, _shaped(tint(frames, k), p), p["fps"], p["crf"])
        out.append({**scene_record(scene, key, subset, labels[name]), "class": name})
    return out


def _shaped(frames: np.ndarray, p: dict) -> np.ndarray:
    """``frames (T, S, S, 3)`` stretched to ``p["width"]`` x S when the preset has a width."""
    import cv2  # only the presets with a width need it

    width = p.get("width", p["size"])
    if width == frames.shape[2]:
        return frames
    return np.stack([cv2.resize(f, (width, frames.shape[1]), interpolation=cv2.INTER_LINEAR) for f in frames])


def _crlf(lines: list[str]) -> str:
    return "".join(line + "\r\n" for line in lines)


def _classes_json(preset: str, seed: int, p: dict) -> dict:
    return {"version": 1, "preset": preset, "seed": seed, "flow_bound": flow_bound(p), "params": p,
            "groups": list(GROUPS), "classes": [{"name": n, "group": variant_class(n).group,
                                                 "description": variant_class(n).description,
                                                 "twin": variant_class(n).twin, "relation": variant_class(n).relation}
                                                for n in p["classes"]]}


def generate(out_dir: str | os.PathLike, preset: str = "tiny", seed: int = 0, *, workers: int = 1,
             progress: bool = False, overwrite: bool = False, **overrides) -> SyntheticInfo:
    """Write the synthetic benchmark to ``out_dir`` (layout in the module docstring).

    Args:
        preset: ``tiny`` (tests, seconds), ``small`` (``stfn demo``) or ``full``; see :data:`PRESETS`.
        seed: all randomness derives from it; each video's draws depend only on (seed, class,
            group, clip), so changing the counts keeps the videos that remain.
        workers: processes that render and encode (1: in this process).
        overwrite: replace a folder generated with other settings (otherwise that is an error).
        overrides: any key of :data:`PRESETS` (``size``, ``frames_min``, ``frames_max``,
            ``train_per_class``, ``test_per_class``, ``classes``, ...).

    An interrupted run resumes: every video is written atomically, ``classes.json`` last; a run on a
    complete folder with the same settings returns at once.
    """
    start = time.perf_counter()
    p = resolve_params(preset, **overrides)
    root = Path(out_dir)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise SyntheticError(f"the synthetic seed must be a non-negative integer, got {seed!r}")
    if root.exists() and not root.is_dir():
        raise SyntheticError(f"output folder '{root}' is a file")
    meta = _classes_json(preset, int(seed), p)
    pending, done_file = root / ".synth-pending.json", root / "classes.json"
    for marker in (done_file, pending):
        if marker.is_file():
            old = _read_json(marker)
            same = {k: old.get(k) for k in ("preset", "seed", "params")} == {k: meta[k] for k in
                                                                           ("preset", "seed", "params")}
            if not same and not overwrite:
                raise SyntheticError(f"'{marker}' describes a benchmark generated with other settings; "
                                     "choose another folder or pass overwrite=True (--overwrite)")
            if not same:
                _clear(root)
            elif marker is done_file:
                return load_info(root)
            break
    atomic_write_json(pending, meta)
    written = sum(not (root / "videos" / f"{_key(n, g, c)}.mp4").is_file() for n, _, g, c in video_entries(p))
    records = _render_all(_jobs(p, int(seed), root / "videos"), workers, progress)
    _write_lists(root, p, records)
    atomic_write_json(done_file, meta)
    pending.unlink(missing_ok=True)
    info = load_info(root)
    info.seconds, info.generated = time.perf_counter() - start, written
    return info


def _jobs(p: dict, seed: int, videos: Path) -> list[tuple]:
    """One :func:`_job` per video, or per pair of twins (their base class first)."""
    labels = {n: i for i, n in enumerate(p["classes"])}
    jobs, seen = [], set()
    for name, subset, g, c in video_entries(p):
        first, k = split_variant(name)
        base = variant_name(pair_base(first), k)
        if (base, g, c) in seen:
            continue
        seen.add((base, g, c))
        names = [base, variant_class(base).twin] if variant_class(name).twin else [name]
        jobs.append((names, subset, g, c, labels, p, seed, str(videos)))
    return jobs


def _render_all(jobs: list[tuple], workers: int, progress: bool) -> list[dict]:
    """Run the jobs (``workers > 1``: in spawned processes); their scene records, in job order."""
    records: list[dict] = []
    bar = tqdm(total=sum(len(j[0]) for j in jobs), unit="video", desc="synth", disable=not progress,
               dynamic_ncols=True)
    if workers > 1:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            for recs in pool.map(_job, jobs, chunksize=4):
                records.extend(recs)
                bar.update(len(recs))
    else:
        for job in jobs:
            recs = _job(job)
            records.extend(recs)
            bar.update(len(recs))
    bar.close()
    return records


def _write_lists(root: Path, p: dict, records: list[dict]) -> None:
    """The UCF101 split files and ``scenes.jsonl``, in split order."""
    order = {k: i for i, k in enumerate(_key(n, g, c) for n, _, g, c in video_entries(p))}
    records = sorted(records, key=lambda r: order[r["video"]])
    splits = root / "splits"
    atomic_write_text(splits / "classInd.txt", _crlf([f"{i + 1} {n}" for i, n in enumerate(p["classes"])]))
    atomic_write_text(splits / "trainlist01.txt", _crlf([f"{r['video']}.mp4 {r['label'] + 1}" for r in records
                                                         if r["subset"] == "train"]))
    atomic_write_text(splits / "testlist01.txt", _crlf([f"{r['video']}.mp4" for r in records
                                                        if r["subset"] == "test"]))
    atomic_write_text(root / "scenes.jsonl", "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records))


def _clear(root: Path) -> None:
    """Remove what a previous generation wrote (only its own files)."""
    shutil.rmtree(root / "videos", ignore_errors=True)
    shutil.rmtree(root / "splits", ignore_errors=True)
    for name in ("classes.json", "scenes.jsonl", ".synth-pending.json"):
        (root / name).unlink(missing_ok=True)


def load_info(root: str | os.PathLike) -> SyntheticInfo:
    """Rebuild the :class:`SyntheticInfo` of a generated folder from its ``classes.json``."""
    root = Path(root)
    path = root / "classes.json"
    if not path.is_file():
        raise SyntheticError(f"'{path}' does not exist: '{root}' is not a generated synthetic benchmark")
    meta = _read_json(path)
    counts: dict[str, dict[str, int]] = {n: {"train": 0, "test": 0} for n in meta["params"]["classes"]}
    for name, subset, _, _ in video_entries(meta["params"]):
        counts[name][subset] += 1
    return SyntheticInfo(root=root, preset=meta["preset"], seed=meta["seed"], params=meta["params"],
                         classes=[variant_class(c["name"]) for c in meta["classes"]], flow_bound=meta["flow_bound"],
                         counts=counts)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SyntheticError(f"'{path}' cannot be read: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("params"), dict):
        raise SyntheticError(f"'{path}' is not a synthetic benchmark description (no 'params')")
    return data


def load_scenes(root: str | os.PathLike) -> list[dict]:
    """The per-video scene descriptions of a generated folder (``scenes.jsonl``), in split order."""
    path = Path(root) / "scenes.jsonl"
    if not path.is_file():
        raise SyntheticError(f"'{path}' does not exist: generate the benchmark first (stfn synth)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
