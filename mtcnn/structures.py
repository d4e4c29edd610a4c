"""Core typed structures shared by every part of the library.

The label convention is written down once, here, together with the masks each loss uses
(SPEC §1 and §3): negatives feed classification only, positives feed classification and box
regression, part faces feed box regression only, landmark samples feed landmark regression only.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import torch


class Label(IntEnum):
    POS = 1
    NEG = 0
    PART = -1
    LANDMARK = -2


def classification_mask(labels: torch.Tensor) -> torch.Tensor:
    """Samples that train the face/non-face head: positives and negatives."""
    return (labels == Label.POS) | (labels == Label.NEG)


def box_mask(labels: torch.Tensor) -> torch.Tensor:
    """Samples that train box regression: positives and part faces."""
    return (labels == Label.POS) | (labels == Label.PART)


def landmark_mask(labels: torch.Tensor) -> torch.Tensor:
    """Samples that train landmark regression: landmark samples only."""
    return labels == Label.LANDMARK


@dataclass(frozen=True)
class Detections:
    """Faces found in one image.

    boxes:     float32 [N, 4] (x1, y1, x2, y2), 0-based pixels, width = x2 - x1.
    scores:    float32 [N], the last stage's face probability.
    landmarks: float32 [N, K, 2] (x, y); K = 5 (left eye, right eye, nose, left mouth, right
               mouth) unless the detector's landmark model has another number (68: iBUG order).
               Image coordinates whatever the face's angle; "left eye" is the face's own left
               as seen upright (the image's left when the face is upright).
    angles:    float32 [N] or ``None``: each face's in-plane rotation in degrees,
               counter-clockwise as the image is shown (0 upright, 90 the top of the head
               pointing left); turning the image by ``-angle`` makes the face upright. ``None``
               (the default detector, ``rotation=None``) means every face was searched upright.

    No faces is the empty form (N = 0), never ``None``.
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    landmarks: torch.Tensor
    angles: torch.Tensor | None = None

    def __post_init__(self):
        n = self.boxes.shape[0]
        lm = self.landmarks.shape
        if self.boxes.shape != (n, 4) or self.scores.shape != (n,) or len(lm) != 3 or lm[0] != n or lm[2] != 2 or lm[1] < 1:
            raise ValueError(
                "Detections needs boxes [N,4], scores [N], landmarks [N,K,2]; got "
                f"{tuple(self.boxes.shape)}, {tuple(self.scores.shape)}, {tuple(self.landmarks.shape)}"
            )
        if self.angles is not None and self.angles.shape != (n,):
            raise ValueError(f"Detections needs angles [N] (or None); got {tuple(self.angles.shape)} for {n} faces")

    @classmethod
    def empty(cls, device: torch.device | str = "cpu", num_landmarks: int = 5, with_angles: bool = False) -> "Detections":
        return cls(
            boxes=torch.zeros((0, 4), dtype=torch.float32, device=device),
            scores=torch.zeros((0,), dtype=torch.float32, device=device),
            landmarks=torch.zeros((0, num_landmarks, 2), dtype=torch.float32, device=device),
            angles=torch.zeros((0,), dtype=torch.float32, device=device) if with_angles else None,
        )

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def to(self, device: torch.device | str) -> "Detections":
        angles = None if self.angles is None else self.angles.to(device)
        return Detections(self.boxes.to(device), self.scores.to(device), self.landmarks.to(device), angles)

    def to_records(self) -> list[dict]:
        """Plain-Python records in the detect CLI's JSON schema (one dict per face); ``"angle"``
        only when the detector searched rotated faces (``angles`` not ``None``)."""
        boxes = self.boxes.detach().cpu().tolist()
        scores = self.scores.detach().cpu().tolist()
        landmarks = self.landmarks.detach().cpu().tolist()
        records = [
            {"box": [round(v, 2) for v in b], "score": round(s, 5), "landmarks": [[round(x, 2), round(y, 2)] for x, y in lm]}
            for b, s, lm in zip(boxes, scores, landmarks)
        ]
        if self.angles is not None:
            for record, angle in zip(records, self.angles.detach().cpu().tolist()):
                record["angle"] = round(angle, 2)
        return records


def image_record(path, width: int, height: int, detections: Detections, orientation: int | None = None) -> dict:
    """One image in the detect CLI's JSON-lines schema:
    ``{"image", "width", "height", ["exif_orientation",] "faces": [{"box", "score", "landmarks"}]}``.

    ``exif_orientation`` (1-8, 1 = stored upright) is the EXIF orientation applied when reading:
    width, height, boxes and landmarks are in the upright frame it gives. Each face also has
    ``"angle"`` when the detector searched rotated faces (:attr:`Detections.angles`)."""
    record = {"image": str(path), "width": int(width), "height": int(height)}
    if orientation is not None:
        record["exif_orientation"] = int(orientation)
    record["faces"] = detections.to_records()
    return record
