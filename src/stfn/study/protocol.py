"""The two-stage protocol: TSN backbones trained per stream, joined, then their features cached.

Its first stage, used by ``stfn demo`` and by ``stfn ablate`` for a combination that changes the
backbone::

    build_features(tsn_cfg, runs_dir, features_dir, frames)
    # = train_backbones (runs_dir/tsn_rgb, runs_dir/tsn_flow), build_two_stream_checkpoint
    #   (runs_dir/tsn_two_stream/last.pt), extract_features (features_dir)

The second stage trains heads on those frozen features (``data.features``). Every step resumes.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from stfn.config import STREAMS, Config, config_from_dict
from stfn.engine.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint
from stfn.engine.features import extract_features
from stfn.engine.train import train
from stfn.errors import StfnError
from stfn.models import build_model

__all__ = ["build_features", "build_two_stream_checkpoint", "train_backbones", "train_run"]


def train_run(cfg: Config, run_dir: Path, progress: bool, threads: int = 0) -> dict[str, Any]:
    """``train(..., resume=True)``, with ``threads`` torch CPU threads for its duration (0: unchanged)."""
    before = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        return train(cfg, run_dir, resume=True, progress=progress)
    finally:
        torch.set_num_threads(before)


def train_backbones(tsn: Config, runs_dir: Path, progress: bool = True) -> dict[str, dict[str, Any]]:
    """Train single-stream TSN on RGB and on flow (``tsn`` with ``model.streams`` replaced) into
    ``runs_dir/tsn_rgb`` and ``runs_dir/tsn_flow``; returns ``train``'s result per stream."""
    out = {}
    for stream in STREAMS:
        cfg = copy.deepcopy(tsn)
        cfg.name, cfg.model.arch, cfg.model.streams = f"{tsn.name}-{stream}", "tsn", [stream]
        cfg.data.features, cfg.model.freeze_backbone = "", False
        out[stream] = train_run(cfg, runs_dir / f"tsn_{stream}", progress)
    return out


def build_two_stream_checkpoint(rgb_ckpt: Path, flow_ckpt: Path, out_path: Path) -> Path:
    """One TSN checkpoint holding the RGB network of ``rgb_ckpt`` and the flow network of ``flow_ckpt``.

    Its ``forward`` is TSN's weighted late fusion (``model.fusion_weights``, 1:1.5); it is also the
    source of the two-stream cached features. Written atomically; reused when it already exists.
    """
    if out_path.is_file():
        return out_path
    rgb, flow = load_checkpoint(rgb_ckpt), load_checkpoint(flow_ckpt)
    if rgb["classes"] != flow["classes"] or sorted(rgb["train_videos"]) != sorted(flow["train_videos"]):
        raise StfnError(f"'{rgb_ckpt}' and '{flow_ckpt}' were not trained on the same classes and videos")
    cfg = config_from_dict(rgb["config"])
    cfg.name, cfg.model.streams = "demo-tsn-two-stream", list(STREAMS)
    model = build_model(cfg.model)
    state = {k: v for k, v in rgb["model"].items() if ".rgb." in k or k.endswith(".rgb")}
    state.update({k: v for k, v in flow["model"].items() if ".flow." in k or k.endswith(".flow")})
    model.load_state_dict(state, strict=True)
    inherited = {"sources": sorted({*(rgb.get("inherited") or {}).get("sources", []),
                                    *(flow.get("inherited") or {}).get("sources", [])}),
                 "videos": sorted({*(rgb.get("inherited") or {}).get("videos", []),
                                   *(flow.get("inherited") or {}).get("videos", [])})}
    ckpt = make_checkpoint(model, cfg, rgb["classes"], 0, dataset=rgb.get("dataset"),
                           train_videos=rgb["train_videos"], history=[], inherited=inherited,
                           prepare=rgb.get("prepare"))
    save_checkpoint(ckpt, out_path)
    return out_path


def build_features(tsn: Config, runs_dir: Path, features_dir: Path, frames: int, progress: bool = True) -> Path:
    """The two-stage protocol's first stage: TSN backbones per stream (:func:`train_backbones`), joined
    into one checkpoint, whose per-frame features (``frames`` positions per video) go to ``features_dir``."""
    train_backbones(tsn, runs_dir, progress)
    two = build_two_stream_checkpoint(runs_dir / "tsn_rgb" / "last.pt", runs_dir / "tsn_flow" / "last.pt",
                                      runs_dir / "tsn_two_stream" / "last.pt")
    return extract_features(two, features_dir, frames=frames, device=tsn.train.device, progress=progress)
