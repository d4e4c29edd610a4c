"""Training the Sun et al. landmark cascade: one :class:`CascadeTask` per net (SPEC §7, §11).

Samples are cut fresh for every batch out of the in-memory face canvases
(:mod:`mtcnn.data.facepoints`) with one batched :func:`~mtcnn.ops.landmark_crops.affine_crops`
call, so every epoch sees new jitter and nothing shifted is stored:

* level 1 (F1, EN1, NM1): the face box translated by up to ±``translate`` of its size, scaled
  by up to ±``scale``, rotated by up to ±``rotate`` degrees about its centre;
* levels 2 and 3: a patch of the net's half-size centred at the true point plus a uniform shift
  of up to ±0.05 (level 2) / ±0.02 (level 3) of the box on each axis.

With ``flip`` half of the samples are mirrored (left and right points swap), so a left-eye net
also learns from mirrored right eyes. Targets are the points' positions inside the crop, as
fractions of it. Batches are a pure function of (seed, epoch, step), as exact resume requires.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from mtcnn.config import bounded
from mtcnn.config.data import SourceConfig
from mtcnn.config.train import FreezeSection
from mtcnn.data.facepoints import FacePointSet
from mtcnn.nets import get_net_spec
from mtcnn.nets.cascade import CASCADE_NETS, PATCH_SHIFTS, build_cascade_net
from mtcnn.ops.landmark_crops import affine_crops, crop_fractions, gather_windows

# Mirroring a face swaps these points (LE <-> RE, LM <-> RM).
MIRROR = (1, 0, 2, 4, 3)
PIXEL_MEAN, PIXEL_SCALE = 127.5, 0.0078125


@dataclass
class Level1Jitter:
    translate: float = bounded(0.05, 0.0, 0.5, help="box shift, ± fraction of its width / height")
    scale: float = bounded(0.05, 0.0, 0.5, help="box size change, ± fraction")
    rotate: float = bounded(10.0, 0.0, 45.0, help="rotation about the box centre, ± degrees")


@dataclass
class StageSchedule:
    """Optimisation of one kind of net (level 1 or the patch nets)."""

    epochs: int = bounded(30, 1, 10_000)
    batch_size: int = bounded(128, 1, 1 << 16)
    lr: float = bounded(2e-3, 0.0, 1.0, help="AdamW learning rate (divided by 10 at 60 %% and 85 %% of the epochs)")
    weight_decay: float = bounded(1e-4, 0.0, 1.0)


@dataclass
class Level1Schedule(StageSchedule):
    epochs: int = bounded(25, 1, 10_000)
    batch_size: int = bounded(128, 1, 1 << 16)
    lr: float = bounded(2e-3, 0.0, 1.0, help="AdamW learning rate (divided by 10 at 60 %% and 85 %% of the epochs)")


@dataclass
class PatchSchedule(StageSchedule):
    epochs: int = bounded(30, 1, 10_000)
    batch_size: int = bounded(256, 1, 1 << 16)
    lr: float = bounded(3e-3, 0.0, 1.0, help="AdamW learning rate (divided by 10 at 60 %% and 85 %% of the epochs)")


@dataclass
class CascadeTrainConfig:
    """``configs/landmarks_cascade.yaml``: data, variant, jitter and schedules of all 23 nets."""

    train_list: str = "cnn_facepoint/trainImageList.txt"
    images_root: str | None = None
    # More training faces beside the list: annotation sources as the data pipeline reads them
    # (mtcnn.data.generate.load_source), reduced to five points (points: five; 68-point sets) and
    # boxed like CNN_FacePoint (boxes: from_points), e.g. the 300-W training sets and udacity68.
    # Every holdout_every-th face of each source is held out too.
    sources: list[SourceConfig] = field(default_factory=list)
    cache_dir: str | None = None
    canvas_size: int = bounded(144, 48, 512)
    canvas_margin: float = bounded(0.4, 0.2, 1.0)
    holdout_every: int = bounded(20, 2, 1000, help="every n-th training face is held out to watch training")
    variant: Literal["relu", "abs_tanh"] = "relu"
    dropout: float = bounded(0.0, 0.0, 0.9)
    loss: Literal["l1", "l2", "euclidean"] = "l1"
    flip: bool = True
    level1: Level1Jitter = field(default_factory=Level1Jitter)
    level1_schedule: Level1Schedule = field(default_factory=Level1Schedule)
    patch_schedule: PatchSchedule = field(default_factory=PatchSchedule)
    patch_shift: dict[int, float] = field(default_factory=lambda: dict(PATCH_SHIFTS))
    seed: int = 0
    threads: int = bounded(1, 1, 256)
    workers: int = bounded(1, 1, 64, help="nets trained at the same time, each in its own process")
    out: str = "runs/cascade"
    # Fine-tuning (mtcnn.training.finetune): every net starts from these weights (default: the shipped
    # cascade_sun.pt; or a cascade bundle / run folder path) and may keep layers frozen at first.
    init: str | None = None
    freeze: FreezeSection = field(default_factory=FreezeSection)


def _generator(seed: int, *parts: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(int(np.random.SeedSequence([seed, *parts]).generate_state(1, dtype=np.uint64)[0] >> 1))
    return g


def _uniform(g: torch.Generator, shape: tuple[int, ...], bound: float) -> torch.Tensor:
    return (torch.rand(shape, generator=g) * 2 - 1) * bound


class CropSampler:
    """Turns face indices into (crops, targets, canvas geometry) for one cascade net."""

    def __init__(self, name: str, cfg: CascadeTrainConfig) -> None:
        self.spec = CASCADE_NETS[name]
        self.cfg = cfg
        self.mirror = torch.tensor(MIRROR)

    def sample(self, data: FacePointSet, index: torch.Tensor, g: torch.Generator | None, mirror: bool = True) -> dict[str, torch.Tensor]:
        """``g=None`` gives the un-jittered view (no shift, rotation or mirror); ``mirror=False``
        keeps the jitter of ``g`` but mirrors nothing."""
        boxes = data.boxes[index]
        points = data.points[index]
        n = index.shape[0]
        flipped = (torch.rand(n, generator=g) < 0.5) if (g is not None and mirror and self.cfg.flip) else torch.zeros(n, dtype=torch.bool)
        if self.spec.level == 1:
            origin, axes = self._level1_geometry(boxes, g)
        else:
            origin, axes, points = self._patch_geometry(boxes, points, flipped, g)
        # Mirror: read the crop right to left.
        origin = torch.where(flipped[:, None], origin + axes[:, 0], origin)
        axes = axes.clone()
        axes[:, 0] = torch.where(flipped[:, None], -axes[:, 0], axes[:, 0])
        if self.spec.level == 1:
            points = torch.where(flipped[:, None, None], points[:, self.mirror], points)[:, list(self.spec.points)]
        targets = crop_fractions(points, origin, axes)
        if self.spec.level == 1:
            crops = affine_crops(data.canvases[index][:, None], origin, axes, self.spec.input_hw)
        else:
            # A patch reads a small window: copy that, not the whole canvas.
            lo = torch.minimum(origin, origin + axes[:, 0] + axes[:, 1]).floor().long() - 1
            side = int(axes.abs().amax()) + 3
            windows = gather_windows(data.canvases, index, lo, side)
            crops = affine_crops(windows, origin - lo, axes, self.spec.input_hw)
        return {
            "images": ((crops - PIXEL_MEAN) * PIXEL_SCALE).contiguous(memory_format=torch.channels_last),
            "targets": targets.reshape(n, -1),
            "origin": origin,
            "axes": axes,
            "gt": points,
            "box_width": boxes[:, 2] - boxes[:, 0],
            "flipped": flipped,
        }

    def _level1_geometry(self, boxes: torch.Tensor, g: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        n = boxes.shape[0]
        size = boxes[:, 2:4] - boxes[:, 0:2]
        centre = (boxes[:, 0:2] + boxes[:, 2:4]) / 2
        angle = torch.zeros(n)
        if g is not None:
            jit = self.cfg.level1
            centre = centre + _uniform(g, (n, 2), jit.translate) * size
            size = size * (1 + _uniform(g, (n, 1), jit.scale))
            angle = _uniform(g, (n,), math.radians(jit.rotate))
        left, right, top, bottom = self.spec.region
        corner = torch.stack([left * size[:, 0], top * size[:, 1]], dim=1) - size / 2  # region origin - centre
        extent = torch.stack([(right - left) * size[:, 0], (bottom - top) * size[:, 1]], dim=1)
        cos, sin = torch.cos(angle), torch.sin(angle)
        rot = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)  # [n, 2, 2]
        origin = centre + (rot @ corner[..., None])[..., 0]
        axes = torch.stack([rot[:, :, 0] * extent[:, 0:1], rot[:, :, 1] * extent[:, 1:2]], dim=1)
        return origin, axes

    def _patch_geometry(self, boxes, points, flipped, g):
        n = boxes.shape[0]
        k = self.spec.points[0]
        source = torch.where(flipped, self.mirror[k], torch.full((n,), k))
        truth = points[torch.arange(n), source][:, None]  # [n, 1, 2]
        size = boxes[:, 2:4] - boxes[:, 0:2]
        centre = truth[:, 0]
        if g is not None:
            centre = centre + _uniform(g, (n, 2), self.cfg.patch_shift[self.spec.level]) * size
        half = self.spec.half_size * size
        origin = centre - half
        axes = torch.diag_embed(2 * half)
        return origin, axes, truth


def point_errors(uv: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Per-point Euclidean errors ``[B, K]`` over the face-box width, from predicted crop fractions ``[B, K, 2]``."""
    axes, origin = batch["axes"], batch["origin"]
    pred = origin[:, None] + uv[..., 0:1] * axes[:, None, 0] + uv[..., 1:2] * axes[:, None, 1]
    return torch.linalg.norm(pred - batch["gt"], dim=2) / batch["box_width"][:, None]


class CropLoader:
    """One epoch of shuffled, freshly jittered batches; resumable from (epoch, step)."""

    def __init__(self, sampler: CropSampler, data: FacePointSet, batch_size: int, steps: int, seed: int, rank: int = 0, world: int = 1):
        self.sampler, self.data, self.batch_size, self.steps = sampler, data, batch_size, steps
        self.seed, self.rank, self.world = seed, rank, world
        self.epoch, self.step = 0, 0

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        order = torch.randperm(len(self.data), generator=_generator(self.seed, self.epoch))
        order = order[self.rank :: self.world]
        while self.step < self.steps:
            start = (self.step * self.batch_size) % max(1, order.numel())
            index = order[start : start + self.batch_size]
            g = _generator(self.seed, self.epoch, self.step, self.rank)
            self.step += 1
            yield self.sampler.sample(self.data, index, g)
        self.epoch, self.step = self.epoch + 1, 0

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "step": self.step}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if not {"epoch", "step"} <= set(state):
            raise ValueError("loader state needs 'epoch' and 'step'")
        self.epoch, self.step = int(state["epoch"]), int(state["step"])


class CascadeTask:
    """The :class:`~mtcnn.training.task.Task` of one cascade net (see the module docstring)."""

    stat_names = ("loss_sum", "error_sum", "points")

    def __init__(self, name: str, cfg: CascadeTrainConfig, train: FacePointSet, val: FacePointSet | None) -> None:
        self.name, self.cfg = name, cfg
        self.net_spec = CASCADE_NETS[name]
        self.spec = get_net_spec(self.net_spec.registry_name)
        self.schedule = cfg.level1_schedule if self.net_spec.level == 1 else cfg.patch_schedule
        self.sampler = CropSampler(name, cfg)
        self.train_data, self.val_data = train, val
        self._val_batch: dict[str, torch.Tensor] | None = None

    def open_data(self, world_size: int) -> int:
        return max(1, math.ceil(len(self.train_data) / (self.schedule.batch_size)))

    def check_init(self, weights) -> None:
        """A cascade bundle's nets must be of this run's variant (their layers have the same shapes)."""
        from mtcnn.weights import WeightsError

        variant = weights.container.get("variant")
        if variant is not None and variant != self.cfg.variant:
            raise WeightsError(f"{weights.record['source']}: cascade variant '{variant}', this run trains '{self.cfg.variant}'")

    def build_model(self) -> nn.Module:
        # Channels-last: oneDNN runs these 1-channel convolutions and their pooling ~2× faster.
        return build_cascade_net(self.name, self.cfg.variant, self.cfg.dropout).to(memory_format=torch.channels_last)

    def make_loader(self, steps_per_epoch: int, rank: int, world_size: int, pin_memory: bool = False) -> CropLoader:
        per_rank = max(1, self.schedule.batch_size // world_size)
        return CropLoader(self.sampler, self.train_data, per_rank, steps_per_epoch, self.cfg.seed, rank, world_size)

    def loss(self, outputs: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        diff = outputs - batch["targets"]
        if self.cfg.loss == "l1":
            loss = diff.abs().mean()
        elif self.cfg.loss == "l2":
            loss = (diff**2).mean()
        else:
            loss = torch.linalg.norm(diff.reshape(diff.shape[0], -1, 2), dim=2).mean()
        with torch.no_grad():
            err = point_errors(outputs.detach().reshape(outputs.shape[0], -1, 2), batch)
        stats = torch.tensor([float(loss.detach()) * err.shape[0], float(err.sum()), float(err.numel())], dtype=torch.float64)
        return loss, stats

    def train_summary(self, sums: torch.Tensor, steps: float) -> dict[str, float]:
        faces = float(sums[2]) / len(self.net_spec.points)
        return {"loss": float(sums[0]) / max(faces, 1.0), "error": float(sums[1]) / max(float(sums[2]), 1.0)}

    @torch.no_grad()
    def validate(self, model: nn.Module, device: torch.device, amp: bool = False, dist_info: Any = None) -> dict[str, float] | None:
        """Mean point error / box width on the held-out faces (un-jittered level-1 crops; patches
        at fixed random shifts, the same every epoch)."""
        if self.val_data is None or len(self.val_data) == 0:
            return None
        if self._val_batch is None:
            index = torch.arange(len(self.val_data))
            g = None if self.net_spec.level == 1 else _generator(self.cfg.seed, 999_983)
            self._val_batch = self.sampler.sample(self.val_data, index, g, mirror=False)
        batch = self._val_batch
        was_training = model.training
        model.eval()
        out = torch.cat([model(x.to(device)).cpu() for x in batch["images"].split(1024)])
        model.train(was_training)
        err = point_errors(out.reshape(out.shape[0], -1, 2), batch)
        return {"error": float(err.mean()), "failure_5": float((err > 0.05).float().mean())}

    def validation_image(self, model: nn.Module, device: torch.device) -> np.ndarray | None:
        return None

    def epoch_line(self, train: Mapping[str, float], val: Mapping[str, float] | None) -> str:
        line = f"loss {train['loss']:.4f} err/box {train['error']:.4f}"
        if val:
            line += f" | held-out err/box {val['error']:.4f} fail@5% {val['failure_5']:.3f}"
        return line

    def settings(self) -> str:
        return f"net={self.name} variant={self.cfg.variant} loss={self.cfg.loss} flip={self.cfg.flip}"
