#!/usr/bin/env python
"""Train a landmark-zoo net: a 68-point model or a level of the MobileNet-V2 cascade.

    python train_models/train_keypoints.py --config train_kp68_compact.yaml [--out DIR] [key=value ...]
    python train_models/train_keypoints.py --config train_mobilenet_l1.yaml
    python train_models/train_keypoints.py --config train_mobilenet_l2.yaml data.level1_weights=runs/mobilenet_l1/mobilenet_l1.pt

Shipped configs live in mtcnn/config/defaults/; overrides are checked before any work.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtcnn.commands.train_keypoints import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
