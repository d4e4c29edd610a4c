#!/usr/bin/env python
"""Detect faces and landmarks: python tools/detect.py photo.jpg [more images or folders] [options]."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mtcnn.commands.detect import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
