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

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

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


def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU matrix ``[A, B]`` of boxes in our convention (width = x2 - x1, no +1).

    Degenerate boxes (zero or negative extent) have zero area; a pair with an empty union gets 0.
    """
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(iw, 0.0, None) * np.clip(ih, 0.0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0.0, None) * np.clip(a[:, 3] - a[:, 1], 0.0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0.0, None) * np.clip(b[:, 3] - b[:, 1], 0.0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return iou


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


# --------------------------------------------------------------------------------------------
# WIDER FACE protocol
# --------------------------------------------------------------------------------------------


@dataclass
class WiderGroundTruth:
    """The WIDER FACE validation ground truth as the official evaluation reads it.

    events:  event folder names (``"0--Parade"``, ...), in the ``.mat`` order.
    images:  per event, the image names (no extension), in the ``.mat`` order.
    boxes:   per event, per image, ``[M, 4]`` float ``x, y, w, h`` exactly as stored (official form).
    keep:    per setting (``easy`` / ``medium`` / ``hard``), per event, per image, the 0-based
             indices of the faces the setting counts (the ``.mat`` ``gt_list`` minus one). All
             other faces of the image are "ignored" for that setting.
    """

    events: list[str]
    images: list[list[str]]
    boxes: list[list[np.ndarray]]
    keep: dict[str, list[list[np.ndarray]]]

    def num_images(self) -> int:
        return sum(len(v) for v in self.images)

    def num_faces(self, setting: str | None = None) -> int:
        """All annotated faces (``setting=None``) or the faces a setting counts."""
        if setting is None:
            return sum(b.shape[0] for ev in self.boxes for b in ev)
        return sum(k.shape[0] for ev in self.keep[setting] for k in ev)

    def iter_images(self) -> Iterable[tuple[int, int, str, str]]:
        """Yield ``(event_index, image_index, event_name, image_name)``."""
        for e, (event, names) in enumerate(zip(self.events, self.images)):
            for i, name in enumerate(names):
                yield e, i, event, name

    def boxes_xyxy(self, event_index: int, image_index: int) -> np.ndarray:
        """One image's faces in our convention: x1 = x, y1 = y, x2 = x + w, y2 = y + h."""
        b = self.boxes[event_index][image_index]
        return np.stack([b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]], axis=1)

    def ignore_mask(self, setting: str, event_index: int, image_index: int) -> np.ndarray:
        """bool [M]: True for faces the setting does not count."""
        m = self.boxes[event_index][image_index].shape[0]
        ign = np.ones(m, dtype=bool)
        ign[self.keep[setting][event_index][image_index]] = False
        return ign


def default_wider_gt_dir() -> Path:
    """``<data_root>/wider_face/eval_tools/ground_truth`` (``data_root`` honours $MTCNN_DATA)."""
    from mtcnn.config import data_root

    return Path(data_root()) / "wider_face" / "eval_tools" / "ground_truth"


def _mat_str(x: Any) -> str:
    arr = np.asarray(x)
    while arr.dtype == object or arr.ndim > 0:
        if arr.size == 0:
            return ""
        arr = np.asarray(arr.flat[0])
    return str(arr)


def load_wider_ground_truth(gt_dir: str | os.PathLike | None = None) -> WiderGroundTruth:
    """Read ``wider_face_val.mat`` and the ``wider_{easy,medium,hard}_val.mat`` keep lists.

    ``gt_dir`` defaults to :func:`default_wider_gt_dir`. Face boxes come from
    ``wider_face_val.mat`` (``face_bbx_list``); the subset files provide ``gt_list`` (1-based
    indices of the faces each setting counts).
    """
    from scipy.io import loadmat

    gt_dir = Path(gt_dir) if gt_dir is not None else default_wider_gt_dir()
    files = {"all": "wider_face_val.mat", "easy": "wider_easy_val.mat",
             "medium": "wider_medium_val.mat", "hard": "wider_hard_val.mat"}
    missing = [name for name in files.values() if not (gt_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(f"WIDER FACE evaluation ground truth not found in {gt_dir}: missing {missing}")
    gt_mat = loadmat(str(gt_dir / files["all"]))
    subsets = {s: loadmat(str(gt_dir / files[s]))["gt_list"] for s in WIDER_SETTINGS}

    event_list, file_list, facebox_list = gt_mat["event_list"], gt_mat["file_list"], gt_mat["face_bbx_list"]
    events, images, boxes = [], [], []
    keep: dict[str, list[list[np.ndarray]]] = {s: [] for s in WIDER_SETTINGS}
    for i in range(len(event_list)):
        events.append(_mat_str(event_list[i][0]))
        names = file_list[i][0]
        ev_boxes = facebox_list[i][0]
        images.append([_mat_str(names[j][0]) for j in range(len(names))])
        ev_b = []
        for j in range(len(names)):
            b = np.asarray(ev_boxes[j][0], dtype=np.float64)
            ev_b.append(b.reshape(-1, 4))
        boxes.append(ev_b)
        for s in WIDER_SETTINGS:
            sub = subsets[s][i][0]
            ev_k = []
            for j in range(len(names)):
                k = np.asarray(sub[j][0]).astype(np.int64).reshape(-1) - 1
                m = ev_b[j].shape[0]
                if k.size and (k.min() < 0 or k.max() >= m):
                    raise ValueError(f"{s} keep list of {events[-1]}/{images[-1][j]} indexes outside its {m} faces")
                ev_k.append(k)
            keep[s].append(ev_k)
    return WiderGroundTruth(events=events, images=images, boxes=boxes, keep=keep)


def wider_predictions_from_list(
    items: Iterable[tuple[str | os.PathLike, np.ndarray, np.ndarray]],
) -> dict[str, dict[str, np.ndarray]]:
    """Build the ``pred`` mapping of :func:`evaluate_wider` from ``(image path, boxes, scores)``.

    The path looks like ``.../<event>/<image>.jpg``: the event is the parent folder's name, the
    image name is the file name without its extension. Boxes ``[K,4]`` in our convention, scores
    ``[K]``. Returns ``{event: {image: array [K,5] (x1, y1, x2, y2, score)}}``.
    """
    pred: dict[str, dict[str, np.ndarray]] = {}
    for path, boxes, scores in items:
        p = Path(path)
        event, name = p.parent.name, p.stem
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        s = np.asarray(scores, dtype=np.float64).reshape(-1)
        if b.shape[0] != s.shape[0]:
            raise ValueError(f"{p}: {b.shape[0]} boxes but {s.shape[0]} scores")
        ev = pred.setdefault(event, {})
        if name in ev:
            raise ValueError(f"{event}/{name} listed twice")
        ev[name] = np.concatenate([b, s[:, None]], axis=1)
    return pred


def _wider_overlaps(pred_xywh: np.ndarray, gt_xywh: np.ndarray) -> np.ndarray:
    """The official ``bbox_overlaps`` (+1 pixel convention) after its x2 = x + w conversion."""
    p = pred_xywh[:, :4].copy()
    g = gt_xywh.copy()
    p[:, 2] = p[:, 2] + p[:, 0]
    p[:, 3] = p[:, 3] + p[:, 1]
    g[:, 2] = g[:, 2] + g[:, 0]
    g[:, 3] = g[:, 3] + g[:, 1]
    iw = np.minimum(p[:, None, 2], g[None, :, 2]) - np.maximum(p[:, None, 0], g[None, :, 0]) + 1
    ih = np.minimum(p[:, None, 3], g[None, :, 3]) - np.maximum(p[:, None, 1], g[None, :, 1]) + 1
    g_area = (g[:, 2] - g[:, 0] + 1) * (g[:, 3] - g[:, 1] + 1)
    p_area = (p[:, 2] - p[:, 0] + 1) * (p[:, 3] - p[:, 1] + 1)
    valid = (iw > 0) & (ih > 0)
    inter = iw * ih
    union = p_area[:, None] + g_area[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        ov = np.where(valid, inter / np.where(valid, union, 1.0), 0.0)
    return ov


@dataclass
class WiderCurve:
    """One WIDER setting: the official 1000-point PR curve and its AP.

    thresholds[t] = 1 - (t + 1) / 1000 (normalised scores); precision may hold NaN at the highest
    thresholds where no detection passes (as in the official code; AP is unaffected).
    """

    setting: str
    ap: float
    precision: np.ndarray
    recall: np.ndarray
    thresholds: np.ndarray
    num_faces: int

    def to_dict(self, curves: bool = True) -> dict:
        out: dict[str, Any] = {"setting": self.setting, "ap": float(self.ap), "num_faces": int(self.num_faces)}
        if curves:
            out.update(precision=self.precision, recall=self.recall, thresholds=self.thresholds)
        return _jsonable(out)


def evaluate_wider_curves(
    pred: Mapping[str, Mapping[str, np.ndarray]],
    gt_dir: str | os.PathLike | WiderGroundTruth | None = None,
    iou_threshold: float = 0.5,
    thresh_num: int = WIDER_THRESH_NUM,
) -> dict[str, WiderCurve]:
    """Official WIDER FACE evaluation, returning the PR curve of each setting.

    ``pred``: ``{event: {image name (no extension): array [K,5] (x1, y1, x2, y2, score)}}`` in our
    convention (see :func:`wider_predictions_from_list`). Internally each detection becomes the
    submission form ``x, y, w, h = x1, y1, x2 - x1, y2 - y1`` and then goes through the official
    steps unchanged: ``norm_score`` over the whole set (min initialised to 1 and max to 0 as in the
    original), per image ``image_eval`` (each detection takes the face of highest +1-convention
    IoU; IoU ≥ threshold on a face outside the setting's keep list makes it neither TP nor FP;
    a second detection of a recalled face is a FP), ``img_pr_info`` (1000 thresholds),
    ``dataset_pr_info`` and ``voc_ap``. Images with no ground-truth face or no detection add their
    faces to the count but no detection (the official ``continue``), so detections in images
    without faces are never false positives.

    Deviations from the official code (none changes a result it can compute):

    * each image's detections are sorted by descending score (stable) first; the official
      ``img_pr_info`` assumes sorted input and silently miscounts otherwise;
    * if every detection has the same normalised score range (``max == min``) the official code
      divides by zero (all scores NaN, AP NaN); here every score becomes 1.0 instead;
    * an event or image missing from ``pred`` counts as an image without detections (the official
      code raises ``KeyError``); entries of ``pred`` not in the ground truth are ignored;
    * ``pred`` is not modified (the official ``norm_score`` normalises in place).
    """
    gt = gt_dir if isinstance(gt_dir, WiderGroundTruth) else load_wider_ground_truth(gt_dir)

    # gather per-image detections in the ground truth's order, as float64 x, y, w, h, score
    per_image: list[np.ndarray | None] = []
    min_score, max_score = 1.0, 0.0
    for _, _, event, name in gt.iter_images():
        arr = pred.get(event, {}).get(name) if event in pred else None
        if arr is None:
            per_image.append(None)
            continue
        a = np.asarray(arr, dtype=np.float64)
        if a.size == 0:
            per_image.append(None)
            continue
        a = a.reshape(-1, 5)
        sub = np.empty_like(a)
        sub[:, 0] = a[:, 0]
        sub[:, 1] = a[:, 1]
        sub[:, 2] = a[:, 2] - a[:, 0]
        sub[:, 3] = a[:, 3] - a[:, 1]
        sub[:, 4] = a[:, 4]
        per_image.append(sub)
        min_score = min(float(np.min(sub[:, 4])), min_score)
        max_score = max(float(np.max(sub[:, 4])), max_score)

    diff = max_score - min_score
    thresholds = np.array([1 - (t + 1) / thresh_num for t in range(thresh_num)], dtype=np.float64)
    neg_thresholds = -thresholds
    pr_curves = {s: np.zeros((thresh_num, 2), dtype=np.float64) for s in WIDER_SETTINGS}

    flat = 0
    for e, i, _, _ in gt.iter_images():
        sub = per_image[flat]
        flat += 1
        gt_boxes = gt.boxes[e][i]
        if sub is None or gt_boxes.shape[0] == 0:
            continue
        if diff != 0:
            scores = (sub[:, 4] - min_score) / diff
        else:
            scores = np.ones(sub.shape[0])
        order = np.argsort(-scores, kind="stable")
        scores = scores[order]
        ov = _wider_overlaps(sub[order], gt_boxes)
        max_idx = ov.argmax(axis=1)
        max_ov = ov[np.arange(ov.shape[0]), max_idx]
        hit = max_ov >= iou_threshold
        # number of detections whose score is >= each threshold (scores sorted descending)
        counts = np.searchsorted(-scores, neg_thresholds, side="right")
        has = counts > 0
        r_index = np.maximum(counts - 1, 0)
        for s in WIDER_SETTINGS:
            kept = np.zeros(gt_boxes.shape[0], dtype=bool)
            kept[gt.keep[s][e][i]] = True
            ignored_det = hit & ~kept[max_idx]
            proposal_cum = np.cumsum(~ignored_det)
            recalled = hit & kept[max_idx]
            first = np.zeros(scores.shape[0], dtype=np.int64)
            if recalled.any():
                det_ids = np.nonzero(recalled)[0]
                _, first_pos = np.unique(max_idx[det_ids], return_index=True)
                first[det_ids[first_pos]] = 1
            pred_recall = np.cumsum(first)
            pr = pr_curves[s]
            pr[:, 0] += np.where(has, proposal_cum[r_index], 0)
            pr[:, 1] += np.where(has, pred_recall[r_index], 0)

    out: dict[str, WiderCurve] = {}
    for s in WIDER_SETTINGS:
        count_face = gt.num_faces(s)
        pr = pr_curves[s]
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = pr[:, 1] / pr[:, 0]
            recall = pr[:, 1] / count_face
        ap = voc_ap(recall, precision)
        out[s] = WiderCurve(s, ap, precision, recall, thresholds.copy(), count_face)
    return out


def evaluate_wider(
    pred: Mapping[str, Mapping[str, np.ndarray]],
    gt_dir: str | os.PathLike | WiderGroundTruth | None = None,
    iou_threshold: float = 0.5,
) -> dict[str, float]:
    """Official WIDER FACE validation AP: ``{"easy": ap, "medium": ap, "hard": ap}``.

    See :func:`evaluate_wider_curves` for the input form and the protocol. ``gt_dir`` may also be
    an already loaded :class:`WiderGroundTruth` (saves re-reading the ``.mat`` files).
    """
    curves = evaluate_wider_curves(pred, gt_dir, iou_threshold)
    return {s: float(curves[s].ap) for s in WIDER_SETTINGS}


# --------------------------------------------------------------------------------------------
# FDDB protocol
# --------------------------------------------------------------------------------------------


def default_fddb_dir() -> Path:
    from mtcnn.config import data_root

    return Path(data_root()) / "fddb" / "FDDB-folds"


def read_fddb_ellipses(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Parse one ``FDDB-fold-NN-ellipseList.txt``: ``{image path without .jpg: [M, 5]}``.

    Each row is ``major_radius, minor_radius, angle (radians), center_x, center_y``.
    """
    lines = [ln.strip() for ln in Path(path).read_text().splitlines()]
    lines = [ln for ln in lines if ln]
    out: dict[str, np.ndarray] = {}
    pos = 0
    while pos < len(lines):
        name = lines[pos]
        n = int(lines[pos + 1])
        rows = [[float(v) for v in lines[pos + 2 + r].split()[:5]] for r in range(n)]
        out[name] = np.asarray(rows, dtype=np.float64).reshape(-1, 5)
        pos += 2 + n
    return out


def load_fddb_folds(
    fddb_dir: str | os.PathLike | None = None, folds: Iterable[int] = range(1, 11)
) -> dict[str, np.ndarray]:
    """All ellipse annotations of the given folds (default all ten), in fold order."""
    d = Path(fddb_dir) if fddb_dir is not None else default_fddb_dir()
    out: dict[str, np.ndarray] = {}
    for k in folds:
        f = d / f"FDDB-fold-{int(k):02d}-ellipseList.txt"
        if not f.is_file():
            raise FileNotFoundError(f"FDDB ellipse list not found: {f}")
        out.update(read_fddb_ellipses(f))
    return out


def ellipse_bounding_boxes(ellipses: np.ndarray) -> np.ndarray:
    """Axis-aligned bounding boxes ``[M, 4]`` (our convention) of FDDB ellipses ``[M, 5]``."""
    e = np.asarray(ellipses, dtype=np.float64).reshape(-1, 5)
    ra, rb, th, cx, cy = e.T
    ex = np.sqrt((ra * np.cos(th)) ** 2 + (rb * np.sin(th)) ** 2)
    ey = np.sqrt((ra * np.sin(th)) ** 2 + (rb * np.cos(th)) ** 2)
    return np.stack([cx - ex, cy - ey, cx + ex, cy + ey], axis=1)


def _pixel_span(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel indices [a, b) whose centres (p + 0.5) lie in [lo, hi)."""
    a = np.ceil(lo - 0.5).astype(np.int64)
    b = np.ceil(hi - 0.5).astype(np.int64)
    return a, np.maximum(b, a)


def ellipse_box_overlap(
    ellipses: np.ndarray,
    boxes: np.ndarray,
    image_size: tuple[int, int] | None = None,
    supersample: int = 1,
) -> np.ndarray:
    """IoU ``[M, K]`` of FDDB ellipse regions and rectangles, measured on a pixel grid.

    Ellipses ``[M, 5]`` (major radius, minor radius, angle in radians, centre x, centre y) and
    boxes ``[K, 4]`` are read in the same continuous frame (our convention; the FDDB numbers are
    used as they are, no half-pixel shift). A pixel (grid cell of side ``1 / supersample``)
    belongs to a region when its centre does. With ``image_size = (height, width)`` both regions are
    clipped to the image, as the official tool (which draws them on the image) does. The
    ellipse's pixels are counted once on its own bounding grid; the intersection with every box
    then comes from an integral image, so the cost is one small raster per ellipse.
    """
    e = np.asarray(ellipses, dtype=np.float64).reshape(-1, 5)
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    f = float(max(1, int(supersample)))
    m, k = e.shape[0], b.shape[0]
    out = np.zeros((m, k), dtype=np.float64)
    if m == 0 or k == 0:
        return out
    lim_w = lim_h = None
    if image_size is not None:
        lim_h, lim_w = int(round(image_size[0] * f)), int(round(image_size[1] * f))

    bx0, bx1 = _pixel_span(b[:, 0] * f, b[:, 2] * f)
    by0, by1 = _pixel_span(b[:, 1] * f, b[:, 3] * f)
    if lim_w is not None:
        bx0, bx1 = np.clip(bx0, 0, lim_w), np.clip(bx1, 0, lim_w)
        by0, by1 = np.clip(by0, 0, lim_h), np.clip(by1, 0, lim_h)
    box_area = (bx1 - bx0).astype(np.float64) * (by1 - by0).astype(np.float64)

    bbs = ellipse_bounding_boxes(e) * f
    for j in range(m):
        ra, rb, th, cx, cy = e[j]
        ra, rb, cx, cy = max(ra * f, 1e-12), max(rb * f, 1e-12), cx * f, cy * f
        c0, r0 = int(math.floor(bbs[j, 0])), int(math.floor(bbs[j, 1]))
        c1, r1 = int(math.ceil(bbs[j, 2])), int(math.ceil(bbs[j, 3]))
        if lim_w is not None:
            c0, c1 = max(c0, 0), min(c1, lim_w)
            r0, r1 = max(r0, 0), min(r1, lim_h)
        if c1 <= c0 or r1 <= r0:
            ell_area = 0.0
            inter = np.zeros(k)
        else:
            xs = np.arange(c0, c1, dtype=np.float64) + 0.5 - cx
            ys = np.arange(r0, r1, dtype=np.float64) + 0.5 - cy
            ct, st = math.cos(th), math.sin(th)
            u = (xs[None, :] * ct + ys[:, None] * st) / ra
            v = (-xs[None, :] * st + ys[:, None] * ct) / rb
            mask = (u * u + v * v) <= 1.0
            ell_area = float(mask.sum())
            integral = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.int64)
            integral[1:, 1:] = mask.cumsum(0).cumsum(1)
            w, h = c1 - c0, r1 - r0
            ca, cb = np.clip(bx0 - c0, 0, w), np.clip(bx1 - c0, 0, w)
            ra_, rb_ = np.clip(by0 - r0, 0, h), np.clip(by1 - r0, 0, h)
            inter = (integral[rb_, cb] - integral[ra_, cb] - integral[rb_, ca] + integral[ra_, ca]).astype(np.float64)
        union = ell_area + box_area - inter
        with np.errstate(divide="ignore", invalid="ignore"):
            out[j] = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return out


@dataclass
class FDDBReport:
    """FDDB discrete and continuous ROC (one point per distinct detection score).

    thresholds: descending; fp[i] = false positives (detections with score ≥ thresholds[i] that
    are not a discrete match) summed over images; tp_discrete / tp_continuous the matched counts
    (overlap > 0.5) / summed overlaps; num_faces the annotated faces of all images.
    """

    thresholds: np.ndarray
    fp: np.ndarray
    tp_discrete: np.ndarray
    tp_continuous: np.ndarray
    num_faces: int

    @property
    def tpr_discrete(self) -> np.ndarray:
        return self.tp_discrete / self.num_faces if self.num_faces else np.zeros_like(self.tp_discrete, dtype=float)

    @property
    def tpr_continuous(self) -> np.ndarray:
        return self.tp_continuous / self.num_faces if self.num_faces else np.zeros_like(self.tp_continuous, dtype=float)

    def discrete_roc(self) -> tuple[np.ndarray, np.ndarray]:
        """(false positives, TPR) of the discrete score."""
        return self.fp.astype(np.float64), np.asarray(self.tpr_discrete, dtype=np.float64)

    def continuous_roc(self) -> tuple[np.ndarray, np.ndarray]:
        """(false positives, TPR) of the continuous score."""
        return self.fp.astype(np.float64), np.asarray(self.tpr_continuous, dtype=np.float64)

    def tpr_at_fp(self, max_false_positives: int = 2000, continuous: bool = False) -> float:
        """Highest TPR over the ROC points with at most ``max_false_positives`` false positives."""
        tpr = self.tpr_continuous if continuous else self.tpr_discrete
        ok = self.fp <= max_false_positives
        return float(np.max(tpr[ok])) if ok.any() else 0.0

    def to_dict(self, curves: bool = True, fp_points: Iterable[int] = DEFAULT_FP_POINTS) -> dict:
        out: dict[str, Any] = {
            "num_faces": int(self.num_faces),
            "tpr_at_fp_discrete": {str(n): self.tpr_at_fp(n) for n in fp_points},
            "tpr_at_fp_continuous": {str(n): self.tpr_at_fp(n, continuous=True) for n in fp_points},
        }
        if curves:
            out.update(
                thresholds=self.thresholds, fp=self.fp, tpr_discrete=self.tpr_discrete,
                tpr_continuous=self.tpr_continuous,
            )
        return _jsonable(out)


def _fddb_image_stats(ov: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per distinct score (ascending) of one image: [U, 3] (tp_cont, tp_disc, fp)."""
    from scipy.optimize import linear_sum_assignment

    uniq = np.unique(scores)
    stats = np.zeros((uniq.shape[0], 3), dtype=np.float64)
    for u, st in enumerate(uniq):
        valid = scores >= st
        n_valid = int(valid.sum())
        tpc, tpd = 0.0, 0
        if ov.shape[0] > 0 and n_valid > 0:
            sub = ov[:, valid]
            if sub.any():
                r, c = linear_sum_assignment(sub, maximize=True)
                s = sub[r, c]
                s = s[s > 0]
                tpc = float(s.sum())
                tpd = int((s > 0.5).sum())
        stats[u] = (tpc, tpd, n_valid - tpd)
    return uniq, stats


def evaluate_fddb(
    detections: Sequence[Any] | Mapping[str, Any],
    ellipses: Sequence[np.ndarray] | Mapping[str, np.ndarray],
    image_sizes: Sequence[tuple[int, int]] | Mapping[str, tuple[int, int]] | None = None,
    supersample: int = 1,
) -> FDDBReport:
    """FDDB evaluation (Jain & Learned-Miller 2010) of rectangle detections.

    detections: per image ``[K,5]`` (x1,y1,x2,y2,score) or ``(boxes, scores)``; ellipses: per
    image ``[M,5]`` (see :func:`read_fddb_ellipses`). Both may be sequences in the same order or
    mappings keyed by image name (the ellipses' keys define the image set; missing detections
    mean none). ``image_sizes`` (height, width) optionally clips regions to the image.

    As in the official ``evaluate``: for each image and each distinct detection score ``t`` the
    detections with score ≥ t are matched to the faces by a maximum-weight bipartite assignment
    on the overlap (IoU) matrix (``scipy.optimize.linear_sum_assignment``); a matched pair with
    overlap > 0.5 is a discrete true positive, every matched pair adds its overlap to the
    continuous true positives, and false positives = detections kept − discrete true positives
    (for both curves). Per-image results are summed at every distinct score of the whole set
    (an image contributes its result for the lowest of its scores ≥ t, or nothing).
    """
    if isinstance(ellipses, Mapping):
        names = list(ellipses.keys())
        ell_list = [ellipses[n] for n in names]
        if isinstance(detections, Mapping):
            det_list = [detections.get(n, np.zeros((0, 5))) for n in names]
        else:
            det_list = list(detections)
        if isinstance(image_sizes, Mapping):
            size_list = [image_sizes.get(n) for n in names]
        else:
            size_list = list(image_sizes) if image_sizes is not None else [None] * len(names)
    else:
        ell_list = list(ellipses)
        det_list = list(detections)
        size_list = list(image_sizes) if image_sizes is not None else [None] * len(ell_list)
    if len(det_list) != len(ell_list) or len(size_list) != len(ell_list):
        raise ValueError(f"{len(det_list)} detection entries / {len(size_list)} sizes for {len(ell_list)} images")

    num_faces = 0
    ev_thr, ev_delta = [], []
    for det_item, ell, size in zip(det_list, ell_list, size_list):
        e = np.asarray(ell, dtype=np.float64).reshape(-1, 5)
        num_faces += e.shape[0]
        boxes, scores = _split_detections(det_item)
        if scores.shape[0] == 0:
            continue
        ov = ellipse_box_overlap(e, boxes, image_size=size, supersample=supersample)
        uniq, stats = _fddb_image_stats(ov, scores)
        nxt = np.vstack([stats[1:], np.zeros((1, 3))])
        ev_thr.append(uniq)
        ev_delta.append(stats - nxt)

    if not ev_thr:
        z = np.zeros(0)
        return FDDBReport(z, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), z, num_faces)
    thr = np.concatenate(ev_thr)
    delta = np.vstack(ev_delta)
    uniq, inv = np.unique(thr, return_inverse=True)  # ascending
    summed = np.zeros((uniq.shape[0], 3))
    np.add.at(summed, inv, delta)
    cum = np.cumsum(summed[::-1], axis=0)  # descending thresholds
    return FDDBReport(
        thresholds=uniq[::-1].copy(),
        fp=np.rint(cum[:, 2]).astype(np.int64),
        tp_discrete=np.rint(cum[:, 1]).astype(np.int64),
        tp_continuous=cum[:, 0].copy(),
        num_faces=num_faces,
    )
