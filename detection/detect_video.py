#!/usr/bin/env python
"""Detect faces in a video file or a camera stream.

python detection/detect_video.py VIDEO_OR_CAMERA_INDEX [--out annotated.mp4] [--json faces.jsonl]
       [--batch-size 4] [--every 1] [--max-frames N] [--crops DIR [--crop-size 112]]
       [detector options as in tools/detect.py]
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mtcnn.cli import _crop_size, _detector_arguments, build_detector  # noqa: E402
from mtcnn.io import ImageReadError  # noqa: E402
from mtcnn.stream import detect_stream  # noqa: E402
from mtcnn.weights import WeightsError  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="video file, or a camera index such as 0")
    parser.add_argument("--out", help="write the annotated video here (.mp4)")
    parser.add_argument("--json", help="write one JSON line per processed frame")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--every", type=int, default=1, help="process every N-th frame")
    parser.add_argument("--max-frames", type=int)
    _detector_arguments(parser)
    args = parser.parse_args()
    crop_size = _crop_size(parser, args)
    try:
        stats = detect_stream(build_detector(args), args.source, out_video=args.out, json_path=args.json,
                              batch_size=args.batch_size, max_frames=args.max_frames, every=args.every,
                              crops_dir=args.crops, crop_size=crop_size)
    except (WeightsError, ImageReadError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{stats['frames']} frames, {stats['faces']} faces, {stats['ms_per_frame']:.1f} ms per frame")
    return 0


if __name__ == "__main__":
    sys.exit(main())
