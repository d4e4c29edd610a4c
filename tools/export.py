#!/usr/bin/env python
"""Export the nets of a weights bundle: python tools/export.py --format onnx|torchscript --out DIR [--weights W]."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mtcnn.commands.export import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
