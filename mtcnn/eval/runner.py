"""Library logic of ``tools/evaluate.py``: run the detector (or read its detections) over an
annotated image set and report detection or landmark accuracy.

Two tasks, each a function returning an :class:`EvalOutcome` (report dict, error lines, exit code):

* :func:`evaluate_detection_set`: precision / recall, VOC AP at IoU 0.5 and at a chosen IoU,
  recall at fixed false-positive counts, ``pr_curve.png``; with WIDER annotations also the
  official easy / medium / hard AP (``wider_pr_curve.png``); with FDDB annotations the discrete /
  continuous ROC and TPR at 2,000 false positives (``roc.png``).
* :func:`evaluate_landmark_set`: each annotated face is matched to the detection of highest IoU
  (one-to-one, IoU ≥ ``match_iou``); NME by inter-ocular distance and by box width, per point
  and mean, failure rate at 0.10, unmatched faces reported separately; ``ced.png``; the NME by
  head pose (|roll| and |yaw proxy| bins of the annotation) and ``ced_pose.png``.

Detections come from a :class:`DetectorSource` (an :class:`~mtcnn.detector.MTCNN`, images read
and detected in batches, written to ``detections.jsonl`` beside the report) or a
:class:`FileDetections` (a JSON-lines file in the detect CLI's schema, one object per image:
``{"image", "width", "height", "faces": [{"box", "score", "landmarks"}]}``), matched to the
annotated images by the longest common tail of their paths (the full path, ``<event>/<name>.jpg``,
or the file name alone) when that tail is unique on both sides.

Every report (console, ``report.json``, plot subtitles) records where the detections came from:
the detector settings with the weights path and hash, or the detections file and its sha256.

Bad input never stops the run: a missing annotation file, an unreadable image or an image the
detections file lacks prints one ``error: ...`` line naming the file, the image is left out of
the metrics (and listed in the report), and the exit code is 1. Exit code 2 means nothing could
be evaluated (no annotations, weights that do not load, an unreadable detections file).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtcnn.eval.results import ErrorLog, EvalOutcome, FatalError, ImageResult, _fmt
from mtcnn.eval.sources import DetectorSource, FileDetections
from mtcnn.eval.detection import _jsonable
from mtcnn.io import file_sha256
from mtcnn.atomic import atomic_write_text
from mtcnn.detect import build_detector
from mtcnn.data.annotations import (
    AnnotationError,
    ImageAnnotation,
    read_annotations,
    split_by_hash,
    split_by_name,
)
from mtcnn.eval.detection import (
    WIDER_SETTINGS,
    WiderGroundTruth,
    default_wider_gt_dir,
    evaluate_detections,
    evaluate_fddb,
    evaluate_wider_curves,
    load_wider_ground_truth,
    wider_predictions_from_list,
)
from mtcnn.eval.wider import HEIGHT_SETTINGS, wider_curves_from_records

__all__ = [
    "DETECTION_FORMATS",
    "FP_POINTS",
    "LANDMARK_FORMATS",
    "LANDMARK_NAMES",
    "DetectorSource",
    "ErrorLog",
    "EvalOutcome",
    "FileDetections",
    "ImageResult",
    "evaluate_detection_set",
    "evaluate_from_args",
    "file_sha256",
    "rotated_detection_table",
    "load_annotation_records",
]

DETECTION_FORMATS = ("wider", "fddb", "list", "dlib", "voc", "cnn_facepoint", "csv68", "coco", "yolo")
LANDMARK_FORMATS = ("cnn_facepoint", "csv68", "dlib", "list", "pts68")
#: recall / TPR is reported at these false-positive counts
FP_POINTS: tuple[int, ...] = (0, 1, 10, 50, 100, 500, 1000, 2000)
LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "left_mouth", "right_mouth")
EXIT_OK, EXIT_PARTIAL, EXIT_FATAL = 0, 1, 2


# --------------------------------------------------------------------------------------------
# annotations
# --------------------------------------------------------------------------------------------


def load_annotation_records(
    paths: Sequence[str | os.PathLike],
    fmt: str,
    images_root: str | os.PathLike | None,
    errors: Callable[[str], None],
    split: str | None = None,
    limit: int | None = None,
    reader_options: dict | None = None,
    split_rule: str = "name_order",
) -> list[ImageAnnotation]:
    """Read every annotation file (a bad one is reported and skipped), then split and limit.

    ``reader_options``: keyword options of the format's reader (coco / yolo: ``classes``,
    ``keypoints``, ``unannotated``; :data:`mtcnn.data.annotations.FORMAT_OPTIONS`), and for every
    format ``images_layout`` (``"flat"``: each image directly in ``images_root`` by its file name)
    and ``missing_images`` (``"skip"``: absent images left out, counted in one line).

    ``split``: ``"train"`` / ``"val"`` applies the project's rule (:func:`split_by_name`: sort by
    file name, first 80 % train; with ``split_rule="hashed"`` :func:`split_by_hash`: the CRC-32 of
    the file name, as a source config's ``split_rule: hashed``); ``None`` / ``"all"`` keeps
    everything. ``limit`` keeps the first N records after the split.
    """
    options = dict(reader_options or {})
    # Photos kept in one folder (e.g. a subset of WIDER FACE copied flat) and sets with photos
    # absent: handled here for every format; pts68's reader counts its missing images itself.
    layout = options.pop("images_layout", "tree")
    missing = None if fmt == "pts68" else options.pop("missing_images", None)
    records: list[ImageAnnotation] = []
    for p in paths:
        try:
            records.extend(read_annotations(p, fmt, images_root, **options))
        except AnnotationError as e:
            errors(str(e))
        except (OSError, ValueError) as e:
            errors(f"{p}: {e}")
    if layout == "flat":
        records = [dataclasses.replace(r, path=(Path(images_root) if images_root else r.path.parent.parent) / r.path.name)
                   for r in records]
    if missing == "skip":
        present = [r for r in records if r.path.is_file()]
        if len(present) < len(records):
            print(f"{len(records) - len(present)} of {len(records)} annotated images are absent and left out "
                  "(--missing-images skip)", file=sys.stderr)
        records = present
    if split in ("train", "val"):
        records = (split_by_hash if split_rule == "hashed" else split_by_name)(records, split)
    if limit is not None and limit >= 0:
        records = records[:limit]
    return records


# --------------------------------------------------------------------------------------------
# shared task plumbing
# --------------------------------------------------------------------------------------------


def _plot_settings(source_settings: dict) -> dict:
    """The short form of the settings written under every plot title."""
    if source_settings.get("source") == "file":
        return {"detections_file": source_settings["detections"], "sha256": source_settings["detections_sha256"][:16]}
    return {
        "min_face": source_settings.get("min_face_size"),
        "factor": source_settings.get("factor"),
        "thresholds": source_settings.get("thresholds"),
        "weights": source_settings.get("weights"),
        "sha256": source_settings.get("weights_sha256"),
    }


def _set_name(annotations: Sequence[str | os.PathLike], split: str | None) -> str:
    """Short name of the evaluated set for plot titles: ``face_mask/annotations [val]``."""
    names = [f"{Path(a).parent.name}/{Path(a).name}" if Path(a).parent.name else Path(a).name for a in annotations]
    return ", ".join(names) + (f" [{split}]" if split in ("train", "val") else "")


def _settings_line(source_settings: dict) -> str:
    return "settings: " + ", ".join(f"{k}={_fmt(v)}" for k, v in _plot_settings(source_settings).items())


def _make_source(
    detections: str | os.PathLike | None,
    detector: Any,
    detector_kwargs: dict | None,
    errors: ErrorLog,
    batch_size: int,
    out_dir: Path,
):
    if detections is not None:
        return FileDetections(detections, errors)
    if detector is None:
        from mtcnn.config import ConfigError
        from mtcnn.weights import WeightsError

        try:
            detector = build_detector(**(detector_kwargs or {}))
        except (WeightsError, ConfigError, ValueError, RuntimeError, AssertionError, OSError) as e:
            raise FatalError(f"cannot build the detector: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    return DetectorSource(detector, errors, batch_size=batch_size, jsonl_out=out_dir / "detections.jsonl")


def _gather(records, source, progress: bool) -> tuple[list[tuple[ImageAnnotation, ImageResult]], list[str]]:
    results = source.results_for(records, progress=progress)
    pairs, failed = [], []
    for rec, res in zip(records, results):
        if res is None:
            failed.append(str(rec.path))
        else:
            pairs.append((rec, res))
    return pairs, failed


def _common_report(task, annotations, fmt, images_root, split, limit, source, records, pairs, failed) -> dict:
    return {
        "task": task,
        "annotations": [str(a) for a in annotations],
        "format": fmt,
        "images": str(images_root) if images_root is not None else None,
        "split": split or "all",
        "limit": limit,
        "settings": source.settings,
        "num_images": len(records),
        "num_images_evaluated": len(pairs),
        "num_images_failed": len(failed),
        "failed_images": failed,
    }


def _finish(report: dict, out_dir: Path, errors: ErrorLog, files: list[Path], log: Callable[[str], None]) -> EvalOutcome:
    report["errors"] = list(errors.messages)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "report.json"
    atomic_write_text(target, json.dumps(_jsonable(report), indent=2) + "\n")
    files = [target, *files]
    log("wrote " + ", ".join(str(f) for f in files))
    code = EXIT_PARTIAL if errors.messages else EXIT_OK
    if errors.messages:
        log(f"{len(errors.messages)} error(s); see 'errors' in {target}")
    return EvalOutcome(report=_jsonable(report), errors=list(errors.messages), exit_code=code, files=files)


def _fatal(message: str, errors: ErrorLog, out_dir: Path | None, base: dict | None = None) -> EvalOutcome:
    errors(message)
    report = {**(base or {}), "fatal": message, "errors": list(errors.messages)}
    if out_dir is not None:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out_dir / "report.json", json.dumps(_jsonable(report), indent=2) + "\n")
        except OSError:
            pass
    return EvalOutcome(report=_jsonable(report), errors=list(errors.messages), exit_code=EXIT_FATAL)


# --------------------------------------------------------------------------------------------
# detection task
# --------------------------------------------------------------------------------------------


def _detection_summary(rep) -> dict:
    tp = int(rep.tp[-1]) if rep.tp.size else 0
    fp = int(rep.fp[-1]) if rep.fp.size else 0
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(rep.precision + rep.recall > 0, 2 * rep.precision * rep.recall / (rep.precision + rep.recall), 0.0)
    best = int(np.argmax(f1)) if f1.size else -1
    return {
        "iou_threshold": float(rep.iou_threshold),
        "ap": float(rep.ap),
        "num_gt": int(rep.num_gt),
        "num_detections": int(rep.num_detections),
        "num_ignored_detections": int(rep.num_ignored),
        "true_positives": tp,
        "false_positives": fp,
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / rep.num_gt if rep.num_gt else 0.0,
        "recall_at_fp": {str(n): rep.recall_at(n) for n in FP_POINTS},
        "best_f1": float(f1[best]) if best >= 0 else 0.0,
        "best_f1_score_threshold": float(rep.scores[best]) if best >= 0 else None,
    }


def _detection_line(s: dict) -> str:
    at = " ".join(f"{k}:{v:.3f}" for k, v in s["recall_at_fp"].items())
    return (
        f"IoU {s['iou_threshold']:.2f}: AP {s['ap']:.4f}  precision {s['precision']:.4f}  recall {s['recall']:.4f}"
        f"  (TP {s['true_positives']}, FP {s['false_positives']}, faces {s['num_gt']})  recall@FP {at}"
    )


def _wider_subset(gt: WiderGroundTruth, keys: set[tuple[str, str]]) -> WiderGroundTruth:
    events, images, boxes = [], [], []
    keep: dict[str, list] = {s: [] for s in WIDER_SETTINGS}
    for e, event in enumerate(gt.events):
        idx = [i for i, name in enumerate(gt.images[e]) if (event, name) in keys]
        if not idx:
            continue
        events.append(event)
        images.append([gt.images[e][i] for i in idx])
        boxes.append([gt.boxes[e][i] for i in idx])
        for s in WIDER_SETTINGS:
            keep[s].append([gt.keep[s][e][i] for i in idx])
    return WiderGroundTruth(events=events, images=images, boxes=boxes, keep=keep)


def _wider_official(pairs, gt_dir, explicit: bool, errors: ErrorLog, log) -> tuple[dict | None, dict | None]:
    """Official easy/medium/hard AP over the evaluated images that are in the .mat ground truth."""
    try:
        gt = load_wider_ground_truth(gt_dir)
    except (FileNotFoundError, OSError, ValueError) as e:
        msg = f"WIDER official evaluation skipped: {e}"
        if explicit:
            errors(msg)
        else:
            log(msg)
        return {"skipped": str(e)}, None
    keys = {(a.path.parent.name, a.path.stem) for a, _ in pairs}
    gt_keys = {(event, name) for _, _, event, name in gt.iter_images()}
    covered = keys & gt_keys
    if not covered:
        # WIDER training photos (a split held out of them): the protocol with keep lists by face height.
        records = [a for a, _ in pairs]
        curves = wider_curves_from_records(records, [(r.boxes, r.scores) for _, r in pairs])
        log("WIDER official protocol on images outside the validation ground truth: settings by face height "
            + ", ".join(f"{s} >= {h:g} px" for s, h in HEIGHT_SETTINGS.items()))
        out = {"iou_threshold": 0.5, "ground_truth": "annotations, settings by face height",
               "min_heights": dict(HEIGHT_SETTINGS), "num_images": len(records),
               "num_images_ground_truth": len(records), "complete": True}
        out.update({s: float(curves[s].ap) for s in WIDER_SETTINGS})
        out["num_faces"] = {s: int(curves[s].num_faces) for s in WIDER_SETTINGS}
        return out, curves
    complete = len(covered) == len(gt_keys)
    sub = gt if complete else _wider_subset(gt, covered)
    pred = wider_predictions_from_list((a.path, r.boxes, r.scores) for a, r in pairs if (a.path.parent.name, a.path.stem) in covered)
    curves = evaluate_wider_curves(pred, sub, iou_threshold=0.5)
    out = {
        "iou_threshold": 0.5,
        "ground_truth": str(gt_dir if gt_dir is not None else default_wider_gt_dir()),
        "num_images": len(covered),
        "num_images_ground_truth": len(gt_keys),
        "complete": complete,
        **{s: float(curves[s].ap) for s in WIDER_SETTINGS},
        "num_faces": {s: int(curves[s].num_faces) for s in WIDER_SETTINGS},
    }
    if not complete:
        out["note"] = (
            f"subset of {len(covered)} of {len(gt_keys)} validation images: "
            "not comparable with published WIDER FACE numbers"
        )
    return out, curves



def _records_and_source(annotations, fmt, images_root, errors, split, limit, reader_options, split_rule,
                        detections, detector, detector_kwargs, batch_size, out):
    """The annotated records and where their detections come from, or the fatal outcome."""
    records = load_annotation_records(annotations, fmt, images_root, errors, split, limit, reader_options, split_rule)
    if not records:
        return _fatal("no annotated images to evaluate", errors, out)
    try:
        return records, _make_source(detections, detector, detector_kwargs, errors, batch_size, out)
    except FatalError as e:
        return _fatal(str(e), errors, out)


def _gather_for_task(task, annotations, fmt, images_root, errors, split, limit, detections, detector,
                     detector_kwargs, batch_size, out, progress, log, reader_options=None, split_rule="name_order"):
    """Shared first half of both evaluations: annotations -> detections per image.

    Returns ``(pairs, failed, source, report)`` or, when nothing can be evaluated, the fatal
    :class:`EvalOutcome`.
    """
    prepared = _records_and_source(annotations, fmt, images_root, errors, split, limit, reader_options, split_rule,
                                   detections, detector, detector_kwargs, batch_size, out)
    if isinstance(prepared, EvalOutcome):
        return prepared
    records, source = prepared
    log(_settings_line(source.settings))
    pairs, failed = _gather(records, source, progress)
    report = _common_report(task, annotations, fmt, images_root, split, limit, source, records, pairs, failed)
    if not pairs:
        return _fatal("no image could be evaluated", errors, out, report)
    return pairs, failed, source, report

def _wider_section(pairs, wider_gt, report: dict, errors: ErrorLog, log, plot_settings: dict, out: Path) -> list[Path]:
    """The official WIDER protocol into ``report["wider"]``; returns its plot (if it ran)."""
    from mtcnn.eval.plots import plot_pr_curves

    wider, wcurves = _wider_official(pairs, wider_gt, wider_gt is not None, errors, log)
    report["wider"] = wider
    if wcurves is None:
        return []
    log(
        "WIDER official (IoU 0.5): " + "  ".join(f"{s} {wider[s]:.4f}" for s in WIDER_SETTINGS)
        + f"  [{wider['num_images']}/{wider['num_images_ground_truth']} images]"
    )
    return [plot_pr_curves(
        {s: (wcurves[s].recall, wcurves[s].precision, wcurves[s].ap) for s in WIDER_SETTINGS},
        f"WIDER FACE val, official protocol ({wider['num_images']} images)",
        plot_settings,
        out / "wider_pr_curve.png",
    )]


def _fddb_section(pairs, dets, report: dict, log, plot_settings: dict, out: Path) -> Path:
    """The FDDB ROC into ``report["fddb"]``; returns its plot."""
    from mtcnn.eval.plots import plot_roc

    ellipses = [a.attributes.get("ellipses", np.zeros((0, 5))) for a, _ in pairs]
    sizes = [(r.height, r.width) if r.width > 0 and r.height > 0 else None for _, r in pairs]
    fddb = evaluate_fddb(dets, ellipses, sizes)
    report["fddb"] = {
        **fddb.to_dict(curves=False, fp_points=FP_POINTS),
        "tpr_at_2000_fp_discrete": fddb.tpr_at_fp(2000),
        "tpr_at_2000_fp_continuous": fddb.tpr_at_fp(2000, continuous=True),
    }
    log(
        f"FDDB: TPR at 2000 FP discrete {fddb.tpr_at_fp(2000):.4f}, continuous "
        f"{fddb.tpr_at_fp(2000, continuous=True):.4f} ({fddb.num_faces} faces)"
    )
    return plot_roc(
        {"discrete": fddb.discrete_roc(), "continuous": fddb.continuous_roc()},
        f"FDDB ROC ({len(pairs)} images, {fddb.num_faces} faces)",
        plot_settings,
        out / "roc.png",
    )


def evaluate_detection_set(
    annotations: Sequence[str | os.PathLike],
    fmt: str,
    images_root: str | os.PathLike | None = None,
    *,
    out_dir: str | os.PathLike = "eval_detection",
    detections: str | os.PathLike | None = None,
    detector: Any = None,
    detector_kwargs: dict | None = None,
    iou: float = 0.5,
    split: str | None = None,
    limit: int | None = None,
    wider_gt: str | os.PathLike | None = None,
    batch_size: int = 8,
    progress: bool = True,
    log: Callable[[str], None] = print,
    errors: ErrorLog | None = None,
    reader_options: dict | None = None,
    rotate: str | None = None,
    seed: int = 0,
    split_rule: str = "name_order",
) -> EvalOutcome:
    """Detection accuracy of a detector (or a detections file) on an annotated image set.

    ``detector``: a ready :class:`~mtcnn.detector.MTCNN`, else one is built from
    ``detector_kwargs`` (see :func:`mtcnn.detect.build_detector`); ignored with ``detections`` (a JSON-lines
    file). Writes ``report.json`` and ``pr_curve.png`` (+ ``wider_pr_curve.png`` for WIDER, +
    ``roc.png`` for FDDB, + ``detections.jsonl`` when the detector ran) into ``out_dir``.

    ``rotate``: every photo turned before detection (:mod:`mtcnn.eval.rotate`): ``"0"``,
    ``"90"``, ``"180"``, ``"270"``, ``"random"`` (per photo, uniform in ±180°, from ``seed``) or
    ``"all"`` (those five side by side: ``report["rotation"]`` has AP and recall at 100 false
    positives per setting, ``pr_curve_rotations.png`` a PR curve each). Needs the detector (not
    ``detections``); the WIDER and FDDB protocols are left out (their ground truth is upright).
    """
    from mtcnn.eval.plots import plot_pr_curves

    errors = errors if errors is not None else ErrorLog()
    out = Path(out_dir)
    annotations = [annotations] if isinstance(annotations, (str, os.PathLike)) else list(annotations)
    if not 0.0 < iou <= 1.0:
        return _fatal(f"--iou must be within (0, 1], got {iou}", errors, None)
    if rotate is not None:
        return _rotated_detection_set(annotations, fmt, images_root, out, detections, detector, detector_kwargs, iou,
                                      split, limit, batch_size, progress, log, errors, reader_options, rotate, seed,
                                      split_rule)
    gathered = _gather_for_task("detection", annotations, fmt, images_root, errors, split, limit, detections,
                                detector, detector_kwargs, batch_size, out, progress, log, reader_options, split_rule)
    if isinstance(gathered, EvalOutcome):
        return gathered
    pairs, failed, source, report = gathered

    dets = [(r.boxes, r.scores) for _, r in pairs]
    gts = [(a.boxes, a.ignore) for a, _ in pairs]
    num_faces = sum(int((~a.ignore).sum()) for a, _ in pairs)
    num_ignored = sum(int(a.ignore.sum()) for a, _ in pairs)
    log(
        f"images: {len(pairs)} evaluated, {len(failed)} failed; faces: {num_faces} (+{num_ignored} ignored); "
        f"detections: {sum(len(r) for _, r in pairs)}"
    )
    reps = {0.5: evaluate_detections(dets, gts, 0.5, fp_points=())}
    if float(iou) != 0.5:
        reps[float(iou)] = evaluate_detections(dets, gts, float(iou), fp_points=())
    report["num_faces"] = num_faces
    report["num_ignored_faces"] = num_ignored
    report["detection"] = {f"iou_{t:g}": _detection_summary(rep) for t, rep in reps.items()}
    report["ap50"] = float(reps[0.5].ap)
    report["ap_at_iou"] = {"iou": float(iou), "ap": float(reps[float(iou)].ap)}
    for rep in reps.values():
        log(_detection_line(_detection_summary(rep)))

    plot_settings = _plot_settings(source.settings)
    name = _set_name(annotations, split)
    files: list[Path] = []
    curves = {f"IoU {t:g}": (rep.recall, rep.precision, rep.ap) for t, rep in reps.items()}
    files.append(
        plot_pr_curves(curves, f"Detection PR: {name} ({len(pairs)} images, {num_faces} faces)", plot_settings, out / "pr_curve.png")
    )

    if fmt == "wider":
        files += _wider_section(pairs, wider_gt, report, errors, log, plot_settings, out)
    if fmt == "fddb":
        files.append(_fddb_section(pairs, dets, report, log, plot_settings, out))
    if isinstance(source, DetectorSource):
        files.append(out / "detections.jsonl")
    return _finish(report, out, errors, files, log)


def rotated_detection_table(detector, records: Sequence[ImageAnnotation], rotate: str, seed: int = 0, iou: float = 0.5,
                            batch_size: int = 8, errors: Callable[[str], None] = print, progress: bool = False):
    """Each ``rotate`` setting's turned photos (:mod:`mtcnn.eval.rotate`) detected and scored as
    the upright ones are. Returns ``(table, reports)``: per setting a JSON-ready entry (AP at 0.5,
    recall at 100 false positives, the usual detection summary at 0.5 and at ``iou``; for
    ``random`` each photo's angle) and its :class:`~mtcnn.eval.detection.DetectionReport` per IoU."""
    from mtcnn.eval.rotate import angle_errors, detect_rotated, rotation_settings

    found = detect_rotated(detector, records, rotation_settings(str(rotate)), seed, batch_size, errors, progress)
    ious = [0.5] + ([float(iou)] if float(iou) != 0.5 else [])
    table: dict[str, dict] = {}
    reports: dict[str, dict] = {}
    for name, (pairs, failed, angles) in found.items():
        dets = [(r.boxes, r.scores) for _, r in pairs]
        gts = [(a.boxes, a.ignore) for a, _ in pairs]
        reps = {t: evaluate_detections(dets, gts, t, fp_points=()) for t in ious}
        entry = {
            "num_images_evaluated": len(pairs),
            "num_images_failed": len(failed),
            "failed_images": failed,
            "num_faces": sum(int((~a.ignore).sum()) for a, _ in pairs),
            "num_ignored_faces": sum(int(a.ignore.sum()) for a, _ in pairs),
            "num_detections": sum(len(r) for _, r in pairs),
            "ap50": float(reps[0.5].ap),
            "recall_at_100_fp": float(reps[0.5].recall_at(100)),
            "detection": {f"iou_{t:g}": _detection_summary(rep) for t, rep in reps.items()},
        }
        if name == "random":
            entry["angles"] = {str(rec.path): round(float(a), 3) for rec, a in zip(records, angles)}
        evaluated = {str(rec.path): a for rec, a in zip(records, angles)}
        errs = angle_errors(pairs, [evaluated.get(str(a.path), 0.0) for a, _ in pairs])
        if errs.size:  # a detector that reports angles: how far off they are, on the faces it found
            entry["angle_error"] = {"mean": float(errs.mean()), "median": float(np.median(errs)),
                                    "within_15": float((errs <= 15).mean()), "faces": int(errs.size)}
        table[name] = entry
        reports[name] = reps
    return table, reports


def _rotated_detection_set(annotations, fmt, images_root, out: Path, detections, detector, detector_kwargs, iou: float,
                           split, limit, batch_size: int, progress: bool, log, errors: ErrorLog, reader_options,
                           rotate: str, seed: int, split_rule: str = "name_order") -> EvalOutcome:
    """:func:`evaluate_detection_set` with ``rotate`` (:func:`rotated_detection_table`)."""
    from mtcnn.eval.plots import plot_pr_curves
    from mtcnn.eval.rotate import rotation_settings

    try:
        settings = rotation_settings(str(rotate))
    except ValueError as e:
        return _fatal(str(e), errors, None)
    if seed < 0:
        return _fatal(f"--seed must be >= 0, got {seed}", errors, None)
    if detections is not None:
        return _fatal("--rotate turns the photos before the detector sees them: it needs the detector, not --detections",
                      errors, out)
    prepared = _records_and_source(annotations, fmt, images_root, errors, split, limit, reader_options, split_rule,
                                   None, detector, detector_kwargs, batch_size, out)
    if isinstance(prepared, EvalOutcome):
        return prepared
    records, source = prepared
    searched = f", rotation={source.settings['rotation']}" if source.settings.get("rotation") else ""
    log(_settings_line(source.settings) + f"{searched}; photos turned: {rotate} (seed {seed})")
    table, reports = rotated_detection_table(source.detector, records, rotate, seed, iou, batch_size, errors, progress)
    first = table[settings[0]]
    report = _common_report("detection", annotations, fmt, images_root, split, limit, source, records,
                            range(first["num_images_evaluated"]), first["failed_images"])
    if not any(entry["num_images_evaluated"] for entry in table.values()):
        return _fatal("no image could be evaluated", errors, out, report)
    if fmt in ("wider", "fddb"):
        log(f"the official {fmt.upper()} protocol is left out with --rotate (its ground truth is upright)")
    if len(settings) == 1:
        entry, reps = first, reports[settings[0]]
        report["num_faces"], report["num_ignored_faces"] = entry["num_faces"], entry["num_ignored_faces"]
        report["detection"] = entry["detection"]
        report["ap50"] = entry["ap50"]
        report["ap_at_iou"] = {"iou": float(iou), "ap": float(reps[float(iou)].ap)}
        log(f"images: {entry['num_images_evaluated']} evaluated, {entry['num_images_failed']} failed; faces: "
            f"{entry['num_faces']} (+{entry['num_ignored_faces']} ignored); detections: {entry['num_detections']}")
        for rep in reps.values():
            log(_detection_line(_detection_summary(rep)))
    report["rotation"] = {
        "rotate": str(rotate),
        "seed": int(seed),
        "boxes": "quarter turns: the turned box (w x h -> h x w); other angles: the square of side sqrt(w*h) on the turned centre",
        "settings": table,
    }
    log(f"{'photos turned':>14}  {'AP50':>6}  {'recall@100FP':>12}  {'faces':>6}  {'images':>6}  angle error (mean / median deg)")
    for name, entry in table.items():
        label = "±180° random" if name == "random" else f"{name}°"
        err = entry.get("angle_error")
        angle = f"  {err['mean']:.1f} / {err['median']:.1f} on {err['faces']}" if err else ""
        log(f"{label:>14}  {entry['ap50']:6.4f}  {entry['recall_at_100_fp']:12.4f}  {entry['num_faces']:6d}  "
            f"{entry['num_images_evaluated']:6d}{angle}")
    plot_settings = {**_plot_settings(source.settings), "rotate": rotate, "seed": seed}
    if source.settings.get("rotation"):
        plot_settings["rotation"] = source.settings["rotation"]
    name = _set_name(annotations, split)
    if len(settings) == 1:
        turned = "±180° at random" if rotate == "random" else f"{rotate}°"
        title = f"Detection PR, turned {turned}: {name} ({len(records)} images)"
        curves = {f"IoU {t:g}": (rep.recall, rep.precision, rep.ap) for t, rep in reports[settings[0]].items()}
        target = out / "pr_curve.png"
    else:
        title = f"PR by rotation, IoU 0.5: {name} ({len(records)} images)"
        curves = {("±180° random" if s == "random" else f"{s}°"): (r[0.5].recall, r[0.5].precision, r[0.5].ap)
                  for s, r in reports.items()}
        target = out / "pr_curve_rotations.png"
    files = [plot_pr_curves(curves, title, plot_settings, target)]
    return _finish(report, out, errors, files, log)


# --------------------------------------------------------------------------------------------
# command-line glue
# --------------------------------------------------------------------------------------------


def reader_options_from_args(args: argparse.Namespace) -> dict:
    """The annotation reader's options given on the command line (``--classes``, ``--keypoints
    THEIRS=OURS ...``, ``--unannotated``); none unless given."""
    options: dict = {}
    if getattr(args, "classes", None):
        options["classes"] = list(args.classes)
    if getattr(args, "keypoints", None):
        options["keypoints"] = dict(item.split("=", 1) for item in args.keypoints)
    if getattr(args, "unannotated", None):
        options["unannotated"] = args.unannotated
    if getattr(args, "missing_images", None):
        options["missing_images"] = args.missing_images
    if getattr(args, "images_layout", None) not in (None, "tree"):
        options["images_layout"] = args.images_layout
    return options


def evaluate_from_args(args: argparse.Namespace) -> int:
    """Run the task of ``tools/evaluate.py``'s parsed arguments; returns the exit code."""
    from mtcnn.commands.common import rotation_options

    detector_kwargs = {
        "weights": args.weights,
        "min_face": args.min_face,
        "factor": args.factor,
        "thresholds": args.thresholds,
        "device": args.device,
        "preset": args.preset,
        "backend": args.backend,
        "precision": args.precision,
    }
    detector_kwargs.update(rotation_options(args))
    common = dict(
        out_dir=args.out or f"eval_{args.task}",
        detections=args.detections,
        detector_kwargs=detector_kwargs,
        split=args.split,
        limit=args.limit,
        batch_size=args.batch_size,
        progress=not args.no_progress,
    )
    if args.task == "landmarks" and getattr(args, "landmarks", "onet") == "cascade":
        from mtcnn.eval.cascade import cascade_from_args

        return cascade_from_args(args, detector_kwargs)
    if args.task == "detection":
        outcome = evaluate_detection_set(args.annotations, args.format, args.images, iou=args.iou, wider_gt=args.wider_gt,
                                         reader_options=reader_options_from_args(args), rotate=getattr(args, "rotate", None),
                                         seed=getattr(args, "seed", 0), split_rule=getattr(args, "split_rule", "name_order"),
                                         **common)
    else:
        from mtcnn.eval.landmark_set import evaluate_landmark_set

        outcome = evaluate_landmark_set(args.annotations, args.format, args.images, match_iou=args.match_iou,
                                        reader_options=reader_options_from_args(args),
                                        split_rule=getattr(args, "split_rule", "name_order"), **common)
    return outcome.exit_code

