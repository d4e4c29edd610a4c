#!/usr/bin/env python
"""Train the Sun, Wang & Tang landmark cascade (F1, EN1, NM1 and the 20 patch nets).

    python train_models/train_landmarks.py --level 1|2|3 [...] [--point LE ...] [--workers N]
        [--out DIR] [--bundle mtcnn/weights/cascade_sun.pt] [key=value ...]

All 23 nets by default; finished nets are skipped and a stopped net resumes from its last epoch,
so rerunning the same command continues. See mtcnn/training/cascade_run.py.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtcnn.training.cascade_run import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
