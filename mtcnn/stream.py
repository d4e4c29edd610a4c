"""Detection over video streams (files or cameras), frames batched through the detector."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2

from mtcnn.detect import detect_batches
from mtcnn.io import ImageReadError
from mtcnn.visualize import draw_detections


def detect_stream(
    detector,
    source: str | int,
    *,
    out_video: str | os.PathLike | None = None,
    json_path: str | os.PathLike | None = None,
    batch_size: int = 4,
    max_frames: int | None = None,
    every: int = 1,
) -> dict:
    """Run ``detector`` on every ``every``-th frame of a video file or camera index.

    Writes an annotated video (mp4v) and/or JSON lines ``{"frame": k, "faces": [...]}``; returns
    counts and the mean milliseconds per frame.
    """
    capture = cv2.VideoCapture(int(source) if str(source).isdigit() else str(source))
    if not capture.isOpened():
        raise ImageReadError(source, "cannot open video (missing file, unsupported codec or no camera)")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    writer = json_file = None
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        json_file = open(json_path, "w")
    frames = faces_total = 0
    seconds = 0.0
    batch: list[tuple[int, object]] = []

    def flush() -> None:
        nonlocal writer, faces_total, seconds
        if not batch:
            return
        for found in detect_batches(detector, [batch]):
            index, rgb, faces = found.key, found.image, found.faces
            seconds += found.ms / 1000
            faces_total += len(faces)
            if json_file:
                json_file.write(json.dumps({"frame": index, "faces": faces.to_records()}) + "\n")
            if out_video:
                if writer is None:
                    Path(out_video).parent.mkdir(parents=True, exist_ok=True)
                    h, w = rgb.shape[:2]
                    writer = cv2.VideoWriter(str(out_video), cv2.VideoWriter_fourcc(*"mp4v"), fps / every, (w, h))
                writer.write(cv2.cvtColor(draw_detections(rgb, faces), cv2.COLOR_RGB2BGR))
        batch.clear()

    try:
        index = 0
        while max_frames is None or frames < max_frames:
            ok, bgr = capture.read()
            if not ok:
                break
            if index % every == 0:
                batch.append((index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
                frames += 1
                if len(batch) >= batch_size:
                    flush()
            index += 1
        flush()
    finally:
        capture.release()
        if writer is not None:
            writer.release()
        if json_file:
            json_file.close()
    return {"frames": frames, "faces": faces_total, "ms_per_frame": 1000 * seconds / max(frames, 1)}
