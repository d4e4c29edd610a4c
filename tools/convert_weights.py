#!/usr/bin/env python
"""Import the original MTCNN weights from the facenet-pytorch 2.6.0 wheel into this library's format."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mtcnn.commands.convert_weights import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
