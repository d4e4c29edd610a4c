#!/usr/bin/env python
"""Landmark training samples (SPEC §1 augmentation of CNN_FacePoint faces) into HDF5.

Writes <out>/landmark<size>_<split>.h5 (group "landmark") and its resolved config.
Resumable: rerun the same command to continue an interrupted run.

    python prepare_data/gen_landmark_aug.py --size 24 --split train
    python prepare_data/gen_landmark_aug.py --size 48 --split val aug.rotate_degrees=10
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtcnn.commands.gen_landmark_aug import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
