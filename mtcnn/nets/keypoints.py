"""68-point face keypoint regressors: the seed's baseline and our compact model.

Both map a square face crop (the 68 points' extent expanded 10 %, :mod:`mtcnn.data.face_crops`)
to ``[B, 136]`` coordinates interleaved x, y in the crop's ``[-1, 1]`` frame (-1 and +1 are the
crop's outer edges).

* :class:`KeypointBaseline` — the seed's design (SPEC "Other seeds", mxagar): 224×224 grey input,
  four blocks of convolution + ReLU + 2×2 max-pool (5×5 to 32 channels, then 3×3 to 64, 128 and
  256, no padding: 224 → 110 → 54 → 26 → 12), two fully connected layers (36,864 → 244 → 136)
  with dropout between them. 9.42 M parameters, almost all in the first FC layer; about 0.63 G
  multiply-adds per face.
* :class:`KeypointCompact` — ours: 64×64 input (RGB or grey), a stride-2 stem then pairs of 3×3
  convolutions + batch norm + ReLU that halve the resolution at each stage (32 → 16 → 8 → 4
  pixels, 32 → 64 → 128 → 192 channels), dropout and one linear layer from the 4×4×192 map to
  the coordinates (keeping where each feature is, which a global pool would throw away).
  0.92 M parameters (1/10 of the baseline), about 40 M multiply-adds per face (1/16).
"""

from __future__ import annotations

import torch
from torch import nn

from mtcnn.nets.registry import NetSpec, register_net

NUM_POINTS = 68
BASELINE_SIZE = 224
BASELINE_HIDDEN = 244  # sized so that the whole net has the seed's ≈ 9.4 M parameters
COMPACT_SIZE = 64
COMPACT_LAST = 192  # channels of the last 4×4 map


class KeypointBaseline(nn.Module):
    """Four conv + ReLU + max-pool blocks and two FC layers on a 224×224 grey crop."""

    def __init__(self, num_landmarks: int = NUM_POINTS, dropout: float = 0.25):
        super().__init__()
        blocks: list[nn.Module] = []
        c_in = 1
        for c_out, kernel in ((32, 5), (64, 3), (128, 3), (256, 3)):
            blocks += [nn.Conv2d(c_in, c_out, kernel), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            c_in = c_out
        self.features = nn.Sequential(*blocks)
        side = (((((BASELINE_SIZE - 4) // 2 - 2) // 2 - 2) // 2) - 2) // 2  # 12
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(256 * side * side, BASELINE_HIDDEN),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(BASELINE_HIDDEN, 2 * num_landmarks),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _conv(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class KeypointCompact(nn.Module):
    """64×64 crop → stem (s2) → 3 stages of [3×3 s2, 3×3] → 3×3 s2 → linear to 2·K coordinates."""

    def __init__(self, num_landmarks: int = NUM_POINTS, in_channels: int = 3, dropout: float = 0.2):
        super().__init__()
        layers = _conv(in_channels, 24, 2) + _conv(24, 32)  # 32×32
        for c_in, c_out in ((32, 64), (64, 128)):  # 16×16, 8×8
            layers += _conv(c_in, c_out, 2) + _conv(c_out, c_out)
        layers += _conv(128, COMPACT_LAST, 2)  # 4×4
        self.features = nn.Sequential(*layers)
        side = COMPACT_SIZE // 16
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(COMPACT_LAST * side * side, 2 * num_landmarks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _compact_grey(**kwargs) -> KeypointCompact:
    return KeypointCompact(in_channels=1, **kwargs)


KEYPOINT_NETS = ("kp68_baseline", "kp68_compact", "kp68_compact_grey")
register_net(NetSpec(
    "kp68_baseline", KeypointBaseline, (BASELINE_SIZE, BASELINE_SIZE), channels="grey", heads=("landmark",),
    num_landmarks=NUM_POINTS, description="seed baseline: 4×(conv+ReLU+maxpool) + 2 FC, 224 grey, 9.4 M params",
))  # fmt: skip
register_net(NetSpec(
    "kp68_compact", KeypointCompact, (COMPACT_SIZE, COMPACT_SIZE), channels="rgb", heads=("landmark",),
    num_landmarks=NUM_POINTS, description="compact 68-point regressor, 64 px RGB, 0.92 M params",
))  # fmt: skip
register_net(NetSpec(
    "kp68_compact_grey", _compact_grey, (COMPACT_SIZE, COMPACT_SIZE), channels="grey", heads=("landmark",),
    num_landmarks=NUM_POINTS, description="compact 68-point regressor, 64 px grey, 0.92 M params",
))  # fmt: skip
