"""Temporal Linear Encoding (TLE) head: Diba, Sharma & Van Gool, "Deep Temporal Linear Encoding
Networks", CVPR 2017 (arXiv:1611.06678), on per-frame features ``{"<stream>_feat": (B, T, C)}``.

Per stream (``K`` = ``cfg.segments``, ``d`` = ``cfg.dim``, ``N`` = classes)::

    x (B, T, C) --segments--> (B, K, C) --aggregate--> (B, C) --Tensor Sketch--> (B, d)
      --signed sqrt--> --L2--> dropout --> fc d -> N  (B, N)

and two streams are fused late, by averaging their class scores (:func:`late_fusion` with
``model.fusion_weights``, the paper averages: ``[1, 1]``, and ``model.fusion_rule``: the paper does not
say whether before or after softmax; TLE is built on TSN's code base, so the default is TSN's rule, the
weighted mean of the logits). Each stream has its own encoding and
classifier, as in the paper's Figure 2: "the scores for the two ConvNets are combined in a late
fusion approach as averaging".

Source: built from the paper; no code by the authors was found (searched: repositories named TLE /
temporal linear encoding / Diba / Sharma, the paper's citations in code and issues). The Tensor
Sketch is Gao et al., "Compact Bilinear Pooling", CVPR 2016, checked against their code
(gy20073/compact_bilinear_pooling: ``caffe-20160312/src/caffe/layers/compact_bilinear_layer.cpp``,
``MatConvNet/layers/compact_bilinear_TS/yang_compact_bilinear_TS_nopool_2stream.m``) and the PyTorch
port gdlg/pytorch_compact_bilinear_pooling (``compact_bilinear_pooling/__init__.py``): two
independent count sketches ``(h1, s1)``, ``(h2, s2)`` of the same input, drawn once from a fixed
seed, their circular convolution computed by FFT.

What differs from the paper, and why:

- The paper encodes conv feature *maps* ``(h, w, c)``: the bilinear product is summed over the ``h*w``
  locations (Gao et al.'s sum pooling). Our per-frame features are already pooled over space, so the
  encoding is that of a ``1 x 1`` map: ``TS(x)`` of the aggregated vector.
- A segment is one frame in the paper (TSN sampling: one random snippet per segment in training).
  Here a segment's feature is the mean of our positions that fall in it (:func:`segment_positions`):
  with ``T = K`` (``data.frames: 3`` in training, one random cached position per segment) that is
  exactly the paper's input; with more positions (testing, ``T = 25``) the mean is the expectation of
  the paper's random one-frame choice.
- The hashes are buffers (saved in the state_dict, so a checkpoint reproduces them); Gao et al.
  regenerate them from ``srand(1)`` instead.
- Gao's Caffe inverse FFT is unnormalised (``d`` times the convolution); ours is the exact circular
  convolution. The signed square root and L2 normalisation make the two identical.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import torch
from torch import nn
from torch.nn import functional as F

from stfn.config import ConfigError, TLEConfig
from stfn.models.fusion import fuse_stream_logits

__all__ = [
    "AGGREGATIONS",
    "TLEHead",
    "TensorSketch",
    "check_tle_config",
    "count_sketch",
    "segment_positions",
    "signed_sqrt",
    "tensor_sketch",
]

# Element-wise aggregation of the K segment features (B, K, C) -> (B, C). The paper compares
# average, maximum and multiplication, and multiplication is best. Sum and average differ by a factor
# 1/K, which the signed square root + L2 normalisation remove: "sum" is the paper's average.
AGGREGATIONS = {
    "product": lambda x: x.prod(dim=1),
    "sum": lambda x: x.sum(dim=1),
    "max": lambda x: x.amax(dim=1),
}

# Gao et al.'s signed square root backward, 0.5 / (sqrt|x| + eps) (MatConvNet/layers/signed_sqrt/
# yang_sqrt_backward.m: "set the ep LARGE enough to avoid gradient explosion", ep = 1e-1).
SQRT_GRAD_EPS = 0.1


def count_sketch(x: torch.Tensor, h: torch.Tensor, s: torch.Tensor, dim: int) -> torch.Tensor:
    """Count sketch ``(..., C) -> (..., d)``: ``out[..., j] = sum_{i: h[i] = j} s[i] x[..., i]``.

    ``h``: ``(C,)`` int64 bins in ``[0, d)``; ``s``: ``(C,)`` signs ``+-1``. Linear in ``x``.
    """
    out = x.new_zeros(*x.shape[:-1], dim)
    return out.index_add_(-1, h, x * s.to(x.dtype))


def tensor_sketch(
    x: torch.Tensor, h1: torch.Tensor, s1: torch.Tensor, h2: torch.Tensor, s2: torch.Tensor, dim: int
) -> torch.Tensor:
    """Tensor Sketch of ``x (x)^T x``: ``(..., C) -> (..., d)`` (Pham & Pagh 2013; Gao et al. 2016).

    The circular convolution of two independent count sketches of ``x``, computed as
    ``irfft(rfft(CS1(x)) * rfft(CS2(x)))``. It equals the count sketch of the outer product
    ``vec(x x^T)`` with bins ``(h1[a] + h2[b]) mod d`` and signs ``s1[a] s2[b]``, so
    ``E[<TS(x), TS(y)>] = <x, y>^2`` over the random hashes (tests/models/test_tle.py).
    """
    f1 = torch.fft.rfft(count_sketch(x, h1, s1, dim), n=dim, dim=-1)
    f2 = torch.fft.rfft(count_sketch(x, h2, s2, dim), n=dim, dim=-1)
    return torch.fft.irfft(f1 * f2, n=dim, dim=-1)


class TensorSketch(nn.Module):
    """Compact bilinear encoding ``(..., C) -> (..., d)`` with fixed random hashes.

    Buffers ``h1``, ``h2`` (``(C,)`` int64 in ``[0, d)``) and ``s1``, ``s2`` (``(C,)`` float ``+-1``),
    drawn once from ``torch.Generator().manual_seed(seed)``; they are not learnt (Gao et al.: learning
    them "doesn't improve performance") and they are saved in the state_dict.
    """

    def __init__(self, in_dim: int, out_dim: int, seed: int = 1) -> None:
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        g = torch.Generator().manual_seed(seed)
        for i in (1, 2):  # drawn on the CPU, then copied: the same values under any default device
            h = torch.randint(0, out_dim, (in_dim,), generator=g, device="cpu")
            s = torch.randint(0, 2, (in_dim,), generator=g, device="cpu").float() * 2 - 1
            self.register_buffer(f"h{i}", torch.empty(in_dim, dtype=torch.long))
            self.register_buffer(f"s{i}", torch.empty(in_dim))
            with torch.no_grad():
                getattr(self, f"h{i}").copy_(h)
                getattr(self, f"s{i}").copy_(s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return tensor_sketch(x, self.h1, self.s1, self.h2, self.s2, self.out_dim)

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, out_dim={self.out_dim}"


class _SignedSqrt(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        root = x.abs().sqrt()
        ctx.save_for_backward(root)
        return torch.sign(x) * root

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (root,) = ctx.saved_tensors
        return grad * 0.5 / (root + SQRT_GRAD_EPS)


def signed_sqrt(x: torch.Tensor) -> torch.Tensor:
    """``sign(x) sqrt(|x|)``; its gradient is Gao et al.'s bounded ``0.5 / (sqrt|x| + 0.1)``."""
    return _SignedSqrt.apply(x)


@lru_cache(maxsize=64)
def segment_positions(t: int, k: int) -> tuple[tuple[int, ...], ...]:
    """The positions ``0..T-1`` of each of ``K`` equal segments of the video.

    Position ``p`` stands for the ``p``-th of ``T`` equal parts of the video (TSN sampling), centred at
    ``(p + 0.5) / T``; it belongs to the segment that holds its centre. With ``T >= K`` every segment
    holds ``floor(T/K)`` or ``ceil(T/K)`` positions (``T = 25, K = 3``: 8, 9, 8); ``T = K`` is one
    position per segment. With ``T < K`` a segment that holds no centre takes the position under its
    own centre (``T = 2, K = 3``: ``(0,), (1,), (1,)``).
    """
    groups = []
    for seg in range(k):
        inside = tuple(p for p in range(t) if 2 * seg * t <= (2 * p + 1) * k < 2 * (seg + 1) * t)
        groups.append(inside or (min(t - 1, (2 * seg + 1) * t // (2 * k)),))
    return tuple(groups)


def _segment_means(x: torch.Tensor, k: int) -> torch.Tensor:
    """``(B, T, C) -> (B, K, C)``: the mean of each segment's positions (:func:`segment_positions`)."""
    t = x.shape[1]
    w = torch.zeros(k, t)
    for seg, group in enumerate(segment_positions(t, k)):
        w[seg, list(group)] = 1.0 / len(group)
    return torch.einsum("kt,btc->bkc", w.to(device=x.device, dtype=x.dtype), x)


class TLEHead(nn.Module):
    """TLE per stream + late score fusion: ``{"<stream>_feat": (B, T, C)} -> (B, num_classes)``.

    Modules, per stream: ``sketches[stream]`` (:class:`TensorSketch` ``C -> d``, buffers only) and
    ``fcs[stream]`` (``nn.Linear(d, num_classes)``, the only parameters); one ``drop`` (dropout
    ``cfg.dropout``) before every classifier. :meth:`encode` gives the L2-normalised TLE vectors,
    :meth:`stream_logits` each stream's logits, :meth:`forward` one stream's logits or the
    :func:`late_fusion` of two (``fusion_weights``, ``fusion_rule``). The encoding runs in float32.
    """

    def __init__(
        self,
        in_dim: int,
        num_classes: int,
        streams: Sequence[str],
        cfg: TLEConfig | None = None,
        fusion_weights: dict[str, float] | None = None,
        fusion_rule: str = "logits",
    ) -> None:
        super().__init__()
        cfg = cfg or TLEConfig()
        self.fusion_rule = fusion_rule
        check_tle_config(cfg)
        self.streams = list(streams)
        self.segments, self.aggregation, self.dim = cfg.segments, cfg.aggregation, cfg.dim
        weights = fusion_weights or {"rgb": 1.0, "flow": 1.0}
        self.fusion_weights = {s: float(weights[s]) for s in self.streams}
        self.num_features = cfg.dim
        self.sketches = nn.ModuleDict({s: TensorSketch(in_dim, cfg.dim, cfg.seed) for s in self.streams})
        self.drop = nn.Dropout(cfg.dropout)
        self.fcs = nn.ModuleDict({s: nn.Linear(cfg.dim, num_classes) for s in self.streams})

    def encode(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{stream: (B, d)}``: segments, aggregation, Tensor Sketch, signed sqrt, L2 (norm 1)."""
        out = {}
        for s in self.streams:
            segs = _segment_means(features[f"{s}_feat"].float(), self.segments)  # (B, K, C)
            z = self.sketches[s](AGGREGATIONS[self.aggregation](segs))  # (B, d)
            out[s] = F.normalize(signed_sqrt(z), dim=-1)
        return out

    def stream_logits(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{stream: (B, K)}``: each stream's classifier on its TLE vector."""
        return {s: self.fcs[s](self.drop(v)) for s, v in self.encode(features).items()}

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits ``(B, K)``: one stream's, or the :func:`late_fusion` of two streams' (float32)."""
        return fuse_stream_logits(self.stream_logits(features), self.fusion_weights, self.fusion_rule)

    def reset_classifier(self, num_classes: int) -> None:
        self.fcs = nn.ModuleDict({s: nn.Linear(self.dim, num_classes) for s in self.streams})


def check_tle_config(cfg: TLEConfig) -> None:
    """Validate ``model.tle``; errors name the key."""
    if cfg.segments < 1:
        raise ConfigError(f"config key 'model.tle.segments' must be >= 1, got {cfg.segments}")
    if cfg.aggregation not in AGGREGATIONS:
        raise ConfigError(
            f"config key 'model.tle.aggregation' must be one of {', '.join(AGGREGATIONS)}, got {cfg.aggregation!r}"
        )
    if cfg.dim < 2:
        raise ConfigError(f"config key 'model.tle.dim' must be >= 2, got {cfg.dim}")
    if not 0.0 <= cfg.dropout < 1.0:
        raise ConfigError(f"config key 'model.tle.dropout' must be in [0, 1), got {cfg.dropout}")
