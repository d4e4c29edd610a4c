"""Detection over video streams (files or cameras): frames batched through the detector, or
tracked (:mod:`mtcnn.tracking`: the full cascade every few frames, O-Net alone in between)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import cv2

from mtcnn.align import save_aligned_crops
from mtcnn.detect import detect_batches
from mtcnn.io import ImageReadError
from mtcnn.smoothing import LandmarkSmoothing
from mtcnn.tracking import FaceTracker, SceneCutDetector, TrackedFrame, track
from mtcnn.visualize import draw_detections

_DEFAULT_SMOOTHING = LandmarkSmoothing()


def detect_stream(
    detector,
    source: str | int,
    *,
    out_video: str | os.PathLike | None = None,
    json_path: str | os.PathLike | None = None,
    batch_size: int = 4,
    max_frames: int | None = None,
    every: int = 1,
    crops_dir: str | os.PathLike | None = None,
    crop_size: int | tuple[int, int] = 112,
    tracking: bool = False,
    full_every: int = 10,
    lookback: int = 0,
    smoothing: LandmarkSmoothing | None = _DEFAULT_SMOOTHING,
    progress: bool = False,
) -> dict:
    """Run ``detector`` on every ``every``-th frame of a video file or camera index.

    Writes an annotated video (mp4v) and/or JSON lines ``{"frame": k, "faces": [...]}``; returns
    counts and the mean milliseconds per frame. ``crops_dir``: one aligned face crop per face,
    ``frame{k:06d}_{face}.png`` (see :func:`mtcnn.align.norm_crop`).

    ``tracking``: a :class:`~mtcnn.tracking.FaceTracker` instead of per-frame detection: the
    full cascade every ``full_every`` processed frames and at scene cuts, O-Net alone in
    between, ``lookback`` frames held back to follow new faces back, landmarks smoothed by
    ``smoothing`` (None: O-Net's own). Each JSON face then has its track ``"id"``, each line
    says whether the full cascade ran (``"full"``) and whether a scene cut was detected
    (``"cut"``); the video shows the ids. ``batch_size`` applies to per-frame detection only.
    :func:`track` is the same tracker over any iterable of frames.

    ``progress``: a progress bar on stderr with the last frame's and the mean milliseconds.
    """
    capture = cv2.VideoCapture(int(source) if str(source).isdigit() else str(source))
    if not capture.isOpened():
        raise ImageReadError(source, "cannot open video (missing file, unsupported codec or no camera)")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    writer = json_file = bar = None
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        json_file = open(json_path, "w")
    frames = faces_total = emitted = 0
    seconds = 0.0
    if progress:
        from tqdm import tqdm

        expected = -(-total // every) if total > 0 else None
        if expected is not None and max_frames is not None:
            expected = min(expected, max_frames)
        bar = tqdm(total=expected, unit="frame", desc="tracking" if tracking else "detecting", mininterval=0.5, dynamic_ncols=True)

    def emit(index: int, rgb, faces, ms: float, record: dict, ids=None) -> None:
        nonlocal writer, faces_total, seconds, emitted
        seconds += ms / 1000
        emitted += 1
        faces_total += len(faces)
        if crops_dir:
            save_aligned_crops(rgb, faces.landmarks, crops_dir, f"frame{index:06d}", crop_size)
        if json_file:
            json_file.write(json.dumps(record) + "\n")
        if out_video:
            if writer is None:
                Path(out_video).parent.mkdir(parents=True, exist_ok=True)
                h, w = rgb.shape[:2]
                writer = cv2.VideoWriter(str(out_video), cv2.VideoWriter_fourcc(*"mp4v"), fps / every, (w, h))
            writer.write(cv2.cvtColor(draw_detections(rgb, faces, labels=ids), cv2.COLOR_RGB2BGR))
        if bar is not None:
            bar.set_postfix_str(f"{ms:.1f} ms/frame, mean {1000 * seconds / emitted:.1f}", refresh=False)
            bar.update(1)

    batch: list[tuple[int, object]] = []

    def flush() -> None:
        for found in detect_batches(detector, [batch] if batch else []):
            emit(found.key, found.image, found.faces, found.ms, {"frame": found.key, "faces": found.faces.to_records()})
        batch.clear()

    def emit_tracked(ready: list[TrackedFrame]) -> None:
        for t in ready:
            record = {"frame": t.index, "full": t.full, "cut": t.cut, "faces": t.to_records()}
            emit(t.index, t.image, t.faces, t.ms, record, ids=[f"#{i}" for i in t.ids.tolist()])

    tracker = FaceTracker(detector, every=full_every, lookback=lookback, smoothing=smoothing, fps=fps) if tracking else None
    try:
        for index, rgb in _read_frames(capture, every, max_frames):
            frames += 1
            if tracker is not None:
                emit_tracked(tracker.push(rgb, index))
                continue
            batch.append((index, rgb))
            if len(batch) >= batch_size:
                flush()
        if tracker is not None:
            emit_tracked(tracker.flush())
        flush()
    finally:
        capture.release()
        if writer is not None:
            writer.release()
        if json_file:
            json_file.close()
        if bar is not None:
            bar.close()
    return {"frames": frames, "faces": faces_total, "ms_per_frame": 1000 * seconds / max(frames, 1)}


def _read_frames(capture, every: int, max_frames: int | None) -> Iterator[tuple[int, object]]:
    """``(frame number, RGB frame)`` of every ``every``-th frame, at most ``max_frames`` of them."""
    index = taken = 0
    while max_frames is None or taken < max_frames:
        ok, bgr = capture.read()
        if not ok:
            return
        if index % every == 0:
            taken += 1
            yield index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        index += 1


__all__ = ["FaceTracker", "LandmarkSmoothing", "SceneCutDetector", "TrackedFrame", "detect_stream", "track"]
