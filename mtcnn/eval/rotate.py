"""Rotated evaluation (``evaluate.py detection --rotate``): every photo of a set turned, with its
boxes and points, before the detector sees it.

* :func:`rotate_sample` (pure): one annotated photo turned by an angle, on a canvas that holds
  every pixel (:func:`mtcnn.rotation.rotate_image`; quarter turns exact). Boxes become the rotated
  face's square (:func:`mtcnn.rotation.rotate_face_boxes`: for a quarter turn the exact turned box,
  ``w × h`` -> ``h × w``; otherwise the square of side ``sqrt(w · h)`` on the turned centre); points
  are turned exactly (NaN stays NaN); ``ignore`` flags are kept; FDDB ellipses are left out
  (their protocol runs on upright photos only).
* :func:`image_angles`: the angle of each photo for a rotation setting: ``"0"``, ``"90"``,
  ``"180"``, ``"270"``, or ``"random"`` (uniform in [-180, 180), drawn per photo from the seed
  and the photo's ``folder/name``, so a photo keeps its angle whatever else is in the set).
* :func:`detect_rotated`: photos read once, each setting's turned copies detected ``batch_size``
  at a time; for each setting the turned records with their detections.
"""

from __future__ import annotations

import sys
import zlib
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from mtcnn.data.annotations import ImageAnnotation
from mtcnn.eval.results import ImageResult
from mtcnn.rotation import rotate_face_boxes, rotate_image, rotate_points

__all__ = ["ROTATE_ALL", "ROTATE_CHOICES", "detect_rotated", "image_angles", "rotate_sample", "rotation_settings"]

#: what ``--rotate all`` reports, side by side
ROTATE_ALL: tuple[str, ...] = ("0", "90", "180", "270", "random")
#: ``--rotate`` choices
ROTATE_CHOICES: tuple[str, ...] = ("0", "90", "180", "270", "random", "all")


def rotation_settings(rotate: str) -> tuple[str, ...]:
    """The settings one ``--rotate`` value evaluates."""
    if rotate not in ROTATE_CHOICES:
        raise ValueError(f"unknown rotation {rotate!r}: choose one of {', '.join(ROTATE_CHOICES)}")
    return ROTATE_ALL if rotate == "all" else (rotate,)


def _photo_key(record: ImageAnnotation) -> bytes:
    return f"{record.path.parent.name}/{record.path.name}".encode()


def image_angles(records: Sequence[ImageAnnotation], setting: str, seed: int = 0) -> np.ndarray:
    """Each photo's angle in degrees (counter-clockwise) for a setting of :data:`ROTATE_ALL`."""
    if setting != "random":
        if setting not in ROTATE_ALL:
            raise ValueError(f"unknown rotation setting {setting!r}")
        return np.full(len(records), float(setting))
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return np.array([np.random.default_rng([seed, zlib.crc32(_photo_key(r))]).uniform(-180.0, 180.0) for r in records])


def rotate_sample(record: ImageAnnotation, image: np.ndarray, angle: float) -> tuple[ImageAnnotation, np.ndarray]:
    """``record`` and its photo ``image`` (``H×W×C``) turned by ``angle`` degrees counter-clockwise."""
    turned, matrix = rotate_image(image, angle)
    boxes = rotate_face_boxes(record.boxes, matrix, angle).astype(np.float32)
    landmarks = rotate_points(record.landmarks, matrix).astype(np.float32) if record.landmarks.size else record.landmarks
    attributes = {k: v for k, v in record.attributes.items() if k != "ellipses"}
    out = replace(record, boxes=boxes, landmarks=landmarks, attributes=attributes,
                  width=int(turned.shape[1]), height=int(turned.shape[0]))
    return out, turned


def detect_rotated(
    detector,
    records: Sequence[ImageAnnotation],
    settings: Sequence[str],
    seed: int = 0,
    batch_size: int = 8,
    errors: Callable[[str], None] = print,
    progress: bool = False,
) -> dict[str, tuple[list[tuple[ImageAnnotation, ImageResult]], list[str], np.ndarray]]:
    """For each setting: ``(pairs, failed, angles)``: the turned records with the detector's
    result on the turned photos, the photos that could not be read or were refused for their
    size (reported through ``errors``), and every record's angle."""
    from tqdm import tqdm

    from mtcnn.io import ImageReadError, read_image_rgb

    angles = {s: image_angles(records, s, seed) for s in settings}
    out = {s: ([], [], angles[s]) for s in settings}
    size_problem = getattr(detector, "size_problem", None)
    bar = tqdm(total=len(records) * len(settings), unit="img", desc="detect rotated", disable=not progress,
               file=sys.stderr, dynamic_ncols=True)
    try:
        for start in range(0, len(records), max(1, int(batch_size))):
            batch = []
            for i in range(start, min(len(records), start + max(1, int(batch_size)))):
                try:
                    batch.append((i, read_image_rgb(records[i].path)))
                except ImageReadError as e:
                    errors(str(e))
                    for s in settings:
                        out[s][1].append(str(records[i].path))
                    bar.update(len(settings))
            for s in settings:
                turned = []
                for i, image in batch:
                    record, pixels = rotate_sample(records[i], image, float(angles[s][i]))
                    problem = size_problem(*pixels.shape[:2]) if size_problem is not None else None
                    if problem:
                        errors(f"{records[i].path} turned by {angles[s][i]:g}: {problem}")
                        out[s][1].append(str(records[i].path))
                        bar.update(1)
                    else:
                        turned.append((record, pixels))
                if not turned:
                    continue
                for (record, pixels), det in zip(turned, detector.detect([p for _, p in turned])):
                    face_angles = None if det.angles is None else det.angles.numpy().astype(np.float64)
                    result = ImageResult(det.boxes.numpy().astype(np.float64), det.scores.numpy().astype(np.float64),
                                         det.landmarks.numpy().astype(np.float64), int(pixels.shape[1]), int(pixels.shape[0]),
                                         face_angles)
                    out[s][0].append((record, result))
                bar.update(len(turned))
    finally:
        bar.close()
    return out


def angle_errors(pairs, photo_angles: Sequence[float], iou: float = 0.5) -> np.ndarray:
    """Absolute angle errors (degrees, 0-180) of the detections matched to faces (IoU ≥ ``iou``,
    greedily by score, one detection per face, ignored faces left out): a face of a photo turned
    by ``a`` is at angle ``a`` (the photos' faces taken as upright). Empty when the detector gives
    no angles."""
    from mtcnn.ops.np_boxes import box_iou

    errors = []
    for (record, result), angle in zip(pairs, photo_angles):
        if result.angles is None or not len(result) or not len(record.boxes):
            continue
        faces = np.flatnonzero(~np.asarray(record.ignore, bool))
        if not faces.size:
            continue
        overlap = box_iou(result.boxes, np.asarray(record.boxes, np.float64)[faces])
        taken = np.zeros(faces.size, bool)
        for k in np.argsort(-result.scores, kind="stable"):
            row = np.where(taken, -1.0, overlap[k])
            j = int(row.argmax())
            if row[j] >= iou:
                taken[j] = True
                diff = (result.angles[k] - float(angle)) % 360.0
                errors.append(min(diff, 360.0 - diff))
    return np.asarray(errors, np.float64)
