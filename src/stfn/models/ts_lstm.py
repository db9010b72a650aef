"""TS-LSTM (Ma, Chen, Kira & AlRegib 2017, "TS-LSTM and Temporal-Inception: Exploiting Spatiotemporal
Dynamics for Activity Recognition"): temporal segments, pooled, then an LSTM over the segments.

Built as the authors' Torch code builds it: github.com/chihyaoma/Activity-Recognition-with-CNN-and-RNN,
``RNN/model.lua`` (``model_temporal_BN_max_LSTM_BN_FC``, commit f31db5b), ``RNN/train.lua`` (0be87c3) and
``RNN/test.lua`` (1925eb9): how the ``T`` positions are cut into segments, ``RNN/data-ucf101.lua``
(9cc895d): how the two streams are combined, ``RNN/main.lua`` (2690e8c): sizes and recipe; the LSTM cell
is Element-Research rnn's ``nn.LSTM`` (``LSTM.lua``, 258cd6c, ``cell2gate`` on by default)::

    rgb_feat (B, T, C) | flow_feat (B, T, C)        concatenated per frame (torch.cat(spa, temp, 2))
            x (B, T, S*C)                            S streams, rgb first
    segment k = 0..K-1: frames [k*L, (k+1)*L),      L = floor(T / K); the last T - K*L frames are unused
        BatchNorm (one per segment) of every frame   (nn.Sequencer(nn.BatchNormalization(S*C)))
        max (or mean) over the L frames -> (B, S*C)  (nn.Max(1, -1))
    LSTM(S*C -> H1) -> ... -> LSTM(.. -> Hn) over the K segment vectors, zero initial state
    last output (B, Hn) -> BatchNorm -> dropout -> fc -> (B, num_classes)

At the reference sizes (C = 2048, two streams, T = 25, K = 3, H = [512], 101 classes) the segments are
frames 1-8, 9-16, 17-24 (frame 25 is unused, as in the reference) and the head has 9,518,181
parameters (tests/models/test_ts_lstm.py).

Generalisation to other ``T``: the reference rule ``L = floor(T / K)`` holds for every ``T >= K`` (a
``T`` that is a multiple of ``K`` uses every frame). For ``T < K`` the reference fails (empty segments);
here segment ``k`` is then the single frame ``floor(k * T / K)`` (frames repeat).

Details of the reference kept here: the BatchNorm of a segment normalises each frame position with that
position's batch statistics in training (Torch's per-time-step clones of ``nn.BatchNormalization``) and
one running estimate per segment; the LSTM has peephole connections (a diagonal weight from the cell to
the input and forget gates, ``c_{t-1}``, and to the output gate, ``c_t``), one bias per gate and none
on the recurrent weights; every parameter starts ~ ``U(-0.1, 0.1)`` (``-uniform 0.1``), BatchNorm's too.
Not kept: the reference's ``model:remember(...)`` carries the LSTM state from one batch to the next
(in evaluation with main.lua's defaults, in training too with ``-lstm``); here every video starts from
a zero state, so a video's scores do not depend on the batch before it. A training batch of one video cannot be
batch-normalised: it is normalised with the running statistics (the reference skipped such batches).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from stfn.config import TSLSTMConfig

__all__ = ["POOLINGS", "PeepholeLSTM", "TSLSTMHead", "segment_bounds"]

POOLINGS = ("max", "mean")


def segment_bounds(t: int, segments: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of each of the ``segments`` temporal segments of ``t`` frame positions.

    ``t >= segments``: ``L = t // segments`` consecutive frames each, from frame 0 (the reference:
    ``segmentBasis*(s-1)+1 .. segmentBasis*s``); ``t < segments``: the single frame ``k * t // segments``.
    """
    if t < 1 or segments < 1:
        raise ValueError(f"need t >= 1 and segments >= 1, got t={t}, segments={segments}")
    if t < segments:
        return [(k * t // segments, k * t // segments + 1) for k in range(segments)]
    length = t // segments
    return [(k * length, (k + 1) * length) for k in range(segments)]


def _batch_norm(bn: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
    """``(B, L, C) -> (B, L, C)``: each of the ``L`` positions normalised on its own: in training with
    its batch statistics (each position updates ``bn``'s running estimate once), else (and for a
    training batch of one video) with the running statistics."""
    b, length, c = x.shape
    if bn.training and b > 1:
        return torch.stack([bn(x[:, j]) for j in range(length)], dim=1)
    y = F.batch_norm(x.reshape(b * length, c), bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
    return y.view(b, length, c)


class PeepholeLSTM(nn.Module):
    """One LSTM layer with peephole connections, as Element-Research rnn's ``nn.LSTM``: ``(B, K, I) -> (B, K, H)``.

    Per step, with gates in PyTorch's order (input, forget, cell, output)::

        i = sigmoid(W_i x + b_i + U_i h + p_i * c)      f = sigmoid(W_f x + b_f + U_f h + p_f * c)
        c' = f * c + i * tanh(W_g x + b_g + U_g h)       o = sigmoid(W_o x + b_o + U_o h + p_o * c')
        h' = o * tanh(c')

    ``input2gates`` holds ``W`` and ``b`` (``nn.Linear(I, H)`` per gate), ``hidden2gates`` holds ``U``
    (``nn.LinearNoBias(H, H)``), ``peephole`` holds ``p_i, p_f, p_o`` (``nn.CMul(H)``). The state starts at zero.
    """

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.input2gates = nn.Linear(input_size, 4 * hidden_size)
        self.hidden2gates = nn.Linear(hidden_size, 4 * hidden_size, bias=False)
        self.peephole = nn.Parameter(torch.empty(3, hidden_size))
        bound = 1.0 / math.sqrt(hidden_size)  # nn.CMul's default initialisation
        nn.init.uniform_(self.peephole, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, steps, _ = x.shape
        gates_x = self.input2gates(x)  # (B, K, 4H): the input projections of all steps at once
        h = c = x.new_zeros(b, self.hidden_size)
        p_i, p_f, p_o = self.peephole
        outputs = []
        for t in range(steps):
            z_i, z_f, z_g, z_o = (gates_x[:, t] + self.hidden2gates(h)).chunk(4, dim=1)
            i = torch.sigmoid(z_i + p_i * c)
            f = torch.sigmoid(z_f + p_f * c)
            c = f * c + i * torch.tanh(z_g)
            h = torch.sigmoid(z_o + p_o * c) * torch.tanh(c)
            outputs.append(h)
        return torch.stack(outputs, dim=1)


class TSLSTMHead(nn.Module):
    """TS-LSTM head: ``{"rgb_feat": (B, T, C), "flow_feat": (B, T, C)} -> (B, num_classes)`` (module docstring).

    Modules: ``segment_bns[k]`` (``BatchNorm1d(S*C)`` of segment ``k``), ``lstms[j]``
    (:class:`PeepholeLSTM` s), ``bn`` (``BatchNorm1d(H)``), ``drop``, ``fc``. ``num_features``: ``H``,
    the last LSTM's width (the size of ``forward(..., pre_logits=True)``).
    """

    def __init__(self, in_dim: int, num_classes: int, streams: Sequence[str], cfg: TSLSTMConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or TSLSTMConfig()
        self.streams = list(streams)
        self.segments = cfg.segments
        self.pooling = cfg.pooling
        self.init_uniform = cfg.init_uniform
        width = in_dim * len(self.streams)
        self.segment_bns = nn.ModuleList(nn.BatchNorm1d(width) for _ in range(cfg.segments))
        sizes = [width, *cfg.hidden_sizes]
        self.lstms = nn.ModuleList(PeepholeLSTM(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        self.num_features = sizes[-1]
        self.bn = nn.BatchNorm1d(self.num_features)
        self.drop = nn.Dropout(cfg.dropout)
        self.fc = nn.Linear(self.num_features, num_classes)
        self._init(self)

    def _init(self, module: nn.Module) -> None:
        """The reference's ``param:uniform(-a, a)`` over every parameter of ``module`` (``a = 0``: keep PyTorch's)."""
        if self.init_uniform > 0:
            for p in module.parameters():
                nn.init.uniform_(p, -self.init_uniform, self.init_uniform)

    def segment_vectors(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """``(B, K, S*C)``: the streams' frame features concatenated, normalised per segment and pooled
        over each segment's frames (:func:`segment_bounds`)."""
        x = torch.cat([features[f"{s}_feat"] for s in self.streams], dim=2)
        pooled = []
        for bn, (start, stop) in zip(self.segment_bns, segment_bounds(x.shape[1], self.segments), strict=True):
            frames = _batch_norm(bn, x[:, start:stop])
            pooled.append(frames.amax(dim=1) if self.pooling == "max" else frames.mean(dim=1))
        return torch.stack(pooled, dim=1)

    def forward(self, features: dict[str, torch.Tensor], pre_logits: bool = False) -> torch.Tensor:
        """``(B, H)`` video vector (after the BatchNorm) with ``pre_logits``, else logits ``(B, num_classes)``."""
        h = self.segment_vectors(features)
        for lstm in self.lstms:
            h = lstm(h)
        v = _batch_norm(self.bn, h[:, -1:]).squeeze(1)  # the last segment's output (nn.SelectTable(-1))
        return v if pre_logits else self.fc(self.drop(v))

    def reset_classifier(self, num_classes: int) -> None:
        self.fc = nn.Linear(self.num_features, num_classes, device=self.fc.weight.device)
        self._init(self.fc)
