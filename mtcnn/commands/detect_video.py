"""``mtcnn-detect-video`` / ``detection/detect_video.py``: faces in a video file or camera stream."""

from __future__ import annotations

import argparse

from mtcnn.commands.common import detector_arguments, detector_from_args, report
from mtcnn.errors import MTCNNError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="detect_video.py", description="Detect faces in a video file or a camera stream.")
    p.add_argument("source", help="video file, or a camera index such as 0")
    p.add_argument("--out", help="write the annotated video here (.mp4)")
    p.add_argument("--json", help="write one JSON line per processed frame")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--every", type=int, default=1, help="process every N-th frame")
    p.add_argument("--max-frames", type=int)
    detector_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    from mtcnn.stream import detect_stream

    args = parser().parse_args(argv)
    try:
        stats = detect_stream(detector_from_args(args), args.source, out_video=args.out, json_path=args.json,
                              batch_size=args.batch_size, max_frames=args.max_frames, every=args.every)
    except (MTCNNError, ValueError) as e:
        return report(e)
    print(f"{stats['frames']} frames, {stats['faces']} faces, {stats['ms_per_frame']:.1f} ms per frame")
    return 0
