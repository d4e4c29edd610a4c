#!/usr/bin/env python
"""P-Net training samples (12x12 pos / part / neg crops + landmark samples) into one HDF5 file.

Writes <out>/pnet_<split>.h5 and pnet_<split>.config.yaml (see mtcnn/data/generate.py).
Resumable: rerun the same command to continue an interrupted run.

    python prepare_data/gen_12net_data.py --split train
    python prepare_data/gen_12net_data.py --split val --workers 2 sampling.negatives_per_image=30
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtcnn.commands.gen_12net_data import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
