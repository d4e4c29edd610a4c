"""The official WIDER FACE evaluation, re-implemented (see :mod:`mtcnn.eval.detection`)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtcnn.eval.detection import WIDER_SETTINGS, WIDER_THRESH_NUM, _jsonable, voc_ap


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


# Smallest face height (px) each setting counts when no official keep lists exist (WIDER's training
# photos, or a split held out of them). The official lists come from EdgeBox detection rates, which
# cannot be recomputed; on the validation set, whose lists we have, these cuts reproduce the
# membership of 99.8 % (easy), 99.4 % (medium) and 98.0 % (hard) of the faces (docs/evaluation.md).
HEIGHT_SETTINGS = {"easy": 51.0, "medium": 31.0, "hard": 11.0}


def wider_ground_truth_from_records(records, min_heights: Mapping[str, float] = HEIGHT_SETTINGS) -> WiderGroundTruth:
    """Ground truth for the official protocol from annotation records that have no ``.mat`` keep
    lists: a setting counts the faces that are not ignored (WIDER ``invalid``, zero size) and at
    least ``min_heights[setting]`` pixels tall. Events are the images' folder names, as
    :func:`wider_predictions_from_list` keys the detections."""
    by_event: dict[str, list] = {}
    for rec in records:
        by_event.setdefault(rec.path.parent.name, []).append(rec)
    events, images, boxes = [], [], []
    keep: dict[str, list[list[np.ndarray]]] = {s: [] for s in WIDER_SETTINGS}
    for event, recs in by_event.items():
        events.append(event)
        images.append([r.path.stem for r in recs])
        ev_boxes = []
        for r in recs:
            b = np.asarray(r.boxes, np.float64).reshape(-1, 4)
            ev_boxes.append(np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1))
        boxes.append(ev_boxes)
        for s in WIDER_SETTINGS:
            keep[s].append([
                np.flatnonzero(~np.asarray(r.ignore, bool) & (xywh[:, 3] >= min_heights[s]))
                for r, xywh in zip(recs, ev_boxes)
            ])
    return WiderGroundTruth(events=events, images=images, boxes=boxes, keep=keep)


def wider_curves_from_records(records, detections, iou_threshold: float = 0.5) -> "dict[str, WiderCurve]":
    """The official protocol on annotation records without ``.mat`` keep lists (settings by face
    height, :func:`wider_ground_truth_from_records`); ``detections``: ``(boxes, scores)`` per record."""
    gt = wider_ground_truth_from_records(records)
    pred = wider_predictions_from_list((r.path, b, s) for r, (b, s) in zip(records, detections))
    return evaluate_wider_curves(pred, gt, iou_threshold=iou_threshold)


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
    per_image, min_score, max_score = _submission_form(pred, gt)
    thresholds = np.array([1 - (t + 1) / thresh_num for t in range(thresh_num)], dtype=np.float64)
    pr_curves = _pr_counts(gt, per_image, min_score, max_score, thresholds, iou_threshold)
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


def _submission_form(pred: Mapping[str, Mapping[str, np.ndarray]], gt: WiderGroundTruth):
    """Per-image detections in the ground truth's order as float64 x, y, w, h, score (None when
    absent), and the set's min / max score as the official ``norm_score`` finds them."""
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
    return per_image, min_score, max_score


def _pr_counts(gt: WiderGroundTruth, per_image: list[np.ndarray | None], min_score: float, max_score: float,
               thresholds: np.ndarray, iou_threshold: float) -> dict[str, np.ndarray]:
    """The official ``img_pr_info`` summed over images: per setting and threshold, the
    proposals kept and the faces recalled ``[T, 2]``."""
    diff = max_score - min_score
    neg_thresholds = -thresholds
    pr_curves = {s: np.zeros((len(thresholds), 2), dtype=np.float64) for s in WIDER_SETTINGS}

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
    return pr_curves


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
