"""Running the detector over many inputs: the one loop the detect command, the evaluator and the
stream tool share, and the one way a detector is built from command-line style settings."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtcnn.io import ImageReadError, iter_image_batches
from mtcnn.structures import Detections


def build_detector(
    weights: str | os.PathLike | None = None,
    min_face: float | None = None,
    factor: float | None = None,
    thresholds: Sequence[float] | None = None,
    device: str | None = None,
    preset: str | None = None,
    backend: str = "torch",
    landmarks: str = "onet",
    cascade: str | os.PathLike | None = None,
    precision: str = "auto",
    **options,
):
    """An :class:`~mtcnn.detector.MTCNN`: the preset's (or the default) settings, then every
    setting given explicitly (``None`` = not given) on top, so ``--preset wider --min-face 20``
    really uses 20. ``landmarks="cascade"`` adds the Sun et al. cascade (bundle ``cascade``);
    ``options`` are further :class:`~mtcnn.config.DetectorConfig` settings."""
    from mtcnn.detector import MTCNN

    return MTCNN(
        weights=weights, min_face_size=min_face, factor=factor, thresholds=thresholds, device=device,
        preset=None if preset in (None, "default") else preset, backend=backend, precision=precision, landmarks=landmarks, cascade=cascade,
        **options,
    )  # fmt: skip


@dataclass(frozen=True)
class Detected:
    """One input's result: its key (a path, a frame number), the RGB image, the faces, the
    detector time per image of its batch in milliseconds and, for an image file, the EXIF
    orientation applied when reading it (1 = stored upright; None for other inputs)."""

    key: Any
    image: np.ndarray
    faces: Detections
    ms: float
    orientation: int | None = None


def detect_batches(detector, batches: Iterable[Sequence[tuple[Any, np.ndarray]]]) -> Iterator[Detected]:
    """Detect each batch of ``(key, RGB image)`` pairs with one detector call, in order."""
    for batch in batches:
        t0 = time.perf_counter()
        results = detector.detect([image for _, image in batch])
        ms = (time.perf_counter() - t0) * 1000 / len(batch)
        for (key, image), faces in zip(batch, results):
            yield Detected(key, image, faces, ms)


def detect_files(
    detector,
    paths: Sequence[str | os.PathLike],
    batch_size: int = 1,
    on_error: Callable[[Path, ImageReadError], None] | None = None,
) -> Iterator[Detected]:
    """Detect faces in image files, ``batch_size`` images per detector call, in order.

    A file that cannot be read, or that the detector refuses for its size (``max_megapixels``),
    goes to ``on_error`` (default: raise) and the others go on.
    """

    def raise_error(path: Path, error: ImageReadError) -> None:
        raise error

    on_error = on_error or raise_error
    orientations: dict[Path, int] = {}
    batches = _within_size(detector, iter_image_batches(paths, batch_size, on_error, orientations), on_error)
    for found in detect_batches(detector, batches):
        yield dataclasses.replace(found, orientation=orientations.get(found.key))


def _within_size(detector, batches: Iterable[list[tuple[Path, np.ndarray]]],
                 on_error: Callable[[Path, ImageReadError], None]) -> Iterator[list[tuple[Path, np.ndarray]]]:
    """Leave out the images the detector refuses for their size, reported like unreadable files,
    so one huge image never stops the rest of its batch."""
    size_problem = getattr(detector, "size_problem", None)
    for batch in batches:
        if size_problem is not None:
            kept = []
            for path, image in batch:
                problem = size_problem(*image.shape[:2])
                if problem:
                    on_error(path, ImageReadError(path, problem))
                else:
                    kept.append((path, image))
            batch = kept
        if batch:
            yield batch


__all__ = ["Detected", "build_detector", "detect_batches", "detect_files"]
