#!/usr/bin/env python
"""How far each landmark source's point definitions sit from CNN_FacePoint's (point_offsets for its config).

    python tools/measure_point_offsets.py {gen}/samples/onet_train.h5 --source 300w='*/300w/*' --source udacity68='*/udacity68/*'
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtcnn.commands.measure_point_offsets import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
