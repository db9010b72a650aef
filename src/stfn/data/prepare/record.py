"""How a model's training videos were prepared, recorded in its checkpoint and read back for new videos.

:func:`prepare_record` is what training stores as ``checkpoint["prepare"]``: the ``{"flow", "resize"}``
of the ``stfn prepare`` manifest its videos came from. :func:`resolve_prepare_settings` reads it back
(or the manifest, or the defaults) as :class:`PrepareSettings`, so that ``stfn predict`` decodes,
resizes and computes flow for a new video exactly as the training videos were.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stfn.config import Config
from stfn.data.prepare.manifest import load_manifest
from stfn.data.video.flow import (
    DEFAULT_ALGORITHM,
    DEFAULT_BOUND,
    flow_name,
    flow_settings,
    parse_flow_spec,
    recorded_options,
)
from stfn.errors import StfnError

__all__ = ["PrepareSettings", "prepare_record", "resolve_prepare_settings"]


def prepare_record(root: str | os.PathLike) -> dict[str, Any]:
    """``{"flow", "resize"}`` of the ``stfn prepare`` manifest in ``root``, the folder the training
    videos came from (``{}`` when there is none or it cannot be read): what a checkpoint records as
    ``checkpoint["prepare"]``, for :func:`resolve_prepare_settings`."""
    if not root:
        return {}
    try:
        manifest = load_manifest(root)
    except (StfnError, OSError):
        return {}
    return {"flow": dict(manifest.flow), "resize": dict(manifest.resize)}


@dataclass(frozen=True)
class PrepareSettings:
    """How the training data was prepared: frame resize and optical flow, and where that was read from."""

    short_side: int | None = None  # resize to this short side (aspect kept) ...
    size: tuple[int, int] | None = None  # ... or to exactly (W, H); neither: keep the source size
    flow: dict[str, Any] = field(default_factory=dict)  # {"algorithm": ..., options (preset, ...)}
    bound: float = 20.0  # flow clipping bound of the quantisation
    source: str = "defaults"  # where each came from, for the logs

    def flow_options(self) -> dict[str, Any]:
        return recorded_options(self.flow)

    def flow_name(self) -> str:
        return flow_name(self.flow)


def _prepare_records(cfg: Config, checkpoint: dict[str, Any]) -> list[tuple[dict, str]]:
    """``({"flow": ..., "resize": ...}, where)`` records of how the training data was prepared, best first."""
    records = []
    if isinstance(checkpoint.get("prepare"), dict):
        records.append((checkpoint["prepare"], "the checkpoint"))
    if cfg.data.root and Path(cfg.data.root).is_dir():
        try:
            m = load_manifest(cfg.data.root)
            records.append(({"flow": m.flow, "resize": m.resize}, f"the manifest in '{cfg.data.root}'"))
        except StfnError:
            pass  # no (valid) manifest there any more: fall back to the config
    return records


def resolve_prepare_settings(cfg: Config, checkpoint: dict[str, Any], flow: str | None = None) -> PrepareSettings:
    """Resize and flow settings of the training data. Each is taken from the first of: ``flow``
    (``--flow ALGO[:OPTION]``, algorithm only; the bound stays the training one), the checkpoint
    (``checkpoint["prepare"]``, as :func:`prepare_record` wrote it), the ``stfn prepare`` manifest in
    ``data.root`` when it still exists, and last the defaults: short side ``data.scale_size``, :mod:`stfn.data.video.flow`'s default algorithm and bound.
    A recorded ``resize`` of ``{}`` means the frames kept their source size.
    """
    records = _prepare_records(cfg, checkpoint)
    short, size, sources = cfg.data.scale_size, None, ["resize to data.scale_size"]
    resize = next(((r["resize"], src) for r, src in records if isinstance(r.get("resize"), dict)), None)
    if resize:
        short, size = resize[0].get("short_side"), resize[0].get("size")
        short, size = (int(short) if short else None), (tuple(int(v) for v in size) if size else None)
        sources = [f"resize from {resize[1]}"]
    flow_rec = next(((r["flow"], src) for r, src in records
                     if isinstance(r.get("flow"), dict) and r["flow"].get("algorithm") not in (None, "none")), None)
    if flow_rec:
        flow_dict = dict(flow_rec[0])
        sources.append(f"flow from {flow_rec[1]}")
    else:
        flow_dict = flow_settings(DEFAULT_ALGORITHM, {}, DEFAULT_BOUND)
        sources.append("default flow")
    bound = float(flow_dict.pop("bound", None) or DEFAULT_BOUND)
    if flow:
        flow_dict = parse_flow_spec(flow)
        sources[-1] = "flow from --flow"
    return PrepareSettings(short, size, flow_dict, bound, "; ".join(sources))
