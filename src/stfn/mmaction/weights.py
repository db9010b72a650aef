"""MMAction2 TSN tensors as stfn TSN tensors: renamed, and MMAction2's input scale folded into the
first convolution (:func:`convert_state_dict`); :func:`check_fits` names what is missing or misshapen."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from stfn.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from stfn.mmaction.keys import (
    PREPROCESSOR_KEYS,
    STEM_KEYS,
    MMActionError,
    backbone_layout,
    mmaction_key_map,
    mmaction_name,
)

#: Input normalisation per channel, (mean, std) on 0..255 values: MMAction2's TSN configs
#: (``data_preprocessor`` / ``img_norm_cfg``; flow: per x and y, repeated per field) and stfn's
#: (``stfn.data.transforms.normalize_rgb`` / ``normalize_flow``).
MMACTION_NORM = {"rgb": ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375)), "flow": ((128.0, 128.0), (128.0, 128.0))}
STFN_NORM = {"rgb": (tuple(m * 255 for m in IMAGENET_MEAN), tuple(s * 255 for s in IMAGENET_STD)),
             "flow": ((127.5, 127.5), (127.5, 127.5))}

def stem_weight(state: Mapping[str, torch.Tensor], what: str) -> torch.Tensor:
    w = state[STEM_KEYS[backbone_layout(state, what)]]
    if w.dim() != 4:
        raise MMActionError(f"{what}: the first convolution's weight has shape {tuple(w.shape)}, not a 2D kernel "
                            "(out, in, h, w): a 3D network (I3D, SlowOnly, ...) is not a TSN")
    return w


def _channel_norm(stream: str, table: Mapping[str, tuple], channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    mean, std = table[stream]
    reps = channels // len(mean)
    return torch.tensor(mean * reps, dtype=torch.float64), torch.tensor(std * reps, dtype=torch.float64)


def _mmaction_norm(state: Mapping[str, torch.Tensor], stream: str, channels: int,
                   what: str) -> tuple[torch.Tensor, torch.Tensor, str]:
    """MMAction2's input mean and std per channel: the checkpoint's ``data_preprocessor`` buffers when it
    holds them, else MMAction2's TSN configs'."""
    if all(k in state for k in PREPROCESSOR_KEYS):
        mean, std = (state[k].detach().double().flatten() for k in PREPROCESSOR_KEYS)
        if mean.numel() != channels or std.numel() != channels or (std <= 0).any():
            raise MMActionError(f"{what}: data_preprocessor.mean / .std hold {mean.numel()} / {std.numel()} values "
                                f"for a first convolution over {channels} channels")
        return mean, std, "the checkpoint's data_preprocessor"
    mean, std = _channel_norm(stream, MMACTION_NORM, channels)
    return mean, std, "MMAction2's TSN configs"


def convert_state_dict(state: Mapping[str, torch.Tensor], stream: str,
                       what: str = "the MMAction2 state dict") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An MMAction2 TSN state dict as the state dict of stfn's TSN for ``stream`` (``rgb`` / ``flow``)
    and what was done to the inputs' normalisation (``source["normalisation"]``): the weights renamed
    by :func:`mmaction_key_map`, a ``num_batches_tracked`` of 0 where an old checkpoint has none, and
    the ratio of the two normalisations' scales folded into the first convolution (exact; an RGB
    model's are the same, its weights stay as they are)."""
    names = mmaction_key_map(state, stream, what)
    out = {names[k]: v.detach().clone() for k, v in state.items() if k in names}
    for key in [k for k in out if k.endswith(".running_mean")]:
        out.setdefault(key[: -len("running_mean")] + "num_batches_tracked", torch.tensor(0, dtype=torch.long))
    stem_key = names[STEM_KEYS[backbone_layout(state, what)]]
    w = out[stem_key]
    channels = w.shape[1]
    mm_mean, mm_std, told = _mmaction_norm(state, stream, channels, what)
    mean, std = _channel_norm(stream, STFN_NORM, channels)
    scale = std / mm_std  # x_mmaction = scale * x_stfn + shift, per input channel
    shift = (mean - mm_mean) / mm_std
    folded = bool((scale - 1).abs().max() > 1e-6)
    if folded:
        out[stem_key] = (w.double() * scale.view(1, -1, 1, 1)).to(w.dtype)
    offset = float(shift.abs().max())
    norm = {
        "mmaction2": {"mean": mm_mean.tolist(), "std": mm_std.tolist(), "from": told},
        "stfn": {"mean": mean.tolist(), "std": std.tolist()},
        "scale_folded_into_first_conv": folded,
        "unfolded_input_shift": offset if offset > 1e-6 else 0.0,  # in MMAction2's normalised units
    }
    return out, norm



def check_fits(model: torch.nn.Module, state: Mapping[str, torch.Tensor], layout: str, net: str,
                what: str) -> None:
    """Every tensor of ``model`` in ``state`` with its shape, or one sentence naming the MMAction2 key."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        more = f" (and {len(missing) - 1} more tensors of {net})" if len(missing) > 1 else ""
        raise MMActionError(f"{what} lacks '{mmaction_name(missing[0], layout)}'{more}")
    for key, tensor in own.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise MMActionError(f"{what}: '{mmaction_name(key, layout)}' has shape {tuple(state[key].shape)} where "
                                f"{net} has {tuple(tensor.shape)}")

