"""Run facenet-pytorch 2.6.0's own MTCNN code (the widely used port of the original model) here.

torchvision has no CPU build on this project's machines, and facenet-pytorch needs only
``torchvision.ops.boxes.batched_nms`` and an unused transforms import from it, so a stub module
provides those (NMS with torchvision's semantics: suppress IoU > threshold). The wheel's own
Python code and weights are used unchanged; nothing of it is copied into this repository.
"""

from __future__ import annotations

import sys
import tempfile
import types
import zipfile
from pathlib import Path

import numpy as np
import torch


def _install_torchvision_stub() -> None:
    if "torchvision" in sys.modules:
        return
    from mtcnn.ops.boxes import batched_nms

    tv = types.ModuleType("torchvision")
    ops = types.ModuleType("torchvision.ops")
    boxes = types.ModuleType("torchvision.ops.boxes")
    transforms = types.ModuleType("torchvision.transforms")
    functional = types.ModuleType("torchvision.transforms.functional")
    boxes.batched_nms = lambda b, s, idx, thr: batched_nms(b, s, idx, thr)
    ops.boxes = boxes
    tv.ops, tv.transforms, transforms.functional = ops, transforms, functional
    sys.modules.update(
        {
            "torchvision": tv,
            "torchvision.ops": ops,
            "torchvision.ops.boxes": boxes,
            "torchvision.transforms": transforms,
            "torchvision.transforms.functional": functional,
        }
    )


class FacenetReference:
    """facenet-pytorch's PNet/RNet/ONet + detect_face with its default settings."""

    def __init__(self, wheel: str | Path, device: str = "cpu", min_face_size: int = 20,
                 thresholds=(0.6, 0.7, 0.7), factor: float = 0.709):
        _install_torchvision_stub()
        self._tmp = tempfile.TemporaryDirectory()
        with zipfile.ZipFile(wheel) as z:
            z.extractall(self._tmp.name)
        sys.path.insert(0, self._tmp.name)
        import importlib

        # Import the submodules directly: the package __init__ pulls in unrelated training code.
        pkg = types.ModuleType("facenet_pytorch")
        pkg.__path__ = [str(Path(self._tmp.name) / "facenet_pytorch")]
        sys.modules.setdefault("facenet_pytorch", pkg)
        models = types.ModuleType("facenet_pytorch.models")
        models.__path__ = [str(Path(self._tmp.name) / "facenet_pytorch" / "models")]
        sys.modules.setdefault("facenet_pytorch.models", models)
        mt = importlib.import_module("facenet_pytorch.models.mtcnn")
        self._detect_face = importlib.import_module("facenet_pytorch.models.utils.detect_face").detect_face
        self.device = torch.device(device)
        self.pnet, self.rnet, self.onet = (m().to(self.device).eval() for m in (mt.PNet, mt.RNet, mt.ONet))
        self.min_face_size, self.thresholds, self.factor = min_face_size, list(thresholds), factor

    @torch.inference_mode()
    def detect(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One RGB uint8 image -> (boxes [N,5] with score, points [N,5,2])."""
        boxes, points = self._detect_face(
            image, self.min_face_size, self.pnet, self.rnet, self.onet, self.thresholds, self.factor, self.device
        )
        b = np.asarray(boxes[0], dtype=np.float32).reshape(-1, 5)
        p = np.asarray(points[0], dtype=np.float32).reshape(-1, 5, 2)
        return b, p
