"""Face-detection metrics: greedy matching, VOC average precision, WIDER FACE and FDDB protocols.

Everything here is plain numpy (plus ``scipy.io`` / ``scipy.optimize`` for the WIDER ``.mat``
files and the FDDB assignment); no detector or torch code is needed.

Box convention of every public input and output: float ``(x1, y1, x2, y2)``, 0-based pixels,
width = ``x2 - x1`` (no +1), as everywhere in the project (SPEC §11). Detections of one image are
either an array ``[K, 5]`` (x1, y1, x2, y2, score) or a pair ``(boxes [K, 4], scores [K])``.

Three families of metrics live here:

* :func:`match_detections` / :func:`evaluate_detections`: the generic protocol (greedy matching by
  descending score, each ground-truth face matched at most once, "ignored" faces that neither
  reward nor penalise a detection), precision/recall over the score-sorted list, VOC all-point
  AP at any IoU threshold and recall at a fixed number of false positives.
* :func:`evaluate_wider`: a re-implementation of the official WIDER FACE evaluation (the widely
  used Python port ``evaluation.py`` of the Matlab ``eval_tools``). It keeps that code's
  conventions, which differ from ours: boxes become ``x, y, w, h`` with ``x2 = x + w`` and IoU
  uses the +1 pixel convention; see :func:`evaluate_wider_curves` for the (few) documented
  deviations.
* :func:`evaluate_fddb`: the FDDB discrete and continuous ROC (ellipse annotations against
  rectangle detections, overlaps measured on a pixel grid, maximum-weight assignment).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mtcnn.ops.np_boxes import box_iou  # noqa: F401  (part of this module's interface)

DEFAULT_FP_POINTS: tuple[int, ...] = (10, 50, 100, 500, 1000, 2000)
WIDER_SETTINGS: tuple[str, ...] = ("easy", "medium", "hard")
WIDER_THRESH_NUM = 1000


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    """numpy scalars/arrays -> Python lists/floats; NaN and inf -> None (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return f if math.isfinite(f) else None
    return value


def _split_detections(item: Any) -> tuple[np.ndarray, np.ndarray]:
    """One image's detections -> (boxes [K,4] float64, scores [K] float64)."""
    if isinstance(item, tuple) and len(item) == 2:
        boxes = np.asarray(item[0], dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(item[1], dtype=np.float64).reshape(-1)
    else:
        arr = np.asarray(item, dtype=np.float64)
        if arr.size == 0:
            return np.zeros((0, 4)), np.zeros((0,))
        arr = arr.reshape(-1, arr.shape[-1])
        if arr.shape[1] != 5:
            raise ValueError(f"detections must be [K,5] (x1,y1,x2,y2,score) or (boxes, scores); got {arr.shape}")
        boxes, scores = arr[:, :4], arr[:, 4]
    if boxes.shape[0] != scores.shape[0]:
        raise ValueError(f"{boxes.shape[0]} boxes but {scores.shape[0]} scores")
    return boxes, scores


def _split_ground_truth(item: Any) -> tuple[np.ndarray, np.ndarray]:
    """One image's ground truth -> (boxes [M,4], ignore [M] bool). Accepts boxes or (boxes, ignore)."""
    if isinstance(item, tuple) and len(item) == 2:
        boxes = np.asarray(item[0], dtype=np.float64).reshape(-1, 4)
        ignore = item[1]
    else:
        boxes = np.asarray(item, dtype=np.float64).reshape(-1, 4)
        ignore = None
    if ignore is None:
        ignore = np.zeros(boxes.shape[0], dtype=bool)
    ignore = np.asarray(ignore, dtype=bool).reshape(-1)
    if ignore.shape[0] != boxes.shape[0]:
        raise ValueError(f"{boxes.shape[0]} ground-truth boxes but {ignore.shape[0]} ignore flags")
    return boxes, ignore


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC all-point interpolated AP (area under the precision envelope).

    Sentinels (recall 0 / precision 0 in front, recall 1 / precision 0 at the end), precision made
    monotone from the right, then ``sum(Δrecall · precision)`` where recall changes. Identical to
    the ``voc_ap`` of the WIDER evaluation (including its handling of NaN precision entries, which
    propagate only towards lower recall and never reach the sum when they sit at recall 0).
    """
    rec = np.asarray(recall, dtype=np.float64).reshape(-1)
    prec = np.asarray(precision, dtype=np.float64).reshape(-1)
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


# --------------------------------------------------------------------------------------------
# generic protocol
# --------------------------------------------------------------------------------------------


@dataclass
class MatchResult:
    """Per-detection outcome of :func:`match_detections`, in the detections' input order.

    tp / fp / ignored are mutually exclusive boolean flags (exactly one is set per detection);
    gt_index is the matched ground-truth index (-1 for a false positive); iou its IoU (0 for FP).
    """

    tp: np.ndarray
    fp: np.ndarray
    ignored: np.ndarray
    gt_index: np.ndarray
    iou: np.ndarray


def match_detections(
    det_boxes: np.ndarray,
    det_scores: np.ndarray,
    gt_boxes: np.ndarray,
    gt_ignore: np.ndarray | None = None,
    iou_threshold: float = 0.5,
) -> MatchResult:
    """Greedy matching of one image's detections to its ground truth.

    Detections are visited by descending score (stable for ties). A detection becomes a true
    positive of the not-yet-matched, non-ignored face with which it has the highest IoU
    (IoU ≥ ``iou_threshold``); each such face is matched at most once, so a duplicate detection of
    an already matched face is a false positive. Otherwise, if it overlaps an ignored face with
    IoU ≥ ``iou_threshold`` it is dropped (``ignored``: neither TP nor FP; an ignored face absorbs
    any number of detections, like VOC "difficult" objects and the WIDER protocol). Otherwise it is
    a false positive. Non-ignored faces are preferred over ignored ones (as in COCO).
    """
    boxes = np.asarray(det_boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(det_scores, dtype=np.float64).reshape(-1)
    gts = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    k, m = boxes.shape[0], gts.shape[0]
    if scores.shape[0] != k:
        raise ValueError(f"{k} detection boxes but {scores.shape[0]} scores")
    ignore = np.zeros(m, dtype=bool) if gt_ignore is None else np.asarray(gt_ignore, dtype=bool).reshape(-1)
    if ignore.shape[0] != m:
        raise ValueError(f"{m} ground-truth boxes but {ignore.shape[0]} ignore flags")

    tp = np.zeros(k, dtype=bool)
    fp = np.zeros(k, dtype=bool)
    ignored = np.zeros(k, dtype=bool)
    gt_index = np.full(k, -1, dtype=np.int64)
    best_iou = np.zeros(k, dtype=np.float64)
    if k == 0:
        return MatchResult(tp, fp, ignored, gt_index, best_iou)
    if m == 0:
        fp[:] = True
        return MatchResult(tp, fp, ignored, gt_index, best_iou)

    ious = box_iou(boxes, gts)
    hit = ious >= iou_threshold  # [K, M]
    matched = np.zeros(m, dtype=bool)
    for d in np.argsort(-scores, kind="stable"):
        row = ious[d]
        cand = hit[d] & ~ignore & ~matched
        if cand.any():
            g = int(np.argmax(np.where(cand, row, -1.0)))
            matched[g] = True
            tp[d] = True
        else:
            cand = hit[d] & ignore
            if cand.any():
                g = int(np.argmax(np.where(cand, row, -1.0)))
                ignored[d] = True
            else:
                fp[d] = True
                continue
        gt_index[d] = g
        best_iou[d] = row[g]
    return MatchResult(tp, fp, ignored, gt_index, best_iou)


@dataclass
class DetectionReport:
    """Result of :func:`evaluate_detections`.

    The curve arrays run over the non-ignored detections of all images sorted by descending score
    (one entry per detection, i.e. per score threshold): ``scores`` the threshold, ``tp`` / ``fp``
    the cumulative true / false positives at that threshold, ``precision`` = tp / (tp + fp),
    ``recall`` = tp / num_gt (all zeros when there is no non-ignored face).
    ``ap`` is the VOC all-point interpolated AP (0 when there are no detections or no faces).
    ``recall_at_fp[n]`` is the highest recall reached with at most ``n`` false positives.
    """

    iou_threshold: float
    num_gt: int
    num_detections: int
    num_ignored: int
    scores: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    ap: float
    recall_at_fp: dict[int, float] = field(default_factory=dict)

    def recall_at(self, max_false_positives: int) -> float:
        """Highest recall reached with at most ``max_false_positives`` false positives."""
        return _recall_at_fp(self.fp, self.recall, max_false_positives)

    def to_dict(self, curves: bool = True) -> dict:
        """JSON-ready dict (NaN/inf become null); ``curves=False`` leaves out the per-threshold arrays."""
        out: dict[str, Any] = {
            "iou_threshold": float(self.iou_threshold),
            "ap": float(self.ap),
            "num_gt": int(self.num_gt),
            "num_detections": int(self.num_detections),
            "num_ignored": int(self.num_ignored),
            "recall_at_fp": {str(k): float(v) for k, v in self.recall_at_fp.items()},
        }
        if curves:
            out.update(
                scores=self.scores, tp=self.tp, fp=self.fp, precision=self.precision, recall=self.recall
            )
        return _jsonable(out)


def _recall_at_fp(fp_cum: np.ndarray, recall: np.ndarray, n: int) -> float:
    if fp_cum.size == 0:
        return 0.0
    idx = np.searchsorted(fp_cum, n, side="right")  # fp_cum is non-decreasing
    return float(recall[idx - 1]) if idx > 0 else 0.0


def evaluate_detections(
    detections: Sequence[Any],
    ground_truth: Sequence[Any],
    iou_threshold: float = 0.5,
    fp_points: Iterable[int] = DEFAULT_FP_POINTS,
) -> DetectionReport:
    """Precision/recall, VOC AP and recall at N false positives over a set of images.

    detections:   per image ``(boxes [K,4], scores [K])`` or an array ``[K,5]`` (x1,y1,x2,y2,score).
    ground_truth: per image ``(boxes [M,4], ignore [M] bool)`` or just ``boxes [M,4]`` (nothing
                  ignored). Boxes in our convention (width = x2 - x1).
    iou_threshold: IoU needed for a match (0.5 = the usual AP50; pass e.g. 0.75 for a stricter AP).
    """
    if len(detections) != len(ground_truth):
        raise ValueError(f"{len(detections)} detection entries but {len(ground_truth)} ground-truth entries")
    all_scores, all_tp, all_fp = [], [], []
    num_gt = num_det = num_ign = 0
    for det_item, gt_item in zip(detections, ground_truth):
        boxes, scores = _split_detections(det_item)
        gt_boxes, gt_ignore = _split_ground_truth(gt_item)
        res = match_detections(boxes, scores, gt_boxes, gt_ignore, iou_threshold)
        keep = ~res.ignored
        all_scores.append(scores[keep])
        all_tp.append(res.tp[keep])
        all_fp.append(res.fp[keep])
        num_gt += int((~gt_ignore).sum())
        num_det += int(scores.shape[0])
        num_ign += int(res.ignored.sum())

    scores = np.concatenate(all_scores) if all_scores else np.zeros(0)
    tp_flags = np.concatenate(all_tp) if all_tp else np.zeros(0, dtype=bool)
    fp_flags = np.concatenate(all_fp) if all_fp else np.zeros(0, dtype=bool)
    order = np.argsort(-scores, kind="stable")
    scores = scores[order]
    tp = np.cumsum(tp_flags[order]).astype(np.int64)
    fp = np.cumsum(fp_flags[order]).astype(np.int64)
    denom = np.maximum(tp + fp, 1)
    precision = tp / denom
    recall = tp / num_gt if num_gt > 0 else np.zeros(tp.shape[0], dtype=np.float64)
    ap = voc_ap(recall, precision) if (num_gt > 0 and tp.size > 0) else 0.0
    rafp = {int(n): _recall_at_fp(fp, recall, int(n)) for n in fp_points}
    return DetectionReport(
        iou_threshold=float(iou_threshold),
        num_gt=num_gt,
        num_detections=num_det,
        num_ignored=num_ign,
        scores=scores,
        tp=tp,
        fp=fp,
        precision=precision.astype(np.float64),
        recall=np.asarray(recall, dtype=np.float64),
        ap=float(ap),
        recall_at_fp=rafp,
    )


def ap_at_ious(
    detections: Sequence[Any],
    ground_truth: Sequence[Any],
    iou_thresholds: Iterable[float] = (0.5, 0.75),
) -> dict[float, float]:
    """VOC AP at each IoU threshold, e.g. ``{0.5: AP50, 0.75: AP75}``."""
    return {
        float(t): evaluate_detections(detections, ground_truth, iou_threshold=float(t), fp_points=()).ap
        for t in iou_thresholds
    }


# The two official protocols live in their own modules (they build on the helpers above); they
# stay importable from here, resolved on first use.
_PROTOCOL_MODULES = {
    **dict.fromkeys(("FDDBReport", "default_fddb_dir", "ellipse_bounding_boxes", "ellipse_box_overlap",
                     "evaluate_fddb", "load_fddb_folds", "read_fddb_ellipses"), "mtcnn.eval.fddb"),
    **dict.fromkeys(("WiderCurve", "WiderGroundTruth", "default_wider_gt_dir", "evaluate_wider",
                     "evaluate_wider_curves", "load_wider_ground_truth", "wider_predictions_from_list"),
                    "mtcnn.eval.wider"),
}


def __getattr__(name: str) -> Any:
    module = _PROTOCOL_MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "DEFAULT_FP_POINTS", "DetectionReport", "MatchResult", "WIDER_SETTINGS", "ap_at_ious", "box_iou",
    "evaluate_detections", "match_detections", "voc_ap",
    "FDDBReport",
    "default_fddb_dir",
    "ellipse_bounding_boxes",
    "ellipse_box_overlap",
    "evaluate_fddb",
    "load_fddb_folds",
    "read_fddb_ellipses",
    "WiderCurve",
    "WiderGroundTruth",
    "default_wider_gt_dir",
    "evaluate_wider",
    "evaluate_wider_curves",
    "load_wider_ground_truth",
    "wider_predictions_from_list",
]
