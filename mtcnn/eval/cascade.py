"""Per-level accuracy of the Sun et al. cascade on a CNN_FacePoint list (``tools/evaluate.py landmarks --landmarks cascade``).

Two settings, each a table of rows (O-Net's points, then cascade levels 1, 2, 3):

* ``given_boxes``: the list's own face boxes go to the cascade; the O-Net row is O-Net run on
  the square around the given box (its landmark head, as the detector decodes it).
* ``detector_boxes``: the detector (P/R/O-Net) runs on every image, each annotated face is
  matched to the detection of highest IoU (≥ ``match_iou``); the O-Net row is the detector's own
  points, the cascade rows start from the detection box (through the bundle's box adapter). A
  ``O-Net + L2/L3`` row also refines O-Net's points with levels 2 and 3 only.

Each row reports, per point and as a mean over the five: error / face-box width (Sun's measure),
error / inter-ocular distance, and failure rates (error > 5 % and > 10 % of the box width).
Ground-truth box widths normalise every row, whichever boxes fed the nets. One CED plot per
setting, one curve per row; each row's error by head pose (``pose``: |roll| and |yaw proxy| bins of
the annotation, :func:`mtcnn.eval.landmarks.pose_breakdown`) with one pose CED plot per row.
Images are read and refined in batches: one crop call per level.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtcnn.atomic import atomic_write_text
from mtcnn.config.paths import portable_config
from mtcnn.data.annotations import read_cnn_facepoint
from mtcnn.eval.landmarks import evaluate_landmarks, pose_breakdown, pose_markdown
from mtcnn.io import iter_image_batches
from mtcnn.ops.coding import decode_landmarks, unflatten_landmarks
from mtcnn.stages import Candidates, crop_candidates, refine_landmarks

POINT_NAMES = ("LE", "RE", "N", "LM", "RM")
FAILURE_THRESHOLDS = (0.05, 0.10)


def point_table(pred: np.ndarray, gt: np.ndarray, gt_boxes: np.ndarray) -> dict[str, Any]:
    """One row: per-point and mean error by box width and by inter-ocular distance, failure rates,
    and the error / box width by head pose (``pose``: :func:`pose_breakdown`; ``_pose`` keeps the
    report with its curves for the plot and is not written)."""
    box = evaluate_landmarks(pred, gt, "box-width", boxes=gt_boxes, failure_threshold=FAILURE_THRESHOLDS[0])
    iod = evaluate_landmarks(pred, gt, "inter-ocular")
    row: dict[str, Any] = {
        "faces": int(gt.shape[0]),
        "mean_box": float(box.nme),
        "per_point_box": dict(zip(POINT_NAMES, map(float, box.per_point_nme))),
        "mean_iod": float(iod.nme),
        "per_point_iod": dict(zip(POINT_NAMES, map(float, iod.per_point_nme))),
        "ced_x": box.ced_x, "ced_y": box.ced_y,
    }  # fmt: skip
    pose = pose_breakdown(box.sample_errors, gt, "box-width", FAILURE_THRESHOLDS[1])
    row["pose"], row["_pose"] = pose.to_dict(), pose
    for t in FAILURE_THRESHOLDS:
        fails = box.errors > t
        row[f"failure_{int(round(t * 100))}"] = dict(zip(POINT_NAMES, map(float, fails.mean(axis=0))))
        row[f"failure_{int(round(t * 100))}_mean"] = float(fails.mean())
    return row


def _best_match(det_boxes: torch.Tensor, det_index: torch.Tensor, gt_box: torch.Tensor, image: int, min_iou: float) -> int | None:
    from mtcnn.ops.boxes import box_iou

    sel = torch.nonzero(det_index == image, as_tuple=True)[0]
    if sel.numel() == 0:
        return None
    iou = box_iou(gt_box[None], det_boxes[sel])[0]
    best = int(torch.argmax(iou))
    return int(sel[best]) if float(iou[best]) >= min_iou else None


def _onet_on_boxes(onet, images: list[torch.Tensor], boxes: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    cands = Candidates(boxes, torch.ones(len(boxes)), index, torch.zeros(len(boxes), 5, 2))
    crops, squares = crop_candidates(images, cands, 48)
    _, _, marks = onet(crops, with_landmarks=True)
    return decode_landmarks(squares, unflatten_landmarks(marks))


@torch.inference_mode()
def collect_points(cascade, detector, records, *, batch_size=32, match_iou=0.4,
                   progress: bool = True, error: Callable[[str], None] = print) -> dict[str, Any]:
    """Run everything over CNN_FacePoint records; returns ground truth and every row's predicted points (numpy)."""
    by_path = {r.path: r for r in records}
    gt, gt_boxes, given, det, matched = [], [], {k: [] for k in ("onet", "l1", "l2", "l3")}, {k: [] for k in ("onet", "l1", "l2", "l3", "onet_l23")}, []
    done = 0
    for batch in iter_image_batches([r.path for r in records], batch_size, lambda p, e: error(str(e))):
        tensors = [torch.from_numpy(img).permute(2, 0, 1) for _, img in batch]
        recs = [by_path[p] for p, _ in batch]
        boxes = torch.from_numpy(np.concatenate([r.boxes for r in recs])).float()
        index = torch.arange(len(recs))
        gt.append(np.concatenate([r.landmarks for r in recs]))
        gt_boxes.append(boxes.numpy())
        levels = refine_landmarks(cascade, tensors, boxes, None, index)
        for key, value in zip(("l1", "l2", "l3"), (levels.level1, levels.level2, levels.level3)):
            given[key].append(value.numpy())
        if detector is not None:
            given["onet"].append(_onet_on_boxes(detector.onet, tensors, boxes, index).numpy())
            _detector_rows(cascade, detector, tensors, boxes, match_iou, det, matched, done)
        done += len(recs)
        if progress:
            print(f"\rfaces {done}/{len(records)}", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    out = {"gt": np.concatenate(gt), "gt_boxes": np.concatenate(gt_boxes), "given": {k: np.concatenate(v) for k, v in given.items() if v}}
    out["matched"] = np.asarray(matched, dtype=np.int64)
    out["detector"] = {k: (np.concatenate(v) if v else np.zeros((0, 5, 2), np.float32)) for k, v in det.items()}
    return out


def _detector_rows(cascade, detector, tensors, gt_boxes, match_iou, det, matched, offset) -> None:
    cands = detector.candidates(tensors)
    pick = [_best_match(cands.boxes, cands.image_index, gt_boxes[i], i, match_iou) for i in range(len(tensors))]
    keep = [i for i, j in enumerate(pick) if j is not None]
    if not keep:
        return
    sel = torch.tensor([pick[i] for i in keep])
    boxes = cascade.adapt_boxes(cands.boxes[sel])
    onet_points = cands.landmarks[sel]
    index = cands.image_index[sel]
    levels = refine_landmarks(cascade, tensors, boxes, onet_points, index)
    from_onet = refine_landmarks(cascade, tensors, boxes, onet_points, index, start_level=2)
    rows = (("onet", onet_points), ("l1", levels.level1), ("l2", levels.level2), ("l3", levels.level3),
            ("onet_l23", from_onet.level3), ("raw_boxes", cands.boxes[sel]))  # fmt: skip
    for key, value in rows:
        det.setdefault(key, []).append(value.numpy())
    matched.extend(offset + i for i in keep)


ROW_LABELS = {"onet": "O-Net", "l1": "level 1", "l2": "level 2", "l3": "level 3", "onet_l23": "O-Net + L2/L3"}


def tables_from_points(points: dict[str, Any]) -> dict[str, Any]:
    gt, boxes = points["gt"], points["gt_boxes"]
    report: dict[str, Any] = {"given_boxes": {k: point_table(v, gt, boxes) for k, v in points["given"].items()}}
    m = points["matched"]
    rows = {k: v for k, v in points["detector"].items() if k != "raw_boxes"}
    report["detector_boxes"] = {k: point_table(v, gt[m], boxes[m]) for k, v in rows.items()} if m.size else {}
    report["num_faces"] = int(gt.shape[0])
    report["num_matched"] = int(m.size)
    return report


def markdown_table(rows: dict[str, dict]) -> str:
    """The README's per-level table: mean and per-point error / box width, failures at 5 % and 10 %."""
    head = "| points | mean err/box | " + " | ".join(POINT_NAMES) + " | err/IOD | fail@5% (worst point) | fail@10% |"
    lines = [head, "|" + "---|" * (len(POINT_NAMES) + 5)]
    for key, r in rows.items():
        per = " | ".join(f"{r['per_point_box'][p]:.4f}" for p in POINT_NAMES)
        worst = max(r["failure_5"].values())
        lines.append(
            f"| {ROW_LABELS.get(key, key)} | {r['mean_box']:.4f} | {per} | {r['mean_iod']:.4f} | "
            f"{100 * r['failure_5_mean']:.1f} % ({100 * worst:.1f} %) | {100 * r['failure_10_mean']:.2f} % |"
        )
    return "\n".join(lines)


def evaluate_cascade(cascade, detector, list_file, out_dir, images_root=None, *, limit=None, batch_size=32,
                     match_iou=0.4, progress=True, log=print) -> dict[str, Any]:
    """Write ``report.json``, ``report.md`` and ``ced_given_boxes.png`` / ``ced_detector_boxes.png``.

    The detector rows use the box adapter and start the bundle holds for ``detector``'s weights
    (:meth:`~mtcnn.cascade.LandmarkCascade.for_detector`), as the detector itself does."""
    from mtcnn.eval.plots import plot_ced, plot_pose_ced

    cascade = cascade.for_detector(detector.weights_info["sha256"])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = read_cnn_facepoint(list_file, images_root)[:limit]
    points = collect_points(cascade, detector, records, batch_size=batch_size, match_iou=match_iou, progress=progress)
    report = tables_from_points(points)
    report["settings"] = {"list": str(list_file), "cascade": {**cascade.info, "precision": cascade.precision}, "detector": detector.settings,
                          "box_adapter": cascade.box_adapter, "detector_start": cascade.detector_start,
                          "match_iou": match_iou}  # fmt: skip
    text = []
    for setting in ("given_boxes", "detector_boxes"):
        rows = report[setting]
        if not rows:
            continue
        faces = next(iter(rows.values()))["faces"]
        text.append(f"### {setting.replace('_', ' ')} ({faces} faces)\n\n{markdown_table(rows)}\n")
        pose_rows = {ROW_LABELS.get(k, k): r["_pose"] for k, r in rows.items()}
        text.append(f"Error / box width by head pose (NME (faces)):\n\n{pose_markdown(pose_rows)}\n")
        curves = {ROW_LABELS[k]: (r["ced_x"], r["ced_y"]) for k, r in rows.items()}
        plot_ced(curves, f"Sun cascade per level, {setting.replace('_', ' ')} ({faces} faces): error / box width",
                 {"list": Path(list_file).name, "cascade": cascade.info.get("sha256")}, out / f"ced_{setting}.png", x_max=0.1)
        for key, r in rows.items():  # one pose CED plot per row (model or level)
            plot_pose_ced(r["_pose"], f"{ROW_LABELS.get(key, key)}, {setting.replace('_', ' ')} ({faces} faces): "
                          "error / box width by head pose", {"list": Path(list_file).name}, out / f"ced_pose_{setting}_{key}.png", x_max=0.1)
    atomic_write_text(out / "report.md", "\n".join(text))
    atomic_write_text(out / "report.json", json.dumps(_jsonable(report), indent=1))
    atomic_write_text(out / "card.json", json.dumps(_jsonable(weight_card(cascade, report)), indent=1))
    log("\n".join(text))
    return report


def calibrate_for_detector(cascade, detector, records, *, batch_size=32, match_iou=0.4, progress=True) -> dict[str, Any]:
    """Fit the box adapter on ``records`` (training faces the cascade did not train on), then say
    which start serves the detector's faces better: level 1 from the adapted boxes, or O-Net's
    points refined by levels 2 and 3 (lower mean level-3 error / box width on the same faces)."""
    from mtcnn.cascade import fit_box_adapter

    saved = cascade.box_adapter
    cascade.box_adapter = None
    try:
        first = collect_points(cascade, detector, records, batch_size=batch_size, match_iou=match_iou, progress=progress)
    finally:
        cascade.box_adapter = saved
    m = first["matched"]
    if m.size == 0:
        raise ValueError("the detector found none of the calibration faces")
    adapter = fit_box_adapter(torch.from_numpy(first["detector"]["raw_boxes"]), torch.from_numpy(first["gt_boxes"][m]))
    cascade.box_adapter = adapter
    second = collect_points(cascade, detector, records, batch_size=batch_size, match_iou=match_iou, progress=progress)
    gt, boxes = second["gt"][second["matched"]], second["gt_boxes"][second["matched"]]
    errors = {k: point_table(second["detector"][k], gt, boxes)["mean_box"] for k in ("onet", "l3", "onet_l23")}
    start = "onet" if errors["onet_l23"] < errors["l3"] else "level1"
    return {"box_adapter": adapter, "start": start, "faces": int(m.size), "mean_box_error": errors}


def weight_card(cascade, report: dict[str, Any]) -> dict[str, Any]:
    """The small JSON card shipped beside a bundle: what it was trained on, how, and its test figures.
    Its paths are in placeholder form (:func:`mtcnn.config.paths.portable_path`)."""
    meta = cascade.info.get("meta", {})

    def rows(setting: str) -> dict[str, Any]:
        return {ROW_LABELS[k]: {"mean_box": round(r["mean_box"], 5), "mean_iod": round(r["mean_iod"], 5),
                                "per_point_box": {p: round(v, 5) for p, v in r["per_point_box"].items()},
                                "failure_5": {p: round(v, 5) for p, v in r["failure_5"].items()},
                                "failure_10_mean": round(r["failure_10_mean"], 5)}
                for k, r in report.get(setting, {}).items()}  # fmt: skip

    return portable_config({
        "model": "Sun, Wang & Tang (CVPR 2013) landmark cascade, 23 nets (F1, EN1, NM1, 10 level-2 and 10 level-3 patch nets)",
        "variant": cascade.variant,
        "weights_sha256": cascade.info.get("sha256"),
        "training_data": meta.get("training_data"),
        "terms": meta.get("terms"),
        "commit": meta.get("commit"),
        "training_note": meta.get("training_note"),
        "config": meta.get("config"),
        "box_adapter": cascade.box_adapter,
        "detector_start": cascade.detector_start,
        "calibration": meta.get("calibration"),
        "detector_calibrations": {sha: {"box_adapter": adapter, "detector_start": start}
                                  for sha, (adapter, start) in cascade.calibrations.items()},
        "test": {"list": report.get("settings", {}).get("list"), "faces": report.get("num_faces"),
                 "matched_by_detector": report.get("num_matched"),
                 "given_boxes": rows("given_boxes"), "detector_boxes": rows("detector_boxes")},
    })  # fmt: skip


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items() if k not in ("ced_x", "ced_y") and not str(k).startswith("_")} | (
            {"ced_y": [round(float(v), 5) for v in obj["ced_y"]]} if "ced_y" in obj else {})
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return obj


__all__ = ["calibrate_for_detector", "collect_points", "evaluate_cascade", "markdown_table", "point_table", "tables_from_points"]


def cascade_from_args(args, detector_kwargs: dict) -> int:
    """``tools/evaluate.py landmarks --landmarks cascade``: exit code 0, or 2 with one error line."""
    from mtcnn.cascade import load_cascade
    from mtcnn.config import ConfigError
    from mtcnn.detect import build_detector
    from mtcnn.weights import WeightsError

    if args.format != "cnn_facepoint" or len(args.annotations) != 1:
        print("error: --landmarks cascade evaluates one CNN_FacePoint list (--format cnn_facepoint)", file=sys.stderr)
        return 2
    try:
        cascade = load_cascade(args.cascade_weights).prepare(args.device or "cpu", args.precision)
        detector = build_detector(**detector_kwargs)
        evaluate_cascade(cascade, detector, args.annotations[0], args.out or "eval_landmarks_cascade", args.images,
                         limit=args.limit, batch_size=args.batch_size, match_iou=args.match_iou, progress=not args.no_progress)
    except (WeightsError, ConfigError, ValueError, OSError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    return 0
