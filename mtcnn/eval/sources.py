"""Where the evaluator's detections come from: a JSON-lines file in the detect command's schema,
or the detector run over the annotated images (:func:`mtcnn.detect.detect_files`)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from mtcnn.atomic import atomic_write_text
from mtcnn.data.annotations import ImageAnnotation
from mtcnn.eval.results import FatalError, ImageResult
from mtcnn.io import file_sha256


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

        from mtcnn.detect import detect_files
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
            for found in detect_files(self.detector, paths, self.batch_size, unreadable):
                p, det = found.key, found.faces
                h, w = found.image.shape[:2]
                done[p] = ImageResult(
                    det.boxes.numpy().astype(np.float64),
                    det.scores.numpy().astype(np.float64),
                    det.landmarks.numpy().astype(np.float64),
                    int(w),
                    int(h),
                )
                lines.append(json.dumps(image_record(p, w, h, det, found.orientation)))
                bar.update(1)
        finally:
            bar.close()
        if self.jsonl_out is not None:
            self.jsonl_out.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.jsonl_out, "".join(line + "\n" for line in lines))
        return [done[r.path] for r in records]


