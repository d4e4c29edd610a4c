#!/usr/bin/env python
"""Hard negatives for the rotation-calibrating cascade's stage 2 or 3, mined with its earlier stages.

    python tools/mine_pcn.py --config mine_pcn2.yaml [pcn=DIR] [key=value ...]

See mtcnn/commands/mine_pcn.py.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtcnn.commands.mine_pcn import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
