"""P-Net, R-Net and O-Net (SPEC §2, §11).

Every net has the three heads of the paper (face/non-face logits, 4 box offsets, 10 landmark
coordinates interleaved x, y); pooling uses ``ceil_mode=True`` as Caffe does, and the FC hidden
layers use PReLU. Heads return raw logits: training applies cross-entropy, the detector softmax.
"""

from __future__ import annotations

import torch
from torch import nn

from mtcnn.nets.registry import NetSpec, register_net


def _init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.PReLU):
            nn.init.constant_(m.weight, 0.25)


def pnet_trunk(c1: int = 10, c2: int = 16, c3: int = 32) -> nn.Sequential:
    """P-Net's body (12×12 cell, stride 2), with other widths for the rotation-calibrating stage 1."""
    return nn.Sequential(
        nn.Conv2d(3, c1, 3), nn.PReLU(c1), nn.MaxPool2d(2, 2, ceil_mode=True),
        nn.Conv2d(c1, c2, 3), nn.PReLU(c2),
        nn.Conv2d(c2, c3, 3), nn.PReLU(c3),
    )  # fmt: skip


def rnet_trunk(c1: int = 28, c2: int = 48, c3: int = 64, hidden: int = 128) -> nn.Sequential:
    """R-Net's body (24×24 -> ``hidden`` features), with other widths for the calibrating stage 2."""
    return nn.Sequential(
        nn.Conv2d(3, c1, 3), nn.PReLU(c1), nn.MaxPool2d(3, 2, ceil_mode=True),
        nn.Conv2d(c1, c2, 3), nn.PReLU(c2), nn.MaxPool2d(3, 2, ceil_mode=True),
        nn.Conv2d(c2, c3, 2), nn.PReLU(c3),
        nn.Flatten(),
        nn.Linear(9 * c3, hidden), nn.PReLU(hidden),
    )  # fmt: skip


def onet_trunk(dropout: float = 0.25) -> nn.Sequential:
    """O-Net's body (48×48 -> 256 features)."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 3), nn.PReLU(32), nn.MaxPool2d(3, 2, ceil_mode=True),
        nn.Conv2d(32, 64, 3), nn.PReLU(64), nn.MaxPool2d(3, 2, ceil_mode=True),
        nn.Conv2d(64, 64, 3), nn.PReLU(64), nn.MaxPool2d(2, 2, ceil_mode=True),
        nn.Conv2d(64, 128, 2), nn.PReLU(128),
        nn.Flatten(),
        nn.Linear(1152, 256), nn.Dropout(dropout), nn.PReLU(256),
    )  # fmt: skip


class _ThreeHeads(nn.Module):
    """A body and three heads on its features; landmarks may be skipped (the detector's P/R stages)."""

    body: nn.Module
    cls: nn.Module
    box: nn.Module
    landmark: nn.Module

    def forward(self, x: torch.Tensor, with_landmarks: bool = True):
        features = self.body(x)
        landmarks = self.landmark(features) if with_landmarks else None
        return self.cls(features), self.box(features), landmarks


class PNet(_ThreeHeads):
    """12×12 proposal net, fully convolutional: ``[N,3,H,W]`` -> maps ``[N,2|4|10, h, w]``."""


    def __init__(self) -> None:
        super().__init__()
        self.body = pnet_trunk()
        self.cls = nn.Conv2d(32, 2, 1)
        self.box = nn.Conv2d(32, 4, 1)
        self.landmark = nn.Conv2d(32, 10, 1)
        _init(self)


class RNet(_ThreeHeads):
    """24×24 refinement net: ``[N,3,24,24]`` -> ``[N,2]``, ``[N,4]``, ``[N,10]``."""


    def __init__(self) -> None:
        super().__init__()
        self.body = rnet_trunk()
        self.cls = nn.Linear(128, 2)
        self.box = nn.Linear(128, 4)
        self.landmark = nn.Linear(128, 10)
        _init(self)


class ONet(_ThreeHeads):
    """48×48 output net: ``[N,3,48,48]`` -> ``[N,2]``, ``[N,4]``, ``[N,10]``."""


    def __init__(self, dropout: float = 0.25) -> None:
        super().__init__()
        self.body = onet_trunk(dropout)
        self.cls = nn.Linear(256, 2)
        self.box = nn.Linear(256, 4)
        self.landmark = nn.Linear(256, 10)
        _init(self)


# SPEC §2/§11: RGB input, (pixel - 127.5) / 128, three heads, five landmarks.
PNET = register_net(NetSpec("pnet", PNet, (12, 12), fully_convolutional=True, stride=2,
                            description="12x12 proposal net (fully convolutional)"))
RNET = register_net(NetSpec("rnet", RNet, (24, 24), description="24x24 refinement net"))
ONET = register_net(NetSpec("onet", ONet, (48, 48), description="48x48 output net"))
# The detector's cascade, in order.
MTCNN_NETS = ("pnet", "rnet", "onet")
