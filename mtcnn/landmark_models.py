"""Landmark models that refine the detector's points: face boxes in, ``[N, K, 2]`` points out.

* :class:`MobileNetCascade` — the two-level MobileNet-V2 cascade (SPEC §8): level 1 on the
  face box made square, level 2 on the square ``nose ± 2·|nose − left eye|`` around level 1's
  points; five points.
* :class:`KeypointModel` — one 68-point regressor on the square around the face, then
  ``passes − 1`` more passes on the square around the previous points' extent expanded 10 %
  (the frame it was trained in), so a detector box need not match the training crops.

Both work on whole images (the detector's path: :func:`mtcnn.ops.crops.crop_resize` of each
window) and on :class:`mtcnn.data.face_crops.FaceCrops` (evaluation: the same warp as training).
:func:`load_landmark_model` reads a weights file; the detector picks one with
``landmarks="mobilenet"`` or ``"68"`` (:data:`LANDMARK_MODELS`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from mtcnn.data.face_crops import FaceCrops, from_reference
from mtcnn.data.keypoint_aug import normalise, warp
from mtcnn.nets.registry import NetSpec, get_net_spec
from mtcnn.ops.boxes import square_boxes
from mtcnn.ops.crops import crop_resize
from mtcnn.weights import FORMAT, FORMAT_VERSION, WeightsError, _load_file, atomic_torch_save, load_net, make_checkpoint

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: detector option → shipped weights file
LANDMARK_MODELS = {"mobilenet": WEIGHTS_DIR / "mobilenet_cascade.pt", "68": WEIGHTS_DIR / "kp68_compact.pt"}
LANDMARK_BUNDLE_FORMAT = FORMAT + "-landmarks"
MIN_LEVEL2_HALF = 0.05  # of the reference box: a degenerate level-1 guess still gets a window
#: level-2 window rules: ``"nose"`` — SPEC §8's ``nose ± scale·|nose − left eye|`` (scale 2); ``"extent"`` —
#: the square around the level-1 points' extent, its half-side ``scale`` × half the extent's larger side;
#: ``"radius"`` — centred on the points' mean, half-side ``scale`` × the largest point distance from it
#: (unchanged by in-plane rotation, so a tilted face gets the window an upright one would)
LEVEL2_WINDOWS = ("nose", "extent", "radius")
#: the rule of weights that record none (trained before the rule was a setting): SPEC §8's
SPEC_LEVEL2_WINDOW = ("nose", 2.0)
#: the rule training uses by default: SPEC §8's window is 1.5 face boxes wide around a face-box level 1
#: (a zoom-out, see ``docs/landmark_zoo.md``); 1.1 × the points' radius is ~0.8 of the box, and a
#: tilted face gets the same window as an upright one
DEFAULT_LEVEL2_WINDOW = ("radius", 1.1)


class LandmarkModel(Protocol):
    num_landmarks: int

    def predict(self, images: list[torch.Tensor], boxes: torch.Tensor, image_index: torch.Tensor,
                previous: torch.Tensor | None = None) -> torch.Tensor:
        """``[C,H,W]`` RGB images (uint8 or float 0..255), face boxes ``[N,4]`` → points ``[N,K,2]``.
        ``previous`` holds the five points O-Net gave each face, for models that refine them."""
        ...


def run_net(net: nn.Module, spec: NetSpec, windows: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Window crops ``[N,C,S,S]`` (float 0..255, RGB) → points ``[N,K,2]`` in window coordinates."""
    out = []
    tensor = next(iter([*net.parameters(), *net.buffers()]), None)
    device = tensor.device if tensor is not None else torch.device("cpu")
    with torch.inference_mode():
        for start in range(0, windows.shape[0], batch_size):
            x = normalise(windows[start : start + batch_size].to(device).float(), spec.mean, spec.scale, spec.in_channels)
            out.append(net(x).float().reshape(x.shape[0], -1, 2).cpu())
    if not out:
        return torch.zeros(0, spec.num_landmarks, 2)
    return torch.cat(out)


def _window_boxes(ref_boxes: torch.Tensor, centre: torch.Tensor, half: torch.Tensor) -> torch.Tensor:
    """Pixel boxes of windows given in a reference frame (centre [N,2], half-side [N])."""
    c = from_reference(centre[:, None, :], ref_boxes)[:, 0]
    h = half * (ref_boxes[:, 2] - ref_boxes[:, 0]) / 2
    return torch.cat([c - h[:, None], c + h[:, None]], dim=1)


def _crop_windows(images: list[torch.Tensor], boxes: torch.Tensor, image_index: torch.Tensor, size: int) -> torch.Tensor:
    rgb = [im if im.shape[0] == 3 else im.expand(3, -1, -1) for im in images]
    device = rgb[0].device
    return crop_resize(rgb, boxes.float().to(device), image_index.long().to(device), size)


def plain_windows(crops: FaceCrops, size: int, centre=None, half=None) -> torch.Tensor:
    """Unaugmented windows of stored crops (the reference box, or centre ± half of its frame), float 0..255."""
    n = len(crops)
    eye = torch.eye(2, dtype=torch.float64).expand(n, 2, 2)
    images, _ = warp(crops.images, crops.points, crops.context, size, eye, torch.zeros(n, 2), None, centre, half)
    return images


class MobileNetCascade:
    """Two MobileNet-V2 levels; points in the face box's reference frame, then in pixels."""

    num_landmarks = 5

    def __init__(self, level1: nn.Module, level2: nn.Module, box_expand: float = 0.0,
                 level2_window: tuple[str, float] = SPEC_LEVEL2_WINDOW, box_adapter: Sequence[float] | None = None):
        self.level1, self.level2 = level1.eval(), level2.eval()
        self.spec1, self.spec2 = get_net_spec("mobilenet_l1"), get_net_spec("mobilenet_l2")
        self.box_expand = box_expand
        self.box_adapter = _checked_adapter(box_adapter)
        rule, scale = level2_window
        if rule not in LEVEL2_WINDOWS or not float(scale) > 0:
            raise ValueError(f"level2_window={level2_window!r}: the rule is one of {LEVEL2_WINDOWS}, the scale > 0")
        self.level2_window = (str(rule), float(scale))  # must be the rule level 2 was trained with

    def to(self, device) -> "MobileNetCascade":
        self.level1.to(device), self.level2.to(device)
        return self

    @staticmethod
    def level2_windows(level1_points: torch.Tensor, rule: str = SPEC_LEVEL2_WINDOW[0],
                       scale: float = SPEC_LEVEL2_WINDOW[1]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(centre [N,2], half [N])`` of level 2's windows around level 1's points (reference frame).

        ``"nose"``: the nose, and ``scale`` × its distance to the left eye (SPEC §8: scale 2);
        ``"extent"``: the centre of the points' extent, and ``scale`` × half its larger side;
        ``"radius"``: the points' mean, and ``scale`` × the largest distance of a point from it."""
        if rule == "nose":
            nose = level1_points[:, 2]
            return nose, (scale * (nose - level1_points[:, 0]).norm(dim=1)).clamp(min=MIN_LEVEL2_HALF)
        if rule == "extent":
            lo, hi = level1_points.amin(dim=1), level1_points.amax(dim=1)
            return (lo + hi) / 2, (scale * (hi - lo).amax(dim=1) / 2).clamp(min=MIN_LEVEL2_HALF)
        if rule == "radius":
            centre = level1_points.mean(dim=1)
            return centre, (scale * (level1_points - centre[:, None]).norm(dim=2).amax(dim=1)).clamp(min=MIN_LEVEL2_HALF)
        raise ValueError(f"level-2 window rule {rule!r}: one of {LEVEL2_WINDOWS}")

    def windows(self, level1_points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """This cascade's level-2 windows (its recorded rule) around ``level1_points``."""
        return self.level2_windows(level1_points, *self.level2_window)

    def predict_crops(self, crops: FaceCrops) -> tuple[torch.Tensor, torch.Tensor]:
        """Level-1 and level-2 points ``[N,5,2]`` in the reference frame of stored crops."""
        size = self.spec1.input_size[0]
        p1 = run_net(self.level1, self.spec1, plain_windows(crops, size))
        centre, half = self.windows(p1)
        p2 = run_net(self.level2, self.spec2, plain_windows(crops, size, centre, half))
        return p1, centre[:, None, :] + half[:, None, None] * p2

    def predict(self, images, boxes, image_index, previous=None, return_levels: bool = False):
        ref = _reference_squares(boxes, self.box_adapter, self.box_expand)
        size = self.spec1.input_size[0]
        if ref.shape[0] == 0:
            empty = torch.zeros(0, 5, 2)
            return (empty, empty) if return_levels else empty
        image_index = image_index.cpu()
        p1 = run_net(self.level1, self.spec1, _crop_windows(images, ref, image_index, size)).double()
        centre, half = self.windows(p1)
        w2 = _window_boxes(ref, centre, half)
        p2 = run_net(self.level2, self.spec2, _crop_windows(images, w2, image_index, size)).double()
        final = from_reference(centre[:, None, :] + half[:, None, None] * p2, ref).float()
        if return_levels:
            return from_reference(p1, ref).float(), final
        return final


class KeypointModel:
    """A single-net regressor (e.g. 68 points) re-run on the square around its own points."""

    def __init__(self, net: nn.Module, spec: NetSpec | str, passes: int = 2, expand: float = 0.1, box_expand: float = 0.0,
                 box_adapter: Sequence[float] | None = None):
        self.net, self.spec = net.eval(), get_net_spec(spec)
        self.num_landmarks = self.spec.num_landmarks
        self.passes, self.expand, self.box_expand = passes, expand, box_expand
        self.box_adapter = _checked_adapter(box_adapter)

    def to(self, device) -> "KeypointModel":
        self.net.to(device)
        return self

    def predict_crops(self, crops: FaceCrops) -> torch.Tensor:
        """Points ``[N,K,2]`` in the reference frame of stored crops (one pass: the reference box)."""
        return run_net(self.net, self.spec, plain_windows(crops, self.spec.input_size[0]))

    def predict(self, images, boxes, image_index, previous=None) -> torch.Tensor:
        ref = _reference_squares(boxes, self.box_adapter, self.box_expand)
        size = self.spec.input_size[0]
        points = torch.zeros(ref.shape[0], self.num_landmarks, 2)
        if ref.shape[0] == 0:
            return points
        image_index = image_index.cpu()
        for k in range(self.passes):
            if k:
                ref = square_boxes(torch.cat([points.amin(dim=1), points.amax(dim=1)], dim=1).double(), self.expand)
            p = run_net(self.net, self.spec, _crop_windows(images, ref, image_index, size))
            points = from_reference(p.double(), ref.double()).float()
        return points


def adapt_boxes(boxes: torch.Tensor, adapter: Sequence[float] | None) -> torch.Tensor:
    """Detector boxes -> the box a landmark model was trained on: each side moved by its offset
    (fractions of the box's width / height: x1, y1, x2, y2); unchanged without an adapter."""
    if adapter is None:
        return boxes
    a = torch.tensor(adapter, dtype=boxes.dtype, device=boxes.device)
    return boxes + a * (boxes[:, 2:4] - boxes[:, 0:2]).repeat(1, 2)


def _reference_squares(boxes: torch.Tensor, adapter, box_expand: float) -> torch.Tensor:
    """The squares a landmark model crops around the detector's ``boxes`` (adapted, then squared)."""
    return square_boxes(adapt_boxes(boxes.detach().cpu().double(), adapter), box_expand)


def _checked_adapter(adapter: Sequence[float] | None) -> tuple[float, float, float, float] | None:
    if adapter is None:
        return None
    values = tuple(float(v) for v in adapter)
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"box_adapter must be 4 finite offsets (x1, y1, x2, y2), got {list(adapter)!r}")
    return values  # type: ignore[return-value]


def save_landmark_weights(path: str | os.PathLike, nets: dict[str, nn.Module], kind: str, config: dict | None = None,
                          meta: dict | None = None, half: bool = True, box_adapter: dict | None = None) -> None:
    """One file with a landmark model's nets; ``half`` stores float16 (loaded back as float32).
    ``box_adapter``: ``{"offsets": [4 floats], ...}`` (what the offsets were fitted on), applied to
    the detector's boxes before the model crops (:func:`adapt_boxes`)."""
    ckpts = {}
    for name, net in nets.items():
        ck = make_checkpoint(name, net, config, meta)
        if half:
            ck["state_dict"] = {k: v.half() if v.is_floating_point() else v for k, v in ck["state_dict"].items()}
        ckpts[name] = ck
    blob = {"format": LANDMARK_BUNDLE_FORMAT, "version": FORMAT_VERSION, "kind": kind, "nets": ckpts}
    if box_adapter is not None:
        _checked_adapter(box_adapter["offsets"])
        blob["box_adapter"] = dict(box_adapter)
    atomic_torch_save(blob, path)


def level2_window_of(config: dict | None) -> tuple[str, float]:
    """The level-2 window rule a level-2 checkpoint's config records (its training run's
    ``data.level2_window`` / ``data.level2_scale``; a packed bundle nests each net's config under
    its name); weights that record none were trained with SPEC §8's rule."""
    config = config or {}
    config = config.get("mobilenet_l2", config)
    data = config.get("data", {}) if isinstance(config, dict) else {}
    if "level2_window" not in data:
        return SPEC_LEVEL2_WINDOW
    return str(data["level2_window"]), float(data.get("level2_scale", SPEC_LEVEL2_WINDOW[1]))


def _load_nets(path: Path) -> tuple[str, dict[str, nn.Module], dict[str, dict]]:
    raw = _load_file(path)
    if not isinstance(raw, dict) or raw.get("format") not in (LANDMARK_BUNDLE_FORMAT, FORMAT):
        raise WeightsError(f"{path}: not a landmark model file")
    if raw["format"] == FORMAT:  # a single trained net (the training loop's <net>.pt)
        return "single", {raw["net"]: load_net(raw, raw["net"], str(path))}, {raw["net"]: raw.get("config") or {}}, None
    nets, configs = {}, {}
    for name, ck in raw["nets"].items():
        ck = dict(ck, state_dict={k: v.float() if v.is_floating_point() else v for k, v in ck["state_dict"].items()})
        nets[name] = load_net(ck, name, f"{path}[{name}]")
        configs[name] = ck.get("config") or {}
    return raw.get("kind", "single"), nets, configs, raw.get("box_adapter")


def load_landmark_model(name_or_path: str | os.PathLike, passes: int = 2) -> LandmarkModel:
    """``"mobilenet"``, ``"68"`` (the shipped weights) or a weights file → a landmark model."""
    path = LANDMARK_MODELS.get(str(name_or_path))
    path = Path(path if path is not None else name_or_path)
    if not path.is_file():
        shipped = ", ".join(LANDMARK_MODELS)
        raise WeightsError(
            f"landmarks={str(name_or_path)!r}: {path}: landmark weights not found (give a weights file, or one of: onet, cascade, {shipped})"
        )
    kind, nets, configs, adapter = _load_nets(path)
    offsets = adapter.get("offsets") if isinstance(adapter, dict) else None
    if kind == "mobilenet_cascade":
        if set(nets) != {"mobilenet_l1", "mobilenet_l2"}:
            raise WeightsError(f"{path}: a MobileNet cascade needs mobilenet_l1 and mobilenet_l2, has {sorted(nets)}")
        try:
            return MobileNetCascade(nets["mobilenet_l1"], nets["mobilenet_l2"],
                                    level2_window=level2_window_of(configs["mobilenet_l2"]), box_adapter=offsets)
        except ValueError as e:
            raise WeightsError(f"{path}: {e}") from None
    if len(nets) != 1:
        raise WeightsError(f"{path}: expected one net, found {sorted(nets)}")
    (name, net), = nets.items()
    try:
        return KeypointModel(net, name, passes=passes, box_adapter=offsets)
    except ValueError as e:
        raise WeightsError(f"{path}: {e}") from None


__all__ = [
    "DEFAULT_LEVEL2_WINDOW", "LANDMARK_MODELS", "LEVEL2_WINDOWS", "SPEC_LEVEL2_WINDOW", "KeypointModel", "LandmarkModel",
    "MobileNetCascade", "adapt_boxes", "level2_window_of", "load_landmark_model", "run_net", "save_landmark_weights",
]
