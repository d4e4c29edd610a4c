"""``mtcnn-detect-video`` / ``detection/detect_video.py``: faces in a video file or camera stream."""

from __future__ import annotations

import argparse

from mtcnn.commands.common import crop_size_from_args, detector_arguments, detector_from_args, finite_float, report
from mtcnn.errors import MTCNNError
from mtcnn.smoothing import LandmarkSmoothing, OneEuroSettings


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="detect_video.py", description="Detect faces in a video file or a camera stream.")
    p.add_argument("source", help="video file, or a camera index such as 0")
    p.add_argument("--out", help="write the annotated video here (.mp4)")
    p.add_argument("--json", help="write one JSON line per processed frame")
    p.add_argument("--batch-size", type=int, default=4, help="frames per detector call (per-frame detection)")
    p.add_argument("--every", type=int, default=1, help="process every N-th frame")
    p.add_argument("--max-frames", type=int)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    t = p.add_argument_group("tracking (--track)")
    t.add_argument("--track", action="store_true",
                   help="track faces: the full cascade every --full-every frames and at scene cuts, O-Net alone in "
                        "between; stable ids in the JSON and the video; smoothed landmarks")
    t.add_argument("--full-every", type=_positive_int, default=10, metavar="K", help="full cascade every K processed frames (default 10)")
    t.add_argument("--lookback", type=_non_negative_int, default=0, metavar="L",
                   help="hold L frames back (latency) so faces a full pass finds are followed back into them; K-1 covers "
                        "the gap between full passes (default 0: each frame out at once)")
    t.add_argument("--no-smoothing", action="store_true", help="O-Net's own landmarks, not smoothed")
    position, shape = LandmarkSmoothing.position, LandmarkSmoothing.shape
    t.add_argument("--smooth-position", type=finite_float, nargs=2, metavar=("HZ", "BETA"),
                   default=(position.min_cutoff, position.beta),
                   help="One-Euro filter of the landmarks' centroid: cutoff of a still face in Hz (lower: steadier, more lag) and "
                        f"speed coefficient per face width per second (higher: less lag) (default {position.min_cutoff:g} {position.beta:g})")
    t.add_argument("--smooth-shape", type=finite_float, nargs=2, metavar=("HZ", "BETA"), default=(shape.min_cutoff, shape.beta),
                   help=f"the same for each point's offset from the centroid (default {shape.min_cutoff:g} {shape.beta:g})")
    detector_arguments(p)
    return p


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, not {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, not {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    from mtcnn.stream import detect_stream

    p = parser()
    args = p.parse_args(argv)
    crop_size = crop_size_from_args(p, args)
    try:
        smoothing = None if args.no_smoothing else LandmarkSmoothing(OneEuroSettings(*args.smooth_position),
                                                                     OneEuroSettings(*args.smooth_shape))
    except ValueError as e:
        p.error(str(e))
    try:
        stats = detect_stream(detector_from_args(args), args.source, out_video=args.out, json_path=args.json,
                              batch_size=args.batch_size, max_frames=args.max_frames, every=args.every,
                              crops_dir=args.crops, crop_size=crop_size, tracking=args.track, full_every=args.full_every,
                              lookback=args.lookback, smoothing=smoothing, progress=not args.quiet)
    except (MTCNNError, ValueError) as e:
        return report(e)
    print(f"{stats['frames']} frames, {stats['faces']} faces, {stats['ms_per_frame']:.1f} ms per frame")
    return 0
