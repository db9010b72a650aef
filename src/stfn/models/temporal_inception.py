"""Temporal-Inception (Ma, Chen, Kira, AlRegib 2017, "TS-LSTM and Temporal-Inception: Exploiting
Spatiotemporal Dynamics for Activity Recognition"), as the authors' Torch7 code builds it.

Reference: github.com/chihyaoma/Activity-Recognition-with-CNN-and-RNN, ``Temporal-ConvNet/``:
``model-Conv-Inception-v1.lua`` (the network), ``data-2Stream.lua`` (the input: RGB features, then flow
features, concatenated on the feature axis), ``run.lua`` / ``train.lua`` (the recipe, in
``configs/temporal_inception_resnet50.yaml``).

The input is the stacked feature matrix as a one-channel image ``(B, 1, D, T)``: ``D`` feature rows
(``D = S*C``: the RGB stream's ``C`` rows, then the flow stream's), ``T`` frames. Every layer before
the first fully connected one filters each feature row in time with the *same* small kernels (``1 x k``
convolutions; ``1 x 1`` ones to reduce the channels), so the feature rows never mix before the FC::

    (B, 1, D, 25)
      inception 1: [conv 1x5 | conv 1x7] (each 1 -> 1) + BN + ReLU + max-pool 1x2  -> (B,  2, D, 12)
      inception 2: [conv 1x5 | conv 1x7] (each 2 -> 2) + BN + ReLU + max-pool 1x2  -> (B,  4, D,  6)
      inception 3: [conv 1x5 | conv 1x7] (each 4 -> 4) + BN + ReLU + max-pool 1x2  -> (B,  8, D,  3)
      inception 4: [conv 1x5 | conv 1x7] (each 8 -> 8) + BN + ReLU + max-pool 1x3  -> (B, 16, D,  1)
      conv 1x1 16 -> 4, BN, ReLU; 4 -> 2, BN, ReLU; 2 -> 1, BN, ReLU               -> (B,  1, D,  1)
      SpatialDropout, reshape (B, D), FC D -> 1024, BN, ReLU, dropout, FC 1024 -> K

Convolutions: stride 1, zero padding ``(k - 1) / 2`` (length-preserving), with bias. Max-pools: kernel
= stride, no padding, floor (25 -> 12 drops the last frame, as Torch7's ``SpatialMaxPooling`` does).
The Lua pools each branch before the concatenation; pooling the concatenation is the same (max-pooling
is per channel). ``model-Conv-Inception-v1.lua`` ends with ``LogSoftMax`` + ``ClassNLLCriterion``;
this head returns the logits and the trainer's cross-entropy is the same loss.

Other ``T`` (the Lua builds only ``T = 25``): the first three modules pool by 2 (``T -> floor(T / 2)``,
and a length of 1 stays 1); the fourth pools whatever is left (kernel = stride = its length) down to 1.
At ``T = 25`` that is the Lua's 2, 2, 2, 3: 25 -> 12 -> 6 -> 3 -> 1; ``T = 16``: 16 -> 8 -> 4 -> 2 -> 1;
``T = 8``: 8 -> 4 -> 2 -> 1 -> 1; ``T = 1``: 1 throughout. The FC's input is therefore always ``D``
(the Lua's ``nfeature * outDimConv3``, which assumes the length 1). Other ``D``: nothing depends on it
but the FC's input size (one stream: ``D = C``).

Dropout, as in Torch7: ``SpatialDropout(p)`` (:class:`Torch7SpatialDropout`) on ``(B, 1, D, 1)`` zeroes
a sample's whole ``D``-vector with probability ``p`` (one channel = one feature map), unscaled in
training and multiplied by ``1 - p`` at test time; ``nn.Dropout(p)`` before the last FC scales by
``1 / (1 - p)`` in training (Torch7's default), as PyTorch's does. The Lua's two rates
(``--dropout1``, ``--dropout2``) are both 0.2 by default; here both are ``dropout``.

Initialisation, as in Torch7: convolutions and linear layers uniform in ``+-1/sqrt(fan_in)`` (weights
and biases; PyTorch's defaults are the same), BatchNorm weights uniform in ``[0, 1)`` and biases 0
(``nn.BatchNormalization:reset``; PyTorch's default weight is 1). BatchNorm momentum 0.1 and eps 1e-5
are Torch7's and PyTorch's defaults alike. The FC's ``BatchNorm1d`` cannot train on a batch of one video
(the Lua drops an incomplete last batch, so it never sees one).

Cost: every layer before the FC runs on all ``D x T`` positions with at most 16 channels, so on CPU the
head is memory-bound: about 2 s per training step of 16 videos at ``D = 4096, T = 25`` on a busy 2-core
CPU (measured; not measured on a GPU).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FC_DIM", "KERNELS", "TemporalInceptionHead", "TemporalInceptionModule", "Torch7SpatialDropout",
           "time_conv_matrix"]

KERNELS = (5, 7)  # the two branches' temporal kernel lengths (convsize)
BRANCH_CHANNELS = (1, 2, 4, 8)  # per branch, modules 1-4 (nstate_CNN_1..4); a module outputs twice that
REDUCE_CHANNELS = (16, 4, 2, 1)  # the 1x1 convs: 16 -> 4 -> 2 -> 1 (outDimConv1..3)
FC_DIM = 1024  # nstate_FC1


def _conv_bn_relu(c_in: int, c_out: int, k: int) -> nn.Sequential:
    """``(B, c_in, D, T) -> (B, c_out, D, T)``: a ``1 x k`` convolution along ``T`` (stride 1, padding
    ``(k - 1) / 2``, bias), BatchNorm over the channels, ReLU."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, (1, k), padding=(0, (k - 1) // 2)), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


def time_conv_matrix(conv: nn.Conv2d, t: int) -> torch.Tensor:
    """``(C_in * t, C_out * t)``: the length-preserving ``1 x k`` convolution ``conv`` (stride 1, zero
    padding ``(k - 1) / 2``) on sequences of length ``t`` as one matrix, ``M[c * t + i, o * t + j] =
    w[o, c, 0, i - j + (k - 1) / 2]`` (0 outside the kernel): a banded Toeplitz block per channel pair."""
    c_out, c_in, _, k = conv.weight.shape
    taps = torch.arange(t, device=conv.weight.device)
    tap = taps[:, None] - taps[None, :] + (k - 1) // 2  # (t_in, t_out)
    w = F.pad(conv.weight[:, :, 0, :], (0, 1))  # (C_out, C_in, k + 1): tap k is a zero
    band = w[:, :, torch.where((tap >= 0) & (tap < k), tap, k)]  # (C_out, C_in, t_in, t_out)
    return band.permute(1, 2, 0, 3).reshape(c_in * t, c_out * t)


class TemporalInceptionModule(nn.Module):
    """``(B, C_in, D, T) -> (B, 2 * C_b, D, T')``: two branches (``1 x 5`` and ``1 x 7`` convolutions,
    ``C_in -> C_b`` each, + BN + ReLU), concatenated (the 5-branch's channels first), then a temporal
    max-pool with kernel = stride = ``pool`` (floor; a length of 1 stays 1), or ``pool=None``: over
    all that is left of ``T`` (``T' = 1``).

    The branches' convolutions run as one matrix product, ``(B * D, C_in * T) x (C_in * T, 2 * C_b * T)``
    (:func:`time_conv_matrix`): with at most 8 channels oneDNN's convolutions are slow, above all
    their backward pass (a training step of 16 videos, two threads, 2-core Zen 5: 10.0 instead of 13.3
    ms at the demo's ``D = 512, T = 8``, 100 instead of 285 ms at ``D = 4096, T = 25``;
    ``benchmarks/training_step.py``). The ``nn.Conv2d`` layers hold the weights and are the reference
    the tests compare with (float64: equal to ~1e-15)."""

    def __init__(self, in_channels: int, branch_channels: int, pool: int | None,
                 kernels: Sequence[int] = KERNELS) -> None:
        super().__init__()
        self.branches = nn.ModuleList(_conv_bn_relu(in_channels, branch_channels, k) for k in kernels)
        self.out_channels = branch_channels * len(kernels)
        self.pool = pool

    def pool_size(self, t: int) -> int:
        """The max-pool's kernel (= stride) on a sequence of length ``t``."""
        return t if self.pool is None else min(self.pool, t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, d, t = x.shape
        convs = [branch[0] for branch in self.branches]
        weight = torch.cat([time_conv_matrix(conv, t) for conv in convs], dim=1)  # (C_in * T, 2 * C_b * T)
        bias = torch.cat([conv.bias.repeat_interleave(t) for conv in convs])
        y = torch.addmm(bias, x.permute(0, 2, 1, 3).reshape(b * d, c * t), weight)  # (B * D, 2 * C_b * T)
        y = y.view(b, d, self.out_channels, t).permute(0, 2, 1, 3).contiguous()  # (B, 2 * C_b, D, T)
        parts = y.split(self.out_channels // len(convs), dim=1)
        y = torch.cat([branch[2](branch[1](part)) for branch, part in zip(self.branches, parts, strict=True)], dim=1)
        k = self.pool_size(t)
        if k == 1:
            return y
        # the max-pool (kernel = stride = k, floor); after the ReLU a tie is a 0, whose gradient is 0 either way
        return y[..., : t // k * k].reshape(b, self.out_channels, d, t // k, k).max(-1).values


class Torch7SpatialDropout(nn.Module):
    """Torch7's ``nn.SpatialDropout(p)`` on ``(B, C, *)``: in training each ``(sample, channel)`` map is
    zeroed with probability ``p`` and otherwise kept as it is (no ``1 / (1 - p)``); at test time the
    input is multiplied by ``1 - p``. (``nn.Dropout2d`` drops the same maps but rescales in training.)"""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x * (1.0 - self.p)
        keep = torch.full((*x.shape[:2], *([1] * (x.dim() - 2))), 1.0 - self.p, dtype=x.dtype, device=x.device)
        return x * torch.bernoulli(keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def torch7_batchnorm_init_(module: nn.Module) -> None:
    """Torch7's BatchNorm initialisation on every BatchNorm layer of ``module``: weight ``U[0, 1)``, bias 0."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
            nn.init.uniform_(m.weight, 0.0, 1.0)
            nn.init.zeros_(m.bias)


class TemporalInceptionHead(nn.Module):
    """Temporal-Inception (Ma et al. 2017): ``{"rgb_feat": (B, T, C), "flow_feat": (B, T, C)} -> (B, K)``.

    The streams' features are stacked on the feature axis (rgb rows, then flow rows) into the one-channel
    image ``(B, 1, D, T)``, ``D = len(streams) * in_dim``; then :attr:`inception` (4
    :class:`TemporalInceptionModule` s, channels 1 -> 2 -> 4 -> 8 -> 16, ``T -> 1``), :attr:`reduce`
    (1x1 convs + BN + ReLU, 16 -> 4 -> 2 -> 1), :attr:`drop_rows` (Torch7 ``SpatialDropout``),
    :attr:`fc1` (``D -> 1024``, BN, ReLU), :attr:`drop`, :attr:`fc` (``1024 -> K``). The module
    docstring has the layer table, the rule for other ``T`` and the Torch7 details (dropout, init).
    ``dropout`` is both of the Lua's rates (0.2 there).
    """

    def __init__(self, in_dim: int, num_classes: int, streams: Sequence[str], dropout: float = 0.2) -> None:
        super().__init__()
        self.streams = list(streams)
        self.rows = in_dim * len(self.streams)  # D
        pools: list[int | None] = [2, 2, 2, None]  # the Lua's 2, 2, 2, 3 at T = 25; see the module docstring
        mods, c = [], 1
        for width, pool in zip(BRANCH_CHANNELS, pools, strict=True):
            mods.append(TemporalInceptionModule(c, width, pool))
            c = mods[-1].out_channels
        self.inception = nn.Sequential(*mods)
        pairs = zip(REDUCE_CHANNELS[:-1], REDUCE_CHANNELS[1:], strict=True)
        self.reduce = nn.Sequential(*(_conv_bn_relu(a, b, 1) for a, b in pairs))
        self.drop_rows = Torch7SpatialDropout(dropout)
        self.fc1 = nn.Sequential(nn.Linear(self.rows, FC_DIM), nn.BatchNorm1d(FC_DIM), nn.ReLU(inplace=True))
        self.num_features = FC_DIM
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(FC_DIM, num_classes)
        torch7_batchnorm_init_(self)

    def feature_image(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """The stacked feature matrix ``(B, 1, D, T)``: rows ``0..C-1`` the first stream's features."""
        x = torch.cat([features[f"{s}_feat"] for s in self.streams], dim=2)  # (B, T, D)
        return x.transpose(1, 2).unsqueeze(1)

    def rows_in_time(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """``(B, 1, D, 1)``: each feature row filtered in time down to one value (before :attr:`drop_rows`).

        In float32 under any autocast: with at most 16 channels its products are too small for bf16 to
        pay, and its BatchNorms are slower in bf16 (one demo head run on Zen 5: 16.0 s so, 12.7 s in float32)."""
        x = self.feature_image(features)
        if x.device.type not in ("cpu", "cuda") or not torch.is_autocast_enabled(x.device.type):
            return self.reduce(self.inception(x))
        with torch.autocast(x.device.type, enabled=False):
            return self.reduce(self.inception(x.float()))

    def forward(self, features: dict[str, torch.Tensor], pre_logits: bool = False) -> torch.Tensor:
        """``(B, 1024)`` (after FC-BN-ReLU) with ``pre_logits``, else logits ``(B, num_classes)``."""
        x = self.fc1(self.drop_rows(self.rows_in_time(features)).flatten(1))
        return x if pre_logits else self.fc(self.drop(x))

    def reset_classifier(self, num_classes: int) -> None:
        self.fc = nn.Linear(self.num_features, num_classes)
