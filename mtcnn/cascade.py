"""The 23 nets of the Sun et al. landmark cascade as one loadable bundle.

A bundle file holds ``{"format": "mtcnn-cascade-bundle", "version": 1, "variant", "box_adapter",
"meta", "nets": {"F1": checkpoint, ..., "RM32": checkpoint}}``; each checkpoint is an ordinary
:func:`mtcnn.weights.make_checkpoint` of its registered net (``sun_f1`` ...), checked against the
registry on load. :func:`assemble_bundle` gathers the finished nets of a training run.

``box_adapter`` (4 numbers or None) turns another detector's face boxes into the tight
CNN_FacePoint boxes the cascade was trained on: ``x1 += a0·w, y1 += a1·h, x2 += a2·w, y2 += a3·h``
(:func:`fit_box_adapter` estimates it from matched boxes of training images). ``detector_start``
says how the detector uses the cascade: ``"level1"`` (all three levels from the adapted box) or
``"onet"`` (O-Net's points refined by levels 2 and 3), whichever calibration found better.

Both depend on the detector (its box style, how good its O-Net's points are), so a bundle may
also hold ``"detector_calibrations": {weights sha256: {"box_adapter", "detector_start"}}``:
:meth:`LandmarkCascade.for_detector` (called by :class:`~mtcnn.detector.MTCNN`) uses the entry
of the detector's weights, and the top-level pair for detectors without one.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from mtcnn.nets.cascade import CASCADE_NETS, FusedPatchNets, LevelOneInference, nets_of_level
from mtcnn.atomic import atomic_torch_save
from mtcnn.config.paths import portable_config
from mtcnn.weights import WeightsError, _load_file, load_net

CASCADE_FORMAT = "mtcnn-cascade-bundle"
CASCADE_VERSION = 1
DEFAULT_CASCADE = Path(__file__).resolve().parent / "weights" / "cascade_sun.pt"
DETECTOR_STARTS = ("level1", "onet")
PRECISIONS = ("float32", "bfloat16")


@dataclass
class LandmarkCascade:
    """Loaded cascade: ``nets`` by short name (all 23), the variant, the box adapter and file info.

    :meth:`prepare` builds the inference form (eval mode, channels-last, each level's ten patch
    nets fused into one grouped net, ``"relu"`` level-1 nets as :class:`LevelOneInference`).

    ``precision`` "bfloat16" runs the nets' convolutions and matrix products under bfloat16
    autocast (crops, standardisation and the mapping back to pixels stay float32): more faces per
    second on a CPU with native bfloat16 (AVX-512 BF16), with errors on the CNN_FacePoint test
    too small to change its reported figures (both measured in docs/performance.md)."""

    nets: dict[str, nn.Module]
    variant: str = "relu"
    box_adapter: tuple[float, float, float, float] | None = None
    detector_start: str = "level1"
    info: dict[str, Any] = field(default_factory=dict)
    # detector weights sha256 -> (box adapter, detector start) calibrated for that detector
    calibrations: dict[str, tuple[tuple[float, float, float, float] | None, str]] = field(default_factory=dict)
    precision: str = "float32"
    fused: dict[int, nn.Module] = field(default_factory=dict, repr=False)
    level_one: dict[str, nn.Module] = field(default_factory=dict, repr=False)
    num_landmarks: ClassVar[int] = 5

    def prepare(self, device: torch.device | str = "cpu", precision: str | None = None) -> "LandmarkCascade":
        if precision == "auto":  # as the detector resolves it (bfloat16 on a CPU with native bf16)
            from mtcnn.backends import resolve_precision

            precision = resolve_precision(precision, device)
        if precision is not None:
            if precision not in PRECISIONS:
                raise ValueError(f"cascade precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
            self.precision = precision
        # The locally shared layers of "abs_tanh" nets hold 5-d weights, which have no channels-last form.
        layout = torch.channels_last if self.variant == "relu" else torch.contiguous_format
        for name, net in self.nets.items():
            self.nets[name] = net.to(device=device, memory_format=layout).eval()
        self.fused = {
            level: FusedPatchNets([self.nets[n] for n in nets_of_level(level)]).to(device=device, memory_format=torch.channels_last).eval()
            for level in (2, 3)
        }
        self.level_one = {
            name: (LevelOneInference(self.nets[name]).to(device=device, memory_format=torch.channels_last).eval()
                   if self.variant == "relu" else self.nets[name])
            for name in nets_of_level(1)
        }  # fmt: skip
        return self

    def to(self, device: torch.device | str) -> "LandmarkCascade":
        return self.prepare(device)

    @property
    def report_settings(self) -> dict[str, Any]:
        """What a detector's report records about these weights."""
        return {"cascade_weights": self.info.get("path"), "cascade_sha256": self.info.get("sha256"), "cascade_precision": self.precision}

    def predict(self, images: list[torch.Tensor], boxes: torch.Tensor, image_index: torch.Tensor,
                previous: torch.Tensor | None = None) -> torch.Tensor:
        """The landmark-model interface of the detector: level-3 points ``[N, 5, 2]`` of detector
        boxes, refining ``previous`` (O-Net's points) by levels 2 and 3 when the bundle's
        ``detector_start`` says so, else from level 1."""
        from mtcnn.stages import refine_landmarks  # the stages import the cascade's nets

        start = 2 if self.detector_start == "onet" and previous is not None else 1
        return refine_landmarks(self, images, self.adapt_boxes(boxes), previous, image_index, start_level=start).level3

    def for_detector(self, detector_sha256: str | None) -> "LandmarkCascade":
        """This cascade with the box adapter and start calibrated for the detector whose weights
        hash is ``detector_sha256`` (a copy sharing the nets), or itself when it has no such entry."""
        if detector_sha256 not in self.calibrations:
            return self
        adapter, start = self.calibrations[detector_sha256]
        return dataclasses.replace(self, box_adapter=adapter, detector_start=start)

    def adapt_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        """Detector boxes -> the cascade's box convention (identity without an adapter)."""
        from mtcnn.landmark_models import adapt_boxes

        return adapt_boxes(boxes, self.box_adapter)


def _bundle_dict(nets_ckpts: dict[str, dict], variant: str, box_adapter, meta: dict) -> dict:
    return {
        "format": CASCADE_FORMAT,
        "version": CASCADE_VERSION,
        "variant": variant,
        "box_adapter": None if box_adapter is None else [float(v) for v in box_adapter],
        "detector_start": "level1",
        "meta": portable_config(meta),
        "nets": nets_ckpts,
    }


def net_checkpoint(run_dir: str | os.PathLike, name: str) -> Path:
    """Where a training run keeps net ``name``'s final weights: ``<run_dir>/F1/sun_f1.pt``."""
    return Path(run_dir) / name / f"{CASCADE_NETS[name].registry_name}.pt"


def assemble_bundle(run_dir: str | os.PathLike, path: str | os.PathLike, variant: str = "relu", meta: dict | None = None) -> Path:
    """Gather the final checkpoints of all 23 nets of a training run into one bundle file.

    Every net is loaded first (registry, preprocessing and ``variant`` shapes checked), so a bundle
    that is written also loads."""
    missing = [n for n in CASCADE_NETS if not net_checkpoint(run_dir, n).is_file()]
    if missing:
        raise WeightsError(f"{run_dir}: not all 23 cascade nets are trained (missing {', '.join(missing)})")
    ckpts = {n: _load_file(net_checkpoint(run_dir, n)) for n in CASCADE_NETS}
    for name, ckpt in ckpts.items():
        load_net(ckpt, CASCADE_NETS[name].registry_name, str(net_checkpoint(run_dir, name)), variant=variant)
    atomic_torch_save(_bundle_dict(ckpts, variant, None, meta or {}), path)
    return Path(path)


def update_bundle(path: str | os.PathLike, box_adapter=None, meta: dict | None = None, detector_start: str | None = None,
                  detector_sha256: str | None = None, as_default: bool = False) -> None:
    """Rewrite a bundle's box adapter / detector start and/or merge ``meta`` into its meta (the nets
    stay). With ``detector_sha256`` the adapter and start are stored for that detector
    (``detector_calibrations``), and the top-level pair changes only with ``as_default``."""
    raw = _read_bundle(Path(path))
    if detector_start is not None and detector_start not in DETECTOR_STARTS:
        raise ValueError(f"detector_start={detector_start!r}: choose one of {', '.join(DETECTOR_STARTS)}")
    targets = [raw] if detector_sha256 is None or as_default else []
    if detector_sha256 is not None:
        targets.append(raw.setdefault("detector_calibrations", {}).setdefault(str(detector_sha256), {}))
    for target in targets:
        if box_adapter is not None:
            target["box_adapter"] = [float(v) for v in box_adapter]
        if detector_start is not None:
            target["detector_start"] = detector_start
    raw["meta"] = portable_config({**raw.get("meta", {}), **(meta or {})})
    atomic_torch_save(raw, path)


def _calibration(path: Path, where: str, entry: dict) -> tuple[tuple[float, float, float, float] | None, str]:
    adapter = entry.get("box_adapter")
    if adapter is not None and len(adapter) != 4:
        raise WeightsError(f"{path}: {where}box_adapter must hold 4 numbers, not {len(adapter)}")
    start = entry.get("detector_start", "level1")
    if start not in DETECTOR_STARTS:
        raise WeightsError(f"{path}: {where}detector_start {start!r} is not one of {', '.join(DETECTOR_STARTS)}")
    return (None if adapter is None else tuple(float(v) for v in adapter)), start


def _read_bundle(path: Path) -> dict:
    raw = _load_file(path)
    if not isinstance(raw, dict) or raw.get("format") != CASCADE_FORMAT:
        raise WeightsError(f"{path}: not a landmark cascade bundle (make one with train_models/train_landmarks.py --bundle)")
    if raw.get("version") != CASCADE_VERSION:
        raise WeightsError(f"{path}: cascade bundle version {raw.get('version')} is not supported (expected {CASCADE_VERSION})")
    return raw


def load_cascade(path: str | os.PathLike | None = None) -> LandmarkCascade:
    """Load and check all 23 nets of a bundle (default: the shipped ``mtcnn/weights/cascade_sun.pt``)."""
    path = Path(path) if path is not None else DEFAULT_CASCADE
    raw = _read_bundle(path)
    variant = raw.get("variant", "relu")
    nets = {}
    for name, spec in CASCADE_NETS.items():
        if name not in raw["nets"]:
            raise WeightsError(f"{path}: cascade bundle has no '{name}'")
        nets[name] = load_net(raw["nets"][name], spec.registry_name, f"{path}[{name}]", variant=variant)
    adapter, start = _calibration(path, "", raw)
    calibrations = {str(sha): _calibration(path, f"detector_calibrations[{sha}].", entry)
                    for sha, entry in raw.get("detector_calibrations", {}).items()}  # fmt: skip
    info = {"path": str(path), "sha256": weights_hash_of(nets), "meta": raw.get("meta", {})}
    return LandmarkCascade(nets, variant, adapter, start, info, calibrations=calibrations)


def weights_hash_of(nets: dict[str, nn.Module]) -> str:
    import hashlib

    h = hashlib.sha256()
    for name in sorted(nets):
        for key, tensor in sorted(nets[name].state_dict().items()):
            h.update(f"{name}.{key}".encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def fit_box_adapter(detector_boxes: torch.Tensor, true_boxes: torch.Tensor) -> tuple[float, float, float, float]:
    """Median per-side offsets (fractions of the detector box's width / height) from matched pairs ``[N, 4]``."""
    if detector_boxes.shape[0] == 0:
        raise ValueError("no matched boxes to fit the box adapter on")
    size = (detector_boxes[:, 2:4] - detector_boxes[:, 0:2]).repeat(1, 2)
    offsets = (true_boxes - detector_boxes) / size
    return tuple(float(v) for v in offsets.median(dim=0).values)


__all__ = [
    "CASCADE_FORMAT", "DEFAULT_CASCADE", "LandmarkCascade", "assemble_bundle", "fit_box_adapter",
    "load_cascade", "update_bundle", "weights_hash_of",
]
