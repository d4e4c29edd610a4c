"""The cascaded MobileNet-V2 landmark regressor (SPEC §8): one 48×48 network used at two levels.

The table of the original README, with the prototxt's details: a 3×3 stride-2 convolution to
16 channels, then three stages of two inverted-residual blocks (expand 1×1 → depthwise 3×3 →
linear 1×1 projection) to 24, 32 and 64 channels, each stage's first block with stride 2 and
its second with stride 1 and a residual add; expansions 96/144, 144/192 and 192/192 (the last
block expands ×3, not ×6). Every convolution is bias-free and followed by batch norm; ReLU (not
ReLU6) after all but the projections. FC 256 + ReLU + dropout 0.3, then FC 10: five (x, y)
points interleaved. 237,818 trainable parameters (+4,352 batch-norm statistics): about 946 KiB
as float32, the original's "≈ 956 KB".

Level 1 sees the face crop, level 2 the square ``nose ± 2·|nose − left eye|`` around level 1's
points (:mod:`mtcnn.landmark_models`); both regress the points in their crop's ``[-1, 1]``
coordinates. Inputs are ``pixel − 127.5`` with no scaling, as in the original.
"""

from __future__ import annotations

import torch
from torch import nn

from mtcnn.nets.registry import NetSpec, register_net

#: (expansion channels, output channels, stride) of the six inverted-residual blocks
BLOCKS = ((96, 24, 2), (144, 24, 1), (144, 32, 2), (192, 32, 1), (192, 64, 2), (192, 64, 1))
INPUT_SIZE = 48
STEM_CHANNELS = 16
FC_WIDTH = 256
DROPOUT = 0.3


def conv_bn(c_in: int, c_out: int, kernel: int = 1, stride: int = 1, groups: int = 1, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """Expand 1×1 → depthwise 3×3 (stride) → linear 1×1 projection; residual add when shapes match."""

    def __init__(self, c_in: int, expanded: int, c_out: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            conv_bn(c_in, expanded),
            conv_bn(expanded, expanded, 3, stride, groups=expanded),
            conv_bn(expanded, c_out, relu=False),
        )
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class MobileNetV2Landmarks(nn.Module):
    """48×48 RGB → ``[B, 2·num_landmarks]`` coordinates in the crop's ``[-1, 1]`` frame."""

    def __init__(self, num_landmarks: int = 5, dropout: float = DROPOUT):
        super().__init__()
        layers: list[nn.Module] = [conv_bn(3, STEM_CHANNELS, 3, 2)]
        c = STEM_CHANNELS
        for expanded, c_out, stride in BLOCKS:
            layers.append(InvertedResidual(c, expanded, c_out, stride))
            c = c_out
        self.features = nn.Sequential(*layers)
        side = INPUT_SIZE // 16  # four stride-2 steps: 48 → 3
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c * side * side, FC_WIDTH),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(FC_WIDTH, 2 * num_landmarks),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _level_spec(name: str, level: int) -> NetSpec:
    return NetSpec(
        name, MobileNetV2Landmarks, (INPUT_SIZE, INPUT_SIZE), channels="rgb", mean=127.5, scale=1.0,
        heads=("landmark",), num_landmarks=5,
        description=f"cascaded MobileNet-V2, level {level} (SPEC §8): 5 points in the crop's [-1, 1] frame",
    )  # fmt: skip


MOBILENET_LEVELS = ("mobilenet_l1", "mobilenet_l2")
for _level, _name in enumerate(MOBILENET_LEVELS, start=1):
    register_net(_level_spec(_name, _level))
