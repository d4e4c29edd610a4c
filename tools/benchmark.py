#!/usr/bin/env python
"""Time the detector: ms per image (median, p10/p90) and peak memory by size, min face, batch, device.

python tools/benchmark.py --sizes 640x480 1280x720 --min-face 20 40 --batch-size 1 4 --json bench.json
python tools/benchmark.py --compare-facenet third_party/facenet_pytorch-2.6.0-py3-none-any.whl
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mtcnn.commands.benchmark import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
