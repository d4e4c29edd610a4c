#!/usr/bin/env python
"""Evaluate landmark-zoo models on their test splits.

    python tools/evaluate_zoo.py kp68 --model compact=mtcnn/weights/kp68_compact.pt --model baseline=runs/kp68_baseline/kp68_baseline.pt --out runs/eval_kp68
    python tools/evaluate_zoo.py mobilenet --out runs/eval_mobilenet          # the shipped cascade

kp68: NME (outer eye corners), failures, CED plot, best/worst-100 mosaics; mobilenet: the 5-point
table of both levels (the Sun cascade's columns), size and faces per second.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtcnn.commands.evaluate_zoo import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
