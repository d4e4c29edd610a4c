"""Conventions the torch and numpy box libraries share (no torch import: data workers use it)."""

from typing import Literal

# How two boxes' overlap is measured: intersection over union, or over the smaller area
# (MTCNN's "Min" NMS after O-Net).
OverlapMode = Literal["union", "min"]

# Mirroring a face swaps which eye / mouth corner is the image's left: LE<->RE, N, LM<->RM.
FLIP_POINT_ORDER = (1, 0, 2, 4, 3)
