"""Running the detector over many inputs: the one loop the detect command, the evaluator and the
stream tool share, and the one way a detector is built from command-line style settings."""

from __future__ import annotations

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
):
    """An :class:`~mtcnn.detector.MTCNN`: the preset's (or the default) settings, then every
    setting given explicitly (``None`` = not given) on top, so ``--preset wider --min-face 20``
    really uses 20."""
    from mtcnn.detector import MTCNN

    return MTCNN(
        weights=weights, min_face_size=min_face, factor=factor, thresholds=thresholds, device=device,
        preset=None if preset in (None, "default") else preset,
    )  # fmt: skip


@dataclass(frozen=True)
class Detected:
    """One input's result: its key (a path, a frame number), the RGB image, the faces, and the
    detector time per image of its batch in milliseconds."""

    key: Any
    image: np.ndarray
    faces: Detections
    ms: float


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

    A file that cannot be read goes to ``on_error`` (default: raise) and the others go on.
    """

    def raise_error(path: Path, error: ImageReadError) -> None:
        raise error

    yield from detect_batches(detector, iter_image_batches(paths, batch_size, on_error or raise_error))


__all__ = ["Detected", "build_detector", "detect_batches", "detect_files"]
