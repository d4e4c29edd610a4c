"""Training one stage of the rotation-calibrating cascade (``pcn1``, ``pcn2``, ``pcn3``;
:mod:`mtcnn.nets.pcn`) with the shared training loop.

Batches come from :class:`mtcnn.data.rotated_faces.RotatedBatchLoader`: face windows cut fresh
from in-memory face canvases, turned by an angle drawn uniformly in the stage's range (stage 1
±180°, stage 2 ±90°, stage 3 ±45°, as the faces each stage meets after the previous stages'
calibration), plus negatives of ordinary sample files turned by random quarter turns. The loss:

* face / non-face: cross-entropy over positives and negatives with online hard-example mining
  (the hardest ``keep_ratio``, as for P/R/O-Net);
* box: squared offset error over positives and part faces (weight ``weights.box``);
* orientation over positives and part faces (weight ``weights.orient``): stage 1 cross-entropy of
  up (|θ| < 90°) against down; stage 2 cross-entropy over -90° / 0° / +90° (the nearest); stage 3
  the L1 error of θ / 45°.

Validation: the validation sources' faces (each at a fixed angle, jitter and mirror drawn once from
the seed) and the validation negatives; ``recall`` of positives and ``fpr`` of negatives at the
stage's ``threshold``, ``orient_accuracy`` (stages 1 and 2) or ``angle_mae`` in degrees (stage 3)
over positives, and ``box_mae``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mtcnn.config import bounded
from mtcnn.config.data import SplitSources, WiderBoxConfig
from mtcnn.config.paths import resolve_path
from mtcnn.config.train import FreezeSection, OptimSection
from mtcnn.data.rotated_faces import (
    IGNORE,
    FaceCanvases,
    RotatedBatchLoader,
    WindowJitter,
    cached_face_canvases,
    generator,
    load_negatives,
    sample_face_windows,
)
from mtcnn.losses import classification_loss_ohem, flatten_head
from mtcnn.nets import build_net, get_net_spec
from mtcnn.nets.pcn import ANGLE_UNIT, TURN_ANGLES
from mtcnn.structures import Label

#: Each stage's angle range (degrees either way) and face threshold for validation.
STAGE_RANGE = {"pcn1": 180.0, "pcn2": 90.0, "pcn3": 45.0}
STAGE_THRESHOLD = {"pcn1": 0.6, "pcn2": 0.7, "pcn3": 0.7}


@dataclass
class NegativeFiles:
    train: list[str] = field(default_factory=list)
    val: list[str] = field(default_factory=list)
    max_train: int | None = bounded(300_000, 1, None, help="at most this many training negatives in memory")
    max_val: int | None = bounded(20_000, 1, None)


@dataclass
class PCNLossWeights:
    cls: float = bounded(1.0, 0.0, None)
    box: float = bounded(0.5, 0.0, None)
    orient: float = bounded(1.0, 0.0, None)


@dataclass
class PCNTrainConfig:
    """``train_pcn*.yaml``: one stage of the calibrating cascade (see the module docstring)."""

    net: Literal["pcn1", "pcn2", "pcn3"] = "pcn1"
    out: str = "{runs}/pcn1"
    sources: SplitSources = field(default_factory=SplitSources)
    wider_box: WiderBoxConfig = field(default_factory=WiderBoxConfig)
    negatives: NegativeFiles = field(default_factory=NegativeFiles)
    cache_dir: str | None = "{gen}/pcn_faces"
    canvas_size: int = bounded(96, 24, 512, help="face canvas side; the face's larger side becomes canvas / (1 + 2 margin)")
    canvas_margin: float = bounded(0.5, 0.3, 1.0)
    min_face: float = bounded(20.0, 1.0, None, help="faces smaller than this (shorter side, pixels) are left out")
    angle_range: float | None = bounded(None, 0.0, 180.0, help="null: the stage's (180, 90, 45)")
    jitter: WindowJitter = field(default_factory=WindowJitter)
    faces_per_batch: int = bounded(160, 1, None)
    negatives_per_batch: int = bounded(224, 1, None)
    steps_per_epoch: int | None = bounded(None, 1, None, help="null: one pass over the faces")
    epochs: int = bounded(10, 1, None)
    keep_ratio: float = bounded(0.7, 0.0, 1.0, help="OHEM: the hardest share of the classified samples")
    weights: PCNLossWeights = field(default_factory=PCNLossWeights)
    optim: OptimSection = field(default_factory=lambda: OptimSection(name="adam", lr=0.001, weight_decay=0.0, lr_boundaries=[6, 9]))
    seed: int = 0
    device: str = "cpu"
    threads: int | None = bounded(1, 1, 1024)
    cpu_bf16: bool = False
    channels_last: bool = True
    init: str | None = None
    freeze: FreezeSection = field(default_factory=FreezeSection)

    @property
    def range(self) -> float:
        return STAGE_RANGE[self.net] if self.angle_range is None else float(self.angle_range)


def orientation_targets(net: str, angle: torch.Tensor) -> torch.Tensor:
    """The orientation head's target for faces at ``angle`` degrees: stage 1 the class 0 (up,
    |θ| < 90) or 1 (down); stage 2 the index of the nearest of -90 / 0 / +90; stage 3 θ / 45."""
    if net == "pcn1":
        return (angle.abs() >= 90.0).long()
    if net == "pcn2":
        centres = torch.tensor(TURN_ANGLES)
        return (angle[:, None] - centres[None]).abs().argmin(dim=1)
    return angle / ANGLE_UNIT


def pcn_loss(net: str, outputs, batch: Mapping[str, torch.Tensor], weights: PCNLossWeights, keep_ratio: float):
    """(total, parts): the stage's loss on one batch (module docstring)."""
    logits, boxes, orient = (flatten_head(o).float() for o in outputs)
    labels = batch["label"]
    cls_labels = torch.where(labels == IGNORE, torch.full_like(labels, int(Label.PART)), labels)
    faces = (labels == int(Label.POS)) | (labels == int(Label.PART))
    parts = {"cls": classification_loss_ohem(logits, cls_labels, keep_ratio)}
    count = faces.sum().clamp(min=1)
    box_err = ((boxes - batch["bbox"]) ** 2).sum(dim=1)
    parts["box"] = (box_err * faces).sum() / count
    angle = torch.nan_to_num(batch["angle"])
    target = orientation_targets(net, angle)
    if net == "pcn3":
        per = (orient[:, 0] - target).abs()
    else:
        per = F.cross_entropy(orient, target, reduction="none")
    parts["orient"] = (per * faces).sum() / count
    total = weights.cls * parts["cls"] + weights.box * parts["box"] + weights.orient * parts["orient"]
    return total, parts


def _orient_hits(net: str, orient: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Per face: 1 when the head's class is right (stages 1, 2), else the absolute angle error (stage 3)."""
    if net == "pcn3":
        return (orient[:, 0] * ANGLE_UNIT - angle).abs()
    return (orient.argmax(dim=1) == orientation_targets(net, angle)).float()


class PCNTask:
    """The :class:`~mtcnn.training.task.Task` of one calibrating stage."""

    stat_names = ("loss", "cls", "box", "orient", "steps")

    def __init__(self, cfg: PCNTrainConfig, train: FaceCanvases | None = None, val: FaceCanvases | None = None,
                 negatives: torch.Tensor | None = None, val_negatives: torch.Tensor | None = None):
        self.cfg = cfg
        self.spec = get_net_spec(cfg.net)
        self.size = self.spec.crop_size
        self.train_faces, self.val_faces = train, val
        self.negatives, self.val_negatives = negatives, val_negatives
        self._val_batch: dict[str, torch.Tensor] | None = None

    # ---------------------------------------------------------------- data
    def _faces(self, split: str) -> FaceCanvases | None:
        from mtcnn.data.generate import load_source
        from mtcnn.data.sampling import tight_to_wider

        sets = []
        for src in getattr(self.cfg.sources, split):
            records = load_source(src)
            if src.box_style == "wider_like":
                import dataclasses

                records = [dataclasses.replace(r, boxes=tight_to_wider(r.boxes, self.cfg.wider_box)) if r.num_faces else r
                           for r in records]
            cache = None if self.cfg.cache_dir is None else resolve_path(self.cfg.cache_dir)
            sets.append(cached_face_canvases(
                records, {"source": repr(src), "wider_box": repr(self.cfg.wider_box)}, cache, f"{src.name or src.format}_{split}",
                size=self.cfg.canvas_size, margin=self.cfg.canvas_margin, min_face=self.cfg.min_face,
            ))  # fmt: skip
        return FaceCanvases.concat(sets) if sets else None

    def open_data(self, world_size: int) -> int:
        from mtcnn.errors import DataError

        if self.train_faces is None:
            self.train_faces = self._faces("train")
            if self.train_faces is None:
                raise DataError("sources.train: no training faces (name at least one source)")
        if self.val_faces is None and self.cfg.sources.val:
            self.val_faces = self._faces("val")
        neg = self.cfg.negatives
        if self.negatives is None:
            self.negatives = load_negatives([str(resolve_path(f)) for f in neg.train], self.size, neg.max_train, self.cfg.seed)
        if self.val_negatives is None and neg.val:
            self.val_negatives = load_negatives([str(resolve_path(f)) for f in neg.val], self.size, neg.max_val, self.cfg.seed + 1)
        if self.cfg.steps_per_epoch:
            return self.cfg.steps_per_epoch
        return max(1, math.ceil(len(self.train_faces) / self.cfg.faces_per_batch))

    def build_model(self) -> nn.Module:
        model = build_net(self.cfg.net)
        return model.to(memory_format=torch.channels_last) if self.cfg.channels_last else model

    def make_loader(self, steps_per_epoch: int, rank: int, world_size: int, pin_memory: bool = False) -> RotatedBatchLoader:
        return RotatedBatchLoader(
            self.train_faces, self.negatives, self.size, self.cfg.range,
            max(1, self.cfg.faces_per_batch // world_size), max(1, self.cfg.negatives_per_batch // world_size),
            steps_per_epoch, self.cfg.seed, self.cfg.jitter, rank, world_size,
        )  # fmt: skip

    # ---------------------------------------------------------------- loss and report
    def loss(self, outputs, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        total, parts = pcn_loss(self.cfg.net, outputs, batch, self.cfg.weights, self.cfg.keep_ratio)
        stats = torch.tensor([float(total.detach())] + [float(parts[k].detach()) for k in ("cls", "box", "orient")] + [1.0],
                             dtype=torch.float64)
        return total, stats

    def train_summary(self, sums: torch.Tensor, steps: float) -> dict[str, float]:
        n = max(float(sums[4]), 1.0)
        return {"loss": float(sums[0]) / n, "cls": float(sums[1]) / n, "box": float(sums[2]) / n, "orient": float(sums[3]) / n}

    def _validation_batch(self) -> dict[str, torch.Tensor] | None:
        if self._val_batch is None and self.val_faces is not None and len(self.val_faces):
            g = generator(self.cfg.seed, 999_983)
            faces = sample_face_windows(self.val_faces, torch.arange(len(self.val_faces)), self.size, self.cfg.range, g,
                                        self.cfg.jitter)
            batch = {k: faces[k] for k in ("images", "label", "bbox", "angle")}
            if self.val_negatives is not None:
                from mtcnn.data.rotated_faces import PIXEL_MEAN, PIXEL_SCALE, turn_negatives

                negs = (turn_negatives(self.val_negatives.float(), g) - PIXEL_MEAN) * PIXEL_SCALE
                k = negs.shape[0]
                batch = {
                    "images": torch.cat([batch["images"], negs]),
                    "label": torch.cat([batch["label"], torch.full((k,), int(Label.NEG), dtype=torch.int64)]),
                    "bbox": torch.cat([batch["bbox"], torch.zeros((k, 4))]),
                    "angle": torch.cat([batch["angle"], torch.full((k,), float("nan"))]),
                }
            self._val_batch = batch
        return self._val_batch

    @torch.no_grad()
    def validate(self, model: nn.Module, device: torch.device, amp: bool = False, dist_info: Any = None) -> dict[str, float] | None:
        batch = self._validation_batch()
        if batch is None:
            return None
        was_training = model.training
        model.eval()
        outs = [model(x.to(device).contiguous(memory_format=torch.channels_last)) for x in batch["images"].split(1024)]
        model.train(was_training)
        logits, boxes, orient = (torch.cat([flatten_head(o[k]).float().cpu() for o in outs]) for k in range(3))
        prob = torch.softmax(logits, dim=1)[:, 1]
        labels = batch["label"]
        pos, neg = labels == int(Label.POS), labels == int(Label.NEG)
        faces = pos | (labels == int(Label.PART))
        t = STAGE_THRESHOLD[self.cfg.net]
        out = {
            "recall": float((prob[pos] >= t).float().mean()) if pos.any() else float("nan"),
            "fpr": float((prob[neg] >= t).float().mean()) if neg.any() else float("nan"),
            "box_mae": float((boxes[faces] - batch["bbox"][faces]).abs().mean()) if faces.any() else float("nan"),
        }
        hits = _orient_hits(self.cfg.net, orient[pos], batch["angle"][pos])
        out["angle_mae" if self.cfg.net == "pcn3" else "orient_accuracy"] = float(hits.mean()) if pos.any() else float("nan")
        total, _ = pcn_loss(self.cfg.net, (logits, boxes, orient), batch, self.cfg.weights, 1.0)
        out["loss"] = float(total)
        return out

    def validation_image(self, model: nn.Module, device: torch.device) -> np.ndarray | None:
        return None

    def epoch_line(self, train: Mapping[str, float], val: Mapping[str, float] | None) -> str:
        line = f"loss {train['loss']:.4f} (cls {train['cls']:.4f} box {train['box']:.4f} orient {train['orient']:.4f})"
        if val:
            orient = (f"angle MAE {val['angle_mae']:.1f} deg" if "angle_mae" in val
                      else f"orientation {100 * val['orient_accuracy']:.1f} %")
            line += f" | val recall {val['recall']:.3f} fpr {val['fpr']:.4f} {orient} box MAE {val['box_mae']:.4f}"
        return line

    def settings(self) -> str:
        return f"net={self.cfg.net} range=±{self.cfg.range:g} faces={self.cfg.faces_per_batch} negatives={self.cfg.negatives_per_batch}"


def loop_config(cfg: PCNTrainConfig):
    """The shared loop's config for one stage (CPU unless ``device`` says otherwise)."""
    from mtcnn.config import from_dict, to_dict
    from mtcnn.config.train import LandmarkTrainConfig

    return from_dict(LandmarkTrainConfig, {
        "net": cfg.net, "out": cfg.out, "seed": cfg.seed, "device": cfg.device, "threads": cfg.threads, "amp": False,
        "cpu_bf16": cfg.cpu_bf16, "channels_last": cfg.channels_last,
        "epochs": cfg.epochs, "batch_size": cfg.faces_per_batch + cfg.negatives_per_batch,
        # The task cuts its own windows from in-memory faces; the loop never opens these files.
        "data": {"train": ["(in-memory face canvases)"], "val": None, "num_workers": 0, "flip": False},
        "optim": to_dict(cfg.optim), "log": {"tensorboard": False},
        "init": cfg.init, "freeze": to_dict(cfg.freeze),
    })  # fmt: skip


def train_pcn(cfg: PCNTrainConfig, overwrite: bool = False) -> Path:
    """Train one stage, continuing its ``last.pt`` when there is one (``overwrite``: start over);
    returns the final checkpoint."""
    from mtcnn.training.loop import Trainer

    tcfg = loop_config(cfg)
    resume = not overwrite and (resolve_path(tcfg.out) / "last.pt").is_file()
    return Trainer(tcfg, PCNTask(cfg), resume=resume, overwrite=overwrite).fit()
