#!/usr/bin/env python
"""Detector weights side by side on every validation set (the README's "Results" table).

    python tools/compare_models.py --model ours=default --model original=original --out eval_compare
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtcnn.commands.compare_models import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
