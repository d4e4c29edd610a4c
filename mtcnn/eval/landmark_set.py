"""The landmark evaluation task: five-point accuracy of the detector's output (or a detections
file) on an annotated image set (plumbing shared with detection in :mod:`mtcnn.eval.runner`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtcnn.data.annotations import landmarks_68_to_5
from mtcnn.eval.detection import box_iou
from mtcnn.eval.landmarks import evaluate_landmarks, pose_breakdown
from mtcnn.eval.results import ErrorLog, EvalOutcome
from mtcnn.eval.sources import DetectorSource
from mtcnn.eval.runner import (
    LANDMARK_NAMES,
    _finish,
    _gather_for_task,
    _plot_settings,
    _set_name,
)


def _greedy_match(iou: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """One-to-one (face, detection) pairs by descending IoU, each with IoU ≥ threshold."""
    if iou.size == 0:
        return []
    faces, dets = np.nonzero(iou >= threshold)
    order = np.argsort(-iou[faces, dets], kind="stable")
    used_f, used_d, out = set(), set(), []
    for k in order:
        f, d = int(faces[k]), int(dets[k])
        if f in used_f or d in used_d:
            continue
        used_f.add(f)
        used_d.add(d)
        out.append((f, d))
    return out


def _landmark_block(rep, num_total: int, num_unmatched: int) -> dict:
    fails = int(round(rep.failure_rate * rep.num_samples))
    return {
        "nme": float(rep.nme),
        "per_point_nme": {n: float(v) for n, v in zip(LANDMARK_NAMES, rep.per_point_nme)},
        "failure_threshold": float(rep.failure_threshold),
        "failure_rate": float(rep.failure_rate),
        "failure_rate_with_unmatched": (fails + num_unmatched) / num_total if num_total else 0.0,
        "per_point_failure_rate": {n: float(v) for n, v in zip(LANDMARK_NAMES, rep.per_point_failure_rate)},
        "auc_0_1": float(rep.auc_0_1),
        "auc_0_3": float(rep.auc_0_3),
    }


def _match_faces(pairs, match_iou: float, errors: ErrorLog):
    """Match every usable annotated face (5 points, or 68 reduced to 5) to one detection.

    Returns (pred, gt, gt_boxes, ious, unmatched, num_faces, skipped)."""
    pred, gt, gt_boxes, ious, unmatched = [], [], [], [], []
    num_faces = skipped = 0
    for a, r in pairs:
        k = a.num_landmarks
        if k == 68:
            pts = landmarks_68_to_5(a.landmarks)
        elif k == 5:
            pts = np.asarray(a.landmarks, np.float32)
        else:
            if a.num_faces:
                errors(f"{a.path}: {k} landmarks per face in the annotations; need 5 or 68")
            continue
        pts = pts.astype(np.float64)
        boxes = a.boxes.astype(np.float64)
        iod = np.linalg.norm(pts[:, 1] - pts[:, 0], axis=1)
        usable = ~a.ignore & np.isfinite(pts).all(axis=(1, 2)) & (iod > 0) & (boxes[:, 2] > boxes[:, 0])
        skipped += int((~usable).sum())
        idx = np.nonzero(usable)[0]
        if idx.size == 0:
            continue
        num_faces += idx.size
        iou = box_iou(boxes[idx], r.boxes)
        matches = dict(_greedy_match(iou, match_iou))
        for j, f in enumerate(idx):
            d = matches.get(j)
            if d is not None and np.isfinite(r.landmarks[d]).all():
                pred.append(r.landmarks[d])
                gt.append(pts[f])
                gt_boxes.append(boxes[f])
                ious.append(float(iou[j, d]))
            else:
                why = "no detection with IoU >= %g" % match_iou if d is None else "matched detection has no landmarks"
                best = float(iou[j].max()) if iou.shape[1] else 0.0
                unmatched.append({"image": str(a.path), "face": int(f), "box": boxes[f].tolist(), "best_iou": best, "reason": why})
    return pred, gt, gt_boxes, ious, unmatched, num_faces, skipped


def _landmark_metrics(pred, gt, gt_boxes, unmatched, num_faces: int, failure_threshold: float, report: dict, log,
                      name: str, plot_settings: dict, out: Path) -> list[Path]:
    """NME by inter-ocular distance and by box width into ``report``, and the inter-ocular NME by
    head pose (``report["pose"]``, :func:`pose_breakdown`); returns the CED plot and the pose CED plot."""
    from mtcnn.eval.plots import plot_ced, plot_pose_ced

    num_matched = len(pred)
    p, g, b = np.asarray(pred), np.asarray(gt), np.asarray(gt_boxes)
    reps = {
        "inter_ocular": evaluate_landmarks(p, g, "inter-ocular", failure_threshold=failure_threshold),
        "box_width": evaluate_landmarks(p, g, "box-width", boxes=b, failure_threshold=failure_threshold),
    }
    for key, rep in reps.items():
        block = _landmark_block(rep, num_faces, len(unmatched))
        report[key] = block
        per_point = " ".join(f"{n} {v:.4f}" for n, v in block["per_point_nme"].items())
        log(
            f"NME ({key.replace('_', '-')}): {block['nme']:.4f}  failure@{failure_threshold:g} {block['failure_rate']:.4f}"
            f" (with unmatched {block['failure_rate_with_unmatched']:.4f})  per point: {per_point}"
        )
    pose = pose_breakdown(reps["inter_ocular"].sample_errors, g, "inter-ocular", failure_threshold)
    report["pose"] = pose.to_dict()
    log(pose.table())
    return [plot_ced(
        {"inter-ocular": (reps["inter_ocular"].ced_x, reps["inter_ocular"].ced_y),
         "box width": (reps["box_width"].ced_x, reps["box_width"].ced_y)},
        f"Landmark CED: {name} ({num_matched} matched, {len(unmatched)} unmatched faces)",
        plot_settings,
        out / "ced.png",
    ), plot_pose_ced(pose, f"Landmark CED by head pose: {name} ({num_matched} matched faces)", plot_settings,
                     out / "ced_pose.png")]  # fmt: skip


def evaluate_landmark_set(
    annotations: Sequence[str | os.PathLike],
    fmt: str,
    images_root: str | os.PathLike | None = None,
    *,
    out_dir: str | os.PathLike = "eval_landmarks",
    detections: str | os.PathLike | None = None,
    detector: Any = None,
    detector_kwargs: dict | None = None,
    match_iou: float = 0.4,
    failure_threshold: float = 0.10,
    split: str | None = None,
    limit: int | None = None,
    batch_size: int = 8,
    progress: bool = True,
    log: Callable[[str], None] = print,
    errors: ErrorLog | None = None,
    reader_options: dict | None = None,
    split_rule: str = "name_order",
) -> EvalOutcome:
    """Five-point landmark accuracy of the detector's output on an annotated image set.

    Each annotated face (not ignored, with all its points) is matched to one detection
    (one-to-one, highest IoU first, IoU ≥ ``match_iou``); unmatched faces are counted and listed
    separately and count as failures in ``failure_rate_with_unmatched``. 68-point annotations are
    reduced to 5 points with :func:`landmarks_68_to_5`. Errors are normalised by the annotated
    inter-ocular distance and by the annotated box width; the inter-ocular NME also by the head
    pose of the annotation (``pose``: |roll| and |yaw proxy| bins, :func:`pose_breakdown`).
    Writes ``report.json``, ``ced.png`` and ``ced_pose.png`` (CED per pose bin).

    ``reader_options``: the format reader's options (pts68: ``missing_images``); ``split_rule``:
    ``"hashed"`` splits by the CRC-32 of the file names (:func:`mtcnn.data.annotations.split_by_hash`,
    the 300-W validation split of the training configs) instead of their order.
    """
    errors = errors if errors is not None else ErrorLog()
    out = Path(out_dir)
    annotations = [annotations] if isinstance(annotations, (str, os.PathLike)) else list(annotations)
    gathered = _gather_for_task("landmarks", annotations, fmt, images_root, errors, split, limit, detections,
                                detector, detector_kwargs, batch_size, out, progress, log, reader_options, split_rule)
    if isinstance(gathered, EvalOutcome):
        return gathered
    pairs, failed, source, report = gathered

    pred, gt, gt_boxes, ious, unmatched, num_faces, skipped = _match_faces(pairs, match_iou, errors)
    num_matched = len(pred)
    report.update(
        num_faces=num_faces,
        num_faces_skipped=skipped,
        num_matched=num_matched,
        num_unmatched=len(unmatched),
        match_iou=float(match_iou),
        detection_rate=num_matched / num_faces if num_faces else 0.0,
        mean_match_iou=float(np.mean(ious)) if ious else None,
        points=list(LANDMARK_NAMES),
    )
    if split not in (None, "all"):
        report["split_rule"] = split_rule
    log(
        f"faces: {num_faces} with 5-point annotations in {len(pairs)} images ({skipped} skipped: ignored or "
        f"incomplete); matched {num_matched}, unmatched {len(unmatched)} (IoU < {match_iou:g})"
    )
    files: list[Path] = []
    if num_matched:
        files.extend(_landmark_metrics(pred, gt, gt_boxes, unmatched, num_faces, failure_threshold, report, log,
                                       _set_name(annotations, split), _plot_settings(source.settings), out))
    else:
        errors("no annotated face was matched to a detection: no landmark metrics")
    report["unmatched"] = unmatched
    if isinstance(source, DetectorSource):
        files.append(out / "detections.jsonl")
    return _finish(report, out, errors, files, log)


