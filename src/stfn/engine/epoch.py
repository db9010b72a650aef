"""One pass over a loader: :func:`train_one_epoch`, torchvision's ``references/video_classification``
loop for stfn's batches (dicts of stream inputs and ``label``), usable with any model, loss, optimiser and
loader. :func:`stfn.engine.train.train` runs it for a whole configured run."""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from stfn.engine import distributed as dist_utils
from stfn.engine.meter import EpochMeter
from stfn.engine.optim import set_train_mode
from stfn.errors import StfnError
from stfn.runtime import INPUT_KEYS, autocast_context, bare_model

__all__ = ["EpochStats", "NonFiniteLossError", "train_one_epoch"]


class NonFiniteLossError(StfnError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""


def _optimizer_step(optimizer: torch.optim.Optimizer, scheduler: Any, scaler: torch.amp.GradScaler,
                    params: list[torch.Tensor], clip_grad: float) -> None:
    """One optimiser step on the accumulated gradients (clipped to ``clip_grad`` when > 0), then the
    scheduler's step."""
    if clip_grad > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, clip_grad)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    if scheduler is not None:
        scheduler.step()


@dataclass(frozen=True)
class EpochStats:
    """What one :func:`train_one_epoch` did, summed over ranks: mean ``loss``, ``top1`` (%) of the
    training batches as they were seen, ``samples``, wall ``seconds``, ``samples_per_s``, the ``lr`` at
    the end and the optimiser ``steps`` taken."""

    loss: float
    top1: float
    samples: int
    seconds: float
    samples_per_s: float
    lr: float
    steps: int

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


def train_one_epoch(
    model: nn.Module,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    loader: Iterable[dict[str, Any]],
    device: torch.device | str,
    epoch: int,
    scaler: torch.amp.GradScaler | None = None,
    *,
    amp_dtype: torch.dtype | None = None,
    accumulate: int = 1,
    clip_grad: float = 0.0,
    partial_bn: bool = False,
    epochs: int | None = None,
    progress: bool = False,
    writer: Any = None,
    log_every: int = 10,
    global_step: int = 0,
) -> EpochStats:
    """One pass over ``loader``, torchvision's ``references/video_classification`` signature.

    ``loader`` yields dicts with the network's inputs (``rgb (B, T, 3, H, W)``, ``flow (B, T, 2L, H, W)``
    or cached ``rgb_feat`` / ``flow_feat (B, T, C)``) and ``label (B,)``; ``criterion(logits (B, K) float32,
    labels) -> loss``. ``model`` may be DDP-wrapped or compiled. Gradients of ``accumulate`` batches are
    summed before each step (their mean loss, as one big batch), clipped to ``clip_grad`` (L2 norm, 0: off);
    ``scheduler.step()`` follows every optimiser step (``scheduler=None``: no schedule). ``partial_bn``
    keeps the BatchNorm layers TSN freezes in eval mode; ``amp_dtype`` runs the forward pass under
    autocast. ``epochs``, ``progress``, ``writer`` (TensorBoard) and ``log_every`` only change what is
    shown. Raises :class:`NonFiniteLossError` on a NaN/inf loss (all ranks stop together).
    """
    info, device = dist_utils.get_info(), torch.device(device)
    if accumulate < 1:
        raise ValueError(f"train_one_epoch: accumulate must be >= 1, got {accumulate}")
    set_train_mode(bare_model(model), partial_bn)
    scaler = scaler or torch.amp.GradScaler(device.type, enabled=False)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    n_batches, steps = len(loader), 0
    title = f"epoch {epoch + 1}" + (f"/{epochs}" if epochs else "")
    meter = EpochMeter(n_batches, title, info.world_size, show=progress and info.is_main, writer=writer,
                       log_every=log_every, global_step=global_step)
    optimizer.zero_grad(set_to_none=True)
    try:
        for i, batch in enumerate(loader):
            group_size = min(accumulate, n_batches - (i // accumulate) * accumulate)
            step_now = (i + 1) % accumulate == 0 or i + 1 == n_batches
            loss_value, logits, labels = _forward_backward(model, criterion, batch, device, amp_dtype, scaler,
                                                           group_size, not step_now, f"epoch {epoch + 1}, batch {i + 1}")
            if step_now:
                _optimizer_step(optimizer, scheduler, scaler, params, clip_grad)
                steps += 1
            meter.update(loss_value, logits, labels, optimizer.param_groups[0]["lr"], steps)
    finally:
        meter.close()
    seconds = meter.elapsed()
    loss_sum, correct, seen = dist_utils.sum_across(meter.totals(), device)
    return EpochStats(loss_sum / max(seen, 1), 100.0 * correct / max(seen, 1), int(seen), seconds,
                      seen / max(seconds, 1e-9), optimizer.param_groups[0]["lr"], steps)


def _forward_backward(model: nn.Module, criterion: nn.Module, batch: dict[str, Any], device: torch.device,
                      amp_dtype: torch.dtype | None, scaler: torch.amp.GradScaler, group_size: int,
                      defer_sync: bool, where: str) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Loss and gradients of one batch, scaled by ``1 / group_size`` (gradient accumulation);
    ``defer_sync``: DDP all-reduces later, once per optimiser step. Returns ``(loss, logits, labels)``.
    A non-finite loss on any rank stops every rank before the backward pass (:class:`NonFiniteLossError`
    naming ``where``), so none waits in an all-reduce the others never join."""
    inputs = {k: batch[k].to(device, non_blocking=True) for k in INPUT_KEYS if k in batch}
    labels = torch.as_tensor(batch["label"]).to(device, non_blocking=True)
    sync = model.no_sync() if defer_sync and hasattr(model, "no_sync") else contextlib.nullcontext()
    with sync:
        with autocast_context(device, amp_dtype):
            logits = model(inputs)
        loss = criterion(logits.float(), labels)
        loss_value = loss.item()
        if not dist_utils.all_true(math.isfinite(loss_value), device):
            raise NonFiniteLossError(f"the training loss became non-finite ({loss_value}) at {where}")
        scaler.scale(loss / group_size).backward()
    return loss_value, logits, labels
