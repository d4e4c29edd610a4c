"""One training loop for P-Net, R-Net and O-Net (SPEC §3, §4, §11).

``train(config) -> Path`` trains ``config.net`` on the mixed-ratio minibatches of
:class:`mtcnn.data.datasets.MixedBatchLoader` with the multi-task loss of :mod:`mtcnn.losses`
and writes, under ``config.out``:

* ``config.resolved.yaml``: the config actually used (net-dependent nulls filled in), at start;
* ``last.pt``: the full training state (model, optimizer, LR scheduler, GradScaler, loader
  position, Python / NumPy / torch RNG states of every rank, epoch, step, resolved config),
  written atomically at every epoch end and every ``checkpoint.every_steps`` steps.
  ``train(config, resume=True)`` continues from it with the *identical* sequence of batches,
  dropout masks and updates: the final weights equal those of an uninterrupted run (same seed,
  same device and thread count);
* ``metrics.jsonl``: one JSON record per epoch (train losses, LR, rate, validation metrics);
* ``tb/``: TensorBoard scalars (losses per task, LR, validation metrics) and a grid of
  validation crops with predicted boxes and landmarks;
* ``<net>.pt``: the final weights in the detector's checkpoint format
  (:func:`mtcnn.weights.make_checkpoint`), loadable by :func:`mtcnn.weights.load_net`.

Optimisation (defaults, all configurable): SGD momentum 0.9 (Adam/AdamW as options), base LR
0.001 multiplied by 0.1 at epochs 6, 14 and 20 (applied per step: boundary = epoch · steps per
epoch), weight decay 0.0005 on conv/linear weights only (not biases, not PReLU slopes), batch
384 split pos/part/neg/landmark by :func:`mtcnn.data.datasets.composition_for`. On CUDA the
forward pass runs under ``torch.autocast`` (float16) with a ``GradScaler``; on CPU in float32.

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

Distributed: under ``torchrun --nproc_per_node N`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` in
the environment) the model is wrapped in ``DistributedDataParallel`` (NCCL on CUDA, gloo on
CPU); each rank reads its own shard (``MixedBatchLoader(rank=, world_size=)``) with
``batch_size / world_size`` samples per step; only rank 0 writes checkpoints, metrics and
TensorBoard (the logged train losses are rank 0's), the others wait at a barrier.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import random
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from mtcnn.config import (
    ConfigError,
    atomic_write_text,
    load_config,
    save_resolved,
    to_dict,
)
from mtcnn.data.config import resolve_path
from mtcnn.device import DeviceError, resolve_device
from mtcnn.data.datasets import MixedBatchLoader, composition_for
from mtcnn.data.h5 import KINDS, TRAIN_FIELDS, SampleFileError, SampleReader
from mtcnn.losses import TaskWeights, flatten_head, mtcnn_loss
from mtcnn.nets import build_net
from mtcnn.structures import Label
from mtcnn.train_config import NET_INPUT_SIZE, TrainConfig
from mtcnn.weights import atomic_torch_save, make_checkpoint

STATE_FORMAT = "mtcnn-train-state"
STATE_VERSION = 1
DEBUG_EXIT_CODE = 3
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class TrainError(RuntimeError):
    """A training run cannot start or continue (missing data, nothing to resume, ...); one line."""


# ------------------------------------------------------------------------------------------
# sample files
# ------------------------------------------------------------------------------------------


class MultiFileReader(SampleReader):
    """Several sample files seen as one: each kind's rows are those files' rows, concatenated.

    ``parts`` maps each kind to the readers it comes from (in order). Quacks like
    :class:`SampleReader` for :class:`MixedBatchLoader` (``path``, ``size``, ``counts``,
    ``get``, ``load_meta``, ``close``) and pickles into DataLoader workers the same way.
    """

    def __init__(self, parts: Mapping[str, Sequence[SampleReader]]):
        readers = {id(r): r for rs in parts.values() for r in rs}
        self._readers = list(readers.values())
        sizes = {r.size for r in self._readers}
        if len(sizes) != 1:
            raise SampleFileError("sample files hold different crop sizes: " + ", ".join(
                f"{r.path} ({r.size}px)" for r in self._readers))
        self.size = sizes.pop()
        self.path = " + ".join(str(r.path) for r in self._readers)
        self.attrs = dict(self._readers[0].attrs)
        self._parts = {k: list(parts.get(k, [])) for k in KINDS}
        self._lengths = {k: [r.len(k) for r in self._parts[k]] for k in KINDS}
        self._counts = {k: int(sum(v)) for k, v in self._lengths.items()}
        self._f = None
        self._pid = None
        self._meta = None

    def load_meta(self) -> None:
        for r in self._readers:
            r.load_meta()

    def close(self) -> None:
        for r in getattr(self, "_readers", []):
            r.close()

    def sources(self) -> list[str]:
        return [s for r in self._readers for s in r.sources()]

    def get(self, kind: str, indices, fields: Sequence[str] = TRAIN_FIELDS) -> dict[str, np.ndarray]:
        self._check_kind(kind)
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = self._counts[kind]
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"{self.path}: {kind} index out of range [0, {n}) (got {idx.min()}..{idx.max()})")
        readers = self._parts[kind]
        if not readers:
            raise IndexError(f"{self.path}: no file provides {kind} samples")
        ends = np.cumsum(self._lengths[kind])
        which = np.searchsorted(ends, idx, side="right")
        out: dict[str, np.ndarray] | None = None
        for j, reader in enumerate(readers):
            sel = np.flatnonzero(which == j)
            if sel.size == 0 and not (out is None and j == len(readers) - 1):
                continue
            start = int(ends[j] - self._lengths[kind][j])
            part = reader.get(kind, idx[sel] - start, fields)
            if out is None:
                out = {name: np.empty((idx.size,) + a.shape[1:], a.dtype) for name, a in part.items()}
            for name, a in part.items():
                out[name][sel] = a
        assert out is not None
        return out


class InMemoryReader(SampleReader):
    """Every row of another reader held in RAM (numpy arrays), loaded on the first
    :meth:`load_meta` (which :class:`MixedBatchLoader` calls before forking its workers, so
    they share the arrays copy-on-write).

    Minibatches pick rows at random and HDF5 reads them one by one (tens of microseconds
    each): for 12 px crops that costs more than the P-Net step itself, while the whole P-Net
    training set takes only 432 bytes per sample. Batches are identical either way.
    """

    def __init__(self, reader: SampleReader):
        self._inner = reader
        self.path = reader.path
        self.size = reader.size
        self.attrs = dict(getattr(reader, "attrs", {}))
        self._counts = reader.counts()
        self._data: dict[str, dict[str, np.ndarray]] | None = None
        self._f = None
        self._pid = None
        self._meta = None

    @staticmethod
    def nbytes(reader: SampleReader) -> int:
        return sum(reader.counts().values()) * (3 * reader.size * reader.size + 1 + 14 * 4)

    def load_meta(self) -> None:
        if self._data is None:
            self._data = {k: self._inner.get(k, np.arange(n), TRAIN_FIELDS) for k, n in self._counts.items()}
            self._inner.close()

    def close(self) -> None:
        if hasattr(self, "_inner"):
            self._inner.close()

    def __getstate__(self):
        return self.__dict__.copy()  # keep the arrays (spawned workers get a copy)

    def sources(self) -> list[str]:
        return self._inner.sources()

    def get(self, kind: str, indices, fields: Sequence[str] = TRAIN_FIELDS) -> dict[str, np.ndarray]:
        if any(name not in TRAIN_FIELDS for name in fields):
            return self._inner.get(kind, indices, fields)
        self._check_kind(kind)
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = self._counts[kind]
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"{self.path}: {kind} index out of range [0, {n}) (got {idx.min()}..{idx.max()})")
        self.load_meta()
        return {name: self._data[kind][name][idx] for name in fields}


def _file_list(value: str | Sequence[str] | None) -> list[Path]:
    if value is None:
        return []
    items = [value] if isinstance(value, str) else list(value)
    return [resolve_path(v) for v in items]


def open_samples(files: str | Sequence[str] | None, by_kind: Any = None, expected_size: int | None = None,
                 what: str = "training") -> SampleReader:
    """One reader over ``files`` (every kind) with per-kind replacements ``by_kind`` (a
    :class:`mtcnn.train_config.KindFiles` or mapping kind -> files). Fails with a one-line
    :class:`TrainError` naming a missing or wrong file."""
    main = _file_list(files)
    per_kind: dict[str, list[Path]] = {}
    for kind in KINDS:
        override = getattr(by_kind, kind, None) if not isinstance(by_kind, Mapping) else by_kind.get(kind)
        per_kind[kind] = _file_list(override) if override is not None else main
    cache: dict[Path, SampleReader] = {}
    for kind, paths in per_kind.items():
        for p in paths:
            if p in cache:
                continue
            try:
                cache[p] = SampleReader(p, expected_size=expected_size)
            except FileNotFoundError as e:
                raise TrainError(f"{what} data: {e} (set data.train / data.val, or generate it first)") from None
            except SampleFileError as e:
                raise TrainError(f"{what} data: {e}") from None
    if not cache:
        raise TrainError(f"no {what} sample files given")
    if len(cache) == 1:
        return next(iter(cache.values()))
    return MultiFileReader({k: [cache[p] for p in paths] for k, paths in per_kind.items()})


def normalise_images(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [B,S,S,3] RGB -> float32 [B,3,S,S] = (pixel - 127.5) / 128 (no augmentation)."""
    x = torch.as_tensor(images).permute(0, 3, 1, 2).to(torch.float32)
    return x.sub_(127.5).mul_(1.0 / 128.0)


# ------------------------------------------------------------------------------------------
# distributed helpers
# ------------------------------------------------------------------------------------------


@dataclasses.dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    initialised_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def dist_env() -> DistInfo:
    """Rank layout from the torchrun environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    return DistInfo(rank, world, local, local_world)


def _resolve_device(name: str, info: DistInfo) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if info.enabled and name == "cuda":
            name = f"cuda:{info.local_rank}"
        try:
            device = resolve_device(name)
        except DeviceError as e:
            raise TrainError(str(e)) from None
        if device.index is not None:
            torch.cuda.set_device(device)
        return device
    return torch.device("cpu")


# ------------------------------------------------------------------------------------------
# RNG state (stored with weights_only-loadable types)
# ------------------------------------------------------------------------------------------


def _rng_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (name, torch.from_numpy(np.asarray(keys, np.int64)), int(pos), int(has_gauss), float(cached)),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(state: Mapping[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------

_VAL_KEYS = ("n_pos", "n_neg", "n_part", "n_landmark", "correct", "tp", "fp", "box_abs", "n_box",
             "point_dist", "nme", "ce", "box_sq", "lmk_sq")


class Validator:
    """Deterministic validation over a sample file (see the module docstring for the metrics)."""

    def __init__(self, reader: SampleReader, threshold: float, batch_size: int = 2048,
                 max_per_kind: int | None = None, rank: int = 0, world_size: int = 1):
        self.reader = reader
        self.threshold = float(threshold)
        self.batch_size = int(batch_size)
        counts = reader.counts()
        self.rows = {k: np.arange(min(counts[k], max_per_kind or counts[k]), dtype=np.int64)[rank::world_size]
                     for k in KINDS}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, device: torch.device, weights: TaskWeights | None = None,
                 amp: bool = False, info: DistInfo | None = None) -> dict[str, float]:
        was_training = model.training
        model.eval()
        sums = torch.zeros(len(_VAL_KEYS), dtype=torch.float64, device=device)
        acc = dict(zip(_VAL_KEYS, range(len(_VAL_KEYS))))
        t = self.threshold
        try:
            for kind in KINDS:
                rows = self.rows[kind]
                for start in range(0, rows.size, self.batch_size):
                    data = self.reader.get(kind, rows[start:start + self.batch_size], TRAIN_FIELDS)
                    x = normalise_images(data["images"]).to(device)
                    with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
                        cls, box, lmk = model(x)
                    cls, box, lmk = (flatten_head(o).float() for o in (cls, box, lmk))
                    prob = torch.softmax(cls, dim=1)[:, 1]
                    n = float(x.shape[0])
                    if kind in ("pos", "neg"):
                        is_pos = kind == "pos"
                        target = torch.full((x.shape[0],), int(is_pos), dtype=torch.long, device=device)
                        sums[acc["ce"]] += F.cross_entropy(cls, target, reduction="sum").double()
                        sums[acc["correct"]] += ((prob > 0.5) == is_pos).sum()
                        sums[acc["tp" if is_pos else "fp"]] += (prob >= t).sum()
                        sums[acc["n_pos" if is_pos else "n_neg"]] += n
                    if kind in ("pos", "part"):
                        target = torch.from_numpy(data["bbox"]).to(device)
                        sums[acc["box_abs"]] += (box - target).abs().sum().double()
                        sums[acc["box_sq"]] += ((box - target) ** 2).sum().double()
                        sums[acc["n_box"]] += n
                    if kind == "part":
                        sums[acc["n_part"]] += n
                    if kind == "landmark":
                        target = torch.from_numpy(data["landmark"]).to(device)
                        sums[acc["lmk_sq"]] += ((lmk - target) ** 2).sum().double()
                        dists = (lmk - target).reshape(-1, 5, 2).norm(dim=2)  # [B,5]
                        gt = target.reshape(-1, 5, 2)
                        iod = (gt[:, 0] - gt[:, 1]).norm(dim=1).clamp(min=1e-6)
                        sums[acc["point_dist"]] += dists.sum().double()
                        sums[acc["nme"]] += (dists.mean(dim=1) / iod).sum().double()
                        sums[acc["n_landmark"]] += n
        finally:
            model.train(was_training)
        if info is not None and info.enabled:
            dist.all_reduce(sums)
        s = dict(zip(_VAL_KEYS, sums.cpu().tolist()))
        return summarise_validation(s, t, weights)


def summarise_validation(s: Mapping[str, float], threshold: float, weights: TaskWeights | None = None) -> dict[str, float]:
    def div(a: float, b: float) -> float:
        return a / b if b > 0 else float("nan")

    n_cls = s["n_pos"] + s["n_neg"]
    out = {
        "threshold": threshold,
        "accuracy": div(s["correct"], n_cls),
        "recall": div(s["tp"], s["n_pos"]),
        "fpr": div(s["fp"], s["n_neg"]),
        "box_mae": div(s["box_abs"], 4 * s["n_box"]),
        "landmark_error": div(s["point_dist"], 5 * s["n_landmark"]),
        "landmark_nme": div(s["nme"], s["n_landmark"]),
        "loss_cls": div(s["ce"], n_cls),
        "loss_box": div(s["box_sq"], s["n_box"]),
        "loss_landmark": div(s["lmk_sq"], s["n_landmark"]),
    }
    if weights is not None:
        parts = [(weights.cls, out["loss_cls"]), (weights.box, out["loss_box"]), (weights.landmark, out["loss_landmark"])]
        out["loss"] = float(sum(w * v for w, v in parts if not math.isnan(v)))
    for k in ("n_pos", "n_neg", "n_part", "n_landmark"):
        out[k] = int(s[k])
    return out


@torch.no_grad()
def validation_image(model: nn.Module, reader: SampleReader, count: int, device: torch.device,
                     threshold: float = 0.5, cell: int = 96, columns: int = 8) -> np.ndarray | None:
    """A grid (uint8 H×W×3 RGB) of the first validation pos and landmark crops, upscaled to
    ``cell`` px, with ground truth in green (box from the offsets, landmarks) and the
    prediction in red (box, landmarks) or grey when the face probability is below ``threshold``."""
    import cv2

    counts = reader.counts()
    n_lmk = min(counts["landmark"], (count + 1) // 2)
    n_pos = min(counts["pos"], count - n_lmk)
    picks = [("pos", n_pos), ("landmark", n_lmk)]
    tiles = []
    was_training = model.training
    model.eval()
    try:
        for kind, n in picks:
            if n <= 0:
                continue
            data = reader.get(kind, np.arange(n), TRAIN_FIELDS)
            cls, box, lmk = model(normalise_images(data["images"]).to(device))
            prob = torch.softmax(flatten_head(cls).float(), 1)[:, 1].cpu().numpy()
            box = flatten_head(box).float().cpu().numpy()
            lmk = flatten_head(lmk).float().cpu().numpy()
            for i in range(n):
                img = cv2.resize(data["images"][i], (cell, cell), interpolation=cv2.INTER_NEAREST)
                img = np.ascontiguousarray(img)
                pred_colour = (255, 40, 40) if prob[i] >= threshold else (150, 150, 150)
                if kind == "pos":
                    for offs, colour in ((data["bbox"][i], (40, 220, 40)), (box[i], pred_colour)):
                        x1, y1, x2, y2 = (np.asarray(offs) + np.array([0, 0, 1, 1])) * (cell - 1)
                        cv2.rectangle(img, (int(round(x1)), int(round(y1))), (int(round(x2)), int(round(y2))), colour, 1)
                else:
                    for pts, colour in ((data["landmark"][i], (40, 220, 40)), (lmk[i], pred_colour)):
                        for x, y in np.asarray(pts).reshape(5, 2) * cell:
                            cv2.circle(img, (int(round(x)), int(round(y))), 2, colour, -1)
                cv2.putText(img, f"{prob[i]:.2f}", (2, cell - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 0), 1)
                tiles.append(img)
    finally:
        model.train(was_training)
    if not tiles:
        return None
    columns = min(columns, len(tiles))
    rows = math.ceil(len(tiles) / columns)
    grid = np.zeros((rows * cell, columns * cell, 3), np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        grid[r * cell:(r + 1) * cell, c * cell:(c + 1) * cell] = tile
    return grid


# ------------------------------------------------------------------------------------------
# optimisation pieces
# ------------------------------------------------------------------------------------------


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


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    o = cfg.optim
    groups = parameter_groups(model, o.weight_decay)
    if o.name == "sgd":
        return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov and o.momentum > 0)
    if o.name == "adam":
        return torch.optim.Adam(groups, lr=o.lr, betas=tuple(o.betas))
    return torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas))


def settings_text(cfg: TrainConfig, steps_per_epoch: int, world_size: int = 1) -> str:
    o = cfg.optim
    opt = f"{o.name} lr {o.lr:g}" + (f" m {o.momentum:g}" if o.name == "sgd" else f" betas {tuple(o.betas)}")
    return (f"{opt}, x{o.lr_gamma:g} at {list(o.lr_boundaries)}, wd {o.weight_decay:g}, batch {cfg.batch_size}"
            f"{f' on {world_size} ranks' if world_size > 1 else ''}, {cfg.epochs} ep x {steps_per_epoch} steps, "
            f"ohem {cfg.loss.ohem_keep_ratio:g}, seed {cfg.seed}")


# ------------------------------------------------------------------------------------------
# the trainer
# ------------------------------------------------------------------------------------------


def _global_composition(cfg: TrainConfig) -> dict[str, int]:
    c = cfg.data.composition
    values = {k: getattr(c, k) for k in KINDS}
    if all(v is None for v in values.values()):
        return composition_for(cfg.net, cfg.batch_size)
    comp = {k: int(v or 0) for k, v in values.items()}
    if sum(comp.values()) != cfg.batch_size:
        raise ConfigError(f"data.composition {comp} sums to {sum(comp.values())}, not batch_size={cfg.batch_size}")
    return comp


class Trainer:
    """The training loop behind :func:`train`; ``Trainer(cfg).fit()`` returns the final checkpoint.

    After :meth:`fit`, :attr:`model` is the trained (unwrapped) network of this rank.
    """

    def __init__(self, config: TrainConfig, resume: bool | str | os.PathLike = False, overwrite: bool = False):
        self.cfg = config.resolved()
        self.resume = resume
        self.overwrite = overwrite
        self.out = resolve_path(self.cfg.out)
        self.info = dist_env()
        self.size = NET_INPUT_SIZE[self.cfg.net]
        self.model: nn.Module | None = None
        self.metrics: list[dict[str, Any]] = []

    # -------------------------------------------------------------- set-up
    def _resume_path(self) -> Path | None:
        if self.resume is False or self.resume is None:
            return None
        path = self.out / "last.pt" if self.resume is True else Path(self.resume)
        if not path.is_file():
            raise TrainError(f"cannot resume: {path} not found (start without --resume)")
        return path

    def _check_inputs(self) -> None:
        cfg = self.cfg
        ws = self.info.world_size
        resolve_device(cfg.device)  # a device this machine lacks fails before the data is read
        if cfg.batch_size % ws:
            raise ConfigError(f"batch_size={cfg.batch_size} is not divisible by the {ws} ranks")
        self.composition = _global_composition(cfg)
        if any(v is not None for v in dataclasses.astuple(cfg.data.composition)):
            if any(v % ws for v in self.composition.values()):
                raise ConfigError(f"data.composition {self.composition} is not divisible by the {ws} ranks")
            self.rank_composition = {k: v // ws for k, v in self.composition.items()}
        else:
            try:
                self.rank_composition = composition_for(cfg.net, cfg.batch_size // ws)
            except ValueError as e:
                raise ConfigError(f"batch_size={cfg.batch_size} over {ws} ranks: {e}") from None
        self.train_reader = open_samples(cfg.data.train, cfg.data.train_by_kind, self.size, "training")
        if InMemoryReader.nbytes(self.train_reader) <= cfg.data.cache_mb * 2**20:
            self.train_reader = InMemoryReader(self.train_reader)
        counts = self.train_reader.counts()
        for kind, c in self.rank_composition.items():
            if c > 0 and counts[kind] < max(1, ws):
                hint = (" (landmark samples in a separate file? set data.train_by_kind.landmark=[...])"
                        if kind == "landmark" else "")
                raise TrainError(f"{self.train_reader.path}: no {kind} samples but each batch needs {c}{hint}")
        used = sum(counts[k] for k, c in self.composition.items() if c > 0)
        self.steps_per_epoch = cfg.steps_per_epoch or max(1, math.ceil(used / cfg.batch_size))
        self.val_reader = None
        if cfg.val.enabled and cfg.data.val:
            self.val_reader = open_samples(cfg.data.val, cfg.data.val_by_kind, self.size, "validation")
        self.resume_path = self._resume_path()
        if self.resume_path is None and not self.overwrite and (self.out / "last.pt").exists():
            raise TrainError(f"{self.out / 'last.pt'} exists: continue it with --resume, or choose another --out")

    def _setup(self) -> None:
        cfg, info = self.cfg, self.info
        if info.enabled and not dist.is_initialized():
            backend = "nccl" if cfg.device != "cpu" and torch.cuda.is_available() else "gloo"
            dist.init_process_group(backend=backend)
            info.initialised_here = True
        self.device = _resolve_device(cfg.device, info)
        self.use_amp = bool(cfg.amp and self.device.type == "cuda")
        # Same initial weights on every rank (DDP also broadcasts rank 0's).
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        model = build_net(cfg.net).to(self.device)
        # Then one stream per rank (dropout masks differ across ranks).
        torch.manual_seed(cfg.seed + 1_000_003 * info.rank)
        random.seed(cfg.seed + info.rank)
        np.random.seed((cfg.seed + info.rank) % 2**32)
        self.model = model
        self.optimizer = build_optimizer(model, cfg)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, PiecewiseLR(cfg.optim.lr_boundaries, self.steps_per_epoch, cfg.optim.lr_gamma))
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.ddp = (nn.parallel.DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
                    if info.enabled else model)
        self.loader = MixedBatchLoader(
            self.train_reader, self.rank_composition, self.steps_per_epoch, seed=cfg.seed, rank=info.rank,
            world_size=info.world_size, flip=cfg.data.flip, color_jitter=cfg.data.color_jitter,
            num_workers=cfg.data.num_workers, pin_memory=self.device.type == "cuda",
        )
        self.weights = TaskWeights(cfg.loss.weights.cls, cfg.loss.weights.box, cfg.loss.weights.landmark)
        self.validator = (Validator(self.val_reader, cfg.val.threshold, cfg.val.batch_size, cfg.val.max_per_kind,
                                    info.rank, info.world_size) if self.val_reader is not None else None)
        self.global_step = 0
        self.last_lr = self.optimizer.param_groups[0]["lr"]
        self.epochs_completed = 0
        self.epoch_stats = torch.zeros(7, dtype=torch.float64)  # loss cls box lmk correct n_cls steps
        self.epoch_time = 0.0
        self.settings = settings_text(cfg, self.steps_per_epoch, info.world_size)
        if self.resume_path is not None:
            self._load_state(self.resume_path)
        self.writer = None
        if info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_resolved(cfg, self.out)
            self._trim_metrics()
            if cfg.log.tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.out / "tb"), purge_step=self.global_step if self.resume_path else None)
        info.barrier()

    # -------------------------------------------------------------- state
    def _state(self) -> dict[str, Any]:
        rng = _rng_state()
        if self.info.enabled:
            gathered: list[Any] = [None] * self.info.world_size
            dist.all_gather_object(gathered, rng)
            rngs = gathered
        else:
            rngs = [rng]
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "net": self.cfg.net,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "loader": self.loader.state_dict(),
            "rng": rngs,
            "global_step": self.global_step,
            "last_lr": self.last_lr,
            "epochs_completed": self.epochs_completed,
            "epoch_stats": self.epoch_stats.clone(),
            "epoch_time": self.epoch_time,
            "world_size": self.info.world_size,
            "config": to_dict(self.cfg),
        }

    def save_state(self) -> None:
        state = self._state()  # collective under DDP: every rank calls it
        if self.info.is_main:
            atomic_torch_save(state, self.out / "last.pt")
        self.info.barrier()

    def _load_state(self, path: Path) -> None:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise TrainError(f"{path}: not a readable training state ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise TrainError(f"{path}: not a training state written by mtcnn.train (a final <net>.pt? resume needs last.pt)")
        if state["net"] != self.cfg.net:
            raise TrainError(f"{path}: holds a {state['net']} run, this config trains {self.cfg.net}")
        changed = _config_diff(state.get("config", {}), to_dict(self.cfg))
        if changed and self.info.is_main:
            print(f"warning: resuming with a config that differs from the checkpoint's: {', '.join(changed[:8])}",
                  file=sys.stderr)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.use_amp and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        try:
            self.loader.load_state_dict(state["loader"])
        except ValueError as e:
            raise TrainError(f"{path}: cannot resume with this data/config: {e}") from None
        rngs = state["rng"]
        if len(rngs) == self.info.world_size:
            _set_rng_state(rngs[self.info.rank])
        elif self.info.is_main:
            print(f"warning: {path} was written by {len(rngs)} ranks, now {self.info.world_size}: "
                  "RNG streams are not restored", file=sys.stderr)
        self.global_step = int(state["global_step"])
        self.last_lr = float(state.get("last_lr", self.optimizer.param_groups[0]["lr"]))
        self.epochs_completed = int(state["epochs_completed"])
        self.epoch_stats = state["epoch_stats"].to(torch.float64)
        self.epoch_time = float(state.get("epoch_time", 0.0))

    def _trim_metrics(self) -> None:
        """metrics.jsonl holds exactly the completed epochs (a crash may have left a later line)."""
        path = self.out / "metrics.jsonl"
        if not path.exists():
            return
        if self.resume_path is None:
            path.unlink()
            return
        keep = []
        for line in path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                rec = json.loads(line)
                if rec.get("epoch", 0) <= self.epochs_completed:
                    keep.append(line)
                    self.metrics.append(rec)
        atomic_write_text(path, "".join(k + "\n" for k in keep))

    # -------------------------------------------------------------- loop
    def fit(self) -> Path:
        prev_threads = torch.get_num_threads()
        threads = self.cfg.threads
        if threads is None and self.info.enabled:
            threads = max(1, (os.cpu_count() or 1) // max(1, self.info.local_world_size))
        try:
            self._check_inputs()
            if threads is not None:
                torch.set_num_threads(threads)
            self._setup()
            try:
                return self._run()
            finally:
                if self.writer is not None:
                    self.writer.close()
        finally:
            torch.set_num_threads(prev_threads)
            if self.info.initialised_here and dist.is_initialized():
                dist.destroy_process_group()

    def _run(self) -> Path:
        cfg = self.cfg
        epoch = self.epochs_completed
        while epoch < cfg.epochs:
            if self.loader.state_dict()["epoch"] == epoch:
                self._train_epoch(epoch)
            self._end_epoch(epoch)
            epoch += 1
        final = self.out / f"{cfg.net}.pt"
        if self.info.is_main:
            meta = {"epochs": self.epochs_completed, "steps": self.global_step, "seed": cfg.seed,
                    "steps_per_epoch": self.steps_per_epoch, "world_size": self.info.world_size,
                    "val": self.metrics[-1].get("val") if self.metrics else None, "trained_by": "mtcnn.train"}
            atomic_torch_save(make_checkpoint(cfg.net, self.model, to_dict(cfg), meta), final)
            print(f"{cfg.net}: wrote {final}")
        if cfg.debug.save_rank_weights:
            torch.save({k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                       self.out / f"rank{self.info.rank}_weights.pt")
        self.info.barrier()
        return final

    def _next_batch(self, it):
        # DataLoader iterators draw their base seed from the global torch RNG when created;
        # isolate fetching so the RNG stream (dropout) depends only on the optimisation steps.
        with torch.random.fork_rng(devices=[]):
            return next(it, None)

    def _train_epoch(self, epoch: int) -> None:
        cfg, info = self.cfg, self.info
        spe = self.steps_per_epoch
        device = self.device
        self.ddp.train()
        start_step = self.loader.state_dict()["step"]
        window = torch.zeros(7, dtype=torch.float64, device=device)
        window_start = time.perf_counter()
        window_samples = 0
        bar = None
        if info.is_main and cfg.log.progress:
            from tqdm import tqdm

            bar = tqdm(total=spe, initial=start_step, desc=f"{cfg.net} epoch {epoch + 1}/{cfg.epochs}",
                       dynamic_ncols=True, leave=False, file=sys.stderr, mininterval=0.5)
        t_epoch = time.perf_counter()
        it = iter(self.loader)
        try:
            while True:
                batch = self._next_batch(it)
                if batch is None:
                    break
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=self.use_amp):
                    outputs = self.ddp(batch["images"])
                loss, parts = mtcnn_loss(outputs, batch, self.weights, cfg.loss.ohem_keep_ratio)
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.last_lr = self.optimizer.param_groups[0]["lr"]  # the LR this step used
                self.scheduler.step()
                self.global_step += 1
                with torch.no_grad():
                    labels = batch["label"]
                    valid = (labels == Label.POS) | (labels == Label.NEG)
                    pred = flatten_head(outputs[0]).argmax(1)
                    correct = ((pred == (labels == Label.POS).long()) & valid).sum()
                    row = torch.stack([loss.detach().double(), parts["cls"].double(), parts["box"].double(),
                                       parts["landmark"].double(), correct.double(), valid.sum().double(),
                                       torch.ones((), dtype=torch.float64, device=device)])
                    window += row
                window_samples += batch["images"].shape[0]
                if bar is not None:
                    bar.update(1)
                end_of_epoch = self.loader.step >= spe
                stop = cfg.debug.stop_after_steps is not None and self.global_step == cfg.debug.stop_after_steps
                save = not end_of_epoch and (stop or (cfg.checkpoint.every_steps > 0
                                                      and self.global_step % cfg.checkpoint.every_steps == 0))
                if self.global_step % cfg.log.every_steps == 0 or end_of_epoch or save:
                    self._flush_window(window, window_start, window_samples, bar)
                    window.zero_()
                    window_start, window_samples = time.perf_counter(), 0
                if save:
                    self.epoch_time += time.perf_counter() - t_epoch
                    t_epoch = time.perf_counter()
                    self.save_state()
                    if stop:
                        self._debug_exit()
                self._stop_after_epoch = stop and end_of_epoch
        finally:
            if bar is not None:
                bar.close()
        self.epoch_time += time.perf_counter() - t_epoch

    def _debug_exit(self) -> None:
        if self.info.is_main:
            print(f"debug.stop_after_steps: stopping hard after step {self.global_step}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(DEBUG_EXIT_CODE)

    def _flush_window(self, window: torch.Tensor, start: float, samples: int, bar) -> None:
        w = window.cpu()
        self.epoch_stats += w
        steps = max(1.0, float(w[6]))
        loss, cls, box, lmk = (float(v) / steps for v in w[:4])
        lr = self.last_lr
        rate = samples / max(1e-9, time.perf_counter() - start)
        if bar is not None:
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.1e}", rate=f"{rate:.0f}/s", refresh=False)
        if self.writer is not None:
            s = self.global_step
            self.writer.add_scalar("train/loss", loss, s)
            self.writer.add_scalar("train/loss_cls", cls, s)
            self.writer.add_scalar("train/loss_box", box, s)
            self.writer.add_scalar("train/loss_landmark", lmk, s)
            if w[5] > 0:
                self.writer.add_scalar("train/accuracy", float(w[4] / w[5]), s)
            self.writer.add_scalar("train/lr", lr, s)
            self.writer.add_scalar("train/samples_per_s", rate * self.info.world_size, s)

    def _end_epoch(self, epoch: int) -> None:
        cfg, info = self.cfg, self.info
        stats = self.epoch_stats
        steps = max(1.0, float(stats[6]))
        train = {"loss": float(stats[0]) / steps, "cls": float(stats[1]) / steps, "box": float(stats[2]) / steps,
                 "landmark": float(stats[3]) / steps,
                 "accuracy": float(stats[4] / stats[5]) if stats[5] > 0 else float("nan")}
        val = None
        if self.validator is not None and ((epoch + 1) % cfg.val.every_epochs == 0 or epoch + 1 == cfg.epochs):
            val = self.validator.evaluate(self.model, self.device, self.weights, self.use_amp, info)
        samples = steps * cfg.batch_size
        record = {
            "epoch": epoch + 1, "epochs": cfg.epochs, "step": self.global_step, "net": cfg.net,
            "lr": self.last_lr, "epoch_time_s": round(self.epoch_time, 3),
            "samples_per_s": round(samples / self.epoch_time, 1) if self.epoch_time > 0 else None,
            "train": train, "val": val, "settings": self.settings,
        }
        self.metrics.append(record)
        if info.is_main:
            with open(self.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            line = (f"{cfg.net} epoch {epoch + 1}/{cfg.epochs} step {self.global_step}: loss {train['loss']:.4f} "
                    f"(cls {train['cls']:.4f} box {train['box']:.4f} lmk {train['landmark']:.4f}) "
                    f"lr {record['lr']:.1e}")
            if val is not None:
                line += (f" | val acc {val['accuracy']:.4f} recall@{val['threshold']:g} {val['recall']:.4f} "
                         f"fpr {val['fpr']:.4f} box_mae {val['box_mae']:.4f} lmk_err {val['landmark_error']:.4f}")
            print(line, flush=True)
            if self.writer is not None:
                s = self.global_step
                for k, v in train.items():
                    self.writer.add_scalar(f"epoch/train_{k}", v, s)
                if val is not None:
                    for k, v in val.items():
                        if not k.startswith("n_") and not (isinstance(v, float) and math.isnan(v)):
                            self.writer.add_scalar(f"val/{k}", v, s)
                    if cfg.val.num_images > 0:
                        grid = validation_image(self.model, self.val_reader, cfg.val.num_images, self.device,
                                                cfg.val.threshold)
                        if grid is not None:
                            self.writer.add_image("val/predictions", grid, s, dataformats="HWC")
                self.writer.flush()
        self.epochs_completed = epoch + 1
        self.epoch_stats = torch.zeros(7, dtype=torch.float64)
        self.epoch_time = 0.0
        self.save_state()
        if getattr(self, "_stop_after_epoch", False):
            self._debug_exit()


def _config_diff(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            keys += _config_diff(a, b, f"{prefix}{k}.")
        elif a != b:
            keys.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return keys


def train(config: TrainConfig, resume: bool | str | os.PathLike = False, overwrite: bool = False) -> Path:
    """Train ``config.net``; returns the path of the final checkpoint ``<out>/<net>.pt``.

    ``resume=True`` continues from ``<out>/last.pt`` (or from the given path); without it an
    existing ``last.pt`` is refused unless ``overwrite``.
    """
    return Trainer(config, resume=resume, overwrite=overwrite).fit()


# ------------------------------------------------------------------------------------------
# curves
# ------------------------------------------------------------------------------------------


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    records = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            records.append(json.loads(line))
    return records


def plot_training_curves(metrics_jsonl: str | os.PathLike, png_path: str | os.PathLike, dpi: int = 90) -> Path:
    """Plot the per-task losses (train solid, validation dashed) and the validation recall /
    false-positive rate / accuracy against the epoch, from a run's ``metrics.jsonl``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_jsonl)
    if not records:
        raise ValueError(f"{metrics_jsonl}: no epochs recorded")
    epochs = [r["epoch"] for r in records]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    colours = {"cls": "tab:blue", "box": "tab:orange", "landmark": "tab:green", "loss": "black"}
    for key, colour in colours.items():
        label = f"train {key}" + (" (OHEM)" if key == "cls" else "")
        ax1.plot(epochs, [r["train"][key] for r in records], "-", color=colour, label=label)
        vals = [(r["val"] or {}).get("loss" if key == "loss" else f"loss_{key}") for r in records]
        if any(v is not None for v in vals):
            ax1.plot(epochs, [np.nan if v is None else v for v in vals], "--", color=colour, label=f"val {key}")
    ax1.set_yscale("log")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss (per task, unweighted; total weighted)")
    ax1.set_title("losses")
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=7, ncol=2)
    with_val = [r for r in records if r.get("val")]
    if with_val:
        ve = [r["epoch"] for r in with_val]
        t = with_val[-1]["val"]["threshold"]
        ax2.plot(ve, [r["val"]["recall"] for r in with_val], "o-", color="tab:green", label=f"recall of pos (p >= {t:g})")
        ax2.plot(ve, [r["val"]["fpr"] for r in with_val], "o-", color="tab:red", label=f"FPR on neg (p >= {t:g})")
        ax2.plot(ve, [r["val"]["accuracy"] for r in with_val], "s--", color="tab:blue", label="accuracy pos+neg (p > 0.5)")
        last = with_val[-1]["val"]
        ax2.set_title(f"validation: recall {last['recall']:.3f}, FPR {last['fpr']:.3f} at epoch {ve[-1]}")
    else:
        ax2.set_title("validation: none recorded")
    ax2.set_ylim(-0.02, 1.02)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("rate")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=8, loc="center right")
    net = records[-1].get("net", "?")
    fig.suptitle(f"{net}: {records[-1].get('settings', '')}", fontsize=9)
    fig.tight_layout()
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=dpi)
    plt.close(fig)
    return png_path


# ------------------------------------------------------------------------------------------
# command line (train_models/train_{pnet,rnet,onet}.py)
# ------------------------------------------------------------------------------------------


def main(net: str, argv: Sequence[str] | None = None) -> int:
    """``train_<net>.py [--config YAML] [--resume [LAST_PT]] [--out DIR] [key=value ...]``."""
    parser = argparse.ArgumentParser(
        prog=f"train_{net}.py",
        description=f"Train the MTCNN {net} (also under torchrun --nproc_per_node N for DistributedDataParallel).",
    )
    parser.add_argument("--config", default=str(PROJECT_ROOT / "configs" / f"train_{net}.yaml"),
                        help=f"YAML config (default configs/train_{net}.yaml)")
    parser.add_argument("--resume", nargs="?", const=True, default=False, metavar="LAST_PT",
                        help="continue from <out>/last.pt (or the file given)")
    parser.add_argument("--out", help="output folder (overrides the config's out)")
    parser.add_argument("--overwrite", action="store_true", help="start over even if <out>/last.pt exists")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. optim.lr=0.01")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(TrainConfig, args.config, args.overrides)
        if cfg.net != net:
            raise ConfigError(f"{args.config}: net={cfg.net!r}, but this script trains {net}")
        if args.out:
            cfg = dataclasses.replace(cfg, out=args.out)
        path = train(cfg, resume=args.resume, overwrite=args.overwrite)
    except (ConfigError, TrainError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if dist_env().is_main:
        print(f"final checkpoint: {path}")
    return 0


__all__ = [
    "InMemoryReader",
    "MultiFileReader",
    "PiecewiseLR",
    "TrainError",
    "Trainer",
    "Validator",
    "build_optimizer",
    "main",
    "open_samples",
    "parameter_groups",
    "plot_training_curves",
    "read_metrics",
    "train",
    "validation_image",
]
