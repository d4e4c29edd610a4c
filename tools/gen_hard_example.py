#!/usr/bin/env python
"""Mine the next stage's training set with the trained earlier stages.

python tools/gen_hard_example.py --test_mode PNet|RNet [--split train|val] [--config mtcnn/config/defaults/mine.yaml]
                                 [--pnet CKPT] [--rnet CKPT] [--overwrite] [key=value ...]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtcnn.commands.gen_hard_example import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
