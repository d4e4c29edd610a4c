"""The evaluator's result types and error log (shared by :mod:`mtcnn.eval.runner`,
:mod:`mtcnn.eval.sources` and :mod:`mtcnn.eval.landmark_set`)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mtcnn.errors import MTCNNError


class FatalError(MTCNNError):
    """Nothing can be evaluated; ``str(e)`` is one line."""


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
    """One image's detections: boxes [K,4], scores [K], landmarks [K,5,2] (NaN when not given),
    and each face's angle [K] in degrees when the detector searched rotated faces (else None)."""

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray
    width: int = 0
    height: int = 0
    angles: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


@dataclass
class EvalOutcome:
    """What a task produced: the report written to ``report.json``, its files, errors, exit code."""

    report: dict
    errors: list[str]
    exit_code: int
    files: list[Path] = field(default_factory=list)
