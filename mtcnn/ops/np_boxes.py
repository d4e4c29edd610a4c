"""The numpy twins of :mod:`mtcnn.ops.boxes` and :mod:`mtcnn.ops.coding`: same names, same
conventions (``(x1, y1, x2, y2)`` float, 0-based, width = ``x2 - x1``, no +1), same results
(``tests/ops/test_np_boxes.py`` checks each against its torch version). Data generation and
evaluation work on numpy arrays per image; the detector and training on tensors.

Outputs are float64 (callers that store float32 cast); empty inputs give empty outputs.
"""

from __future__ import annotations

import numpy as np

from mtcnn.ops.conventions import FLIP_POINT_ORDER, OverlapMode


def _boxes(boxes) -> np.ndarray:
    return np.asarray(boxes, np.float64).reshape(-1, 4)


def box_area(boxes) -> np.ndarray:
    """Areas ``[N]``; degenerate (inverted) boxes have area 0."""
    b = _boxes(boxes)
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


def _intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[..., :2], b[..., :2])
    rb = np.minimum(a[..., 2:], b[..., 2:])
    wh = np.clip(rb - lt, 0, None)
    return wh[..., 0] * wh[..., 1]


def _overlap_from(inter: np.ndarray, area_a: np.ndarray, area_b: np.ndarray, mode: OverlapMode) -> np.ndarray:
    if mode == "union":
        denom = area_a + area_b - inter
    elif mode == "min":
        denom = np.minimum(area_a, area_b)
    else:
        raise ValueError(f"overlap mode must be 'union' or 'min', got {mode!r}")
    return np.where(denom > 0, inter / np.maximum(denom, np.finfo(np.float64).tiny), 0.0)


def box_iou(a, b, mode: OverlapMode = "union") -> np.ndarray:
    """Pairwise overlap ``[N, M]`` (``mode="min"``: intersection over the smaller area)."""
    a, b = _boxes(a), _boxes(b)
    inter = _intersection(a[:, None, :], b[None, :, :])
    return _overlap_from(inter, box_area(a)[:, None], box_area(b)[None, :], mode)


def paired_iou(a, b, mode: OverlapMode = "union") -> np.ndarray:
    """Overlap of row i of ``a`` with row i of ``b``: ``[N]``."""
    a, b = _boxes(a), _boxes(b)
    return _overlap_from(_intersection(a, b), box_area(a), box_area(b), mode)


def nms(boxes, scores, threshold: float, mode: OverlapMode = "union") -> np.ndarray:
    """Greedy NMS: indices of the kept boxes by descending score (stable on ties); a box is
    suppressed when its overlap with a kept one is > ``threshold``."""
    b = _boxes(boxes)
    order = np.argsort(-np.asarray(scores, np.float64).reshape(-1), kind="stable")
    keep: list[int] = []
    suppressed = np.zeros(len(b), bool)
    overlap = box_iou(b, b, mode)
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= overlap[i] > threshold
    return np.asarray(keep, np.int64)


def square_boxes(boxes, expand: float = 0.0) -> np.ndarray:
    """Squares with side max(w, h) · (1 + expand) around each box's centre (MTCNN's ``rerec``)."""
    b = _boxes(boxes)
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    half = np.maximum(w, h) * 0.5 * (1.0 + expand)
    cx, cy = b[:, 0] + w * 0.5, b[:, 1] + h * 0.5
    return np.stack([cx - half, cy - half, cx + half, cy + half], axis=1)


def clip_boxes(boxes, width, height) -> np.ndarray:
    """Clamp boxes to the image ``[0, width] × [0, height]`` (sizes may be per-box ``[N]``)."""
    b = np.clip(_boxes(boxes), 0, None)
    w, h = np.asarray(width, np.float64), np.asarray(height, np.float64)
    return np.stack([np.minimum(b[:, 0], w), np.minimum(b[:, 1], h), np.minimum(b[:, 2], w), np.minimum(b[:, 3], h)], axis=1)


def _scale(reference: np.ndarray) -> np.ndarray:
    w, h = reference[:, 2] - reference[:, 0], reference[:, 3] - reference[:, 1]
    return np.stack([w, h, w, h], axis=1)


def encode_boxes(reference, target) -> np.ndarray:
    """Offsets ``[N, 4]`` that move ``reference`` onto ``target``: ``(t - r) / (w, h, w, h)``."""
    r = _boxes(reference)
    return (_boxes(target) - r) / _scale(r)


def decode_boxes(reference, offsets) -> np.ndarray:
    """Apply offsets ``[N, 4]`` to ``reference`` (the inverse of :func:`encode_boxes`)."""
    r = _boxes(reference)
    return r + np.asarray(offsets, np.float64).reshape(-1, 4) * _scale(r)


def encode_landmarks(reference, points) -> np.ndarray:
    """Points ``[N, K, 2]`` in pixels -> coordinates normalised to ``reference [N,4]``."""
    r = _boxes(reference)
    size = np.stack([r[:, 2] - r[:, 0], r[:, 3] - r[:, 1]], axis=1)[:, None, :]
    return (np.asarray(points, np.float64) - r[:, None, :2]) / size


def decode_landmarks(reference, normalised) -> np.ndarray:
    """Normalised ``[N, K, 2]`` -> pixel points (the inverse of :func:`encode_landmarks`)."""
    r = _boxes(reference)
    size = np.stack([r[:, 2] - r[:, 0], r[:, 3] - r[:, 1]], axis=1)[:, None, :]
    return r[:, None, :2] + np.asarray(normalised, np.float64) * size


def flip_landmarks(landmark) -> np.ndarray:
    """Crop-normalised five-point landmarks ``[..., 10]`` of a mirrored crop: x -> 1 - x,
    LE<->RE, LM<->RM (the image-left eye of the mirrored face is the old right eye)."""
    lm = np.asarray(landmark)
    pts = lm.reshape(*lm.shape[:-1], 5, 2)[..., list(FLIP_POINT_ORDER), :]
    return np.stack((1.0 - pts[..., 0], pts[..., 1]), axis=-1).reshape(lm.shape).astype(lm.dtype, copy=False)


def flip_box_offsets(bbox) -> np.ndarray:
    """Box offsets ``[..., 4]`` of a mirrored square crop: ``(-dx2, dy1, -dx1, dy2)``."""
    b = np.asarray(bbox)
    return np.stack((-b[..., 2], b[..., 1], -b[..., 0], b[..., 3]), axis=-1)


__all__ = [
    "FLIP_POINT_ORDER", "box_area", "box_iou", "clip_boxes", "decode_boxes", "decode_landmarks", "encode_boxes",
    "encode_landmarks", "flip_box_offsets", "flip_landmarks", "nms", "paired_iou", "square_boxes",
]
