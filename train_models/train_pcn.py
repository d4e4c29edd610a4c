#!/usr/bin/env python
"""Train one stage of the rotation-calibrating cascade (MTCNN(rotation="pcn")).

    python train_models/train_pcn.py --config train_pcn1.yaml [--out DIR] [key=value ...]

See mtcnn/commands/train_pcn.py.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtcnn.commands.train_pcn import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
