"""Box and landmark offsets relative to a reference box, as exact inverse pairs.

Box offsets (SPEC §1, §6): for a reference box ``b`` with ``w = x2 - x1``, ``h = y2 - y1``,
``offset = ((t.x1 - b.x1)/w, (t.y1 - b.y1)/h, (t.x2 - b.x2)/w, (t.y2 - b.y2)/h)``. Training
crops are square, so w = h = the crop side. Landmarks are normalised into the reference box:
``u = (x - b.x1)/w``, ``v = (y - b.y1)/h`` (no "-1": SPEC §11).
"""

from __future__ import annotations

import torch

from mtcnn.ops.conventions import FLIP_POINT_ORDER


def _wh(boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]


def encode_boxes(reference: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Offsets ``[N, 4]`` that move ``reference [N,4]`` onto ``target [N,4]``."""
    w, h = _wh(reference)
    scale = torch.stack([w, h, w, h], dim=1)
    return (target - reference) / scale


def decode_boxes(reference: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Apply offsets ``[N, 4]`` to ``reference [N,4]`` (MTCNN calibration / ``bbreg``)."""
    w, h = _wh(reference)
    scale = torch.stack([w, h, w, h], dim=1)
    return reference + offsets * scale


def encode_landmarks(reference: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Points ``[N, K, 2]`` in pixels -> coordinates normalised to ``reference [N,4]``."""
    w, h = _wh(reference)
    origin = reference[:, None, :2]
    size = torch.stack([w, h], dim=1)[:, None, :]
    return (points - origin) / size


def decode_landmarks(reference: torch.Tensor, normalised: torch.Tensor) -> torch.Tensor:
    """Normalised ``[N, K, 2]`` -> pixel points, the inverse of :func:`encode_landmarks`."""
    w, h = _wh(reference)
    origin = reference[:, None, :2]
    size = torch.stack([w, h], dim=1)[:, None, :]
    return origin + normalised * size


def flatten_landmarks(points: torch.Tensor) -> torch.Tensor:
    """``[N, K, 2]`` -> ``[N, 2K]`` interleaved x, y (the stored/trained layout)."""
    return points.reshape(points.shape[0], -1)


def unflatten_landmarks(flat: torch.Tensor) -> torch.Tensor:
    """``[N, 2K]`` interleaved x, y -> ``[N, K, 2]``."""
    return flat.reshape(flat.shape[0], flat.shape[1] // 2, 2)



def flip_landmarks(landmark: torch.Tensor) -> torch.Tensor:
    """Crop-normalised five-point landmarks ``[..., 10]`` of a mirrored crop: x -> 1 - x, LE<->RE, LM<->RM."""
    pts = landmark.reshape(*landmark.shape[:-1], 5, 2)[..., list(FLIP_POINT_ORDER), :]
    pts = torch.stack((1.0 - pts[..., 0], pts[..., 1]), dim=-1)
    return pts.reshape(landmark.shape)


def flip_box_offsets(bbox: torch.Tensor) -> torch.Tensor:
    """Box offsets ``[..., 4]`` of a mirrored square crop: ``(-dx2, dy1, -dx1, dy2)`` (the fix of
    AITTSMD#81 / #299: the box targets must be mirrored with the pixels)."""
    return torch.stack((-bbox[..., 2], bbox[..., 1], -bbox[..., 0], bbox[..., 3]), dim=-1)
