"""Temporal modelling over a sequence of frame features ``(B, C, T)``.

- :class:`ResidualInceptionBlock`: parallel temporal convolutions of several lengths (local
  dynamics) and a max-pool branch, concatenated, projected back to ``C`` and added to a shortcut.
  :class:`~stfn.models.heads.STFNHead` stacks them per stream with temporal max-pool downsampling
  between them, so that stacking reaches the whole video (global dynamics).
- :class:`TemporalPool`: aggregation over time (average, max or attention).

Padding keeps every length, so any ``T >= 1`` works (downsampling uses ``ceil_mode``: 25 -> 13 -> 7,
and 1 stays 1). Kernel lengths must be odd.

Speed: every tensor here is *logically* ``(B, C, T)`` but stored as ``(B, T, C)``: a
``.transpose(1, 2)`` view of a contiguous ``(B, T, C)`` tensor, which is what the heads' frame
features already are. On that layout a 1x1 convolution is one matrix product over channels, a
length-``k`` convolution one matrix product too (see :class:`TemporalConv1d`), BatchNorm runs the
vectorised ``(N, C)`` kernel and max-pooling the channels-last kernel. :class:`TemporalConv1d`,
:class:`TemporalBatchNorm1d` and :class:`TemporalMaxPool1d` are ``nn.Conv1d`` / ``nn.BatchNorm1d`` /
``nn.MaxPool1d`` subclasses with the same parameters, state_dict keys, initialisation and results (to
float rounding; the same tie rule for max-pool gradients), computed that way. PyTorch's own CPU
kernels on ``(B, C, T)`` take a reference convolution for 1x1 convolutions (one thread, batch < 16)
and strided loops for 3-d BatchNorm and max-pooling. :func:`to_reference` gives a copy that runs
PyTorch's own layers (for checks and ``benchmarks/head_speed.py``). Inputs in the ordinary contiguous
``(B, C, T)`` layout work too (one copy each); every output is stored as ``(B, T, C)``.

Measured against PyTorch's layers (BENCHMARKS.md, the STFN head's training step, batch 32): 1.66x on an
AVX2 CPU; 1.10-1.38x on Zen 4 with AVX512-BF16 (idle; fp32 and bf16, 1 and 2 threads, T=25). There the layers pay only
together: custom convolutions or max-pools alone with PyTorch's BatchNorm gave 0.63-1.11x.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "POOLINGS",
    "ResidualInceptionBlock",
    "TemporalBatchNorm1d",
    "TemporalConv1d",
    "TemporalMaxPool1d",
    "TemporalPool",
    "cat_channels",
    "conv_bn_relu",
    "to_reference",
]

POOLINGS = ("avg", "max", "attention")

# Initial scale (BatchNorm weight) of the projection of a residual block: a fresh block is the identity
# plus a small temporal term, so a new head starts close to average pooling of the (pretrained) frame
# features, as TSN does, yet is already sensitive to frame order. Not from the paper: our choice.
RESIDUAL_INIT_SCALE = 0.1


class TemporalConv1d(nn.Conv1d):
    """Length-preserving ``nn.Conv1d`` (odd kernel, stride 1, zero padding ``d*(k-1)/2``, no groups):
    ``(B, C_in, T) -> (B, C_out, T)``, the output stored as ``(B, T, C_out)``.

    Computed as one matrix product. ``k = 1``: the input ``(B*T, C_in)`` times the weight. ``k > 1`` with
    ``C_in <= C_out``: the ``(B*T, C_in*k)`` windows of the input (im2col) times the weight flattened to
    ``(C_out, C_in*k)``. ``C_in > C_out`` (e.g. a 1x1 projection of 2048-d frame features): the input
    times all ``k`` taps at once, ``(B*T, C_in) x (C_in, k*C_out)``, then the ``k`` shifted outputs summed,
    which moves ``k*C_out`` instead of ``k*C_in`` values per frame.
    """

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 1, dilation: int = 1, bias: bool = False) -> None:
        if kernel_size % 2 != 1:
            raise ValueError(f"temporal kernel sizes must be odd, got {kernel_size}")
        super().__init__(c_in, c_out, kernel_size, padding=dilation * (kernel_size - 1) // 2, dilation=dilation,
                         bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xt = x.transpose(1, 2)  # (B, T, C_in)
        k, d = self.kernel_size[0], self.dilation[0]
        if k == 1:
            return F.linear(xt, self.weight.flatten(1), self.bias).transpose(1, 2)
        b, t, c_in = xt.shape
        c_out, pad = self.out_channels, self.padding[0]
        if self.in_channels <= c_out:
            xp = F.pad(xt, (0, 0, pad, pad))
            # (B, T, C_in, k) windows, flattened channel-major like the weight (stack, not unfold: ONNX)
            cols = torch.stack([xp[:, j * d:j * d + t] for j in range(k)], dim=3).reshape(b, t, c_in * k)
            return F.linear(cols, self.weight.flatten(1), self.bias).transpose(1, 2)
        # z[:, s, j] = W_j x[s]; y[t] = sum_j z[t + j*d - pad, j] (zero outside), read from padded z
        z = F.linear(xt, self.weight.permute(2, 0, 1).reshape(k * c_out, c_in)).view(b, t, k, c_out)
        zp = F.pad(z, (0, 0, 0, 0, pad, pad))
        if torch.jit.is_tracing():  # export: ONNX has no as_strided
            y = sum(zp[:, j * d:j * d + t, j] for j in range(k))
        else:  # the k shifted taps as one strided view: its backward is a single scatter
            s = zp.stride()
            y = zp.as_strided((b, t, k, c_out), (s[0], s[1], d * s[1] + s[2], s[3])).sum(2)
        return (y if self.bias is None else y + self.bias).transpose(1, 2)


class TemporalBatchNorm1d(nn.BatchNorm1d):
    """``nn.BatchNorm1d`` over ``(B, C, T)`` (statistics over ``B`` and ``T``) computed on the ``(B*T, C)``
    view of the ``(B, T, C)`` layout; ``(B, C)`` inputs as usual. Output: the input's shape."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3:
            return super().forward(x)
        b, c, t = x.shape
        return super().forward(x.transpose(1, 2).reshape(b * t, c)).view(b, t, c).transpose(1, 2)


def max_pool_time(x: torch.Tensor, kernel: int, stride: int, padding: int = 0, ceil_mode: bool = False) -> torch.Tensor:
    """``nn.MaxPool1d(kernel, stride, padding, ceil_mode)`` along ``T`` of ``x (B, T, C)``: ``(B, T', C)``.

    PyTorch's own max-pool kernel (so the same tie rule: the earliest maximum gets the gradient) on
    the channels-last 4-d view ``(B, C, T, 1)`` of ``x``, where it is vectorised over channels.
    """
    b, t, c = x.shape
    # views, not (un)squeeze: the gradients must come back with channels-last strides as well, or
    # the backward kernel falls to its slow path after a layout copy
    x4 = x.contiguous().view(b, t, 1, c).permute(0, 3, 1, 2)  # (B, C, T, 1), channels-last strides
    y = F.max_pool2d(x4, (kernel, 1), (stride, 1), (padding, 0), ceil_mode=ceil_mode)
    return y.permute(0, 2, 3, 1).view(b, -1, c)


class TemporalMaxPool1d(nn.MaxPool1d):
    """``nn.MaxPool1d`` over ``(B, C, T) -> (B, C, T')`` computed on the ``(B, T, C)`` layout."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dilation != 1 or self.return_indices:
            return super().forward(x)
        return max_pool_time(x.transpose(1, 2), self.kernel_size, self.stride, self.padding, self.ceil_mode).transpose(1, 2)


def cat_channels(xs: Sequence[torch.Tensor]) -> torch.Tensor:
    """``torch.cat(xs, dim=1)`` of ``(B, C_i, T)`` tensors, the result stored as ``(B, T, sum C_i)``."""
    return torch.cat([x.transpose(1, 2) for x in xs], dim=2).transpose(1, 2)


# What `to_reference` turns each fast layer back into.
_REFERENCE = {TemporalConv1d: nn.Conv1d, TemporalBatchNorm1d: nn.BatchNorm1d, TemporalMaxPool1d: nn.MaxPool1d}


def to_reference(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` whose temporal layers run PyTorch's own ``Conv1d`` / ``BatchNorm1d`` /
    ``MaxPool1d`` kernels: the same parameters and maths, the speed before the fast paths."""
    ref = copy.deepcopy(module)
    for m in ref.modules():
        if type(m) in _REFERENCE:
            m.__class__ = _REFERENCE[type(m)]
    return ref


def conv_bn_relu(c_in: int, c_out: int, kernel_size: int = 1, dilation: int = 1) -> nn.Sequential:
    """Length-preserving ``Conv1d`` (odd kernel) + ``BatchNorm1d`` + ``ReLU``: ``(B, c_in, T) -> (B, c_out, T)``."""
    return nn.Sequential(
        TemporalConv1d(c_in, c_out, kernel_size, dilation),
        TemporalBatchNorm1d(c_out),
        nn.ReLU(inplace=True),
    )


class ResidualInceptionBlock(nn.Module):
    """``(B, C, T) -> (B, C, T)``: ``x + BN(W [b_1(x), ..., b_k(x), pool(x)])``.

    Branch ``i`` is a 1x1 conv (reduce to ``C // n_branches``) then a temporal conv of length
    ``kernel_sizes[i]`` and dilation ``dilations[i]`` (a length-1 branch is the 1x1 conv alone); the
    pool branch is a temporal max-pool (k=3) then a 1x1 conv. Every conv is followed by BN and ReLU.
    The concatenation is projected back to ``C`` (1x1 conv + BN); there is no activation after the
    sum, so the shortcut stays an identity path. With ``residual=False`` the output is the projection.
    """

    def __init__(
        self,
        channels: int,
        kernel_sizes: Sequence[int] = (1, 3, 5),
        dilations: Sequence[int] | None = None,
        pool_branch: bool = True,
        residual: bool = True,
    ) -> None:
        super().__init__()
        dilations = list(dilations) if dilations is not None else [1] * len(kernel_sizes)
        if len(dilations) != len(kernel_sizes):
            raise ValueError("one dilation per kernel size is needed")
        n = len(kernel_sizes) + int(pool_branch)
        if n == 0:
            raise ValueError("a Residual Inception block needs at least one branch")
        width = max(1, channels // n)
        self.branches = nn.ModuleList()
        for k, d in zip(kernel_sizes, dilations, strict=True):
            if k == 1:
                self.branches.append(conv_bn_relu(channels, width))
            else:
                self.branches.append(nn.Sequential(conv_bn_relu(channels, width), conv_bn_relu(width, width, k, d)))
        if pool_branch:
            self.branches.append(nn.Sequential(TemporalMaxPool1d(3, 1, 1), conv_bn_relu(channels, width)))
        self.project = nn.Sequential(TemporalConv1d(n * width, channels), TemporalBatchNorm1d(channels))
        self.residual = residual
        if residual:
            nn.init.constant_(self.project[1].weight, RESIDUAL_INIT_SCALE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(cat_channels([b(x) for b in self.branches]))
        return x + out if self.residual else out


class TemporalPool(nn.Module):
    """Aggregate over time: ``(B, C, T) -> (B, C)``.

    ``avg`` and ``max`` are parameter-free; ``attention`` learns a score per time step (1x1 conv),
    softmax over ``T``, and returns the weighted sum. Its scorer starts at zero, i.e. as average pooling.
    """

    def __init__(self, channels: int, mode: str = "avg") -> None:
        super().__init__()
        if mode not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {mode!r}")
        self.mode = mode
        self.score = None
        if mode == "attention":
            self.score = TemporalConv1d(channels, 1, 1, bias=True)
            nn.init.zeros_(self.score.weight)
            nn.init.zeros_(self.score.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "avg":
            return x.mean(dim=2)
        if self.mode == "max":
            return x.amax(dim=2)
        weights = torch.softmax(self.score(x), dim=2)  # (B, 1, T)
        return (x * weights).sum(dim=2)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"
