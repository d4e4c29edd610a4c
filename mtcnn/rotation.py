"""Faces at any angle, the simple way: image rotations and the quarter-turn detector.

Angles are in degrees, counter-clockwise as the image is shown (rows down): turning an image by
90 puts the top of an upright head on the left. Coordinates are this library's continuous pixel
coordinates (pixel ``k`` spans ``[k, k+1)``), so a quarter turn maps pixel squares onto pixel
squares and boxes and points follow a quarter-turned image exactly.

* :func:`rotation_matrix` / :func:`rotate_image`: the whole image turned about its centre onto
  a canvas just large enough to hold every pixel (``W|cos| + H|sin|`` by ``W|sin| + H|cos|``,
  rounded up); quarter turns are the exact pixel permutation of ``np.rot90``, other angles
  bilinear (``cv2.warpAffine``, zeros outside the photo).
* :func:`rotate_points` / :func:`rotate_face_boxes`: what happens to the annotations. A rotated
  face box is "the rotated face's square": for a quarter turn the exact turned box (``w × h``
  becomes ``h × w``, the face keeps its size and shape exactly); for any other angle the square
  of side ``sqrt(w · h)`` (the box's area) centred on the turned centre, the upright box a
  detector would be asked to give for the turned face.
* :func:`detect_quarter`: ``MTCNN(rotation="quarter")``. Every image is searched in its four
  quarter turns in one batched call of the cascade (the detector already packs images of
  different sizes), boxes and points are mapped back exactly, and the faces of the four turns are
  merged by the last stage's NMS on their boxes in the image (the upright-equivalent boxes).
  Each kept face's angle is the angle of the face in the image: a face found upright in the image
  turned by ``k`` quarter turns is at ``-90·k`` (mod 360).
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

__all__ = [
    "ROTATION_MODES",
    "detect_quarter",
    "from_quarter_turn",
    "invert_affine",
    "is_quarter_turn",
    "rotate_face_boxes",
    "rotate_image",
    "rotate_points",
    "rotated_size",
    "rotation_matrix",
    "turn_crops",
]

#: ``MTCNN(rotation=...)``: None (upright faces only, the default) or "quarter".
ROTATION_MODES = (None, "quarter")


def is_quarter_turn(angle: float) -> bool:
    """True when ``angle`` is a whole number of quarter turns (0, ±90, ±180, ...)."""
    return float(angle) % 90.0 == 0.0


def _cos_sin(angle: float) -> tuple[float, float]:
    """cos and sin of ``angle`` degrees, exact (0, ±1) for quarter turns."""
    if is_quarter_turn(angle):
        return ((1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0))[int(float(angle) % 360.0) // 90]
    rad = math.radians(angle)
    return math.cos(rad), math.sin(rad)


def rotated_size(angle: float, width: int, height: int) -> tuple[int, int]:
    """(width, height) of the canvas that holds a ``width × height`` image turned by ``angle``."""
    c, s = _cos_sin(angle)
    # The tiny slack keeps a size that is a whole number up to rounding from growing by a pixel.
    w = math.ceil(abs(c) * width + abs(s) * height - 1e-6)
    h = math.ceil(abs(s) * width + abs(c) * height - 1e-6)
    return max(w, 1), max(h, 1)


def rotation_matrix(angle: float, width: int, height: int) -> tuple[np.ndarray, int, int]:
    """The 2×3 float64 matrix taking image coordinates to the turned canvas, and its size.

    The image turns by ``angle`` degrees counter-clockwise about its centre ``(W/2, H/2)``, which
    lands on the canvas centre: ``x' = c(x - W/2) + s(y - H/2) + W'/2``,
    ``y' = -s(x - W/2) + c(y - H/2) + H'/2`` with ``c, s = cos, sin(angle)``. For a quarter turn
    the entries are whole numbers: 90 gives ``(x, y) -> (y, W - x)``.
    """
    c, s = _cos_sin(angle)
    out_w, out_h = rotated_size(angle, width, height)
    cx, cy = width / 2.0, height / 2.0
    matrix = np.array(
        [[c, s, out_w / 2.0 - c * cx - s * cy], [-s, c, out_h / 2.0 + s * cx - c * cy]], dtype=np.float64
    )
    return matrix, out_w, out_h


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """The inverse of a 2×3 affine matrix."""
    linear = np.linalg.inv(matrix[:, :2])
    return np.concatenate([linear, -(linear @ matrix[:, 2:])], axis=1)


def rotate_image(image: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """``image`` (``H×W×C``) turned by ``angle`` on an expanded canvas, and the 2×3 matrix that
    takes its coordinates to the turned image's. Quarter turns: ``np.rot90`` (exact); other
    angles: bilinear, pixels from outside the image are 0."""
    height, width = image.shape[:2]
    matrix, out_w, out_h = rotation_matrix(angle, width, height)
    if is_quarter_turn(angle):
        return np.ascontiguousarray(np.rot90(image, int(float(angle) % 360.0) // 90)), matrix
    # warpAffine works on pixel centres (pixel k at k): shift by half a pixel on both sides.
    centre = np.array([0.5, 0.5])
    shift = matrix[:, :2] @ centre + matrix[:, 2] - centre
    on_centres = np.concatenate([matrix[:, :2], shift[:, None]], axis=1)
    turned = cv2.warpAffine(image, on_centres, (out_w, out_h), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if turned.ndim == 2 and image.ndim == 3:  # one-channel images lose their axis in OpenCV
        turned = turned[:, :, None]
    return turned, matrix


def rotate_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Points ``[..., 2]`` through a 2×3 matrix (NaN stays NaN); float64."""
    p = np.asarray(points, dtype=np.float64)
    return p @ matrix[:, :2].T + matrix[:, 2]


def rotate_face_boxes(boxes: np.ndarray, matrix: np.ndarray, angle: float) -> np.ndarray:
    """Face boxes ``[M,4]`` of an image turned by ``matrix`` (from :func:`rotation_matrix` for
    ``angle``): the rotated face's square, see the module doc. Float64."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if is_quarter_turn(angle):
        corners = rotate_points(np.stack([b[:, :2], b[:, 2:]], axis=1), matrix)
        return np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1)
    centre = rotate_points((b[:, :2] + b[:, 2:]) / 2.0, matrix)
    w = np.clip(b[:, 2] - b[:, 0], 0, None)
    h = np.clip(b[:, 3] - b[:, 1], 0, None)
    half = np.sqrt(w * h)[:, None] / 2.0
    return np.concatenate([centre - half, centre + half], axis=1)


def turn_crops(crops: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """``crops [N, C, S, S]`` each turned by ``turns[n]`` quarter turns (exact)."""
    out = crops.clone()
    for k in (1, 2, 3):
        sel = torch.nonzero(turns == k, as_tuple=True)[0]
        if sel.numel():
            out[sel] = torch.rot90(crops[sel], k, dims=(2, 3))
    return out


# --------------------------------------------------------------------------------------------
# the quarter-turn detector
# --------------------------------------------------------------------------------------------


def from_quarter_turn(points: torch.Tensor, turns: torch.Tensor, width: torch.Tensor, height: torch.Tensor) -> torch.Tensor:
    """Points ``[N, ..., 2]`` found in an image turned by ``turns[n]`` quarter turns (0-3,
    counter-clockwise), mapped back to the ``width[n] × height[n]`` image it was turned from.

    The turn ``k`` takes ``(x, y)`` to ``(y, W - x)`` (1), ``(W - x, H - y)`` (2), ``(H - y, x)``
    (3); this is its inverse: ``(W - y', x')``, ``(W - x', H - y')``, ``(y', H - x')``.
    """
    shape = (-1,) + (1,) * (points.dim() - 2)
    k = turns.reshape(shape)
    w = width.to(points.dtype).reshape(shape)
    h = height.to(points.dtype).reshape(shape)
    x, y = points[..., 0], points[..., 1]
    back_x = torch.where(k == 0, x, torch.where(k == 1, w - y, torch.where(k == 2, w - x, y)))
    back_y = torch.where(k == 0, y, torch.where(k == 1, x, torch.where(k == 2, h - y, h - x)))
    return torch.stack([back_x, back_y], dim=-1)


def detect_quarter(detector, tensors: list[torch.Tensor]):
    """:meth:`MTCNN.detect` with ``rotation="quarter"`` on ``[3,H,W]`` tensors: one
    :class:`~mtcnn.structures.Detections` per image, with ``angles`` (0, 90, 180 or 270)."""
    from mtcnn.ops.boxes import batched_nms
    from mtcnn.structures import Detections

    n = len(tensors)
    # View k * n + i is image i turned by k quarter turns.
    views = [torch.rot90(t, k, dims=(1, 2)).contiguous() if k else t for k in range(4) for t in tensors]
    cands = detector.candidates(views)
    num_points = int(cands.landmarks.shape[1])
    if len(cands) == 0:
        return [Detections.empty("cpu", num_points, with_angles=True) for _ in range(n)]
    device = cands.boxes.device
    turns = cands.image_index // n
    image = cands.image_index % n
    width = torch.tensor([t.shape[2] for t in tensors], device=device)[image]
    height = torch.tensor([t.shape[1] for t in tensors], device=device)[image]
    corners = from_quarter_turn(cands.boxes.reshape(-1, 2, 2), turns, width, height)
    boxes = torch.cat([corners.amin(dim=1), corners.amax(dim=1)], dim=1)
    points = from_quarter_turn(cands.landmarks, turns, width, height)
    angles = ((4 - turns) % 4).to(torch.float32) * 90.0
    cfg = detector.config
    keep = batched_nms(boxes, cands.scores, image, cfg.nms_onet, cfg.onet_nms_mode)
    # Grouped by image, by decreasing score within each (as split_by_image orders them).
    order = keep[torch.argsort(image[keep] * 2 - cands.scores[keep], stable=True)]
    counts = torch.bincount(image[order], minlength=n).tolist()
    parts = [t[order].float().cpu().split(counts) for t in (boxes, cands.scores, points, angles)]
    return [Detections(b, s, p, a) for b, s, p, a in zip(*parts)]
