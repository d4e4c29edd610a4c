"""Landmark regression as a training task: any registered net with a landmark head, any number
of points, loss L1 / L2 / wing / adaptive wing with per-point weights
(:func:`mtcnn.losses.landmark_regression_loss`), from a :class:`LandmarkTrainConfig`.

Samples are the ``landmark`` kind of sample files (crops of the net's input size with
``2K`` coordinates in 0..1 of the crop); a caller with another source passes readers with the
same ``get(kind, rows, fields)`` / ``counts()`` / ``size`` interface. Batches come from
:class:`mtcnn.data.datasets.MixedBatchLoader` (all ``landmark`` rows, same exact-resume
guarantees) and are converted to the net's channels and normalisation (:class:`SpecImages`).

Validation metrics (``val``): ``loss``; ``point_error``: mean Euclidean point error in crop
units; ``nme``: per-sample mean point error over the sample's normaliser, averaged: the
inter-ocular distance for 5 points (points 0, 1) and 68 points (outer eye corners 36, 45), else
``sqrt(w*h)`` of the ground-truth points' bounding box (1 crop side for a single point);
``failure_rate``: samples with ``nme > val.failure_nme``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from mtcnn.config.core import ConfigError
from mtcnn.data.datasets import MixedBatchLoader
from mtcnn.data.readers import InMemoryReader, normalise_images, open_samples
from mtcnn.errors import DataError
from mtcnn.losses import landmark_regression_loss
from mtcnn.nets import build_net, get_net_spec
from mtcnn.nets.registry import NetSpec

# Loader output: (pixel - 127.5) / 128 on RGB; grey = the ITU-R 601 luma of the same values.
_LOADER_MEAN, _LOADER_SCALE = 127.5, 0.0078125
_LUMA = (0.299, 0.587, 0.114)
_EYE_POINTS = {5: (0, 1), 68: (36, 45)}


def to_spec_input(images: torch.Tensor, spec: NetSpec, mean: float = _LOADER_MEAN,
                  scale: float = _LOADER_SCALE) -> torch.Tensor:
    """RGB ``[B,3,H,W]`` normalised with (mean, scale) -> the net's channels and normalisation."""
    if spec.channels == "grey" and images.shape[1] == 3:
        w = images.new_tensor(_LUMA).view(1, 3, 1, 1)
        images = (images * w).sum(dim=1, keepdim=True)  # luma weights sum to 1: commutes with normalising
    if (spec.mean, spec.scale) != (mean, scale):
        images = (images / scale + (mean - spec.mean)) * spec.scale
    return images


class SpecImages:
    """A batch loader whose ``images`` are converted by :func:`to_spec_input` (resumable as the inner one)."""

    def __init__(self, inner: MixedBatchLoader, spec: NetSpec):
        self.inner, self.spec = inner, spec

    @property
    def step(self) -> int:
        return self.inner.step

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for batch in self.inner:
            yield {**batch, "images": to_spec_input(batch["images"], self.spec)}

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.inner.load_state_dict(state)


def landmark_output(outputs: Any, spec: NetSpec) -> torch.Tensor:
    """The landmark head ``[B, 2K]`` of a net's forward output."""
    if isinstance(outputs, (tuple, list)):
        outputs = outputs[spec.heads.index("landmark")]
    return outputs.reshape(outputs.shape[0], -1)


def normaliser(target: torch.Tensor) -> torch.Tensor:
    """Per-sample NME normaliser of ``[B, K, 2]`` ground truth (see the module docstring)."""
    k = target.shape[1]
    if k in _EYE_POINTS:
        a, b = _EYE_POINTS[k]
        return (target[:, a] - target[:, b]).norm(dim=1).clamp(min=1e-6)
    if k == 1:
        return torch.ones(target.shape[0], device=target.device)
    span = target.amax(dim=1) - target.amin(dim=1)
    return (span[:, 0] * span[:, 1]).clamp(min=1e-12).sqrt()


def point_error_stats(loss: torch.Tensor, pred: torch.Tensor, target: torch.Tensor, k: int) -> torch.Tensor:
    """The loop's per-step stat row of a landmark regression: loss, summed point distance, points."""
    with torch.no_grad():
        dist_sum = (pred.float() - target).reshape(-1, k, 2).norm(dim=2).sum()
        return torch.stack([loss.detach().double(), dist_sum.double(),
                            torch.tensor(float(target.shape[0] * k), dtype=torch.float64, device=target.device)])


class LandmarkTask:
    """Landmark regression of ``cfg.net`` (see the module docstring)."""

    stat_names = ("loss", "point_dist", "n_points")

    def __init__(self, cfg, train_reader=None, val_reader=None):
        self.cfg = cfg
        self.spec = get_net_spec(cfg.net)
        if "landmark" not in self.spec.heads:
            raise ConfigError(f"net={cfg.net!r} has no landmark head (heads: {', '.join(self.spec.heads)})")
        self.k = self.spec.num_landmarks
        if cfg.data.flip and self.k != 5:
            raise ConfigError(f"data.flip mirrors 5-point faces; {cfg.net} has {self.k} points (set data.flip=false)")
        weights = cfg.loss.point_weights
        if weights is not None and len(weights) != self.k:
            raise ConfigError(f"loss.point_weights has {len(weights)} values, {cfg.net} has {self.k} points")
        self.point_weights = None if weights is None else torch.tensor(weights, dtype=torch.float32)
        self.train_reader, self.val_reader = train_reader, val_reader
        self.rank, self.world_size = 0, 1

    # ---------------------------------------------------------------- data
    def _check_reader(self, reader, what: str) -> None:
        n = reader.counts()["landmark"]
        if n == 0:
            raise DataError(f"{reader.path}: no landmark samples for {what}")
        width = reader.get("landmark", np.arange(1), ("landmark",))["landmark"].shape[1]
        if width != 2 * self.k:
            raise DataError(f"{reader.path}: samples have {width // 2} points, {self.cfg.net} predicts {self.k}")

    def open_data(self, world_size: int) -> int:
        cfg, size = self.cfg, self.spec.crop_size
        if self.train_reader is None:
            self.train_reader = open_samples(cfg.data.train, None, size, "training")
            if InMemoryReader.nbytes(self.train_reader) <= cfg.data.cache_mb * 2**20:
                self.train_reader = InMemoryReader(self.train_reader)
        self._check_reader(self.train_reader, "training")
        if self.train_reader.counts()["landmark"] < world_size:
            raise DataError(f"{self.train_reader.path}: fewer landmark samples than the {world_size} ranks")
        if self.val_reader is None and cfg.val.enabled and cfg.data.val:
            self.val_reader = open_samples(cfg.data.val, None, size, "validation")
        if self.val_reader is not None:
            self._check_reader(self.val_reader, "validation")
        n = self.train_reader.counts()["landmark"]
        return cfg.steps_per_epoch or max(1, math.ceil(n / cfg.batch_size))

    def build_model(self) -> nn.Module:
        return build_net(self.spec)

    def make_loader(self, steps_per_epoch: int, rank: int, world_size: int, pin_memory: bool) -> SpecImages:
        cfg = self.cfg
        self.rank, self.world_size = rank, world_size
        inner = MixedBatchLoader(
            self.train_reader, {"landmark": cfg.batch_size // world_size}, steps_per_epoch, seed=cfg.seed,
            rank=rank, world_size=world_size, flip=cfg.data.flip, color_jitter=cfg.data.color_jitter,
            num_workers=cfg.data.num_workers, pin_memory=pin_memory,
        )
        return SpecImages(inner, self.spec)

    # ---------------------------------------------------------------- steps
    def _loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        c = self.cfg.loss
        scale = c.coordinate_scale or float(self.spec.input_size[1])
        return landmark_regression_loss(pred, target, c.kind, self.point_weights, scale, **c.shape_params())

    def loss(self, outputs, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        pred = landmark_output(outputs, self.spec)
        target = batch["landmark"]
        loss = self._loss(pred, target)
        return loss, point_error_stats(loss, pred, target, self.k)

    def train_summary(self, sums: torch.Tensor, steps: float) -> dict[str, float]:
        s = [float(v) for v in sums]
        return {"loss": s[0] / max(1.0, steps), "point_error": s[1] / s[2] if s[2] > 0 else float("nan")}

    # ---------------------------------------------------------------- validation
    @torch.no_grad()
    def _predict(self, model: nn.Module, images: np.ndarray, device: torch.device, amp: bool = False) -> torch.Tensor:
        x = to_spec_input(normalise_images(images).to(device), self.spec)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
            return landmark_output(model(x), self.spec).float()

    @torch.no_grad()
    def validate(self, model: nn.Module, device: torch.device, amp: bool, dist_info) -> dict[str, float] | None:
        if self.val_reader is None:
            return None
        cfg = self.cfg.val
        n_all = self.val_reader.counts()["landmark"]
        rows = np.arange(min(n_all, cfg.max_samples or n_all), dtype=np.int64)[self.rank::self.world_size]
        sums = torch.zeros(5, dtype=torch.float64, device=device)  # loss*n, point dist, nme, failures, n
        was_training = model.training
        model.eval()
        try:
            for start in range(0, rows.size, cfg.batch_size):
                data = self.val_reader.get("landmark", rows[start:start + cfg.batch_size], ("images", "landmark"))
                pred = self._predict(model, data["images"], device, amp)
                target = torch.from_numpy(data["landmark"]).to(device)
                dists = (pred - target).reshape(-1, self.k, 2).norm(dim=2)
                nme = dists.mean(dim=1) / normaliser(target.reshape(-1, self.k, 2))
                n = float(target.shape[0])
                sums += torch.stack([self._loss(pred, target).double() * n, dists.sum().double(), nme.sum().double(),
                                     (nme > cfg.failure_nme).sum().double(), torch.tensor(n, dtype=torch.float64, device=device)])
        finally:
            model.train(was_training)
        if dist_info is not None and dist_info.enabled:
            dist.all_reduce(sums)
        loss, point, nme, fail, n = sums.cpu().tolist()
        div = (lambda a, b: a / b if b > 0 else float("nan"))  # noqa: E731
        return {"loss": div(loss, n), "point_error": div(point, n * self.k), "nme": div(nme, n),
                "failure_rate": div(fail, n), "threshold": cfg.failure_nme, "n_samples": int(n)}

    @torch.no_grad()
    def validation_image(self, model: nn.Module, device: torch.device, cell: int = 96, columns: int = 8):
        """Ground truth (green) and predicted (red) points on the first validation crops."""
        import cv2

        count = self.cfg.val.num_images
        if self.val_reader is None or count <= 0:
            return None
        n = min(count, self.val_reader.counts()["landmark"])
        data = self.val_reader.get("landmark", np.arange(n), ("images", "landmark"))
        was_training = model.training
        model.eval()
        try:
            pred = self._predict(model, data["images"], device).cpu().numpy()
        finally:
            model.train(was_training)
        columns = min(columns, n)
        grid = np.zeros((math.ceil(n / columns) * cell, columns * cell, 3), np.uint8)
        for i in range(n):
            tile = np.ascontiguousarray(cv2.resize(data["images"][i], (cell, cell), interpolation=cv2.INTER_NEAREST))
            for pts, colour in ((data["landmark"][i], (40, 220, 40)), (pred[i], (255, 40, 40))):
                for x, y in np.asarray(pts).reshape(-1, 2) * cell:
                    cv2.circle(tile, (int(round(x)), int(round(y))), 2, colour, -1)
            r, c = divmod(i, columns)
            grid[r * cell:(r + 1) * cell, c * cell:(c + 1) * cell] = tile
        return grid

    def epoch_line(self, train: Mapping[str, float], val: Mapping[str, float] | None) -> str:
        line = f"loss {train['loss']:.4f} point_err {train['point_error']:.4f}"
        if val is not None:
            line += f" | val nme {val['nme']:.4f} fail@{val['threshold']:g} {val['failure_rate']:.4f}"
        return line

    def settings(self) -> str:
        weighted = ", point weights" if self.point_weights is not None else ""
        return f"{self.cfg.loss.kind} loss on {self.k} points{weighted}"


__all__ = ["LandmarkTask", "SpecImages", "landmark_output", "normaliser", "to_spec_input"]
