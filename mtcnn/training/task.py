"""What a training *task* supplies to the one training loop (:class:`mtcnn.training.loop.Trainer`).

The loop owns everything that is the same for every model: the device and DDP set-up, seeding,
the optimiser and LR schedule, AMP, the resumable state (``last.pt``), ``metrics.jsonl``,
TensorBoard, the progress bar and the final checkpoint. A task owns what differs: which net it
trains, where its samples come from, how a batch becomes a loss, which statistics a training
step adds up and what validation measures.

Two tasks ship: :class:`mtcnn.training.mtcnn_task.MTCNNTask` (face classification with OHEM,
box and landmark regression on mixed-ratio batches; P/R/O-Net) and
:class:`mtcnn.training.landmark_task.LandmarkTask` (landmark regression alone: L1 / L2 / wing /
adaptive wing, per-point weights, any number of points).

Exact resume: the loop draws every batch inside ``torch.random.fork_rng`` and stores the
loader's :meth:`BatchLoader.state_dict`, so a task's loader must be a pure function of
(seed, rank, world size, epoch, step) and must not consume the global RNG when iterated.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from mtcnn.nets.registry import NetSpec


@runtime_checkable
class BatchLoader(Protocol):
    """A resumable minibatch source: iterating yields dicts of tensors for one epoch."""

    step: int  # batches already yielded in the current epoch

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]: ...

    def state_dict(self) -> dict[str, Any]:  # must hold at least "epoch" and "step"
        ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None:  # ValueError when it does not fit
        ...


@runtime_checkable
class Task(Protocol):
    """The model-specific half of a training run (see the module docstring).

    Attributes the loop reads:

    * ``spec``: the registered :class:`NetSpec` of the net being trained (checkpoints record it);
    * ``stat_names``: names of the per-step values :meth:`loss` returns, summed by the loop
      over a logging window and over the epoch (counts included, so ratios are exact).
    """

    spec: NetSpec
    stat_names: tuple[str, ...]

    def open_data(self, world_size: int) -> int:
        """Open and check the training (and validation) samples; return the steps per epoch.

        Raise :class:`mtcnn.errors.DataError` / ``ConfigError`` with one line on bad input.
        Called before any process group or model exists, so it fails fast."""
        ...

    def build_model(self) -> nn.Module:
        """A freshly initialised net (the loop seeds the RNG before calling it)."""
        ...

    def make_loader(self, steps_per_epoch: int, rank: int, world_size: int, pin_memory: bool) -> BatchLoader:
        """This rank's resumable batch source."""
        ...

    def loss(self, outputs: Any, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss to backpropagate, float64 row of len(stat_names) to sum, detached)``.

        ``outputs`` is the model's forward of ``batch["images"]`` (under autocast on CUDA)."""
        ...

    def train_summary(self, sums: torch.Tensor, steps: float) -> dict[str, float]:
        """Summed stat rows over ``steps`` steps -> the ``train`` record of ``metrics.jsonl``
        (also logged to TensorBoard as ``train/<key>``)."""
        ...

    def validate(self, model: nn.Module, device: torch.device, amp: bool, dist_info: Any) -> dict[str, float] | None:
        """Validation metrics over this rank's share, all-reduced under DDP; None without data."""
        ...

    def validation_image(self, model: nn.Module, device: torch.device) -> np.ndarray | None:
        """A uint8 H×W×3 picture of some validation predictions for TensorBoard, or None."""
        ...

    def epoch_line(self, train: Mapping[str, float], val: Mapping[str, float] | None) -> str:
        """The part of the one-line epoch report after ``<net> epoch e/E step s:``."""
        ...

    def settings(self) -> str:
        """Task settings appended to the run's one-line settings text (curves' title)."""
        ...


__all__ = ["BatchLoader", "Task"]
