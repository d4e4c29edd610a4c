"""Run facenet-pytorch 2.6.0's own MTCNN code (the widely used port of the original model) here.

torchvision has no CPU build on this project's machines, and facenet-pytorch needs only
``torchvision.ops.boxes.batched_nms`` and an unused transforms import from it, so a stub module
provides those (NMS with torchvision's semantics: suppress IoU > threshold). The wheel's own
Python code and weights are used unchanged; nothing of it is copied into this repository.
"""

from __future__ import annotations

import importlib.util
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


# The wheel's modules that run its MTCNN, loaded from their files. The package's __init__ is not run:
# it pulls in unrelated training code.
_PACKAGES = ("facenet_pytorch", "facenet_pytorch.models", "facenet_pytorch.models.utils")
_MODULES = ("facenet_pytorch.models.utils.detect_face", "facenet_pytorch.models.mtcnn")


def _load_from_file(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path}: cannot be loaded as module {name}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_facenet_modules(root: Path) -> tuple[types.ModuleType, types.ModuleType]:
    """``(models.mtcnn, models.utils.detect_face)`` of the wheel unpacked in ``root``.

    ``mtcnn.py`` imports ``.utils.detect_face`` relatively, so the package names are in
    ``sys.modules`` while the two files run; afterwards they are taken out again (and whatever
    held those names before is put back), so this copy never shadows an installed facenet-pytorch.
    The modules keep their ``__file__`` under ``root``: the nets read their weights beside it."""
    saved = {name: sys.modules[name] for name in _PACKAGES + _MODULES if name in sys.modules}
    try:
        for name in _PACKAGES:
            package = types.ModuleType(name)
            package.__path__ = [str(root.joinpath(*name.split(".")))]
            sys.modules[name] = package
        detect_face, models_mtcnn = [_load_from_file(name, root.joinpath(*name.split(".")).with_suffix(".py")) for name in _MODULES]
    finally:
        for name in _PACKAGES + _MODULES:
            sys.modules.pop(name, None)
        sys.modules.update(saved)
    return models_mtcnn, detect_face


class FacenetReference:
    """facenet-pytorch's PNet/RNet/ONet + detect_face with its default settings."""

    def __init__(self, wheel: str | Path, device: str = "cpu", min_face_size: int = 20,
                 thresholds=(0.6, 0.7, 0.7), factor: float = 0.709):
        _install_torchvision_stub()
        self._tmp = tempfile.TemporaryDirectory()
        with zipfile.ZipFile(wheel) as z:
            z.extractall(self._tmp.name)
        mt, detect_face = load_facenet_modules(Path(self._tmp.name))
        self._detect_face = detect_face.detect_face
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
