"""Library logic of ``tools/evaluate.py``: run the detector (or read its detections) over an
annotated image set and report detection or landmark accuracy.

Two tasks, each a function returning an :class:`EvalOutcome` (report dict, error lines, exit code):

* :func:`evaluate_detection_set`: precision / recall, VOC AP at IoU 0.5 and at a chosen IoU,
  recall at fixed false-positive counts, ``pr_curve.png``; with WIDER annotations also the
  official easy / medium / hard AP (``wider_pr_curve.png``); with FDDB annotations the discrete /
  continuous ROC and TPR at 2,000 false positives (``roc.png``).
* :func:`evaluate_landmark_set`: each annotated face is matched to the detection of highest IoU
  (one-to-one, IoU ≥ ``match_iou``); NME by inter-ocular distance and by box width, per point
  and mean, failure rate at 0.10, unmatched faces reported separately; ``ced.png``.

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
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mtcnn.eval.detection import _jsonable
from mtcnn.io import file_sha256
from mtcnn.config import atomic_write_text
from mtcnn.data.annotations import (
    AnnotationError,
    ImageAnnotation,
    landmarks_68_to_5,
    read_annotations,
    split_by_name,
)
from mtcnn.eval.detection import (
    WIDER_SETTINGS,
    WiderGroundTruth,
    box_iou,
    default_wider_gt_dir,
    evaluate_detections,
    evaluate_fddb,
    evaluate_wider_curves,
    load_wider_ground_truth,
    wider_predictions_from_list,
)
from mtcnn.eval.landmarks import evaluate_landmarks

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
    "build_detector",
    "evaluate_detection_set",
    "evaluate_from_args",
    "evaluate_landmark_set",
    "file_sha256",
    "load_annotation_records",
]

DETECTION_FORMATS = ("wider", "fddb", "list", "dlib", "voc", "cnn_facepoint", "csv68")
LANDMARK_FORMATS = ("cnn_facepoint", "csv68", "dlib", "list")
#: recall / TPR is reported at these false-positive counts
FP_POINTS: tuple[int, ...] = (0, 1, 10, 50, 100, 500, 1000, 2000)
LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "left_mouth", "right_mouth")
EXIT_OK, EXIT_PARTIAL, EXIT_FATAL = 0, 1, 2


class FatalError(Exception):
    """Nothing can be evaluated; ``str(e)`` is one line."""


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------


class ErrorLog:
    """Collects one-line error messages and prints each as ``error: ...`` when it happens."""

    def __init__(self, stream=None, quiet: bool = False):
        self.stream = stream
        self.quiet = quiet
        self.messages: list[str] = []

    def __call__(self, message: str) -> None:
        message = " ".join(str(message).split())
        self.messages.append(message)
        if not self.quiet:
            print(f"error: {message}", file=self.stream or sys.stderr, flush=True)

    def __len__(self) -> int:
        return len(self.messages)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "/".join(_fmt(x) for x in v)
    return str(v)


@dataclass
class ImageResult:
    """One image's detections: boxes [K,4], scores [K], landmarks [K,5,2] (NaN when not given)."""

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray
    width: int = 0
    height: int = 0

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


@dataclass
class EvalOutcome:
    """What a task produced: the report written to ``report.json``, its files, errors, exit code."""

    report: dict
    errors: list[str]
    exit_code: int
    files: list[Path] = field(default_factory=list)


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
) -> list[ImageAnnotation]:
    """Read every annotation file (a bad one is reported and skipped), then split and limit.

    ``split``: ``"train"`` / ``"val"`` applies the project's rule (:func:`split_by_name`: sort by
    file name, first 80 % train); ``None`` / ``"all"`` keeps everything. ``limit`` keeps the
    first N records after the split.
    """
    records: list[ImageAnnotation] = []
    for p in paths:
        try:
            records.extend(read_annotations(p, fmt, images_root))
        except AnnotationError as e:
            errors(str(e))
        except (OSError, ValueError) as e:
            errors(f"{p}: {e}")
    if split in ("train", "val"):
        records = split_by_name(records, split)
    if limit is not None and limit >= 0:
        records = records[:limit]
    return records


# --------------------------------------------------------------------------------------------
# detection sources
# --------------------------------------------------------------------------------------------


def build_detector(
    weights: str | os.PathLike | None = None,
    min_face: float | None = None,
    factor: float | None = None,
    thresholds: Sequence[float] | None = None,
    device: str | None = None,
    preset: str | None = None,
    **options,
):
    """An :class:`~mtcnn.detector.MTCNN`: the preset's (or the default) settings, then every
    setting given explicitly (``None`` = not given) on top, so ``--preset wider --min-face 20``
    really uses 20."""
    from mtcnn.detector import MTCNN

    return MTCNN(
        weights=weights, min_face_size=min_face, factor=factor, thresholds=thresholds, device=device,
        preset=None if preset in (None, "default") else preset, **options,
    )  # fmt: skip


class FileDetections:
    """Detections read from a JSON-lines file in the detect CLI's schema.

    Matching an annotated image to a line: the longest common tail of the two paths (compared
    folder by folder, so ``/data/WIDER_val/images/0--Parade/x.jpg`` matches ``0--Parade/x.jpg``,
    an absolute path matches itself, and paths under different roots match by their common
    sub-folders or, at least, by file name) wins when that tail is unique on both sides: one line
    and one annotated image end with it. An image whose tail is shared by several lines or
    several annotated images is not guessed: it is reported as having no detections. A line that
    is not valid JSON or does not fit the schema is reported (``file:line: problem``) and its
    image counts as failed.
    """

    def __init__(self, path: str | os.PathLike, errors: Callable[[str], None]):
        self.path = Path(path)
        if not self.path.is_file():
            raise FatalError(f"{self.path}: detections file not found" if not self.path.exists() else f"{self.path}: not a file")
        self.sha256 = file_sha256(self.path)
        self._errors = errors
        self._entries: list[ImageResult | None] = []  # None: the line was bad (already reported)
        self._index: dict[tuple[str, ...], list[int]] = {}
        self._seen: dict[tuple[str, ...], int] = {}
        try:
            with open(self.path, encoding="utf-8") as f:
                for ln, raw in enumerate(f, start=1):
                    if raw.strip():
                        self._add_line(raw, ln)
        except (OSError, UnicodeDecodeError) as e:
            raise FatalError(f"{self.path}: cannot read detections ({e})") from None
        self.num_images = sum(1 for e in self._entries if e is not None)

    @property
    def settings(self) -> dict:
        return {"source": "file", "detections": str(self.path), "detections_sha256": self.sha256}

    def _add_line(self, raw: str, ln: int) -> None:
        where = f"{self.path}:{ln}"
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            self._errors(f"{where}: not valid JSON ({e.msg})")
            return
        image = obj.get("image") if isinstance(obj, dict) else None
        if not isinstance(image, str) or not _parts(image):
            self._errors(f"{where}: no \"image\" path")
            return
        parts = _parts(image)
        if parts in self._seen:
            self._errors(f"{where}: {image} is also on line {self._seen[parts]}; the first line is used")
            return
        self._seen[parts] = ln
        try:
            result: ImageResult | None = _parse_faces(obj)
        except (TypeError, ValueError, KeyError) as e:
            self._errors(f"{where}: {image}: bad \"faces\" ({e})")
            result = None
        k = len(self._entries)
        self._entries.append(result)
        for start in range(len(parts)):
            self._index.setdefault(parts[start:], []).append(k)

    def results_for(self, records: Sequence[ImageAnnotation], progress: bool = False) -> list[ImageResult | None]:
        """Each record's detections; ``None`` (reported once per image) when there are none."""
        paths = list(dict.fromkeys(r.path for r in records))
        rec_parts = {p: _parts(str(p)) for p in paths}
        tails: dict[tuple[str, ...], int] = {}
        for parts in rec_parts.values():
            for start in range(len(parts)):
                tails[parts[start:]] = tails.get(parts[start:], 0) + 1
        found: dict[Path, ImageResult | None] = {}
        for p, parts in rec_parts.items():
            found[p] = None
            for start in range(len(parts)):
                key = parts[start:]
                entries = self._index.get(key)
                if not entries:
                    continue
                if len(entries) == 1 and tails[key] == 1:
                    found[p] = self._entries[entries[0]]  # None when its line was bad (reported)
                else:
                    tail = "/".join(key)
                    self._errors(
                        f"{p}: no unambiguous detections in {self.path} ({len(entries)} line(s) and "
                        f"{tails[key]} annotated image(s) end with {tail!r})"
                    )
                break
            else:
                self._errors(f"{p}: no detections for this image in {self.path}")
        return [found[r.path] for r in records]


def _parts(path: str) -> tuple[str, ...]:
    """A path's folder and file names, separators normalised (``\\`` and ``/``, ``.``, ``..``)."""
    norm = os.path.normpath(str(path).replace("\\", "/")).replace("\\", "/")
    return tuple(x for x in norm.split("/") if x not in ("", "."))


def _parse_faces(obj: dict) -> ImageResult:
    faces = obj.get("faces", [])
    if not isinstance(faces, list):
        raise ValueError("must be a list")
    n = len(faces)
    boxes = np.zeros((n, 4), np.float64)
    scores = np.zeros(n, np.float64)
    landmarks = np.full((n, 5, 2), np.nan, np.float64)
    for k, face in enumerate(faces):
        b = np.asarray(face["box"], dtype=np.float64)
        if b.shape != (4,) or not np.isfinite(b).all():
            raise ValueError(f"face {k}: box must be 4 finite numbers")
        boxes[k] = b
        scores[k] = float(face.get("score", 1.0))
        if face.get("landmarks") is not None:
            lm = np.asarray(face["landmarks"], dtype=np.float64)
            if lm.shape != (5, 2):
                raise ValueError(f"face {k}: landmarks must be 5 [x, y] pairs")
            landmarks[k] = lm
    return ImageResult(boxes, scores, landmarks, int(obj.get("width") or 0), int(obj.get("height") or 0))


class DetectorSource:
    """Runs an :class:`~mtcnn.detector.MTCNN` over the images, ``batch_size`` per detect call.

    Each distinct image is read and detected once; an unreadable image is reported and counts as
    failed. With ``jsonl_out`` the detections are also written in the detect CLI's schema (so a
    later run can re-evaluate them with ``--detections``).
    """

    def __init__(self, detector, errors: Callable[[str], None], batch_size: int = 8, jsonl_out: str | os.PathLike | None = None):
        self.detector = detector
        self.batch_size = max(1, int(batch_size))
        self.jsonl_out = Path(jsonl_out) if jsonl_out is not None else None
        self._errors = errors

    @property
    def settings(self) -> dict:
        return {"source": "detector", **self.detector.settings, "device": str(self.detector.device)}

    def results_for(self, records: Sequence[ImageAnnotation], progress: bool = False) -> list[ImageResult | None]:
        from tqdm import tqdm

        from mtcnn.io import iter_image_batches
        from mtcnn.structures import image_record

        paths = list(dict.fromkeys(r.path for r in records))
        done: dict[Path, ImageResult | None] = {}
        lines: list[str] = []
        bar = tqdm(total=len(paths), unit="img", desc="detect", disable=not progress, file=sys.stderr, dynamic_ncols=True)

        def unreadable(path: Path, error: Exception) -> None:
            self._errors(str(error))
            done[path] = None
            bar.update(1)

        try:
            for batch in iter_image_batches(paths, self.batch_size, unreadable):
                faces = self.detector.detect([img for _, img in batch])
                for (p, img), det in zip(batch, faces):
                    h, w = img.shape[:2]
                    done[p] = ImageResult(
                        det.boxes.numpy().astype(np.float64),
                        det.scores.numpy().astype(np.float64),
                        det.landmarks.numpy().astype(np.float64),
                        int(w),
                        int(h),
                    )
                    lines.append(json.dumps(image_record(p, w, h, det)))
                    bar.update(1)
        finally:
            bar.close()
        if self.jsonl_out is not None:
            self.jsonl_out.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.jsonl_out, "".join(line + "\n" for line in lines))
        return [done[r.path] for r in records]


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
        msg = "WIDER official evaluation skipped: none of the evaluated images is in the validation ground truth"
        log(msg)
        return {"skipped": msg}, None
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



def _gather_for_task(task, annotations, fmt, images_root, errors, split, limit, detections, detector,
                     detector_kwargs, batch_size, out, progress, log):
    """Shared first half of both evaluations: annotations -> detections per image.

    Returns ``(pairs, failed, source, report)`` or, when nothing can be evaluated, the fatal
    :class:`EvalOutcome`.
    """
    records = load_annotation_records(annotations, fmt, images_root, errors, split, limit)
    if not records:
        return _fatal("no annotated images to evaluate", errors, out)
    try:
        source = _make_source(detections, detector, detector_kwargs, errors, batch_size, out)
    except FatalError as e:
        return _fatal(str(e), errors, out)
    log(_settings_line(source.settings))
    pairs, failed = _gather(records, source, progress)
    report = _common_report(task, annotations, fmt, images_root, split, limit, source, records, pairs, failed)
    if not pairs:
        return _fatal("no image could be evaluated", errors, out, report)
    return pairs, failed, source, report

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
) -> EvalOutcome:
    """Detection accuracy of a detector (or a detections file) on an annotated image set.

    ``detector``: a ready :class:`~mtcnn.detector.MTCNN`, else one is built from
    ``detector_kwargs`` (see :func:`build_detector`); ignored with ``detections`` (a JSON-lines
    file). Writes ``report.json`` and ``pr_curve.png`` (+ ``wider_pr_curve.png`` for WIDER, +
    ``roc.png`` for FDDB, + ``detections.jsonl`` when the detector ran) into ``out_dir``.
    """
    from mtcnn.eval.plots import plot_pr_curves, plot_roc

    errors = errors if errors is not None else ErrorLog()
    out = Path(out_dir)
    annotations = [annotations] if isinstance(annotations, (str, os.PathLike)) else list(annotations)
    if not 0.0 < iou <= 1.0:
        return _fatal(f"--iou must be within (0, 1], got {iou}", errors, None)
    gathered = _gather_for_task("detection", annotations, fmt, images_root, errors, split, limit, detections,
                                detector, detector_kwargs, batch_size, out, progress, log)
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
        wider, wcurves = _wider_official(pairs, wider_gt, wider_gt is not None, errors, log)
        report["wider"] = wider
        if wcurves is not None:
            log(
                "WIDER official (IoU 0.5): " + "  ".join(f"{s} {wider[s]:.4f}" for s in WIDER_SETTINGS)
                + f"  [{wider['num_images']}/{wider['num_images_ground_truth']} images]"
            )
            files.append(
                plot_pr_curves(
                    {s: (wcurves[s].recall, wcurves[s].precision, wcurves[s].ap) for s in WIDER_SETTINGS},
                    f"WIDER FACE val, official protocol ({wider['num_images']} images)",
                    plot_settings,
                    out / "wider_pr_curve.png",
                )
            )

    if fmt == "fddb":
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
        files.append(
            plot_roc(
                {"discrete": fddb.discrete_roc(), "continuous": fddb.continuous_roc()},
                f"FDDB ROC ({len(pairs)} images, {fddb.num_faces} faces)",
                plot_settings,
                out / "roc.png",
            )
        )
    if isinstance(source, DetectorSource):
        files.append(out / "detections.jsonl")
    return _finish(report, out, errors, files, log)


# --------------------------------------------------------------------------------------------
# landmark task
# --------------------------------------------------------------------------------------------


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
) -> EvalOutcome:
    """Five-point landmark accuracy of the detector's output on an annotated image set.

    Each annotated face (not ignored, with all its points) is matched to one detection
    (one-to-one, highest IoU first, IoU ≥ ``match_iou``); unmatched faces are counted and listed
    separately and count as failures in ``failure_rate_with_unmatched``. 68-point annotations are
    reduced to 5 points with :func:`landmarks_68_to_5`. Errors are normalised by the annotated
    inter-ocular distance and by the annotated box width. Writes ``report.json`` and ``ced.png``.
    """
    from mtcnn.eval.plots import plot_ced

    errors = errors if errors is not None else ErrorLog()
    out = Path(out_dir)
    annotations = [annotations] if isinstance(annotations, (str, os.PathLike)) else list(annotations)
    gathered = _gather_for_task("landmarks", annotations, fmt, images_root, errors, split, limit, detections,
                                detector, detector_kwargs, batch_size, out, progress, log)
    if isinstance(gathered, EvalOutcome):
        return gathered
    pairs, failed, source, report = gathered

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
    log(
        f"faces: {num_faces} with 5-point annotations in {len(pairs)} images ({skipped} skipped: ignored or "
        f"incomplete); matched {num_matched}, unmatched {len(unmatched)} (IoU < {match_iou:g})"
    )
    files: list[Path] = []
    if num_matched:
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
        name = _set_name(annotations, split)
        files.append(
            plot_ced(
                {"inter-ocular": (reps["inter_ocular"].ced_x, reps["inter_ocular"].ced_y),
                 "box width": (reps["box_width"].ced_x, reps["box_width"].ced_y)},
                f"Landmark CED: {name} ({num_matched} matched, {len(unmatched)} unmatched faces)",
                _plot_settings(source.settings),
                out / "ced.png",
            )
        )  # fmt: skip
    else:
        errors("no annotated face was matched to a detection: no landmark metrics")
    report["unmatched"] = unmatched
    if isinstance(source, DetectorSource):
        files.append(out / "detections.jsonl")
    return _finish(report, out, errors, files, log)


# --------------------------------------------------------------------------------------------
# command-line glue
# --------------------------------------------------------------------------------------------


def evaluate_from_args(args: argparse.Namespace) -> int:
    """Run the task of ``tools/evaluate.py``'s parsed arguments; returns the exit code."""
    detector_kwargs = {
        "weights": args.weights,
        "min_face": args.min_face,
        "factor": args.factor,
        "thresholds": args.thresholds,
        "device": args.device,
        "preset": args.preset,
    }
    common = dict(
        out_dir=args.out or f"eval_{args.task}",
        detections=args.detections,
        detector_kwargs=detector_kwargs,
        split=args.split,
        limit=args.limit,
        batch_size=args.batch_size,
        progress=not args.no_progress,
    )
    if args.task == "detection":
        outcome = evaluate_detection_set(args.annotations, args.format, args.images, iou=args.iou, wider_gt=args.wider_gt, **common)
    else:
        outcome = evaluate_landmark_set(args.annotations, args.format, args.images, match_iou=args.match_iou, **common)
    return outcome.exit_code
