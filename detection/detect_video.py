#!/usr/bin/env python
"""Detect faces in a video file or a camera stream.

python detection/detect_video.py VIDEO_OR_CAMERA_INDEX [--out annotated.mp4] [--json faces.jsonl]
       [--batch-size 4] [--every 1] [--max-frames N] [--crops DIR [--crop-size 112]] [--quiet]
       [--track [--full-every 10] [--lookback 0] [--no-smoothing | --smooth-position HZ BETA --smooth-shape HZ BETA]]
       [detector options as in tools/detect.py]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mtcnn.commands.detect_video import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
