"""Detector settings (SPEC §6, §11) and their presets."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Any

from mtcnn.config.core import bounded


@dataclass
class DetectorConfig:
    """Detector constants (SPEC §6, §11). Defaults are the MTCNN demo settings."""

    min_face_size: float = bounded(20.0, 4.0, None, help="smallest face side in pixels the pyramid looks for")
    factor: float = bounded(0.709, 0.1, 0.99, help="pyramid scale step")
    thresholds: tuple[float, float, float] = bounded((0.6, 0.7, 0.7), 0.0, 1.0)
    nms_pnet_scale: float = bounded(0.5, 0.0, 1.0, help="union NMS within one pyramid level")
    nms_pnet: float = bounded(0.7, 0.0, 1.0, help="union NMS across levels")
    nms_rnet: float = bounded(0.7, 0.0, 1.0)
    nms_onet: float = bounded(0.7, 0.0, 1.0, help="'min' NMS after O-Net")
    onet_nms_mode: typing.Literal["union", "min"] = "min"
    # refit: O-Net places each face's points again in a crop of its final (calibrated) box, one more
    # O-Net pass over the faces found; crop: the points of the crop that won O-Net's NMS, as the
    # original MTCNN does (mtcnn.stages.refit_points says why).
    onet_points: typing.Literal["refit", "crop"] = "refit"
    chunk_size: int | None = bounded(None, 1, None, help="R/O-Net crops per forward pass; null: on a CPU as many as keep the first feature maps within ~9 MB (R-Net 168, O-Net 32 or 64 in bfloat16), 1024 on a GPU")
    # Off by default: on an idle 2-core machine the lanes were slower in bfloat16 and within the
    # noise in float32 (docs/performance.md); they held up far better on a contended machine.
    lanes: bool = bounded(False, help="on a CPU at 2 intra-op threads, run P-Net's canvases and R/O-Net's chunks in two lanes (two threads, one intra-op thread each; mtcnn.ops.lanes): the same results; helps when other jobs share the cores")
    # Bounds on the work when P-Net fires on most of a photo (an LED wall at min face 10: 138k
    # windows on one level, 50k candidates for R-Net). Above every count measured on dlib_faces
    # and face_mask at both presets with both weight sets (most: 2,060 windows on a level, 4,300
    # R-Net and 374 O-Net candidates), so those results are unchanged.
    pnet_max_windows: int | None = bounded(
        10_000, 1, None, help="at most this many P-Net windows per pyramid level enter NMS, the highest-scoring; null: all")
    rnet_max_candidates: int | None = bounded(
        5_000, 1, None, help="at most this many candidates per image enter R-Net, the highest P-Net scores; null: all")
    onet_max_candidates: int | None = bounded(
        1_000, 1, None, help="at most this many candidates per image enter O-Net, the highest R-Net scores; null: all")
    max_megapixels: float | None = bounded(
        50.0, 0.01, None,
        help="refuse larger images: memory grows by about 35 MB per megapixel at min_face_size 20, 4x that at 10 "
             "(50 MP: about 1.8 GB); null: no limit")


DETECTOR_PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    # The paper's WIDER FACE evaluation setting ([K] README).
    "wider": {"min_face_size": 10.0, "factor": 0.79, "thresholds": (0.5, 0.5, 0.3)},
}
