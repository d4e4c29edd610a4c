"""Several detector weights side by side on every validation set, in one run: the README's
"Results" table (``tools/compare_models.py``).

Rows (the data README's validation splits; nothing here is trained on):

* ``dlib_faces`` (both XML files, 43 faces in 9 photos): recall at IoU 0.3 and false positives,
  at the detector's operating point (dlib's boxes are tight, so the usual 0.5 would count
  well-placed MTCNN boxes as misses).
* ``face_mask`` validation: AP at IoU 0.5, and recall at 0.5 of faces under 20 px and of the rest
  (the larger box side; the other group is ignored, so its detections are neither hits nor
  false positives).
* Caltech WebFaces validation: AP at 0.5 against boxes derived from the four points
  (:class:`~mtcnn.data.webfaces.PointsToBox`) and widened like every CNN_FacePoint-style box.
* The composite validation scenes of a pipeline work dir: AP at 0.5.
* ``nonface_scenes`` validation: detections per image, every one a false positive.
* CNN_FacePoint test: O-Net's five points, NME by inter-ocular distance, each annotated face
  matched to a detection (:func:`mtcnn.eval.landmark_set.evaluate_landmark_set`).
* Speed at 640×480 and 1920×1080 (:func:`mtcnn.eval.speed.run_benchmark`, median ms per image).

A set whose files are absent (WebFaces, the scenes) is reported as missing, not as zero.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mtcnn.atomic import atomic_write_text
from mtcnn.data.annotations import ImageAnnotation, read_annotations, split_by_name
from mtcnn.eval.detection import evaluate_detections
from mtcnn.io import read_image_rgb

SMALL_FACE = 20.0
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass(frozen=True)
class TableInputs:
    """Where the validation sets are; ``webfaces`` / ``scenes_val`` may be absent."""

    data: Path
    webfaces: Path
    scenes_val: Path | None = None
    wider: Path | None = None  # WIDER FACE training photos (train/<file>.jpg); the held-out split is a row


# The WIDER rows run at the paper's WIDER setting (min face 10, factor 0.79), each model at its own
# thresholds: that is how WIDER FACE figures are published and how the held-out WIDER val is measured.
WIDER_MIN_FACE = 10.0
WIDER_FACTOR = 0.79


def wider_split_records(wider: Path, data: Path, split: str = "val") -> list[ImageAnnotation]:
    """The WIDER FACE training photos present under ``wider/train`` with their official boxes, split
    by file-name hash (the training recipe's rule: ``split_rule: hashed``, 80 % train)."""
    from mtcnn.config.data import SourceConfig
    from mtcnn.data.generate import load_source

    return load_source(SourceConfig(
        name="wider", format="wider", path=str(data / "wider_face" / "wider_face_split" / "wider_face_train_bbx_gt.txt"),
        images_root=str(wider / "train"), images_layout="flat", missing_images="skip", split=split, split_rule="hashed",
    ))


def _with_boxes(records: list[ImageAnnotation], convert: Callable[[np.ndarray], np.ndarray]) -> list[ImageAnnotation]:
    from dataclasses import replace

    return [replace(r, boxes=convert(r.boxes) if len(r.boxes) else r.boxes) for r in records]


def detection_sets(inputs: TableInputs) -> dict[str, list[ImageAnnotation]]:
    """Each detection validation set's records (boxes in the detector's convention)."""
    from mtcnn.config.data import WiderBoxConfig
    from mtcnn.data.sampling import tight_to_wider

    d = inputs.data
    sets: dict[str, list[ImageAnnotation]] = {
        "dlib_faces": read_annotations(d / "dlib_faces" / "training.xml", "dlib") + read_annotations(d / "dlib_faces" / "testing.xml", "dlib"),
        "face_mask val": split_by_name(read_annotations(d / "face_mask" / "annotations", "voc"), "val"),
    }
    truth = inputs.webfaces / "WebFaces_GroundThruth.txt"
    if truth.is_file():
        wider = WiderBoxConfig()
        sets["WebFaces val"] = _with_boxes(split_by_name(read_annotations(truth, "webfaces"), "val"), lambda b: tight_to_wider(b, wider))
    if inputs.scenes_val is not None and (inputs.scenes_val / "scenes_bbx_gt.txt").is_file():
        sets["composite scenes val"] = read_annotations(inputs.scenes_val / "scenes_bbx_gt.txt", "wider", inputs.scenes_val)
    nonface = sorted(p for p in (d / "nonface_scenes").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    empty = np.zeros((0, 4), np.float32)
    nonface_records = [ImageAnnotation(p, empty, np.zeros((0, 0, 2), np.float32), np.zeros(0, bool)) for p in nonface]
    sets["nonface_scenes val"] = split_by_name(nonface_records, "val")
    if inputs.wider is not None and (inputs.wider / "train").is_dir():
        sets["WIDER train-split val"] = wider_split_records(inputs.wider, d, "val")
    return sets


def _detect_all(detector, records: Sequence[ImageAnnotation], batch: int = 8) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for start in range(0, len(records), batch):
        images = [read_image_rgb(r.path) for r in records[start : start + batch]]
        out.extend((f.boxes.numpy(), f.scores.numpy()) for f in detector.detect(images))
    return out


def _side(boxes: np.ndarray) -> np.ndarray:
    return np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])


def detection_rows(name: str, records: Sequence[ImageAnnotation], detections) -> dict[str, float]:
    """The table's figures for one set (see the module docstring)."""
    truth = [(r.boxes, r.ignore) for r in records]
    if name.startswith("nonface"):
        count = sum(len(s) for _, s in detections)
        return {"false positives per image": count / max(len(records), 1), "images": len(records)}
    if name.startswith("dlib"):
        rep = evaluate_detections(detections, truth, iou_threshold=0.3)
        tp = int(rep.tp[-1]) if rep.tp.size else 0
        return {"recall at IoU 0.3": tp / rep.num_gt, "false positives": int(rep.fp[-1]) if rep.fp.size else 0, "faces": int(rep.num_gt)}
    if name.startswith("WIDER"):
        return wider_rows(records, detections)
    rep = evaluate_detections(detections, truth, iou_threshold=0.5)
    row = {"AP at IoU 0.5": float(rep.ap), "faces": int(rep.num_gt)}
    if name.startswith("face_mask"):
        for label, keep in (("< 20 px", lambda s: s < SMALL_FACE), (">= 20 px", lambda s: s >= SMALL_FACE)):
            part = [(b, ig | ~keep(_side(b))) for b, ig in truth]
            sub = evaluate_detections(detections, part, iou_threshold=0.5)
            tp = int(sub.tp[-1]) if sub.tp.size else 0
            row[f"recall {label}"] = tp / sub.num_gt if sub.num_gt else float("nan")
            row[f"faces {label}"] = int(sub.num_gt)
    return row


def wider_rows(records: Sequence[ImageAnnotation], detections) -> dict[str, float]:
    """Official-protocol easy / medium / hard AP, the settings by face height (no ``.mat`` keep lists
    exist for training photos: :data:`mtcnn.eval.wider.HEIGHT_SETTINGS`)."""
    from mtcnn.eval.wider import wider_curves_from_records

    curves = wider_curves_from_records(records, detections)
    row = {f"{s} AP": float(c.ap) for s, c in curves.items()}
    row["faces (hard)"] = int(curves["hard"].num_faces)
    return row


def landmark_row(detector, inputs: TableInputs, out: Path) -> dict[str, float]:
    from mtcnn.eval.landmark_set import evaluate_landmark_set

    outcome = evaluate_landmark_set([inputs.data / "cnn_facepoint" / "testImageList.txt"], "cnn_facepoint",
                                    detector=detector, out_dir=out, progress=False, log=lambda _: None)
    report = outcome.report
    nme = report["inter_ocular"]["nme"] if "inter_ocular" in report else float("nan")
    return {"NME (inter-ocular)": float(nme), "faces matched": int(report["num_matched"]), "faces": int(report["num_matched"] + report["num_unmatched"])}


def speed_row(detector, image: np.ndarray | None, threads: int, repeats: int) -> dict[str, float]:
    from mtcnn.eval.speed import run_benchmark

    result = run_benchmark(sizes=[(640, 480), (1920, 1080)], detector=detector, threads=threads, repeats=repeats, image=image)
    return {f"{c.width}x{c.height} ms": c.ms_median for c in result.cases}


def compare_models(weights: dict[str, str], inputs: TableInputs, out: Path, *, threads: int = 2, repeats: int = 5,
                   log: Callable[[str], None] = print, precision: str = "auto") -> dict:
    """Every row for every weights label; writes ``results.json`` and ``results.md`` under ``out``."""
    from mtcnn.detect import build_detector

    sets = detection_sets(inputs)
    results: dict[str, dict] = {}
    for label, path in weights.items():
        detector = build_detector(weights=path, device="cpu", precision=precision)
        rows: dict[str, dict] = {}
        for name, records in sets.items():
            if name.startswith("WIDER"):
                wider_detector = build_detector(weights=path, device="cpu", precision=precision,
                                                min_face=WIDER_MIN_FACE, factor=WIDER_FACTOR)
                rows[name] = detection_rows(name, records, _detect_all(wider_detector, records))
            else:
                rows[name] = detection_rows(name, records, _detect_all(detector, records))
            log(f"{label}: {name}: {rows[name]}")
        rows["CNN_FacePoint test landmarks"] = landmark_row(detector, inputs, out / f"landmarks_{label}")
        log(f"{label}: landmarks: {rows['CNN_FacePoint test landmarks']}")
        rows["speed"] = speed_row(detector, None, threads, repeats)
        log(f"{label}: speed: {rows['speed']}")
        results[label] = {"weights": str(path), "sha256": detector.weights_info.get("sha256"), "precision": detector.precision,
                          "thresholds": [float(t) for t in detector.config.thresholds], "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "results.json", json.dumps(results, indent=2))
    atomic_write_text(out / "results.md", markdown_table(results))
    return results


def markdown_table(results: dict[str, dict]) -> str:
    """One line per (set, figure), one column per weights label."""
    labels = list(results)
    first = results[labels[0]]["rows"]
    lines = ["| set | figure | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(labels)]
    if all("thresholds" in results[label] for label in labels):
        # Each model at its own operating point (the thresholds its weights were calibrated for).
        lines.append("| detector | thresholds P/R/O | " + " | ".join("/".join(f"{t:g}" for t in results[label]["thresholds"]) for label in labels) + " |")
    for name, figures in first.items():
        for figure in figures:
            cells = []
            for label in labels:
                value = results[label]["rows"].get(name, {}).get(figure)
                cells.append("—" if value is None else (f"{value:.3f}" if isinstance(value, float) else str(value)))
            lines.append(f"| {name} | {figure} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
