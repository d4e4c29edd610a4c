"""The MTCNN multi-task objective as a training task (SPEC §3, §4, §11): P-Net, R-Net, O-Net.

Batches are the mixed-ratio minibatches of :class:`mtcnn.data.datasets.MixedBatchLoader`
(pos / part / neg / landmark split by :func:`mtcnn.data.datasets.composition_for` unless
``data.composition`` says otherwise); the loss is :func:`mtcnn.losses.mtcnn_loss`
(classification with OHEM, box and landmark regression, SPEC §3 task weights).

Validation (every ``val.every_epochs``): all samples of the stage's validation file(s) (or the
first ``val.max_per_kind`` of each kind), in fixed order, no augmentation, batches of
``val.batch_size``; under DDP each rank takes every ``world_size``-th row and the sums are
all-reduced. Metrics, with ``p`` the softmax face probability and ``t`` the stage threshold:

* ``accuracy``: pos+neg classified right at ``p > 0.5``;
* ``recall``: positives with ``p >= t``; ``fpr``: negatives with ``p >= t``;
* ``box_mae``: mean absolute box-offset error over pos+part (offsets are in crop-side units);
* ``landmark_error``: mean Euclidean point error over landmark samples, in crop-side units
  (coordinates normalised to 0..1 of the crop); ``landmark_nme``: the same per sample divided
  by that sample's ground-truth inter-ocular distance (left eye to right eye), averaged;
* ``loss_cls`` / ``loss_box`` / ``loss_landmark`` / ``loss``: the training losses without OHEM.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import torch
from torch import nn

from mtcnn.config import ConfigError
from mtcnn.data.datasets import ColorJitter, MixedBatchLoader, OversampleError, composition_for
from mtcnn.data.h5 import KINDS
from mtcnn.data.readers import InMemoryReader, open_samples
from mtcnn.errors import DataError
from mtcnn.losses import TaskWeights, flatten_head, mtcnn_loss
from mtcnn.nets import build_net, get_net_spec
from mtcnn.structures import Label
from mtcnn.training.validation import Validator, validation_image


def _global_composition(cfg) -> dict[str, int]:
    c = cfg.data.composition
    values = {k: getattr(c, k) for k in KINDS}
    if all(v is None for v in values.values()):
        return composition_for(cfg.net, cfg.batch_size)
    comp = {k: int(v or 0) for k, v in values.items()}
    if sum(comp.values()) != cfg.batch_size:
        raise ConfigError(f"data.composition {comp} sums to {sum(comp.values())}, not batch_size={cfg.batch_size}")
    return comp


class MTCNNTask:
    """P/R/O-Net training from a resolved :class:`mtcnn.config.train.TrainConfig`."""

    stat_names = ("loss", "cls", "box", "landmark", "correct", "n_cls")

    def __init__(self, cfg):
        self.cfg = cfg
        self.spec = get_net_spec(cfg.net)
        self.weights = TaskWeights(cfg.loss.weights.cls, cfg.loss.weights.box, cfg.loss.weights.landmark)
        self.validator: Validator | None = None
        self.val_reader = None

    # ---------------------------------------------------------------- data
    def _rank_composition(self, ws: int) -> dict[str, int]:
        cfg = self.cfg
        self.composition = _global_composition(cfg)
        if any(v is not None for v in dataclasses.astuple(cfg.data.composition)):
            if any(v % ws for v in self.composition.values()):
                raise ConfigError(f"data.composition {self.composition} is not divisible by the {ws} ranks")
            return {k: v // ws for k, v in self.composition.items()}
        try:
            return composition_for(cfg.net, cfg.batch_size // ws)
        except ValueError as e:
            raise ConfigError(f"batch_size={cfg.batch_size} over {ws} ranks: {e}") from None

    def open_data(self, world_size: int) -> int:
        cfg, ws = self.cfg, world_size
        size = self.spec.crop_size
        self.rank_composition = self._rank_composition(ws)
        self.train_reader = open_samples(cfg.data.train, cfg.data.train_by_kind, size, "training")
        if InMemoryReader.nbytes(self.train_reader) <= cfg.data.cache_mb * 2**20:
            self.train_reader = InMemoryReader(self.train_reader)
        counts = self.train_reader.counts()
        for kind, c in self.rank_composition.items():
            if c > 0 and counts[kind] < max(1, ws):
                hint = (" (landmark samples in a separate file? set data.train_by_kind.landmark=[...])"
                        if kind == "landmark" else "")
                raise DataError(f"{self.train_reader.path}: no {kind} samples but each batch needs {c}{hint}")
        if cfg.val.enabled and cfg.data.val:
            self.val_reader = open_samples(cfg.data.val, cfg.data.val_by_kind, size, "validation")
        used = sum(counts[k] for k, c in self.composition.items() if c > 0)
        return cfg.steps_per_epoch or max(1, math.ceil(used / cfg.batch_size))

    def build_model(self) -> nn.Module:
        return build_net(self.spec)

    def make_loader(self, steps_per_epoch: int, rank: int, world_size: int, pin_memory: bool) -> MixedBatchLoader:
        cfg = self.cfg
        if self.val_reader is not None:
            self.validator = Validator(self.val_reader, cfg.val.threshold, cfg.val.batch_size, cfg.val.max_per_kind,
                                       rank, world_size)
        try:
            return MixedBatchLoader(
                self.train_reader, self.rank_composition, steps_per_epoch, seed=cfg.seed, rank=rank,
                world_size=world_size, flip=cfg.data.flip, color_jitter=cfg.data.color_jitter,
                jitter=ColorJitter.from_config(cfg.data),
                num_workers=cfg.data.num_workers, pin_memory=pin_memory,
                oversample=[(rule.pattern, rule.factor) for rule in cfg.data.oversample],
            )
        except OversampleError as e:  # name the config key; the loader knows only its argument
            raise OversampleError(f"data.oversample: {e}") from None

    # ---------------------------------------------------------------- steps
    def loss(self, outputs, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        loss, parts = mtcnn_loss(outputs, batch, self.weights, self.cfg.loss.ohem_keep_ratio,
                                 self.cfg.loss.landmark_kind, float(self.spec.crop_size))
        with torch.no_grad():
            labels = batch["label"]
            valid = (labels == Label.POS) | (labels == Label.NEG)
            pred = flatten_head(outputs[0]).argmax(1)
            correct = ((pred == (labels == Label.POS).long()) & valid).sum()
            row = torch.stack([loss.detach().double(), parts["cls"].double(), parts["box"].double(),
                               parts["landmark"].double(), correct.double(), valid.sum().double()])
        return loss, row

    def train_summary(self, sums: torch.Tensor, steps: float) -> dict[str, float]:
        s = [float(v) for v in sums]
        steps = max(1.0, steps)
        return {"loss": s[0] / steps, "cls": s[1] / steps, "box": s[2] / steps, "landmark": s[3] / steps,
                "accuracy": s[4] / s[5] if s[5] > 0 else float("nan")}

    # ---------------------------------------------------------------- validation
    def validate(self, model: nn.Module, device: torch.device, amp: bool, dist_info) -> dict[str, float] | None:
        if self.validator is None:
            return None
        return self.validator.evaluate(model, device, self.weights, amp, dist_info)

    def validation_image(self, model: nn.Module, device: torch.device):
        if self.val_reader is None or self.cfg.val.num_images <= 0:
            return None
        return validation_image(model, self.val_reader, self.cfg.val.num_images, device, self.cfg.val.threshold)

    def epoch_line(self, train: Mapping[str, float], val: Mapping[str, float] | None) -> str:
        line = f"loss {train['loss']:.4f} (cls {train['cls']:.4f} box {train['box']:.4f} lmk {train['landmark']:.4f})"
        if val is not None:
            line += (f" | val acc {val['accuracy']:.4f} recall@{val['threshold']:g} {val['recall']:.4f} "
                     f"fpr {val['fpr']:.4f} box_mae {val['box_mae']:.4f} lmk_err {val['landmark_error']:.4f}")
        return line

    def settings(self) -> str:
        return f"ohem {self.cfg.loss.ohem_keep_ratio:g}"


__all__ = ["MTCNNTask"]
