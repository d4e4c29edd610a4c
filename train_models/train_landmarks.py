#!/usr/bin/env python
"""Train the Sun, Wang & Tang landmark cascade (F1, EN1, NM1 and the 20 patch nets).

    python train_models/train_landmarks.py --level 1|2|3 [...] [--point LE ...] [--workers N]
        [--out DIR] [--bundle mtcnn/weights/cascade_sun.pt] [--calibrate-with W] [key=value ...]

See mtcnn/commands/train_landmarks.py.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtcnn.commands.train_landmarks import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
