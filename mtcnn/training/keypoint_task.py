"""Landmark regression on in-memory face crops with rotation / scale / shift / mirror augmentation:
the training task of the landmark zoo (68-point models, the two MobileNet-V2 cascade levels).

Faces are cut once (:mod:`mtcnn.data.face_crops`, cached under ``data.cache_dir``) and every
batch is warped from them (:class:`mtcnn.data.keypoint_aug.KeypointBatchLoader`), so training
needs no sample files. Targets are window coordinates in ``[-1, 1]`` (the window's outer edges);
the loss is :func:`mtcnn.losses.landmark_regression_loss` (L1 / L2 / wing / adaptive wing) of
the errors times ``loss.coordinate_scale`` (null: the net's input half-side, i.e. input pixels;
0.5: fractions of the window, the seed's unit for wing w 0.5, ε 2).

Level 2 of the MobileNet-V2 cascade trains on windows around level 1's predictions
(``data.level1_weights``), keeping the faces whose level-1 mean error is below
``data.level2_max_error`` of the face box (SPEC §8). The window is ``data.level2_window``:
``radius`` (default) — centred on the five points' mean, its half-side ``data.level2_scale``
(1.1) × the largest point distance from it, about 0.8 of the face box: a zoom-in on level 1's
input, the same for a tilted face; ``extent`` — the square around the points' extent, scale ×
its half-side; ``nose`` — SPEC §8's
``nose ± level2_scale·|nose − left eye|`` (scale 2), which around a face-box level 1 is 1.5
boxes wide, a zoom-out, and the reason a level 2 trained that way is worse than its level 1.
The rule is saved with the weights and :func:`mtcnn.landmark_models.load_landmark_model` crops
with it.

Extra training faces (``data.sources``): annotation sources as the data pipeline writes them
(:class:`mtcnn.config.data.SourceConfig`, e.g. the 300-W ``.pts`` folders, ``format: pts68``), read
with :func:`mtcnn.data.generate.load_source`, cut with the dataset's crop size and context (reference:
the points' extent + ``expand`` for 68-point nets, the annotated box for 5-point ones), cached like the
dataset's crops and appended to its training faces. Every face must have the net's point count.

Validation (``val``) predicts the plain windows of the test split: ``nme`` (68 points: outer eye
corners; 5 points: face-box width), ``failure_rate`` (sample NME > ``val.failure_nme``). With
``data.val_sources`` the faces of those sources are validated too, as separate figures
(``sources_nme``, ``sources_failure_rate``, ``sources_num_samples``); the test split stays the main one.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from mtcnn.config import bounded
from mtcnn.config.data import SourceConfig
from mtcnn.config.paths import data_root, resolve_path
from mtcnn.config.train import LandmarkLossSection, LogSection, OptimSection, RunConfig
from mtcnn.data.face_crops import (
    FaceCrops, cached_source_crops, cnn_facepoint_crops, files_fingerprint, udacity68_crops,
)
from mtcnn.data.keypoint_aug import AugmentSettings, KeypointBatchLoader
from mtcnn.errors import DataError
from mtcnn.landmark_models import DEFAULT_LEVEL2_WINDOW, MobileNetCascade, load_landmark_model, plain_windows, run_net
from mtcnn.losses import landmark_regression_loss
from mtcnn.nets import build_net, get_net_spec
from mtcnn.training.landmark_task import point_error_stats


@dataclass
class KeypointDataSection:
    dataset: Literal["udacity68", "cnn_facepoint"] = "udacity68"
    root: str = "{data}"
    cache_dir: str | None = "{gen}/face_crops"
    context: float = bounded(1.6, 1.0, 4.0, help="stored crop side / reference box side (room to rotate)")
    stored_scale: float = bounded(1.0, 0.25, 4.0, help="stored pixels per input pixel of the reference box")
    expand: float | None = bounded(None, 0.0, 1.0, help="reference box growth; null: 0.1 (68 points) / 0 (boxes)")
    limit: int | None = bounded(None, 1, None, help="use the first N training faces")
    val_limit: int | None = bounded(None, 1, None, help="validate on the first N test faces")
    level: Literal[1, 2] = 1
    level1_weights: str | None = None  # level 2: the cascade or level-1 weights that place the windows
    level2_max_error: float = bounded(0.1, 0.0, None, help="level 2 keeps faces whose level-1 error is below this")
    # level 2's window around level 1's points; recorded in the weights, so the cascade crops as trained
    level2_window: Literal["nose", "extent", "radius"] = DEFAULT_LEVEL2_WINDOW[0]
    level2_scale: float = bounded(DEFAULT_LEVEL2_WINDOW[1], 0.1, 10.0,
                                  help="nose: half-side / |nose - left eye| (SPEC: 2); extent: / half the points' extent; radius: / max point distance from their mean")
    rotation_deg: float = bounded(45.0, 0.0, 180.0)
    rotation_prob: float = bounded(0.5, 0.0, 1.0, help="fraction of samples rotated (the rest upright)")
    scale: float = bounded(0.1, 0.0, 0.5)
    shift: float = bounded(0.05, 0.0, 0.5)
    flip_prob: float = bounded(0.5, 0.0, 1.0)
    # Extra training faces appended to the dataset's (data.limit does not apply to them), and
    # faces validated as a second figure beside the test split: annotation sources as in the data
    # pipeline (format pts68 for the 300-W folders, split / split_rule / max_images ...).
    sources: list[SourceConfig] = field(default_factory=list)
    val_sources: list[SourceConfig] = field(default_factory=list)

    def augment(self) -> AugmentSettings:
        return AugmentSettings(self.rotation_deg, self.rotation_prob, self.scale, self.shift, self.flip_prob)


@dataclass
class KeypointValSection:
    enabled: bool = True
    every_epochs: int = bounded(1, 1, None)
    failure_nme: float = bounded(0.1, 0.0, None)


@dataclass
class KeypointTrainConfig(RunConfig):
    """A landmark-zoo training run (``train_kp68_*.yaml``, ``train_mobilenet_l*.yaml``)."""

    net: str = "kp68_compact"
    out: str = "runs/kp68_compact"
    threads: int | None = bounded(1, 1, 1024)
    amp: bool = False
    epochs: int = bounded(20, 1, None)
    batch_size: int = bounded(64, 1, None)
    data: KeypointDataSection = field(default_factory=KeypointDataSection)
    optim: OptimSection = field(default_factory=lambda: OptimSection(name="adam", lr=1e-3, weight_decay=0.0,
                                                                      lr_boundaries=[15], lr_gamma=0.1))
    loss: LandmarkLossSection = field(default_factory=lambda: LandmarkLossSection(kind="wing", wing_w=0.5, coordinate_scale=0.5))
    val: KeypointValSection = field(default_factory=KeypointValSection)
    log: LogSection = field(default_factory=lambda: LogSection(tensorboard=False, progress=False))

    def __post_init__(self) -> None:
        # RunConfig's checks, less its sample-file one: crops come from data.dataset, not files.
        if self.device != "auto" and not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"device={self.device!r} must be auto, cpu, cuda or cuda:N")
        if list(self.optim.lr_boundaries) != sorted(self.optim.lr_boundaries):
            raise ValueError(f"optim.lr_boundaries={list(self.optim.lr_boundaries)} must be increasing")
        if self.data.level == 2 and self.net != "mobilenet_l2":
            raise ValueError(f"data.level=2 trains the MobileNet-V2 cascade's level 2 (net mobilenet_l2), not {self.net}")

    def resolved(self) -> "KeypointTrainConfig":
        c = dataclasses.replace(self)
        if c.data.expand is None:
            c.data = dataclasses.replace(c.data, expand=0.1 if c.data.dataset == "udacity68" else 0.0)
        return c


def crop_size(data: KeypointDataSection, spec) -> int:
    """The stored crop side for ``spec``: ``context`` × ``stored_scale`` × its input side, a multiple of 8."""
    return int(math.ceil(spec.input_size[0] * data.context * data.stored_scale / 8) * 8)


def _expand(data: KeypointDataSection) -> float:
    return data.expand if data.expand is not None else (0.1 if data.dataset == "udacity68" else 0.0)


def load_crops(data: KeypointDataSection, spec, split: str, limit: int | None) -> FaceCrops:
    """The dataset's ``split`` faces cut for ``spec``'s input size (``context`` × the reference box)."""
    size = crop_size(data, spec)
    root = resolve_path(data.root) if data.root else data_root()
    cache = resolve_path(data.cache_dir) if data.cache_dir else None
    try:
        if data.dataset == "udacity68":
            return udacity68_crops(root, split, size, data.context, _expand(data), spec.channels == "grey", cache, limit)
        return cnn_facepoint_crops(root, split, size, data.context, _expand(data), cache, limit)
    except FileNotFoundError as e:
        raise DataError(str(e)) from None


def load_source_crops(src: SourceConfig, data: KeypointDataSection, spec) -> FaceCrops:
    """The faces of one annotation source cut like the dataset's (:func:`load_crops`): the same size,
    context and channels; reference = the points' extent + ``expand`` (68-point nets) or the annotated
    box + ``expand`` (5-point nets). Cached in ``data.cache_dir`` keyed by the source entry and its
    files (:func:`mtcnn.data.face_crops.files_fingerprint`). A source without faces, or a face whose
    point count is not the net's, raises :class:`DataError` naming the source and the file."""
    from mtcnn.config import to_dict
    from mtcnn.data.generate import load_source

    label = src.name or src.format
    k = spec.num_landmarks
    path = resolve_path(src.path)
    if not path.exists():
        load_source(src)  # its one-line error, with the hint for the 300-W folders
    key = repr((sorted(to_dict(src).items()), str(path), files_fingerprint(path),
                str(resolve_path(src.images_root)) if src.images_root else None))

    def records():
        recs = load_source(src)
        for r in recs:
            if r.num_faces and r.landmarks.shape[1] != k:
                pts = r.attributes.get("pts")
                where = path / str(pts[0]) if pts is not None and path.is_dir() else r.path
                raise DataError(f"source '{label}': {where} has {r.landmarks.shape[1]} points per face; "
                                f"net {spec.name} predicts {k}")
        if not any(r.num_faces for r in recs):
            raise DataError(f"source '{label}': no faces in {path}"
                            + (f" (split {src.split}, split_rule {src.split_rule})" if src.split != "all" else ""))
        return recs

    grey = data.dataset == "udacity68" and spec.channels == "grey"  # as load_crops cuts the dataset's faces
    reference = "points" if k == 68 else "box"
    cache = resolve_path(data.cache_dir) if data.cache_dir else None
    try:
        return cached_source_crops(label, key, records, cache, size=crop_size(data, spec), context=data.context,
                                   reference=reference, expand=_expand(data), grey=grey)
    except ValueError as e:  # crop_faces: a face with a missing point
        raise DataError(f"source '{label}': {e}") from None


def load_sources(sources, data: KeypointDataSection, spec) -> list[FaceCrops]:
    return [load_source_crops(src, data, spec) for src in sources]


class KeypointTask:
    """:class:`mtcnn.training.task.Task` for landmark regression on augmented in-memory crops."""

    stat_names = ("loss", "point_error_sum", "points")

    def __init__(self, cfg: KeypointTrainConfig, train: FaceCrops | None = None, val: FaceCrops | None = None):
        """``train`` / ``val``: crops already in memory (tests); otherwise read from ``cfg.data``."""
        self.cfg = cfg
        self._given = (train, val)
        self.spec = get_net_spec(cfg.net)
        if "landmark" not in self.spec.heads or len(self.spec.heads) != 1:
            raise ValueError(f"net {cfg.net!r} must have a single landmark head")
        self.k = self.spec.num_landmarks
        self.counts: list[tuple[str, int]] = []  # training faces per part: the dataset, then each source
        self.val_extra: FaceCrops | None = None
        self.val_extra_windows = None

    # ---------------------------------------------------------------- data
    def _level2_windows(self, crops: FaceCrops, keep_bad: bool) -> tuple[FaceCrops, tuple[torch.Tensor, torch.Tensor]]:
        d = self.cfg.data
        if not d.level1_weights:
            raise DataError("data.level = 2 needs data.level1_weights (the trained level-1 weights)")
        model = load_landmark_model(resolve_path(d.level1_weights))
        level1 = model.level1 if isinstance(model, MobileNetCascade) else model.net
        spec1 = get_net_spec("mobilenet_l1")
        p1 = run_net(level1, spec1, plain_windows(crops, spec1.input_size[0]))
        # mean point error over the reference box side (2 in the reference frame)
        err = ((p1 - crops.points).norm(dim=2).mean(dim=1) / 2).numpy()
        keep = np.arange(len(crops)) if keep_bad else np.nonzero(err < d.level2_max_error)[0]
        if len(keep) == 0:
            raise DataError(f"{d.level1_weights}: level 1's error is at least data.level2_max_error="
                            f"{d.level2_max_error} on all {len(crops)} training faces (is level 1 trained?)")
        centre, half = MobileNetCascade.level2_windows(p1, d.level2_window, d.level2_scale)
        t = torch.from_numpy(keep)
        return crops.subset(keep), (centre[t], half[t])

    def open_data(self, world_size: int) -> int:
        cfg = self.cfg
        given_train, given_val = self._given
        self.train = given_train if given_train is not None else load_crops(cfg.data, self.spec, "train", cfg.data.limit)
        self.val = None
        if cfg.val.enabled:
            self.val = given_val if given_val is not None else load_crops(cfg.data, self.spec, "test", cfg.data.val_limit)
        if self.train.num_landmarks != self.k:
            raise DataError(f"{cfg.data.dataset} has {self.train.num_landmarks} points; net {cfg.net} predicts {self.k}")
        self.counts = [(cfg.data.dataset, len(self.train))]
        if cfg.data.sources:
            extra = load_sources(cfg.data.sources, cfg.data, self.spec)
            self.counts += [(s.name or s.format, len(c)) for s, c in zip(cfg.data.sources, extra)]
            self.train = FaceCrops.concat([self.train, *extra])
        self.val_extra = None
        if cfg.val.enabled and cfg.data.val_sources:
            self.val_extra = FaceCrops.concat(load_sources(cfg.data.val_sources, cfg.data, self.spec))
        self.train_windows = self.val_windows = self.val_extra_windows = None
        if cfg.data.level == 2:
            self.train, self.train_windows = self._level2_windows(self.train, keep_bad=False)
            if self.val is not None:
                self.val, self.val_windows = self._level2_windows(self.val, keep_bad=True)
            if self.val_extra is not None:
                self.val_extra, self.val_extra_windows = self._level2_windows(self.val_extra, keep_bad=True)
        if len(self.train) == 0:
            raise DataError("no training faces left")
        return cfg.steps_per_epoch or max(1, math.ceil(len(self.train) / cfg.batch_size))

    def build_model(self) -> nn.Module:
        return build_net(self.spec)

    def make_loader(self, steps_per_epoch: int, rank: int, world_size: int, pin_memory: bool) -> KeypointBatchLoader:
        cfg = self.cfg
        return KeypointBatchLoader(self.train, self.spec, cfg.batch_size // world_size, steps_per_epoch, cfg.data.augment(),
                                   cfg.seed, rank, world_size, self.train_windows)

    # ---------------------------------------------------------------- steps
    @property
    def coordinate_scale(self) -> float:
        return self.cfg.loss.coordinate_scale or self.spec.input_size[1] / 2

    def _loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        c = self.cfg.loss
        weights = torch.tensor(c.point_weights) if c.point_weights else None
        if weights is not None and len(weights) != self.k:
            raise ValueError(f"loss.point_weights has {len(weights)} values for {self.k} points")
        return landmark_regression_loss(pred, target, c.kind, weights, self.coordinate_scale, **c.shape_params())

    def loss(self, outputs, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        target = batch["landmark"]
        loss = self._loss(outputs, target)
        return loss, point_error_stats(loss, outputs, target, self.k)

    def train_summary(self, sums: torch.Tensor, steps: float) -> dict[str, float]:
        s = [float(v) for v in sums]
        # point error in fractions of the window side (window coordinates span 2)
        return {"loss": s[0] / max(1.0, steps), "point_error": s[1] / s[2] / 2 if s[2] > 0 else float("nan")}

    # ---------------------------------------------------------------- validation
    def predict_val(self, model: nn.Module, crops: FaceCrops | None = None, windows=None) -> torch.Tensor:
        """Reference-frame predictions for the validation faces (plain windows; by default the test split's)."""
        if crops is None:
            crops, windows = self.val, self.val_windows
        centre, half = windows if windows is not None else (None, None)
        was_training = model.training
        model.eval()
        try:
            p = run_net(model, self.spec, plain_windows(crops, self.spec.input_size[0], centre, half))
        finally:
            model.train(was_training)
        return p if centre is None else centre[:, None, :] + half[:, None, None] * p

    def _val_figures(self, model: nn.Module, crops: FaceCrops, windows) -> dict[str, float]:
        pred = self.predict_val(model, crops, windows).double()
        gt = crops.points.double()
        err = (pred - gt).norm(dim=2)
        if self.k == 68:
            norm = (gt[:, 45] - gt[:, 36]).norm(dim=1)
        else:
            norm = torch.full((len(gt),), 2.0, dtype=torch.float64)  # the reference box side
        sample = (err / norm[:, None]).mean(dim=1)
        return {"nme": float(sample.mean()), "failure_rate": float((sample > self.cfg.val.failure_nme).double().mean()),
                "num_samples": len(gt)}

    def validate(self, model: nn.Module, device: torch.device, amp: bool, dist_info) -> dict[str, float] | None:
        if self.val is None:
            return None
        model_cpu = model if device.type == "cpu" else model.to("cpu")
        out = self._val_figures(model_cpu, self.val, self.val_windows)
        if self.val_extra is not None:
            extra = self._val_figures(model_cpu, self.val_extra, self.val_extra_windows)
            out.update({f"sources_{k}": v for k, v in extra.items()})
        if device.type != "cpu":
            model.to(device)
        return out

    def validation_image(self, model: nn.Module, device: torch.device) -> np.ndarray | None:
        return None

    def epoch_line(self, train: Mapping[str, float], val: Mapping[str, float] | None) -> str:
        line = f"loss {train['loss']:.4f}  point error {train['point_error']:.4f}"
        if val:
            line += f"  val NME {val['nme']:.4f}  failures {val['failure_rate']:.3f}"
            if "sources_nme" in val:
                line += f"  sources NME {val['sources_nme']:.4f}  failures {val['sources_failure_rate']:.3f}"
        return line

    def settings(self) -> str:
        d, c = self.cfg.data, self.cfg.loss
        window = f" (window {d.level2_window} ×{d.level2_scale:g})" if d.level == 2 else ""
        faces = f" ({' + '.join(f'{n} {c}' for n, c in self.counts)} faces)" if len(self.counts) > 1 else ""
        val_extra = f", validating also on {len(self.val_extra)} source faces" if self.val_extra is not None else ""
        return (f"{d.dataset}{faces}{val_extra} level {d.level}{window}, {self.spec.input_size[0]} px {self.spec.channels}, context {d.context}, "
                f"rotation ±{d.rotation_deg}° (p {d.rotation_prob}), scale ±{d.scale}, shift ±{d.shift}, "
                f"flip {d.flip_prob}; loss {c.kind} (coordinate scale {self.coordinate_scale:g})")
