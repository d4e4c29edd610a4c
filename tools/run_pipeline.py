#!/usr/bin/env python
"""Run the whole MTCNN training chain from one config, resuming where it stopped.

python tools/run_pipeline.py mtcnn/config/defaults/pipeline.yaml [--stop-after STEP] [key=value ...]
STEP: scenes, pnet_data, train_pnet, mine_pnet, train_rnet, mine_rnet, train_onet
Fine-tuning the shipped weights on your photos: python tools/run_pipeline.py pipeline_finetune.yaml
(edit its finetune.photos, or override them: 'finetune.photos.train=[{name: mine, format: coco, ...}]').
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtcnn.commands.run_pipeline import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
