#!/usr/bin/env python
"""Train the MTCNN rnet.

    python train_models/train_rnet.py [--config mtcnn/config/defaults/train_rnet.yaml] [--out DIR] [--resume] [key=value ...]
    python -m torch.distributed.run --nproc_per_node N train_models/train_rnet.py ...   (DDP)

Overrides are checked before any work (unknown keys get a "did you mean"); see mtcnn/training/ and mtcnn/commands/train.py.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtcnn.commands.train import rnet_main as main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
