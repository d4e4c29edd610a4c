"""Do two detectors give the same detections? For backends and speed-ups that must not change
results: every face of one run matched one-to-one by a face of the other at high IoU with
nearly the same score."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from mtcnn.ops.boxes import box_iou
from mtcnn.structures import Detections


@dataclass
class Parity:
    """``reference`` vs ``other`` over a set of images.

    matched: faces paired one-to-one (maximum total IoU) with IoU ≥ ``iou`` and
    |score difference| ≤ ``score_tol``; ``min_iou`` / ``max_score_diff`` are over the
    IoU-paired faces (whether or not they passed); ``same`` when every face on both sides matched.
    """

    images: int
    reference_faces: int
    other_faces: int
    matched: int
    min_iou: float
    max_score_diff: float
    iou: float
    score_tol: float

    @property
    def same(self) -> bool:
        return self.matched == self.reference_faces == self.other_faces

    def line(self) -> str:
        verdict = "same" if self.same else "DIFFERENT"
        return (
            f"{verdict}: {self.matched}/{self.reference_faces} reference faces matched ({self.other_faces} found) on "
            f"{self.images} images at IoU ≥ {self.iou:g} and |Δscore| ≤ {self.score_tol:g}; "
            f"worst IoU {self.min_iou:.4f}, worst |Δscore| {self.max_score_diff:.2e}"
        )


def compare_detections(
    reference: Sequence[Detections], other: Sequence[Detections], iou: float = 0.95, score_tol: float = 1e-3
) -> Parity:
    if len(reference) != len(other):
        raise ValueError(f"{len(reference)} reference results but {len(other)} others")
    matched, min_iou, max_diff = 0, 1.0, 0.0
    for a, b in zip(reference, other):
        if len(a) == 0 or len(b) == 0:
            continue
        overlap = box_iou(a.boxes.float(), b.boxes.float()).numpy()
        rows, cols = linear_sum_assignment(-overlap)
        pair_iou = overlap[rows, cols]
        diff = np.abs(a.scores.numpy()[rows] - b.scores.numpy()[cols])
        matched += int(((pair_iou >= iou) & (diff <= score_tol)).sum())
        min_iou = min(min_iou, float(pair_iou.min()))
        max_diff = max(max_diff, float(diff.max()))
    return Parity(
        images=len(reference), reference_faces=sum(map(len, reference)), other_faces=sum(map(len, other)),
        matched=matched, min_iou=min_iou, max_score_diff=max_diff, iou=iou, score_tol=score_tol,
    )  # fmt: skip
