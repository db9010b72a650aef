"""Temporal modelling over a sequence of frame features ``(B, C, T)``.

- :class:`ResidualInceptionBlock`: parallel temporal convolutions of several lengths (local
  dynamics) and a max-pool branch, concatenated, projected back to ``C`` and added to a shortcut.
- :class:`ResidualInceptionStack`: an input projection and ``N`` blocks with optional temporal
  max-pool downsampling between them, so that stacking reaches the whole video (global dynamics).
- :class:`TemporalPool`: aggregation over time (average, max or attention).

Padding keeps every length, so any ``T >= 1`` works (downsampling uses ``ceil_mode``: 25 -> 13 -> 7,
and 1 stays 1). Kernel lengths must be odd.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["POOLINGS", "ResidualInceptionBlock", "ResidualInceptionStack", "TemporalPool", "conv_bn_relu"]

POOLINGS = ("avg", "max", "attention")

# Initial scale (BatchNorm weight) of the projection of a residual block: a fresh block is the identity
# plus a small temporal term, so a new head starts close to average pooling of the (pretrained) frame
# features, as TSN does, yet is already sensitive to frame order. Not from the paper: our choice.
RESIDUAL_INIT_SCALE = 0.1


def conv_bn_relu(c_in: int, c_out: int, kernel_size: int = 1, dilation: int = 1) -> nn.Sequential:
    """Length-preserving ``Conv1d`` (odd kernel) + ``BatchNorm1d`` + ``ReLU``: ``(B, c_in, T) -> (B, c_out, T)``."""
    if kernel_size % 2 != 1:
        raise ValueError(f"temporal kernel sizes must be odd, got {kernel_size}")
    pad = dilation * (kernel_size - 1) // 2
    return nn.Sequential(
        nn.Conv1d(c_in, c_out, kernel_size, padding=pad, dilation=dilation, bias=False),
        nn.BatchNorm1d(c_out),
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
            self.branches.append(nn.Sequential(nn.MaxPool1d(3, 1, 1), conv_bn_relu(channels, width)))
        self.project = nn.Sequential(nn.Conv1d(n * width, channels, 1, bias=False), nn.BatchNorm1d(channels))
        self.residual = residual
        if residual:
            nn.init.constant_(self.project[1].weight, RESIDUAL_INIT_SCALE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(torch.cat([b(x) for b in self.branches], dim=1))
        return x + out if self.residual else out


class ResidualInceptionStack(nn.Module):
    """One stream's temporal network: ``(B, C_in, T) -> (B, C, T')``.

    ``input_proj`` (1x1 conv + BN + ReLU, ``C_in -> C``), then ``num_blocks`` Residual Inception blocks;
    with ``downsample`` a temporal max-pool (k=2, stride 2, ceil mode) follows every block but the last,
    so ``T' = ceil(T / 2**(num_blocks-1))``. The STFN head drives the parts itself to insert fusion
    connections between blocks; ``forward`` runs the stack alone.
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        num_blocks: int = 2,
        kernel_sizes: Sequence[int] = (1, 3, 5),
        dilations: Sequence[int] | None = None,
        pool_branch: bool = True,
        residual: bool = True,
        downsample: bool = True,
    ) -> None:
        super().__init__()
        self.input_proj = conv_bn_relu(in_channels, channels)
        self.blocks = nn.ModuleList(
            ResidualInceptionBlock(channels, kernel_sizes, dilations, pool_branch, residual) for _ in range(num_blocks)
        )
        self.pool = nn.MaxPool1d(2, 2, ceil_mode=True) if downsample else nn.Identity()

    def downsample(self, x: torch.Tensor, block_index: int) -> torch.Tensor:
        """Apply the temporal downsampling that follows block ``block_index`` (none after the last)."""
        return self.pool(x) if block_index < len(self.blocks) - 1 else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_proj(x)
        for i, block in enumerate(self.blocks):
            x = self.downsample(block(x), i)
        return x


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
            self.score = nn.Conv1d(channels, 1, 1)
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
