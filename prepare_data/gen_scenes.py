#!/usr/bin/env python
"""Compose multi-face scenes: real CNN_FacePoint faces pasted onto face-free backgrounds.

Writes <out>/images/*.jpg, a WIDER-format scenes_bbx_gt.txt and a landmark side file
(see mtcnn/data/scenes.py). Resumable: rerun the same command to continue.

    python prepare_data/gen_scenes.py --split train --num-scenes 2000 --preview
    python prepare_data/gen_scenes.py --split val --out /tmp/scenes_val canvas=null seed=3
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtcnn.commands.gen_scenes import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
