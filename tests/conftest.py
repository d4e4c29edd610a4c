"""Shared fixtures: where the real data and the converted original weights are, or a clean skip."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mtcnn.config import data_root

from tests_helpers import PROJECT_ROOT

# ``precision="auto"`` (the detector's default) resolves to float32 in the whole suite, its
# subprocesses included, whatever the CPU: results then do not depend on the machine running it.
# Tests of bfloat16 ask for it; tests of "auto" set this variable themselves.
os.environ.setdefault("MTCNN_NATIVE_BF16", "0")
# The commands that run over many photos bound glibc's heap (mtcnn.memory), which costs CPU time
# in page faults; the suite calls them in-process, where the setting would outlive the call and
# slow every later test. tests/test_memory.py checks the bound itself.
os.environ.setdefault("MTCNN_HEAP", "fast")


def original_weights_path() -> Path:
    """Converted original MTCNN weights: $MTCNN_ORIGINAL_WEIGHTS or third_party/mtcnn_original.pt."""
    env = os.environ.get("MTCNN_ORIGINAL_WEIGHTS")
    return Path(env) if env else PROJECT_ROOT / "third_party" / "mtcnn_original.pt"


def facenet_wheel_path() -> Path:
    env = os.environ.get("FACENET_WHEEL")
    return Path(env) if env else PROJECT_ROOT / "third_party" / "facenet_pytorch-2.6.0-py3-none-any.whl"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = data_root()
    if not root.is_dir():
        pytest.skip(f"real data not found at {root} (set MTCNN_DATA)")
    return root


@pytest.fixture(scope="session")
def original_weights() -> Path:
    path = original_weights_path()
    if not path.is_file():
        pytest.skip(f"original weights not found at {path}: run tools/convert_weights.py (see README)")
    return path


@pytest.fixture(scope="session")
def facenet_wheel() -> Path:
    path = facenet_wheel_path()
    if not path.is_file():
        pytest.skip(f"facenet-pytorch wheel not found at {path} (pip download facenet-pytorch==2.6.0 --no-deps -d third_party)")
    return path
