"""The composed detector: P-Net -> R-Net -> O-Net over a batch of images of any sizes."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch
from torch import nn

from mtcnn.backends import backend_nets, resolve_precision
from mtcnn.config import DETECTOR_PRESETS, DetectorConfig, from_dict, to_dict
from mtcnn.device import resolve_device
from mtcnn.io import to_rgb_uint8
from mtcnn.nets.registry import get_net_spec
from mtcnn.stages import Candidates, prepare_for_inference, refit_points, run_onet, run_pnet, run_rnet
from mtcnn.structures import Detections
from mtcnn.weights import load_bundle, resolve_weights

ImageLike = np.ndarray | torch.Tensor
CPU_CHUNK_BYTES = 9 << 20


class MTCNN:
    """Face detector with five landmarks.

    >>> detector = MTCNN(weights="mtcnn_original.pt")
    >>> faces = detector.detect(rgb_uint8_image)[0]
    >>> faces.boxes, faces.scores, faces.landmarks   # [N,4], [N], [N,5,2]

    ``images`` for :meth:`detect` are RGB uint8 ``H×W×3`` arrays or tensors (one, or a list of
    different sizes). Boxes are (x1, y1, x2, y2) floats, 0-based, width = x2 - x1, not clipped to
    the image (a face cut by the border keeps its full extent).

    ``backend``: "torch" (default) or "onnxruntime" (CPU; ``pip install -e ".[onnx]"``): what
    runs the nets; pyramid, crops and NMS are the same code for both.

    ``precision``: "auto" (default: "bfloat16" for the torch backend on a CPU with native bf16,
    AVX-512 BF16 or AMX, else "float32"; :func:`mtcnn.backends.resolve_precision`), "float32" or
    "bfloat16" (torch backend on a CPU; elsewhere oneDNN emulates bf16, slower); ``settings``
    reports the precision it resolved to. In bfloat16 O-Net runs its
    convolutions in bfloat16; windows it scores within 0.08 of its threshold are re-run in
    float32, so the same faces pass as in float32 (:class:`mtcnn.ops.inference.CheckedNet`);
    their scores and boxes may differ from float32's in the third decimal. With
    ``landmarks="cascade"`` the cascade's nets run in bfloat16 too (points within 0.0001 of the
    box width of float32's on average). The README has the speed and the figures.

    ``landmarks`` picks who places the points: ``"onet"`` (O-Net's five), ``"cascade"`` (the Sun
    et al. cascade, :func:`~mtcnn.stages.refine_landmarks`, level 3, from level 1 or from O-Net's
    points as the bundle's ``detector_start`` says; ``cascade`` is its bundle path or a loaded
    :class:`~mtcnn.cascade.LandmarkCascade`, default the shipped ``mtcnn/weights/cascade_sun.pt``),
    ``"mobilenet"`` (the two-level MobileNet-V2 cascade, five points), ``"68"`` (the compact
    68-point model), a landmark weights file, or a loaded
    :class:`~mtcnn.landmark_models.LandmarkModel`; the model runs on every face O-Net keeps, and
    ``Detections.landmarks`` has its number of points.

    ``rotation``: None (default: upright faces, about ±20°; ``Detections.angles`` is None) or
    ``"quarter"``: each image is also searched in its three other quarter turns, in the same
    batched call (about 4× the time), faces mapped back and merged by NMS
    (:func:`mtcnn.rotation.detect_quarter`); ``Detections.angles`` gives each face's angle (0,
    90, 180, 270, counter-clockwise) and its points are in image coordinates, so
    :func:`mtcnn.align.norm_crop` cuts them upright. ``"pcn"``: the rotation-calibrating cascade
    (:mod:`mtcnn.rotation_pcn`; its three nets from ``pcn``, a bundle or a folder of ``pcn1.pt``,
    ``pcn2.pt``, ``pcn3.pt``, thresholds ``pcn_thresholds``) finds faces at any angle in one pass;
    ``angles`` are any degrees in (-180, 180].
    """

    def __init__(
        self,
        weights: str | os.PathLike | None = None,
        min_face_size: float | None = None,
        factor: float | None = None,
        thresholds: Sequence[float] | None = None,
        device: str | torch.device | None = None,
        *,
        preset: str | None = None,
        nets: dict[str, nn.Module] | None = None,
        backend: str = "torch",
        precision: str = "auto",
        landmarks: "str | os.PathLike | LandmarkModel" = "onet",
        cascade=None,
        rotation: str | None = None,
        pcn: "str | os.PathLike | None" = None,
        pcn_thresholds: Sequence[float] | None = None,
        **options,
    ) -> None:
        if preset is not None and preset not in DETECTOR_PRESETS:
            raise ValueError(f"unknown preset {preset!r}: choose one of {', '.join(DETECTOR_PRESETS)}")
        if nets is None:
            nets, self.weights_info = load_bundle(resolve_weights(weights))
        else:
            self.weights_info = {"path": "<in memory>", "sha256": "", "meta": {}, "detector": {}}
        # DetectorConfig's defaults, then the settings the weights were calibrated for (their
        # thresholds: each model's scores have their own scale), then the preset, then every
        # setting given (None = not given).
        settings: dict = dict(self.weights_info.get("detector", {}))
        settings.update(DETECTOR_PRESETS[preset or "default"])
        given = {"min_face_size": min_face_size, "factor": factor, "thresholds": None if thresholds is None else tuple(thresholds)}
        settings.update({k: v for k, v in given.items() if v is not None})
        settings.update(options)
        self.config: DetectorConfig = from_dict(DetectorConfig, settings)
        self.device = resolve_device(device)
        self.backend = backend
        # The PyTorch nets themselves, whatever runs them (export, copies to other devices).
        self.source_nets = {k: nets[k] for k in ("pnet", "rnet", "onet")}
        self.precision = resolve_precision(precision, self.device, backend)
        # ``precision`` applies to O-Net, whose windows near its threshold are re-run in float32
        # (mtcnn.ops.inference.CheckedNet): pass/fail is float32's. R-Net and P-Net stay float32:
        # R-Net's bf16 box offsets move O-Net's crops enough to lose faces, and P-Net gained little
        # speed for logits visibly off (measurements: docs/performance.md).
        self.pnet, self.rnet = backend_nets(nets, ("pnet", "rnet"), backend, self.device)
        (self.onet,) = backend_nets(nets, ("onet",), backend, self.device, self.precision)
        self._chunk_sizes = (self._crops_per_pass("rnet", self.rnet), self._crops_per_pass("onet", self.onet))
        self._set_landmarks(landmarks, cascade)
        if rotation not in (None, "quarter", "pcn"):
            raise ValueError(f"unknown rotation {rotation!r}: choose None (upright faces), 'quarter' or 'pcn'")
        self.rotation = rotation
        if rotation == "pcn":
            from mtcnn.rotation_pcn import PCNSettings, load_pcn

            self.pcn_nets = load_pcn(pcn, self.device)
            self.pcn_settings = PCNSettings() if pcn_thresholds is None else PCNSettings(thresholds=tuple(float(t) for t in pcn_thresholds))
            # The five points come from this detector's upright O-Net on faces turned upright.
            self.pcn_onet = prepare_for_inference(self.source_nets["onet"], self.device)

    def _crops_per_pass(self, name: str, runner) -> int:
        """R/O-Net crops per forward pass: on a GPU 1024; on a CPU as many as keep the first
        convolution's output (the largest feature maps) within ~9 MB of cache: larger chunks spill
        out of the cache and run slower per crop, smaller ones pay the per-call overhead more often
        (the chunk sizes against their neighbours: docs/performance.md)."""
        if self.device.type != "cpu":
            return 1024
        conv = next(m for m in self.source_nets[name].modules() if isinstance(m, nn.Conv2d))
        side = get_net_spec(name).crop_size - conv.kernel_size[0] + 1
        # The dtype the net runs its feature maps in (a CheckedNet's fast net decides the chunk).
        itemsize = torch.finfo(getattr(getattr(runner, "fast", runner), "dtype", torch.float32)).bits // 8
        per_crop = side * side * conv.out_channels * itemsize
        return max(8, (CPU_CHUNK_BYTES // per_crop) // 8 * 8)

    def _set_landmarks(self, landmarks, cascade=None) -> None:
        self.landmarks, self.landmark_model = "onet", None
        if isinstance(landmarks, str) and landmarks == "onet":
            return
        if isinstance(landmarks, str) and landmarks == "cascade":
            from mtcnn.cascade import LandmarkCascade, load_cascade

            model = cascade if isinstance(cascade, LandmarkCascade) else load_cascade(cascade)
            # The adapter and start calibrated for these weights, where the bundle has them.
            model = model.for_detector(self.weights_info["sha256"])
            model.precision = self.precision
        elif isinstance(landmarks, (str, os.PathLike)):
            from mtcnn.landmark_models import load_landmark_model

            model = load_landmark_model(landmarks)
        else:
            model = landmarks
        self.landmarks = str(landmarks) if isinstance(landmarks, (str, os.PathLike)) else type(landmarks).__name__
        self.landmark_model = model.to(self.device)

    def with_landmarks(self, landmarks, cascade=None) -> "MTCNN":
        """A detector sharing these nets whose points come from ``landmarks`` (see the class doc)."""
        other = object.__new__(MTCNN)
        other.__dict__.update(self.__dict__)
        other._set_landmarks(landmarks, cascade)
        return other

    @property
    def settings(self) -> dict:
        """What a report needs to reproduce a figure: detector settings and the weights' hash."""
        out = {**to_dict(self.config), "backend": self.backend, "precision": self.precision, "weights": self.weights_info["path"], "weights_sha256": self.weights_info["sha256"]}
        if self.landmark_model is not None:
            out.update(landmarks=self.landmarks, **getattr(self.landmark_model, "report_settings", {}))
        if getattr(self, "rotation", None) is not None:
            out["rotation"] = self.rotation
        return out

    def size_problem(self, height: int, width: int) -> str | None:
        """Why an image of this size is refused (``max_megapixels``), or None."""
        limit = self.config.max_megapixels
        megapixels = height * width / 1e6
        if limit is None or megapixels <= limit:
            return None
        # P-Net's first pyramid level has (12 / min_face_size)^2 of the pixels; ~100 bytes each.
        need_gb = megapixels * 1e6 * min(1.0, (12 / self.config.min_face_size) ** 2) * 100 / 1e9
        return (f"{width}x{height} is {megapixels:.1f} megapixels, more than max_megapixels={limit:g} "
                f"(it would need about {need_gb:.1f} GB): shrink the image, raise max_megapixels "
                f"(--max-megapixels), or raise min_face_size (--min-face)")

    def _to_tensors(self, images: Sequence[ImageLike]) -> list[torch.Tensor]:
        tensors = []
        for k, image in enumerate(images):
            problem = self.size_problem(int(image.shape[0]), int(image.shape[1])) if image.ndim >= 2 else None
            if problem:
                raise ValueError(f"image {k}: {problem}")
            if isinstance(image, torch.Tensor):
                if image.ndim != 3 or image.shape[2] != 3:
                    raise ValueError(f"image {k}: expected an H×W×3 RGB tensor, got shape {tuple(image.shape)}")
                if image.dtype != torch.uint8:
                    raise ValueError(f"image {k}: expected a uint8 tensor, got {image.dtype}")
                t = image.to(self.device)
            else:
                t = torch.from_numpy(to_rgb_uint8(np.asarray(image), source=f"image {k}")).to(self.device)
            tensors.append(t.permute(2, 0, 1))
        return tensors

    @torch.inference_mode()
    def detect(self, images: ImageLike | Sequence[ImageLike]) -> list[Detections]:
        """Detect faces in one image or a list of images; returns one :class:`Detections` each."""
        if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 3:
            images = [images]
        tensors = self._to_tensors(list(images))
        if not tensors:
            return []
        if getattr(self, "rotation", None) == "quarter":
            from mtcnn.rotation import detect_quarter

            return detect_quarter(self, tensors)
        if getattr(self, "rotation", None) == "pcn":
            from mtcnn.rotation_pcn import detect_pcn

            return detect_pcn(self, tensors)
        candidates = self.candidates(tensors)
        return split_by_image(candidates, len(tensors))

    def candidates(self, tensors: list[torch.Tensor]) -> Candidates:
        """Run the three stages on ``[3,H,W]`` RGB tensors (uint8, or float 0..255)."""
        cfg = self.config
        t1, t2, t3 = cfg.thresholds
        # The onnxruntime backend has its own threads; the lanes are for PyTorch's.
        lanes = cfg.lanes and self.backend == "torch"
        cands = run_pnet(
            self.pnet, tensors, min_face_size=cfg.min_face_size, factor=cfg.factor,
            threshold=t1, nms_scale=cfg.nms_pnet_scale, nms_image=cfg.nms_pnet, max_windows=cfg.pnet_max_windows,
            lanes=lanes,
        )  # fmt: skip
        mips: dict = {}
        chunk_r, chunk_o = (cfg.chunk_size, cfg.chunk_size) if cfg.chunk_size else self._chunk_sizes
        cands = run_rnet(self.rnet, tensors, cands, threshold=t2, nms=cfg.nms_rnet, chunk_size=chunk_r, mip_cache=mips,
                         max_candidates=cfg.rnet_max_candidates, lanes=lanes)
        cands = run_onet(
            self.onet, tensors, cands, threshold=t3, nms=cfg.nms_onet, nms_mode=cfg.onet_nms_mode,
            chunk_size=chunk_o, mip_cache=mips, max_candidates=cfg.onet_max_candidates, lanes=lanes,
        )  # fmt: skip
        if cfg.onet_points == "refit":
            cands = refit_points(self.onet, tensors, cands, chunk_size=chunk_o, mip_cache=mips, lanes=lanes)
        if len(cands) == 0 or self.landmark_model is None:
            return cands
        points = self.landmark_model.predict(tensors, cands.boxes, cands.image_index, cands.landmarks).to(cands.boxes.device)
        return Candidates(cands.boxes, cands.scores, cands.image_index, points)

    def with_settings(self, **changes) -> "MTCNN":
        """A detector sharing these nets with some settings changed (e.g. thresholds)."""
        other = object.__new__(MTCNN)
        other.__dict__.update(self.__dict__)
        other.config = from_dict(DetectorConfig, {**to_dict(self.config), **changes})
        return other


def split_by_image(candidates: Candidates, num_images: int) -> list[Detections]:
    """Group candidates by image, ordered by score within each image."""
    if len(candidates) == 0:
        return [Detections.empty("cpu", candidates.landmarks.shape[1]) for _ in range(num_images)]
    order = torch.argsort(candidates.image_index * 2 - candidates.scores, stable=True)
    c = candidates.select(order)
    counts = torch.bincount(c.image_index, minlength=num_images).tolist()
    boxes = c.boxes.float().cpu().split(counts)
    scores = c.scores.float().cpu().split(counts)
    marks = c.landmarks.float().cpu().split(counts)
    return [Detections(b, s, m) for b, s, m in zip(boxes, scores, marks)]
