"""The rotation-calibrating cascade (``MTCNN(rotation="pcn")``), after Shi et al., "Real-Time
Rotation-Invariant Face Detection with Progressive Calibration Networks" (CVPR 2018).

Each stage finds faces of any in-plane angle in the range its input can hold and calibrates the
angle one step, so the next stage sees faces closer to upright:

* ``pcn1`` (12×12, fully convolutional, stride 2: P-Net's geometry, so the pyramid, packing and
  cell maps of :func:`mtcnn.stages.run_pnet` serve it): faces at any angle; ``flip``: 2 logits,
  the face upright-ish (|angle| < 90°) or upside down. Upside-down windows are turned by 180°
  (an exact pixel permutation) before stage 2.
* ``pcn2`` (24×24): faces within ±90°; ``turn``: 3 logits for -90°, 0°, +90° (the face turned
  that far counter-clockwise). Windows are turned back by that quarter turn (exact) before stage 3.
* ``pcn3`` (48×48): faces within ±45°; ``angle``: the remaining angle, regressed, in units of
  45° (so the head's output lies in [-1, 1] for the faces it is trained on).

Box offsets are in the frame of the window each stage sees (turned as that stage sees it), with
the usual MTCNN encoding. The trunks are P-Net's and R-Net's widened a little (telling faces from
non-faces at every angle is a harder task than at one) and O-Net's.
"""

from __future__ import annotations

import torch
from torch import nn

from mtcnn.nets.mtcnn_nets import _init, onet_trunk, pnet_trunk, rnet_trunk
from mtcnn.nets.registry import NetSpec, register_net

#: Stage -> the name of its orientation head, as registered.
ORIENTATION_HEAD = {"pcn1": "flip", "pcn2": "turn", "pcn3": "angle"}
#: pcn2's ``turn`` classes: the face's angle in degrees (counter-clockwise) for each logit.
TURN_ANGLES = (-90.0, 0.0, 90.0)
#: pcn3's ``angle`` output is the residual angle divided by this (degrees).
ANGLE_UNIT = 45.0


class _CalibratingNet(nn.Module):
    """A body, the face/box heads and one orientation head: ``forward`` returns ``(cls, box, orient)``."""

    body: nn.Module
    cls: nn.Module
    box: nn.Module
    orient: nn.Module

    def forward(self, x: torch.Tensor):
        features = self.body(x)
        return self.cls(features), self.box(features), self.orient(features)


class PCN1(_CalibratingNet):
    """12×12 proposals at any angle, fully convolutional: ``[N,3,H,W]`` -> maps ``[N,2|4|2,h,w]``."""

    def __init__(self) -> None:
        super().__init__()
        self.body = pnet_trunk(16, 32, 48)
        self.cls = nn.Conv2d(48, 2, 1)
        self.box = nn.Conv2d(48, 4, 1)
        self.orient = nn.Conv2d(48, 2, 1)
        _init(self)


class PCN2(_CalibratingNet):
    """24×24, faces within ±90°: ``[N,3,24,24]`` -> ``[N,2]``, ``[N,4]``, ``[N,3]``."""

    def __init__(self) -> None:
        super().__init__()
        self.body = rnet_trunk(32, 64, 64, 128)
        self.cls = nn.Linear(128, 2)
        self.box = nn.Linear(128, 4)
        self.orient = nn.Linear(128, 3)
        _init(self)


class PCN3(_CalibratingNet):
    """48×48, faces within ±45°: ``[N,3,48,48]`` -> ``[N,2]``, ``[N,4]``, ``[N,1]``."""

    def __init__(self, dropout: float = 0.25) -> None:
        super().__init__()
        self.body = onet_trunk(dropout)
        self.cls = nn.Linear(256, 2)
        self.box = nn.Linear(256, 4)
        self.orient = nn.Linear(256, 1)
        _init(self)


PCN1_SPEC = register_net(NetSpec("pcn1", PCN1, (12, 12), heads=("cls", "box", "flip"), fully_convolutional=True, stride=2,
                                 description="rotation-calibrating stage 1: 12x12 proposals at any angle, up/down flip"))
PCN2_SPEC = register_net(NetSpec("pcn2", PCN2, (24, 24), heads=("cls", "box", "turn"),
                                 description="rotation-calibrating stage 2: 24x24, faces within +-90 degrees, -90/0/+90"))
PCN3_SPEC = register_net(NetSpec("pcn3", PCN3, (48, 48), heads=("cls", "box", "angle"),
                                 description="rotation-calibrating stage 3: 48x48, faces within +-45 degrees, angle regression"))
#: The calibrating cascade, in order.
PCN_NETS = ("pcn1", "pcn2", "pcn3")
