"""Optimiser, parameter groups and the piecewise-constant LR schedule shared by every task.

``cfg`` is any training config with an ``optim`` section (:class:`mtcnn.config.train.OptimSection`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn



class PiecewiseLR:
    """LR factor at optimizer step ``s``: ``gamma ** #{b : s >= b · steps_per_epoch}``."""

    def __init__(self, boundaries_epochs: Sequence[int], steps_per_epoch: int, gamma: float):
        self.boundaries = [int(b) * int(steps_per_epoch) for b in boundaries_epochs]
        self.gamma = float(gamma)

    def __call__(self, step: int) -> float:
        return self.gamma ** sum(step >= b for b in self.boundaries)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on conv / linear weights only; biases and PReLU slopes are not decayed."""
    decay, no_decay = [], []
    decayed = set()
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            decayed.add(id(m.weight))
    for p in model.parameters():
        (decay if id(p) in decayed else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg) -> torch.optim.Optimizer:
    o = cfg.optim
    groups = parameter_groups(model, o.weight_decay)
    if o.name == "sgd":
        return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov and o.momentum > 0)
    if o.name == "adam":
        return torch.optim.Adam(groups, lr=o.lr, betas=tuple(o.betas))
    return torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas))


def settings_text(cfg, steps_per_epoch: int, world_size: int = 1, task_settings: str = "") -> str:
    """One line describing a run (the curves' title): optimiser, schedule, batch, task settings."""
    o = cfg.optim
    opt = f"{o.name} lr {o.lr:g}" + (f" m {o.momentum:g}" if o.name == "sgd" else f" betas {tuple(o.betas)}")
    return (f"{opt}, x{o.lr_gamma:g} at {list(o.lr_boundaries)}, wd {o.weight_decay:g}, batch {cfg.batch_size}"
            f"{f' on {world_size} ranks' if world_size > 1 else ''}, {cfg.epochs} ep x {steps_per_epoch} steps, "
            f"{task_settings + ', ' if task_settings else ''}seed {cfg.seed}")
