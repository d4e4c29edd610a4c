#!/usr/bin/env python
"""Pack trained landmark nets into one float16 weights file plus a JSON card.

    python tools/pack_landmarks.py runs/mobilenet_l1/mobilenet_l1.pt runs/mobilenet_l2/mobilenet_l2.pt \
        --kind mobilenet_cascade --out mtcnn/weights/mobilenet_cascade.pt
    python tools/pack_landmarks.py runs/kp68_compact/kp68_compact.pt --out mtcnn/weights/kp68_compact.pt
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtcnn.commands.pack_landmarks import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
