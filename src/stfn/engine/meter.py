"""What one training epoch reports while it runs: running loss and accuracy, rate, progress bar, and
TensorBoard step scalars (the training loop's counterpart of torchvision's ``MetricLogger``)."""

from __future__ import annotations

import time
from typing import Any

import torch
from tqdm import tqdm

from stfn.engine.metrics import summary_line

__all__ = ["EpochMeter", "epoch_line", "epoch_row"]


class EpochMeter:
    """Sums over one epoch of this process; :meth:`totals` gives what to all-reduce across ranks.

    Args:
        batches: batches in the epoch (the bar's length).
        desc: the bar's title, e.g. ``"epoch 3/30"``.
        world_size: processes training together (the rate shown is the global one).
        show: draw a progress bar (rank 0 with progress on).
        writer: a TensorBoard ``SummaryWriter`` or None.
        log_every: write step scalars every this many batches.
        global_step: optimiser steps done before this epoch (the step scalars' x axis).
    """

    def __init__(self, batches: int, desc: str, world_size: int = 1, *, show: bool = False, writer: Any = None,
                 log_every: int = 1, global_step: int = 0) -> None:
        self.world_size, self.writer = world_size, writer
        self.log_every, self.global_step = max(1, log_every), global_step
        self.loss_sum = self.correct = self.seen = 0.0
        self.batches = 0
        self.start = time.perf_counter()
        self.bar = tqdm(total=batches, desc=desc, unit="batch", dynamic_ncols=True, leave=False) if show else None

    def update(self, loss: float, logits: torch.Tensor, labels: torch.Tensor, lr: float, steps: int) -> None:
        """One batch: its mean ``loss``, ``logits (B, K)``, ``labels (B,)``, the current ``lr`` and the
        optimiser steps taken so far in this epoch."""
        n = labels.shape[0]
        self.loss_sum += loss * n
        self.correct += (logits.detach().argmax(dim=1) == labels).sum().item()
        self.seen += n
        self.batches += 1
        if self.bar is not None:
            rate = self.seen * self.world_size / max(time.perf_counter() - self.start, 1e-9)
            self.bar.set_postfix(loss=f"{self.loss_sum / self.seen:.4f}", acc=f"{100 * self.correct / self.seen:.1f}",
                                 lr=f"{lr:.2e}", rate=f"{rate:.1f}/s")
            self.bar.update(1)
        if self.writer is not None and self.batches % self.log_every == 0:
            self.writer.add_scalar("train/loss_step", loss, self.global_step + steps)
            self.writer.add_scalar("train/lr_step", lr, self.global_step + steps)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def totals(self) -> list[float]:
        """``[loss_sum, correct, seen]`` of this process."""
        return [self.loss_sum, self.correct, self.seen]

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def epoch_row(epoch: int, stats: dict[str, float], metrics: dict[str, Any] | None) -> dict[str, Any]:
    """One row of ``metrics.jsonl`` for ``epoch`` (0-based): the epoch's training numbers
    (:meth:`EpochMeter` totals, all-reduced) and, when evaluated, the validation ``metrics``."""
    row: dict[str, Any] = {"epoch": epoch + 1, "lr": stats["lr"], "train_loss": stats["loss"],
                           "train_top1": stats["top1"], "train_samples": stats["samples"],
                           "train_samples_per_s": stats["samples_per_s"], "train_seconds": stats["seconds"]}
    if metrics is not None:
        row.update(val_top1=metrics["top1"], val_top5=metrics["top5"],
                   val_mean_class_acc=metrics["mean_class_acc"], val_seconds=metrics["seconds"])
    return row


def epoch_line(epoch: int, epochs: int, stats: dict[str, float], metrics: dict[str, Any] | None,
               is_best: bool, seconds_left: float) -> str:
    """The line train prints after ``epoch`` (0-based) of ``epochs``: loss, accuracy, rate, the
    validation summary when evaluated (``*best*`` marks a new best) and the time left."""
    text = (f"epoch {epoch + 1}/{epochs}  loss {stats['loss']:.4f}  train top1 {stats['top1']:.2f}  "
            f"{stats['samples_per_s']:.1f} samples/s")
    if metrics is not None:
        text += f"  | val {summary_line(metrics)}" + ("  *best*" if is_best else "")
    return text + f"  | {seconds_left / 60:.1f} min left"
