#!/usr/bin/env python
"""Evaluate face detection or landmarks on an annotated set (see mtcnn/eval/runner.py).

python tools/evaluate.py detection --annotations testing.xml --images DIR --format dlib --out OUT
python tools/evaluate.py landmarks --annotations testImageList.txt --format cnn_facepoint --out OUT
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mtcnn.commands.evaluate import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
