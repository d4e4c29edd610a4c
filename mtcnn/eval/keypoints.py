"""Evaluation of landmark models on in-memory face crops: tables, CED plots and face mosaics.

* 68 points: NME normalised by the outer-eye-corner distance (points 36 and 45, the 300-W
  "inter-ocular" definition), failure = sample NME > 0.10, CED up to 0.3.
* 5 points (the MobileNet-V2 cascade, next to the Sun cascade): the mean point error divided
  by the face-box width (Sun et al.'s metric, SPEC §7 / §11) with its per-point errors and
  failure rate, plus the inter-ocular NME (eye centres), for each level.

Mosaics draw the ground truth (green) and the prediction (red) on each face's crop, with the
sample's error written in the corner; :func:`best_and_worst` orders samples by error.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch

from mtcnn.data.face_crops import FaceCrops
from mtcnn.data.keypoint_aug import warp
from mtcnn.eval.landmarks import LandmarkReport, evaluate_landmarks

FIVE_POINT_NAMES = ("LE", "RE", "N", "LM", "RM")
GT_COLOUR, PRED_COLOUR = (0, 220, 0), (255, 40, 40)


def report_68(pred_px: np.ndarray, gt_px: np.ndarray, failure_threshold: float = 0.10) -> LandmarkReport:
    """68-point errors normalised by the outer-eye-corner distance."""
    return evaluate_landmarks(pred_px, gt_px, "outer-eye-corners", failure_threshold=failure_threshold)


def report_5(pred_px: np.ndarray, gt_px: np.ndarray, boxes: np.ndarray, failure_threshold: float = 0.10) -> dict[str, LandmarkReport]:
    """5-point errors by box width (Sun et al.) and by inter-ocular (eye-centre) distance."""
    return {
        "box_width": evaluate_landmarks(pred_px, gt_px, "box-width", boxes=boxes, failure_threshold=failure_threshold),
        "inter_ocular": evaluate_landmarks(pred_px, gt_px, "inter-ocular", failure_threshold=failure_threshold),
    }


def five_point_row(name: str, reports: dict[str, LandmarkReport]) -> str:
    """One row of the Sun cascade's table (``mtcnn.eval.cascade.markdown_table``'s columns): mean and
    per-point error / box width, error / inter-ocular distance, point failures > 5 % (mean, worst
    point) and > 10 % of the box width."""
    bw = reports["box_width"]
    per = " | ".join(f"{v:.4f}" for v in bw.per_point_nme)
    fail5 = (bw.errors > 0.05).mean(axis=0)
    fail10 = float((bw.errors > 0.10).mean())
    return (f"| {name} | {bw.nme:.4f} | {per} | {reports['inter_ocular'].nme:.4f} | "
            f"{100 * fail5.mean():.1f} % ({100 * fail5.max():.1f} %) | {100 * fail10:.2f} % |")


FIVE_POINT_HEADER = (
    "| points | mean err/box | " + " | ".join(FIVE_POINT_NAMES) + " | err/IOD | fail@5% (worst point) | fail@10% |\n"
    "|" + "---|" * (len(FIVE_POINT_NAMES) + 5)
)


def best_and_worst(sample_errors: np.ndarray, count: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the ``count`` lowest-error samples (best first) and highest (worst first)."""
    order = np.argsort(np.asarray(sample_errors), kind="stable")
    return order[:count], order[::-1][:count]


def render_faces(crops: FaceCrops, index: Sequence[int], cell: int) -> np.ndarray:
    """The reference windows of ``crops[index]`` as RGB uint8 ``[n, cell, cell, 3]``."""
    idx = torch.as_tensor(np.asarray(index, np.int64))
    n = len(idx)
    eye = torch.eye(2, dtype=torch.float64).expand(n, 2, 2)
    images, _ = warp(crops.images[idx], crops.points[idx], crops.context, cell, eye, torch.zeros(n, 2))
    images = images.round().clamp(0, 255).to(torch.uint8)
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    return images.permute(0, 2, 3, 1).contiguous().numpy()


def _draw(canvas: np.ndarray, ref_points: np.ndarray, colour, cell: int, radius: int) -> None:
    for x, y in ref_points:
        if np.isfinite(x) and np.isfinite(y):
            cv2.circle(canvas, (int(round((x + 1) * cell / 2)), int(round((y + 1) * cell / 2))), radius, colour, -1, cv2.LINE_AA)


def face_mosaic(crops: FaceCrops, pred_ref: np.ndarray, index: Sequence[int], errors: np.ndarray | None = None,
                cell: int = 112, columns: int = 10) -> np.ndarray:
    """RGB mosaic of faces ``index`` with ground truth (green) and predictions (red) drawn."""
    index = list(index)
    faces = render_faces(crops, index, cell)
    rows = max(1, -(-len(index) // columns))
    mosaic = np.zeros((rows * cell, columns * cell, 3), np.uint8)
    radius = 1 if crops.num_landmarks > 10 else 2
    gt = crops.points.numpy()
    for k, i in enumerate(index):
        tile = np.ascontiguousarray(faces[k])
        _draw(tile, gt[i], GT_COLOUR, cell, radius)
        _draw(tile, np.asarray(pred_ref[i]), PRED_COLOUR, cell, radius)
        if errors is not None:
            cv2.putText(tile, f"{errors[i]:.3f}", (2, 11), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 0), 1, cv2.LINE_AA)
        r, c = divmod(k, columns)
        mosaic[r * cell : (r + 1) * cell, c * cell : (c + 1) * cell] = tile
    return mosaic


def write_png(path: str | os.PathLike, rgb: np.ndarray) -> Path:
    """Write an RGB image as PNG atomically (a temporary file, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:
        raise ValueError(f"{path}: could not encode the image as PNG")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data.tobytes())
    os.replace(tmp, path)
    return path
