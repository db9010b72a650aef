"""torchvision RAFT optical flow (``stfn.data.video.flow`` algorithm ``raft``), and where prepare workers run it.

Its own module because it needs torch: :mod:`stfn.data.video.flow` imports it only when RAFT is asked for
(its one lazy import), so the OpenCV algorithms and ``stfn prepare``'s worker processes do without.
It imports nothing from :mod:`stfn.data.video.flow` (no cycle): the options, their defaults and their
checks are ``FLOW_OPTIONS["raft"]`` there, and :func:`stfn.data.video.flow.create_estimator` passes them all.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.models import optical_flow as of

from stfn.errors import StfnError
from stfn.runtime import resolve_device

__all__ = ["MODELS", "RaftFlow", "worker_devices"]

MODELS = {"small": (of.raft_small, of.Raft_Small_Weights), "large": (of.raft_large, of.Raft_Large_Weights)}


class RaftFlow:
    """torchvision RAFT: ``__call__(frames (N, H, W, 3) uint8 RGB) -> (N-1, H, W, 2) float32``.

    Args:
        model: ``"small"`` (raft_small) or ``"large"`` (raft_large).
        weights: ``"default"`` (pretrained, through the torchvision weights API: needs the network
            once, or the file in the torch hub cache), a path to a state-dict file, or ``"random"``
            (untrained: for speed tests only).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:N"``
            (:func:`stfn.runtime.resolve_device`).
        iters: recurrent refinement steps (torchvision default 12).
        batch_size: frame pairs per forward pass.
    """

    def __init__(self, model: str, weights: str, device: str, iters: int, batch_size: int) -> None:
        if model not in MODELS:
            raise StfnError(f"unknown RAFT model '{model}' (choose {' or '.join(MODELS)})")
        builder, enum = MODELS[model]
        if weights == "random":
            net = builder(weights=None)
        elif weights == "default":
            try:
                net = builder(weights=enum.DEFAULT)
            except (OSError, RuntimeError) as e:  # URLError is an OSError
                raise StfnError(
                    f"the pretrained RAFT-{model} weights ({enum.DEFAULT.url}) could not be downloaded "
                    f"({e.__class__.__name__}: {e}); download the file once where there is network and put it in "
                    f"{torch.hub.get_dir()}/checkpoints, or pass its path as the RAFT weights"
                ) from None
        else:
            net = builder(weights=None)
            try:
                state = torch.load(weights, map_location="cpu", weights_only=True)
                net.load_state_dict(state)
            except (OSError, RuntimeError, KeyError) as e:
                raise StfnError(f"cannot load RAFT-{model} weights from '{weights}': {e.__class__.__name__}") from None
        self.device = resolve_device(device)
        self.net = net.eval().to(self.device)
        self.iters, self.batch_size = int(iters), max(1, int(batch_size))

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise StfnError(f"RAFT needs RGB frames (N, H, W, 3), got shape {frames.shape}")
        n, h, w, _ = frames.shape
        out = np.empty((max(n - 1, 0), h, w, 2), np.float32)
        x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device).permute(0, 3, 1, 2)
        x = x.float().div_(127.5).sub_(1.0)
        # RAFT needs sides divisible by 8 and at least 128 (its correlation pyramid): pad, or enlarge
        small = min(h, w) < 128
        if small:
            size = (max(128, -(-h // 8) * 8), max(128, -(-w // 8) * 8))
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            scale = torch.tensor([w / size[1], h / size[0]], device=self.device).view(1, 2, 1, 1)
        else:
            x = F.pad(x, (0, (-w) % 8, 0, (-h) % 8), mode="replicate")
        with torch.inference_mode():
            for s in range(0, n - 1, self.batch_size):
                e = min(s + self.batch_size, n - 1)
                flows = self.net(x[s:e], x[s + 1 : e + 1], num_flow_updates=self.iters)[-1]
                if small:
                    flows = F.interpolate(flows, size=(h, w), mode="bilinear", align_corners=False) * scale
                out[s:e] = flows[:, :, :h, :w].permute(0, 2, 3, 1).float().cpu().numpy()
        return out


def worker_devices(device: str) -> tuple[str, int]:
    """Where ``stfn prepare``'s RAFT workers run: ``(device, gpus)``. With ``gpus > 0`` (``auto`` on a
    machine with GPUs) worker ``i`` takes ``cuda:{i % gpus}`` (``i``: ``LOCAL_RANK`` when set, else the
    worker's start order); otherwise every worker uses ``device``, a device that exists here."""
    resolved = resolve_device(device)
    gpus = torch.cuda.device_count() if device == "auto" and resolved.type == "cuda" else 0
    return str(resolved), gpus
